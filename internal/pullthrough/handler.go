package pullthrough

import (
	"errors"
	"net/http"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/upstream"
)

// Handler puts the cache in front of the registry: GET and HEAD of
// manifests and blobs of upstream repositories (/v2/<host>/<repo>/... or
// /v2/<repo>/...?ns=<host>) fill the cache first; everything else, and every
// answer from the cache, is served by next.
func (c *Cache) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		rt, ok := registry.ParseRoute(r.URL.Path)
		if !ok || (rt.Kind != registry.RouteManifest && rt.Kind != registry.RouteBlob && rt.Kind != registry.RouteTags) {
			next.ServeHTTP(w, r)
			return
		}
		full, ns, err := registry.Repository(rt.Name, r.URL.Query())
		if err != nil || !IsUpstream(full) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
		if ns != "" {
			w.Header().Set("OCI-Namespace", ns)
		}
		switch rt.Kind {
		case registry.RouteTags:
			if c.serveTags(w, r, full) {
				return
			}
		case registry.RouteManifest:
			if _, err := c.resolve(r.Context(), full, rt.Ref); err != nil {
				c.fail(w, r, rt.Kind, err)
				return
			}
		case registry.RouteBlob:
			d, err := oci.ParseDigest(rt.Ref)
			if err != nil {
				next.ServeHTTP(w, r)
				return
			}
			httpx.SetRoute(r, "blob")
			handled, err := c.ServeBlob(w, r, full, d)
			if err != nil {
				c.fail(w, r, rt.Kind, err)
				return
			}
			if handled {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Cache) fail(w http.ResponseWriter, r *http.Request, kind string, err error) {
	httpx.SetRoute(r, kind)
	httpx.SetError(r, err)
	registry.WriteError(w, r, mapError(kind, err))
}

// mapError turns cache and upstream failures into registry errors.
func mapError(kind string, err error) error {
	if errors.Is(err, ErrUpstreamInvalid) {
		return &registry.Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE", Message: err.Error()}
	}
	var re *registry.Error
	if errors.As(err, &re) || errors.Is(err, oci.ErrInvalidDigest) {
		return registry.AsError(err)
	}
	unknown := "MANIFEST_UNKNOWN"
	if kind == registry.RouteBlob {
		unknown = "BLOB_UNKNOWN"
	}
	if errors.Is(err, upstream.ErrNotFound) || errors.Is(err, ErrNotCached) || errors.Is(err, cas.ErrNotFound) {
		return &registry.Error{Status: http.StatusNotFound, Code: unknown, Message: err.Error()}
	}
	var ue *upstream.Error
	if errors.As(err, &ue) {
		switch {
		case ue.Status == 0 && ue.Temporary && (kind == registry.RouteManifest || kind == registry.RouteBlob):
			// not cached and the upstream cannot be reached: unknown here,
			// as the distribution spec (and the conformance suite) expect,
			// and what containerd falls back on to the next host; the
			// detail says why
			return &registry.Error{Status: http.StatusNotFound, Code: unknown, Message: "not in the cache, and the upstream cannot be reached",
				Detail: map[string]string{"reason": err.Error()}}
		case ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden:
			return &registry.Error{Status: http.StatusBadGateway, Code: "DENIED", Message: "upstream refused: " + err.Error()}
		}
		return &registry.Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE", Message: err.Error()}
	}
	return registry.AsError(err)
}

// serveTags answers a tag listing of an upstream repository with the
// upstream's tags (it is the authority), paginated like the registry does.
// It returns false to let the registry answer from the cache: offline, or
// when the upstream cannot be reached.
func (c *Cache) serveTags(w http.ResponseWriter, r *http.Request, full string) bool {
	if c.o.Offline {
		return false
	}
	repo, _ := upstream.SplitRepo(full)
	tags, err := c.client().Tags(r.Context(), repo)
	if err != nil {
		if upstream.IsTemporary(err) {
			c.Stats.Fallbacks.Add(1)
			return false
		}
		c.fail(w, r, registry.RouteTags, err)
		return true
	}
	httpx.SetRoute(r, registry.RouteTags)
	if err := registry.WriteTagList(w, r, full, tags); err != nil {
		c.fail(w, r, registry.RouteTags, err)
	}
	return true
}
