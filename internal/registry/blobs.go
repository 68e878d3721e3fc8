package registry

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

func parseDigestRef(ref string) (digest.Digest, error) {
	d, err := oci.ParseDigest(ref)
	if err != nil {
		return "", errDigestInvalid("%v", err)
	}
	return d, nil
}

func (rg *Registry) getBlob(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	if err := rg.db.View(func(tx *repodb.Tx) error {
		_, err := tx.Blob(repo, d)
		return err
	}); err != nil {
		return errBlobUnknown("blob %s is not in repository %s", d, repo)
	}
	f, info, err := rg.store.Open(r.Context(), d)
	if err != nil {
		if errors.Is(err, cas.ErrNotFound) {
			return errBlobUnknown("blob %s is not in repository %s", d, repo)
		}
		return err
	}
	defer f.Close()
	if err := checkRange(r.Header.Get("Range"), info.Size); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", string(d))
	h.Set("ETag", `"`+string(d)+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
	// ServeContent answers ranges and HEAD; given the *os.File of the store,
	// the body goes out with sendfile.
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// checkRange validates a Range header against a blob of size bytes, so that a
// malformed or unsatisfiable range gets a JSON error rather than
// http.ServeContent's plain text. An empty header is fine.
func checkRange(h string, size int64) error {
	if h == "" {
		return nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return errRangeInvalid("invalid range %q: only bytes ranges are supported", h)
	}
	any := false
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		start, end, ok := strings.Cut(part, "-")
		if !ok {
			return errRangeInvalid("invalid range %q", h)
		}
		start, end = strings.TrimSpace(start), strings.TrimSpace(end)
		if start == "" {
			n, err := strconv.ParseInt(end, 10, 64)
			if err != nil || n < 0 || strings.HasPrefix(end, "+") {
				return errRangeInvalid("invalid range %q", h)
			}
			if n > 0 && size > 0 {
				any = true
			}
			continue
		}
		s, err := strconv.ParseInt(start, 10, 64)
		if err != nil || s < 0 || strings.HasPrefix(start, "+") {
			return errRangeInvalid("invalid range %q", h)
		}
		if end != "" {
			e, err := strconv.ParseInt(end, 10, 64)
			if err != nil || e < s || strings.HasPrefix(end, "+") {
				return errRangeInvalid("invalid range %q", h)
			}
		}
		if s < size {
			any = true
		}
	}
	if !any {
		return errRangeInvalid("range %q is not satisfiable for a blob of %d bytes", h, size)
	}
	return nil
}

func (rg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	if err := rg.db.Update(func(tx *repodb.Tx) error { return tx.UnlinkBlob(repo, d) }); err != nil {
		if isNotFound(err) {
			return errBlobUnknown("blob %s is not in repository %s", d, repo)
		}
		return err
	}
	// The bytes stay in the store until garbage collection finds no link
	// to them: other repositories may share them.
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
