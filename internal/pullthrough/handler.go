package pullthrough

import (
	"errors"
	"net/http"
	"strings"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/httpx"
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
		if !ok || (rt.Kind != registry.RouteManifest && rt.Kind != registry.RouteBlob) {
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
		case registry.RouteManifest:
			if _, err := c.resolve(r.Context(), full, rt.Ref); err != nil {
				c.fail(w, r, rt.Kind, err)
				return
			}
		case registry.RouteBlob:
			d, err := cas.ParseDigest(rt.Ref)
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
	var re *registry.Error
	if errors.As(err, &re) {
		return re
	}
	notFound := errors.Is(err, upstream.ErrNotFound) || errors.Is(err, ErrNotCached) || errors.Is(err, cas.ErrNotFound)
	if notFound {
		code := "MANIFEST_UNKNOWN"
		if kind == registry.RouteBlob {
			code = "BLOB_UNKNOWN"
		}
		return &registry.Error{Status: http.StatusNotFound, Code: code, Message: err.Error()}
	}
	var ue *upstream.Error
	if errors.As(err, &ue) {
		if ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden {
			return &registry.Error{Status: http.StatusBadGateway, Code: "DENIED", Message: "upstream refused: " + err.Error()}
		}
		return &registry.Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE", Message: err.Error()}
	}
	if strings.Contains(err.Error(), "invalid") {
		return &registry.Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE", Message: err.Error()}
	}
	return registry.AsError(err)
}
