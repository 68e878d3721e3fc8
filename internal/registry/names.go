package registry

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/octohelm/crpe/internal/oci"
)

// Route kinds of the /v2 API.
const (
	RoutePing      = "ping"
	RouteCatalog   = "catalog"
	RouteTags      = "tags"
	RouteManifest  = "manifest"
	RouteBlob      = "blob"
	RouteUploads   = "uploads" // start an upload
	RouteUpload    = "upload"  // an upload session
	RouteReferrers = "referrers"
)

// Route is a parsed /v2 request path.
type Route struct {
	Kind string
	Name string // repository, as in the path (before ?ns= is applied)
	Ref  string // manifest reference, blob or subject digest, or upload id
}

// ParseRoute parses the path of a /v2 request (url-decoded, starting with
// "/v2/"). ok is false for paths that are not part of the API.
func ParseRoute(path string) (Route, bool) {
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		if path == "/v2" {
			return Route{Kind: RoutePing}, true
		}
		return Route{}, false
	}
	if rest == "" {
		return Route{Kind: RoutePing}, true
	}
	if rest == "_catalog" {
		return Route{Kind: RouteCatalog}, true
	}
	rt, ok := parseRepoRoute(strings.Split(rest, "/"))
	if !ok || rt.Name == "" {
		return Route{}, false
	}
	return rt, true
}

func parseRepoRoute(seg []string) (Route, bool) {
	n := len(seg)
	name := func(k int) string { return strings.Join(seg[:n-k], "/") }
	switch {
	case n >= 3 && seg[n-1] == "" && seg[n-2] == "uploads" && seg[n-3] == "blobs":
		return Route{Kind: RouteUploads, Name: strings.Join(seg[:n-3], "/")}, n > 3
	case n >= 3 && seg[n-2] == "uploads" && seg[n-3] == "blobs" && seg[n-1] != "":
		return Route{Kind: RouteUpload, Name: strings.Join(seg[:n-3], "/"), Ref: seg[n-1]}, n > 3
	case n >= 2 && seg[n-1] == "uploads" && seg[n-2] == "blobs":
		// POST /v2/<name>/blobs/uploads without the trailing slash
		return Route{Kind: RouteUploads, Name: name(2)}, n > 2
	case n >= 3 && seg[n-2] == "tags" && seg[n-1] == "list":
		return Route{Kind: RouteTags, Name: name(2)}, true
	case n >= 3 && seg[n-2] == "manifests":
		return Route{Kind: RouteManifest, Name: name(2), Ref: seg[n-1]}, true
	case n >= 3 && seg[n-2] == "blobs":
		return Route{Kind: RouteBlob, Name: name(2), Ref: seg[n-1]}, true
	case n >= 3 && seg[n-2] == "referrers":
		return Route{Kind: RouteReferrers, Name: name(2), Ref: seg[n-1]}, true
	}
	return Route{}, false
}

// Repository resolves the repository a request addresses: the path's name,
// prefixed with the ?ns= host when containerd sends one. ns is the
// normalized namespace, "" when none was given.
func Repository(pathName string, q url.Values) (repo, ns string, err error) {
	if raw, ok := q["ns"]; ok && len(raw) > 0 && raw[0] != "" {
		ns = oci.NormalizeNamespace(raw[0])
		if ns == "" {
			return "", "", errNameInvalid("invalid ns parameter %q", raw[0])
		}
		pathName = ns + "/" + pathName
	}
	if !oci.ValidName(pathName) {
		return "", ns, errNameInvalid("invalid repository name %q", pathName)
	}
	return pathName, ns, nil
}

// DefaultNamespace serves a /v2 request that names no registry host (its
// first path component is not a host) and has no ?ns= as a request for host:
// it adds ns=host, so that the registry and the pull-through cache read
// /v2/library/nginx/... as docker.io/library/nginx. This is what Docker's
// registry-mirrors sends, for Docker Hub's images only. An empty host turns
// it off.
func DefaultNamespace(host string, next http.Handler) http.Handler {
	host = oci.NormalizeNamespace(host)
	if host == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := ParseRoute(r.URL.Path)
		q := r.URL.Query()
		if ok && rt.Name != "" && q.Get("ns") == "" {
			first, _, _ := strings.Cut(rt.Name, "/")
			if !oci.IsHost(first) {
				r2 := r.Clone(r.Context())
				q.Set("ns", host)
				r2.URL.RawQuery = q.Encode()
				r = r2
			}
		}
		next.ServeHTTP(w, r)
	})
}
