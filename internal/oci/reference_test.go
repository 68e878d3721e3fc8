package oci

import (
	"strings"
	"testing"
)

func TestNormalizeReference(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	d512 := "sha512:" + strings.Repeat("b", 128)
	cases := []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:alpine", "docker.io/library/nginx:alpine"},
		{"library/nginx:alpine", "docker.io/library/nginx:alpine"},
		{"docker.io/nginx:alpine", "docker.io/library/nginx:alpine"},
		{"docker.io/library/nginx:alpine", "docker.io/library/nginx:alpine"},
		{"index.docker.io/x/y:1", "docker.io/x/y:1"},
		{"index.docker.io/nginx", "docker.io/library/nginx:latest"},
		{"bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"},
		{"ghcr.io/a/b@" + d, "ghcr.io/a/b@" + d},
		{"ghcr.io/a/b", "ghcr.io/a/b:latest"},
		{"ghcr.io/a/b:v1.0.0", "ghcr.io/a/b:v1.0.0"},
		{"ghcr.io/a/b:v1@" + d, "ghcr.io/a/b:v1@" + d},
		{"nginx:alpine@" + d, "docker.io/library/nginx:alpine@" + d},
		{"nginx@" + d, "docker.io/library/nginx@" + d},
		{"quay.io/a/b@" + d512, "quay.io/a/b@" + d512},
		{"localhost:5000/x", "localhost:5000/x:latest"},
		{"localhost:5000/x:1", "localhost:5000/x:1"},
		{"127.0.0.1:36060/docker.io/library/nginx:alpine", "127.0.0.1:36060/docker.io/library/nginx:alpine"},
		{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"},
		{"gcr.io/a/b/c/d:e", "gcr.io/a/b/c/d:e"},
		// hosts are case-insensitive; Docker Hub's in any case gets library/
		{"doCker.io/0", "docker.io/library/0:latest"},
		{"GHCR.io/a/b:T", "ghcr.io/a/b:T"},
		{"Index.Docker.IO/nginx", "docker.io/library/nginx:latest"},
	}
	for _, c := range cases {
		got, err := NormalizeReference(c.in)
		if err != nil || got != c.want {
			t.Errorf("NormalizeReference(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		// normalizing is idempotent
		if again, err := NormalizeReference(got); err != nil || again != got {
			t.Errorf("NormalizeReference(%q) = %q, %v; want it unchanged", got, again, err)
		}
	}
	for _, bad := range []string{
		"", "Nginx", "nginx:", "nginx@", "nginx@sha256:abc", "nginx@md5:" + strings.Repeat("a", 32),
		"nginx:a@b@" + d, "nginx:bad/tag", "nginx:-x", "nginx:.x", "nginx:" + strings.Repeat("t", 129), "a b", "@" + d, "ghcr.io/",
	} {
		if got, err := NormalizeReference(bad); err == nil {
			t.Errorf("NormalizeReference(%q) = %q, want an error", bad, got)
		}
	}
}

// FuzzNormalizeReference checks that NormalizeReference never panics and is idempotent.
func FuzzNormalizeReference(f *testing.F) {
	for _, seed := range []string{"nginx", "nginx:alpine", "index.docker.io/x/y:1", "ghcr.io/a/b:t@" + "sha256:" + strings.Repeat("a", 64), "localhost:5000/a", "@", ":", "doCker.io/0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeReference(s)
		if err != nil {
			return
		}
		again, err := NormalizeReference(n)
		if err != nil || again != n {
			t.Fatalf("NormalizeReference(%q) = %q; again = %q, %v", s, n, again, err)
		}
	})
}
