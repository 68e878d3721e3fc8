package registry

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// Error is an OCI distribution error: an HTTP status, a spec code and a
// message. Handlers return errors; WriteError turns any of them into the
// spec's JSON body, in this one place.
type Error struct {
	Status  int
	Code    string
	Message string
	Detail  any
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func newErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func errBlobUnknown(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "BLOB_UNKNOWN", format, a...)
}
func errUploadInvalid(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "BLOB_UPLOAD_INVALID", format, a...)
}
func errUploadUnknown(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", format, a...)
}
func errDigestInvalid(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "DIGEST_INVALID", format, a...)
}
func errManifestBlobUnknown(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", format, a...)
}
func errManifestInvalid(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "MANIFEST_INVALID", format, a...)
}
func errManifestUnknown(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "MANIFEST_UNKNOWN", format, a...)
}
func errNameInvalid(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "NAME_INVALID", format, a...)
}
func errNameUnknown(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "NAME_UNKNOWN", format, a...)
}
func errSizeInvalid(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "SIZE_INVALID", format, a...)
}
func errUnsupported(format string, a ...any) *Error {
	return newErr(http.StatusMethodNotAllowed, "UNSUPPORTED", format, a...)
}
func errRangeInvalid(format string, a ...any) *Error {
	return newErr(http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", format, a...)
}

// ErrUnauthorized is the error of a request without valid credentials.
func ErrUnauthorized(msg string) *Error {
	return newErr(http.StatusUnauthorized, "UNAUTHORIZED", "%s", msg)
}

// ErrDenied is the error of a request the server refuses whatever the
// credentials.
func ErrDenied(msg string) *Error { return newErr(http.StatusForbidden, "DENIED", "%s", msg) }

// ErrUnsupported is the error of an operation this server does not offer.
func ErrUnsupported(msg string) *Error { return errUnsupported("%s", msg) }

// AsError maps any error to an *Error: known store and index errors to their
// spec codes, anything else to a 500.
func AsError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, oci.ErrInvalidDigest):
		return errDigestInvalid("%v", err)
	case errors.Is(err, oci.ErrManifestTooLarge):
		return newErr(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "%v", err)
	case errors.Is(err, oci.ErrManifestInvalid), errors.Is(err, oci.ErrManifestUnsupported):
		return errManifestInvalid("%v", err)
	case errors.Is(err, cas.ErrDigestMismatch):
		return errDigestInvalid("%v", err)
	case errors.Is(err, cas.ErrSizeMismatch):
		return errSizeInvalid("%v", err)
	case errors.Is(err, cas.ErrNotFound), errors.Is(err, repodb.ErrBlobNotFound):
		return errBlobUnknown("%v", err)
	case errors.Is(err, repodb.ErrManifestNotFound), errors.Is(err, repodb.ErrTagNotFound):
		return errManifestUnknown("%v", err)
	case errors.Is(err, repodb.ErrRepoNotFound):
		return errNameUnknown("%v", err)
	}
	return newErr(http.StatusInternalServerError, "UNKNOWN", "internal error: %v", err)
}

// WriteError writes err as the spec's JSON error body.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="crpe"`)
	}
	httpx.WriteErrors(w, r, e.Status, httpx.ErrorEntry{Code: e.Code, Message: e.Message, Detail: e.Detail})
}

// DenyUnauthorized answers a request the auth guard refused.
func DenyUnauthorized(w http.ResponseWriter, r *http.Request, err error) {
	httpx.SetRoute(r, "unauthorized")
	httpx.SetError(r, err)
	WriteError(w, r, ErrUnauthorized(err.Error()))
}
