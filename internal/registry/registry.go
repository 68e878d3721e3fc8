// Package registry serves the OCI Distribution API (spec v1.1) over a
// cas.IngestStore and a repodb index: pulls, pushes (monolithic, chunked,
// streamed, cross-repository and anonymous mounts), tags, catalog, referrers
// and deletes, with containerd's ?ns= mirror dialect. Handlers return errors;
// WriteError maps them to spec codes in one place. Authentication is not done
// here (see package auth); pushes are refused unless Options.AllowPush.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/repodb"
)

// Options tune a Registry.
type Options struct {
	// AllowPush enables the write half of the API. Without it every write
	// answers 405 UNSUPPORTED.
	AllowPush bool
	// AllowSparseManifests takes image manifests whose config or layers are
	// not all present (the OCI conformance suite's sparse data needs it).
	// Off, such a PUT answers MANIFEST_BLOB_UNKNOWN. Index children, a
	// subject and non-distributable layers may be absent either way.
	AllowSparseManifests bool
	// UploadIdleTimeout drops upload sessions with no activity for this long
	// (default 1h).
	UploadIdleTimeout time.Duration
	// MaxUploads bounds concurrent upload sessions (default 1024).
	MaxUploads int
}

// Registry is the http.Handler of /v2.
type Registry struct {
	store cas.IngestStore
	db    *repodb.DB
	opts  Options

	mu       sync.Mutex
	sessions map[string]*session

	manifests *manifestCache
}

// New returns a registry over store and db.
func New(store cas.IngestStore, db *repodb.DB, opts Options) *Registry {
	if opts.UploadIdleTimeout <= 0 {
		opts.UploadIdleTimeout = time.Hour
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = 1024
	}
	return &Registry{store: store, db: db, opts: opts, sessions: map[string]*session{}, manifests: newManifestCache(8 << 20)}
}

// Run expires idle upload sessions until ctx is done.
func (rg *Registry) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rg.mu.Lock()
			for id, s := range rg.sessions {
				s.mu.Lock()
				_ = s.ing.Cancel()
				s.mu.Unlock()
				delete(rg.sessions, id)
			}
			rg.mu.Unlock()
			return
		case <-t.C:
			rg.expireUploads(time.Now().Add(-rg.opts.UploadIdleTimeout))
		}
	}
}

// IsWrite reports whether r changes registry state.
func IsWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func (rg *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	rt, ok := ParseRoute(r.URL.Path)
	if !ok {
		httpx.SetRoute(r, "v2_unknown")
		WriteError(w, r, newErr(http.StatusNotFound, "NAME_UNKNOWN", "no such API endpoint: %s", r.URL.Path))
		return
	}
	httpx.SetRoute(r, rt.Kind)
	if err := rg.serve(w, r, rt); err != nil {
		httpx.SetError(r, err)
		WriteError(w, r, err)
	}
}

func (rg *Registry) serve(w http.ResponseWriter, r *http.Request, rt Route) error {
	if IsWrite(r) && !rg.opts.AllowPush {
		return errUnsupported("this registry is read-only: pushes are disabled (start with --allow-push)")
	}
	switch rt.Kind {
	case RoutePing:
		if !isRead(r) {
			return methodNotAllowed(r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return nil
	case RouteCatalog:
		if !isRead(r) {
			return methodNotAllowed(r)
		}
		return rg.catalog(w, r)
	}
	repo, ns, err := Repository(rt.Name, r.URL.Query())
	if err != nil {
		return err
	}
	if ns != "" {
		w.Header().Set("OCI-Namespace", ns)
	}
	switch rt.Kind {
	case RouteTags:
		if !isRead(r) {
			return methodNotAllowed(r)
		}
		return rg.tags(w, r, repo)
	case RouteManifest:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return rg.getManifest(w, r, repo, rt.Ref)
		case http.MethodPut:
			return rg.putManifest(w, r, repo, rt.Ref)
		case http.MethodDelete:
			return rg.deleteManifest(w, r, repo, rt.Ref)
		}
	case RouteBlob:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return rg.getBlob(w, r, repo, rt.Ref)
		case http.MethodDelete:
			return rg.deleteBlob(w, r, repo, rt.Ref)
		}
	case RouteUploads:
		if r.Method == http.MethodPost {
			return rg.startUpload(w, r, repo)
		}
	case RouteUpload:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return rg.uploadStatus(w, r, repo, rt.Ref)
		case http.MethodPatch:
			return rg.patchUpload(w, r, repo, rt.Ref)
		case http.MethodPut:
			return rg.putUpload(w, r, repo, rt.Ref)
		case http.MethodDelete:
			return rg.cancelUpload(w, r, repo, rt.Ref)
		}
	case RouteReferrers:
		if isRead(r) {
			return rg.referrers(w, r, repo, rt.Ref)
		}
	}
	return methodNotAllowed(r)
}

func methodNotAllowed(r *http.Request) error {
	return errUnsupported("method %s is not supported on %s", r.Method, r.URL.Path)
}

// isRead tells GET and HEAD, the methods of the read-only routes.
func isRead(r *http.Request) bool {
	return r.Method == http.MethodGet || r.Method == http.MethodHead
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, contentType string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// pageParams reads the n and last query parameters of list endpoints.
func pageParams(r *http.Request) (n int, last string, err error) {
	q := r.URL.Query()
	last = q.Get("last")
	n = -1
	if s := q.Get("n"); s != "" {
		v, perr := strconv.Atoi(s)
		if perr != nil || v < 0 {
			return 0, "", newErr(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid n %q: want a number >= 0", s)
		}
		n = v
	}
	return n, last, nil
}

func (rg *Registry) tags(w http.ResponseWriter, r *http.Request, repo string) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	var tags []string
	var more bool
	err = rg.db.View(func(tx *repodb.Tx) error {
		if !tx.RepoExists(repo) {
			return errNameUnknown("repository %s is not known", repo)
		}
		if n == 0 {
			tags = []string{}
			return nil
		}
		tags, more, err = tx.Tags(repo, last, n)
		return err
	})
	if err != nil {
		return err
	}
	if more && len(tags) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, repo, n, tags[len(tags)-1]))
	}
	return writeJSON(w, r, http.StatusOK, "application/json", map[string]any{"name": repo, "tags": tags})
}

// WriteTagList answers a tag listing from a sorted list of all tags,
// honouring n and last like the registry's own listing.
func WriteTagList(w http.ResponseWriter, r *http.Request, repo string, all []string) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	i := 0
	if last != "" {
		i = sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
	}
	tags := all[i:]
	more := false
	if n >= 0 && len(tags) > n {
		tags, more = tags[:n], true
	}
	if tags == nil {
		tags = []string{}
	}
	if more && len(tags) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, repo, n, tags[len(tags)-1]))
	}
	return writeJSON(w, r, http.StatusOK, "application/json", map[string]any{"name": repo, "tags": tags})
}

func (rg *Registry) catalog(w http.ResponseWriter, r *http.Request) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	repos := []string{}
	var more bool
	if n != 0 {
		_ = rg.db.View(func(tx *repodb.Tx) error {
			repos, more = tx.Repositories(last, n)
			return nil
		})
	}
	if more && len(repos) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?n=%d&last=%s>; rel="next"`, n, repos[len(repos)-1]))
	}
	return writeJSON(w, r, http.StatusOK, "application/json", map[string]any{"repositories": repos})
}

func isNotFound(err error) bool {
	return errors.Is(err, cas.ErrNotFound) || errors.Is(err, repodb.ErrBlobNotFound) ||
		errors.Is(err, repodb.ErrManifestNotFound) || errors.Is(err, repodb.ErrTagNotFound) ||
		errors.Is(err, repodb.ErrRepoNotFound)
}
