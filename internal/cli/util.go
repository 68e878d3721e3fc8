package cli

import "errors"

func as(err error, target any) bool { return errors.As(err, target) }

// exitError carries a specific exit code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }
