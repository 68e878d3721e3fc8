package oci

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	good := []string{"a", "library/nginx", "docker.io/library/nginx", "a-b/c__d/e.f", "127.0.0.1:5000/x", "localhost:5000/a/b", "a--b"}
	bad := []string{"", "A", "a/", "/a", "a//b", "a/../b", "..", "a:5000", "a_/b", "-a", strings.Repeat("a", 256), "a b", "a/B"}
	for _, n := range good {
		if !ValidName(n) {
			t.Errorf("%q rejected", n)
		}
	}
	for _, n := range bad {
		if ValidName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "docker.io/library/nginx", "127.0.0.1:5000/x", "../x", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		if !ValidName(n) {
			return
		}
		if len(n) > MaxNameLength || strings.HasPrefix(n, "/") || strings.HasSuffix(n, "/") || strings.Contains(n, "//") ||
			strings.Contains(n, "..") || strings.ContainsAny(n, "\\ \x00?#%") {
			t.Fatalf("unsafe name %q accepted", n)
		}
		if NormalizeNamespace(n) != "" && strings.Contains(n, "/") {
			t.Fatalf("namespace with a slash accepted: %q", n)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add("application/vnd.oci.image.manifest.v1+json", `{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1},"layers":[]}`)
	f.Add("", `{"schemaVersion":2,"manifests":[]}`)
	f.Add("application/vnd.docker.distribution.manifest.v1+json", `{"schemaVersion":1,"fsLayers":[]}`)
	f.Fuzz(func(t *testing.T, ct, body string) {
		m, err := ParseManifest(ct, []byte(body))
		if err != nil {
			return
		}
		if !IsManifest(m.MediaType) {
			t.Fatalf("accepted unknown media type %q", m.MediaType)
		}
		for _, d := range m.Required() {
			if err := d.Digest.Validate(); err != nil {
				t.Fatalf("accepted invalid digest %q", d.Digest)
			}
		}
	})
}
