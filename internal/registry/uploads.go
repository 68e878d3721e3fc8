package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// session is an upload in progress (POST ... PATCH* ... PUT).
type session struct {
	mu       sync.Mutex
	ing      cas.Ingest
	repo     string
	lastUsed time.Time
	done     bool
}

func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }
func blobLocation(repo string, d digest.Digest) string {
	return "/v2/" + repo + "/blobs/" + string(d)
}

func (rg *Registry) linkBlob(repo string, info cas.Info) error {
	return rg.db.Batch(func(tx *repodb.Tx) error { return tx.LinkBlob(repo, info.Digest, info.Size) })
}

func blobCreated(w http.ResponseWriter, repo string, info cas.Info) {
	h := w.Header()
	h.Set("Location", blobLocation(repo, info.Digest))
	h.Set("Docker-Content-Digest", string(info.Digest))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (rg *Registry) startUpload(w http.ResponseWriter, r *http.Request, repo string) error {
	ctx := r.Context()
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		d, err := parseDigestRef(m)
		if err != nil {
			return err
		}
		from := q.Get("from")
		if from != "" && !oci.ValidName(from) {
			return errNameInvalid("invalid repository name %q in from", from)
		}
		info, err := rg.store.Stat(ctx, d)
		mounted := false
		if err == nil {
			if from == "" {
				mounted = true // anonymous mount: the store has it
			} else {
				_ = rg.db.View(func(tx *repodb.Tx) error {
					_, lerr := tx.Blob(from, d)
					mounted = lerr == nil
					return nil
				})
			}
		}
		if mounted {
			if err := rg.linkBlob(repo, info); err != nil {
				return err
			}
			blobCreated(w, repo, info)
			return nil
		}
		// not mountable: fall back to a regular upload session
	} else if ds := q.Get("digest"); ds != "" {
		d, err := parseDigestRef(ds)
		if err != nil {
			return err
		}
		info, err := rg.store.Put(ctx, cas.Info{Digest: d, Size: r.ContentLength}, r.Body)
		if err != nil {
			return uploadErr(err)
		}
		if err := rg.linkBlob(repo, info); err != nil {
			return err
		}
		blobCreated(w, repo, info)
		return nil
	}
	s, err := rg.newSession(r, repo)
	if err != nil {
		return err
	}
	rg.writeUploadStatus(w, repo, s, http.StatusAccepted)
	return nil
}

func (rg *Registry) newSession(r *http.Request, repo string) (*session, error) {
	rg.mu.Lock()
	n := len(rg.sessions)
	rg.mu.Unlock()
	if n >= rg.opts.MaxUploads {
		return nil, newErr(http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many uploads in progress (%d)", n)
	}
	ing, err := rg.store.NewIngest(r.Context())
	if err != nil {
		return nil, err
	}
	s := &session{ing: ing, repo: repo, lastUsed: time.Now()}
	rg.mu.Lock()
	rg.sessions[ing.ID()] = s
	rg.mu.Unlock()
	return s, nil
}

func (rg *Registry) writeUploadStatus(w http.ResponseWriter, repo string, s *session, status int) {
	h := w.Header()
	h.Set("Location", uploadLocation(repo, s.ing.ID()))
	end := s.ing.Size() - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
	h.Set("Docker-Upload-UUID", s.ing.ID())
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}

// session finds and locks the upload session id of repo. The caller unlocks.
func (rg *Registry) session(repo, id string) (*session, error) {
	rg.mu.Lock()
	s := rg.sessions[id]
	rg.mu.Unlock()
	if s == nil || s.repo != repo {
		return nil, errUploadUnknown("upload %q is not known in repository %s", id, repo)
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil, errUploadUnknown("upload %q is finished", id)
	}
	s.lastUsed = time.Now()
	return s, nil
}

func (rg *Registry) endSession(id string, s *session) {
	s.done = true
	rg.mu.Lock()
	delete(rg.sessions, id)
	rg.mu.Unlock()
}

func (rg *Registry) expireUploads(before time.Time) {
	rg.mu.Lock()
	var stale []string
	for id, s := range rg.sessions {
		if s.mu.TryLock() {
			if s.lastUsed.Before(before) {
				stale = append(stale, id)
				s.done = true
				_ = s.ing.Cancel()
			}
			s.mu.Unlock()
		}
	}
	for _, id := range stale {
		delete(rg.sessions, id)
	}
	rg.mu.Unlock()
}

func (rg *Registry) uploadStatus(w http.ResponseWriter, r *http.Request, repo, id string) error {
	s, err := rg.session(repo, id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	rg.writeUploadStatus(w, repo, s, http.StatusNoContent)
	return nil
}

// appendBody appends the request body to the session, honouring an optional
// Content-Range "start-end" that must continue where the upload stands.
func (rg *Registry) appendBody(w http.ResponseWriter, r *http.Request, repo string, s *session) error {
	want := int64(-1)
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, err := parseContentRange(cr)
		if err != nil {
			return err
		}
		if start != s.ing.Size() {
			h := w.Header()
			h.Set("Location", uploadLocation(repo, s.ing.ID()))
			last := s.ing.Size() - 1
			if last < 0 {
				last = 0
			}
			h.Set("Range", fmt.Sprintf("0-%d", last))
			return errRangeInvalid("chunk starts at %d, the upload has %d bytes", start, s.ing.Size())
		}
		want = end - start + 1
		if r.ContentLength >= 0 && r.ContentLength != want {
			return errRangeInvalid("Content-Range %q does not match Content-Length %d", cr, r.ContentLength)
		}
	} else if r.ContentLength >= 0 {
		want = r.ContentLength
	}
	body := io.Reader(r.Body)
	if want >= 0 {
		body = &exactReader{r: io.LimitReader(r.Body, want), want: want}
	}
	if _, err := s.ing.Append(body); err != nil {
		return errUploadInvalid("upload interrupted: %v", err)
	}
	return nil
}

func (rg *Registry) patchUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	s, err := rg.session(repo, id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := rg.appendBody(w, r, repo, s); err != nil {
		return err
	}
	rg.writeUploadStatus(w, repo, s, http.StatusAccepted)
	return nil
}

func (rg *Registry) putUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	s, err := rg.session(repo, id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	ds := r.URL.Query().Get("digest")
	if ds == "" {
		return errDigestInvalid("the digest query parameter is required to close an upload")
	}
	d, err := parseDigestRef(ds)
	if err != nil {
		return err
	}
	if r.ContentLength != 0 || r.Header.Get("Content-Range") != "" {
		if err := rg.appendBody(w, r, repo, s); err != nil {
			return err
		}
	}
	rg.endSession(id, s)
	info, err := s.ing.Commit(r.Context(), cas.Info{Digest: d, Size: -1})
	if err != nil {
		return uploadErr(err)
	}
	if err := rg.linkBlob(repo, info); err != nil {
		return err
	}
	blobCreated(w, repo, info)
	return nil
}

func (rg *Registry) cancelUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	s, err := rg.session(repo, id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	rg.endSession(id, s)
	_ = s.ing.Cancel()
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseContentRange parses "start-end" (and "bytes start-end" or
// "bytes=start-end", which some clients send).
func parseContentRange(s string) (start, end int64, err error) {
	v := strings.TrimSpace(s)
	v = strings.TrimPrefix(v, "bytes")
	v = strings.TrimLeft(v, " =")
	a, b, ok := strings.Cut(v, "-")
	if ok {
		start, err1 := strconv.ParseInt(a, 10, 64)
		end, err2 := strconv.ParseInt(strings.SplitN(b, "/", 2)[0], 10, 64)
		if err1 == nil && err2 == nil && start >= 0 && end >= start && !strings.HasPrefix(a, "+") {
			return start, end, nil
		}
	}
	return 0, 0, errRangeInvalid("invalid Content-Range %q", s)
}

// exactReader fails with io.ErrUnexpectedEOF when its source ends before
// want bytes, so a cut-off chunk is rolled back rather than kept short.
type exactReader struct {
	r    io.Reader
	want int64
	n    int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	if err == io.EOF && e.n < e.want {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// uploadErr maps a failed blob write: verification failures keep their spec
// codes, anything else (a body cut off midway) is BLOB_UPLOAD_INVALID.
func uploadErr(err error) error {
	if errors.Is(err, cas.ErrDigestMismatch) || errors.Is(err, cas.ErrSizeMismatch) || errors.Is(err, oci.ErrInvalidDigest) {
		return AsError(err)
	}
	return errUploadInvalid("upload failed: %v", err)
}
