// Package toregistry tests `crpe import --to-registry` against real
// registries: CNCF distribution v3 (htpasswd auth and TLS from a CA the test
// makes) and Debian's docker-registry 2.8 (plain HTTP), through a TCP proxy
// that counts bytes and cuts a connection once, and through an HTTP proxy
// that answers some requests itself (5xx, 403 DENIED, 507) to play the
// faults of a site registry.
package toregistry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type result = testenv.Result

// crpe runs the binary with env added to the test's environment, less its
// CRPE_* and DOCKER_CONFIG variables, and HOME set to an empty folder (no
// Docker credentials but the test's).
func crpe(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx := testenv.WaitCtx(t, 3*time.Minute)
	return testenv.RunCrpe(ctx, t, testenv.CrpeOptions{Drop: []string{"DOCKER_CONFIG", "HOME"},
		Env: append([]string{"HOME=" + t.TempDir()}, env...)}, args...)
}

// push runs crpe import FILE --to-registry ... --json and decodes its summary.
func push(t *testing.T, env []string, args ...string) registrypush.Result {
	t.Helper()
	r := crpe(t, env, append([]string{"import"}, append(args, "--json")...)...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	var res registrypush.Result
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	return res
}

// fixture is seedtest's demo package (an index of linux/amd64 and
// linux/arm64 with a 5 MiB layer, and a single image sharing a layer with
// it), with the index holding only those two children, written in crpe's
// layout to a file.
func fixture(t *testing.T, seed uint64) (*seedtest.Package, string) {
	t.Helper()
	p := seedtest.Demo("demo", "1.0.0", false, seed)
	p.Images[0].Top = seedtest.NewIndex(false, p.Images[0].Children)
	f := filepath.Join(t.TempDir(), "demo-1.0.0.kubepkg.tgz")
	if err := os.WriteFile(f, testenv.CrpeArchive(t, p), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, f
}

// layerBytes is the size of the package's configs and layers.
func layerBytes(p *seedtest.Package) int64 {
	var n int64
	for _, b := range p.Blobs() {
		if !strings.Contains(b.Desc.MediaType, "manifest") && !strings.Contains(b.Desc.MediaType, "index") {
			n += b.Desc.Size
		}
	}
	return n
}

func tagDigest(t *testing.T, c *http.Client, base, repo, tag string) string {
	return testenv.TagDigest(t, c, base, repo, tag)
}

// checkImages is testenv.CheckImages with the repositories named as
// registrypush names them under prefix.
func checkImages(t *testing.T, c *http.Client, base, prefix string, n registrypush.Naming, p *seedtest.Package) {
	t.Helper()
	tg := registrypush.Target{Host: "x", Prefix: prefix}
	testenv.CheckImages(t, c, base, func(name string) string {
		repo, err := tg.Repository(name, n)
		if err != nil {
			t.Fatal(err)
		}
		return repo
	}, p)
}

// faults is an HTTP reverse proxy in front of a registry: answer, when it
// returns a status, answers a request itself (an OCI error body with code);
// it counts the bytes of request bodies it forwards.
type faults struct {
	URL    string
	Host   string
	answer atomic.Value // func(*http.Request) (int, string)
	Up     atomic.Int64
	mu     sync.Mutex
	reqs   []string
}

func startFaults(t *testing.T, target string) *faults {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	f := &faults{}
	f.answer.Store(func(*http.Request) (int, string) { return 0, "" })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if code, ocicode := f.answer.Load().(func(*http.Request) (int, string))(r); code != 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"answered by the test's proxy"}]}`, ocicode)
			return
		}
		r.Body = countingBody{r.Body, &f.Up}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	f.Host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

func (f *faults) set(fn func(*http.Request) (int, string)) { f.answer.Store(fn) }

func (f *faults) count(method, part string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.reqs {
		if strings.HasPrefix(r, method+" ") && strings.Contains(r, part) {
			n++
		}
	}
	return n
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var _ = context.Background
