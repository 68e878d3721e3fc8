package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// ErrorEntry is one error of the JSON body every API of crpe answers with,
// the OCI distribution spec's: {"errors":[{"code","message","detail"}]}.
type ErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// WriteErrors answers with status and errs as that JSON body (none for a
// HEAD request), and records the first error for the request log. It is the
// one writer of the body: the registry, the agent's and the pocket's APIs
// and the panic handler use it.
func WriteErrors(w http.ResponseWriter, r *http.Request, status int, errs ...ErrorEntry) {
	if len(errs) > 0 && r != nil {
		SetError(r, errors.New(errs[0].Code+": "+errs[0].Message))
	}
	if errs == nil {
		errs = []ErrorEntry{}
	}
	body, _ := json.Marshal(map[string][]ErrorEntry{"errors": errs})
	h := w.Header()
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// WriteError answers with one error: its code, message and detail (none when
// detail is nil).
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, msg string, detail map[string]string) {
	e := ErrorEntry{Code: code, Message: msg}
	if detail != nil {
		e.Detail = detail
	}
	WriteErrors(w, r, status, e)
}
