package registry

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/octohelm/crpe/internal/oci"
)

func TestParseRoute(t *testing.T) {
	cases := []struct {
		path string
		want Route
		ok   bool
	}{
		{"/v2/", Route{Kind: RoutePing}, true},
		{"/v2", Route{Kind: RoutePing}, true},
		{"/v2/_catalog", Route{Kind: RouteCatalog}, true},
		{"/v2/library/nginx/manifests/alpine", Route{RouteManifest, "library/nginx", "alpine"}, true},
		{"/v2/docker.io/library/nginx/blobs/sha256:abc", Route{RouteBlob, "docker.io/library/nginx", "sha256:abc"}, true},
		{"/v2/a/blobs/uploads/", Route{RouteUploads, "a", ""}, true},
		{"/v2/a/blobs/uploads", Route{RouteUploads, "a", ""}, true},
		{"/v2/a/b/blobs/uploads/xyz", Route{RouteUpload, "a/b", "xyz"}, true},
		{"/v2/a/tags/list", Route{RouteTags, "a", ""}, true},
		{"/v2/a/referrers/sha256:x", Route{RouteReferrers, "a", "sha256:x"}, true},
		{"/v2/manifests/blobs/manifests/latest", Route{RouteManifest, "manifests/blobs", "latest"}, true},
		{"/v2/blobs/uploads/", Route{}, false},
		{"/v3/a/manifests/x", Route{}, false},
		{"/v2/a", Route{}, false},
	}
	for _, c := range cases {
		got, ok := ParseRoute(c.path)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%s: got %+v %v, want %+v %v", c.path, got, ok, c.want, c.ok)
		}
	}
}

func TestRepositoryNS(t *testing.T) {
	for _, c := range []struct{ name, ns, want string }{
		{"library/nginx", "docker.io", "docker.io/library/nginx"},
		{"library/nginx", "registry-1.docker.io", "docker.io/library/nginx"},
		{"library/nginx", "INDEX.DOCKER.IO", "docker.io/library/nginx"},
		{"x/y", "127.0.0.1:5000", "127.0.0.1:5000/x/y"},
		{"library/nginx", "", "library/nginx"},
	} {
		q := url.Values{}
		if c.ns != "" {
			q.Set("ns", c.ns)
		}
		got, _, err := Repository(c.name, q)
		if err != nil || got != c.want {
			t.Errorf("%s ns=%s: %q %v", c.name, c.ns, got, err)
		}
	}
	if _, _, err := Repository("a", url.Values{"ns": {"bad/host"}}); err == nil {
		t.Error("bad ns accepted")
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/", "/v2/x/blobs/uploads/id", "/v2/a/tags/list", "/v2/_catalog", "/v2/a/referrers/sha256:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, ok := ParseRoute(p)
		if !ok {
			return
		}
		if !strings.HasPrefix(p, "/v2") {
			t.Fatalf("non-/v2 path %q routed", p)
		}
		if r.Kind != RoutePing && r.Kind != RouteCatalog && r.Name == "" {
			t.Fatalf("%q: empty name for %s", p, r.Kind)
		}
		if oci.ValidName(r.Name) && strings.Contains(r.Name, "..") {
			t.Fatalf("%q: name with .. validated", p)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-99", "bytes 0-99", "bytes=5-10", "10-5", "-1-3", "a-b", "0-", "99999999999999999999-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := parseContentRange(s)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("%q parsed to %d-%d", s, start, end)
		}
	})
}

func FuzzCheckRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=5-", "bytes=0-1,3-4", "bytes=9-1", "items=0-1", "bytes=-0"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		_ = checkRange(h, size) // must not panic
	})
}

func TestDefaultNamespace(t *testing.T) {
	var got string
	h := DefaultNamespace("docker.io", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Path + "?" + r.URL.RawQuery
	}))
	for in, want := range map[string]string{
		"/v2/library/nginx/manifests/alpine":            "/v2/library/nginx/manifests/alpine?ns=docker.io",
		"/v2/library/nginx/manifests/alpine?ns=ghcr.io": "/v2/library/nginx/manifests/alpine?ns=ghcr.io",
		"/v2/docker.io/library/nginx/manifests/alpine":  "/v2/docker.io/library/nginx/manifests/alpine?",
		"/v2/127.0.0.1:5000/x/blobs/sha256:" + hex64:    "/v2/127.0.0.1:5000/x/blobs/sha256:" + hex64 + "?",
		"/v2/localhost/x/tags/list":                     "/v2/localhost/x/tags/list?",
		"/v2/":                                          "/v2/?",
		"/v2/_catalog":                                  "/v2/_catalog?",
		"/v2/nginx/blobs/sha256:" + hex64 + "?digest=x": "/v2/nginx/blobs/sha256:" + hex64 + "?digest=x&ns=docker.io",
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, in, nil))
		if got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
	if off := DefaultNamespace("", http.NotFoundHandler()); off == nil {
		t.Error("an empty default registry gives no handler")
	}
}

var hex64 = strings.Repeat("a", 64)
