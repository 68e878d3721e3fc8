package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/pflag"

	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/parts"
)

// serverGC makes the servers' Go heap smaller than the default: crpe runs on
// phones and small boards, where memory counts more than a little GC CPU.
// GOGC set in the environment wins.
func serverGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}

// listenerFlags registers the flags every server takes.
func listenerFlags(f *pflag.FlagSet, l *httpx.Listener, addr string) {
	f.StringVar(&l.Addr, "addr", addr, "address to listen on")
	f.StringVar(&l.TLSCert, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&l.TLSKey, "tls-key", "", "TLS key file (PEM)")
	f.DurationVar(&l.ShutdownGrace, "shutdown-grace", 20*time.Second, "time given to in-flight requests on shutdown")
}

func as(err error, target any) bool { return errors.As(err, target) }

// exitError carries a specific exit code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }

// explainPart puts an error of reading a split archive on its part: the
// part at fault (parts.Reader.Fault), else the part the error arose in.
// Other errors are returned as they are.
func explainPart(src io.Reader, err error) error {
	r, ok := src.(*parts.Reader)
	if !ok || err == nil {
		return err
	}
	if pe := r.Fault(err); pe != nil {
		return pe
	}
	if name := r.Part(); name != "" {
		return fmt.Errorf("part %s: %w", name, err)
	}
	return err
}
