package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fakeRegistry speaks the bearer-token flow: /v2/ answers 401 with a
// Bearer challenge; the token endpoint wants Basic credentials from
// config.json; requests with the token get content.
type fakeRegistry struct {
	srv       *httptest.Server
	manifest  []byte
	blob      []byte
	tokenHits atomic.Int64
	fail503   atomic.Int64
	cutOnce   atomic.Bool
	ranges    atomic.Int64
}

func newFake(t *testing.T) *fakeRegistry {
	f := &fakeRegistry{blob: []byte(strings.Repeat("layer-bytes-", 10000))}
	f.manifest = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`, digest.FromBytes(f.blob), len(f.blob)))
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "alice" || p != "s3cret" {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		if !strings.Contains(r.URL.Query().Get("scope"), "repository:team/app:pull") {
			http.Error(w, "bad scope "+r.URL.Query().Get("scope"), http.StatusForbidden)
			return
		}
		f.tokenHits.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{"token": "tok-123"})
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake",scope="repository:team/app:pull"`, f.srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case r.URL.Path == "/v2/team/app/manifests/v1":
			if f.fail503.Add(-1) >= 0 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", string(digest.FromBytes(f.manifest)))
			_, _ = w.Write(f.manifest)
		case r.URL.Path == "/v2/team/app/blobs/"+string(digest.FromBytes(f.blob)):
			if rg := r.Header.Get("Range"); rg != "" {
				f.ranges.Add(1)
				var start int
				fmt.Sscanf(rg, "bytes=%d-", &start)
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(f.blob)-1, len(f.blob)))
				w.Header().Set("Content-Length", fmt.Sprint(len(f.blob)-start))
				w.WriteHeader(http.StatusPartialContent)
				_, _ = w.Write(f.blob[start:])
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(f.blob)))
			if f.cutOnce.CompareAndSwap(true, false) {
				_, _ = w.Write(f.blob[:1000])
				w.(http.Flusher).Flush()
				w.(http.Flusher).Flush()
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
					}
				}
				return
			}
			_, _ = w.Write(f.blob)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func dockerConfig(t *testing.T, host string) {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

func TestBearerFlowWithDockerConfigAndEndpoint(t *testing.T) {
	f := newFake(t)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	dockerConfig(t, host)
	// the images are named ghcr.example/team/app; their traffic goes to the fake
	c := New(Options{Endpoints: map[string]string{"ghcr.example": f.srv.URL}, Backoff: time.Millisecond})
	repo := Repo{Host: "ghcr.example", Path: "team/app"}
	ctx := context.Background()
	f.fail503.Store(2) // two 503s, then content: retried
	m, err := c.GetManifest(ctx, repo, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != digest.FromBytes(f.manifest) || string(m.Body) != string(f.manifest) {
		t.Fatalf("manifest %s", m.Digest)
	}
	if f.tokenHits.Load() == 0 {
		t.Fatal("no token requested")
	}
	// a broken blob transfer is resumed from where it broke by the caller
	f.cutOnce.Store(true)
	body, size, err := c.OpenBlob(ctx, repo, digest.FromBytes(f.blob), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, rerr := io.ReadAll(body)
	body.Close()
	if rerr == nil || size != int64(len(f.blob)) {
		t.Fatalf("cut transfer: err=%v size=%d", rerr, size)
	}
	body, size, err = c.OpenBlob(ctx, repo, digest.FromBytes(f.blob), int64(len(got)))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(body)
	body.Close()
	if string(got)+string(rest) != string(f.blob) || size != int64(len(f.blob)) || f.ranges.Load() != 1 {
		t.Fatalf("resume: %d+%d bytes, size %d, ranges %d", len(got), len(rest), size, f.ranges.Load())
	}
	// authoritative 404 is not temporary
	_, err = c.GetManifest(ctx, repo, "nope")
	if err == nil || IsTemporary(err) {
		t.Fatalf("404: %v", err)
	}
}

func TestWrongCredentialsAndUnreachable(t *testing.T) {
	f := newFake(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials
	c := New(Options{Endpoints: map[string]string{"ghcr.example": f.srv.URL}, Backoff: time.Millisecond})
	if _, err := c.GetManifest(context.Background(), Repo{Host: "ghcr.example", Path: "team/app"}, "v1"); err == nil {
		t.Fatal("anonymous access to a protected registry succeeded")
	}
	c = New(Options{Endpoints: map[string]string{"gone.example": "http://127.0.0.1:1"}, Backoff: time.Millisecond, Attempts: 2})
	_, err := c.GetManifest(context.Background(), Repo{Host: "gone.example", Path: "a/b"}, "v1")
	if err == nil || !IsTemporary(err) {
		t.Fatalf("unreachable upstream: %v (temporary=%v)", err, IsTemporary(err))
	}
}

// TestUnknownHostIsNotRetried: a host whose name does not resolve is an
// unreachable upstream (temporary: the cache falls back on what it holds),
// asked once, not four times with a backoff.
func TestUnknownHostIsNotRetried(t *testing.T) {
	var dials atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: "registry.example", IsNotFound: true}}
	}}
	c := New(Options{Transport: tr, Backoff: time.Millisecond})
	_, err := c.GetManifest(context.Background(), Repo{Host: "registry.example", Path: "a/b"}, "v1")
	if err == nil || !IsTemporary(err) {
		t.Fatalf("unknown host: %v (temporary=%v)", err, IsTemporary(err))
	}
	// one ping per scheme tried (https, then http), and no retry
	if n := dials.Load(); n > 2 {
		t.Errorf("an unknown host was dialled %d times", n)
	}
}

func TestParseEndpointAndSplitRepo(t *testing.T) {
	for _, bad := range []string{"docker.io", "=http://x", "docker.io=ftp://x", "docker.io=http://x/path"} {
		if _, _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	h, u, err := ParseEndpoint("index.docker.io=http://127.0.0.1:5000")
	if err != nil || h != "docker.io" || u != "http://127.0.0.1:5000" {
		t.Fatalf("%s %s %v", h, u, err)
	}
	if r, ok := SplitRepo("docker.io/library/nginx"); !ok || r.Host != "docker.io" || r.Path != "library/nginx" {
		t.Fatal(r)
	}
	if _, ok := SplitRepo("library/nginx"); ok {
		t.Fatal("a name without a host split")
	}
	if r, ok := SplitRepo("localhost/x"); !ok || r.Host != "localhost" {
		t.Fatal(r)
	}
}
