// Package toregistry tests `crpe import --to-registry` against real
// registries: CNCF distribution v3 (htpasswd auth and TLS from a CA the test
// makes) and Debian's docker-registry 2.8 (plain HTTP), through a TCP proxy
// that counts bytes and cuts a connection once, and through an HTTP proxy
// that answers some requests itself (5xx, 403 DENIED, 507) to play the
// faults of a site registry.
package toregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
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

type result struct {
	args           []string
	stdout, stderr string
	code           int
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("crpe %s: exit %d (%v)\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.err, r.stdout, r.stderr)
}

// crpe runs the binary with env added to the test's environment, less its
// CRPE_* and DOCKER_CONFIG variables, and HOME set to an empty folder (no
// Docker credentials but the test's).
func crpe(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx := testenv.WaitCtx(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CRPE_") && !strings.HasPrefix(e, "DOCKER_CONFIG=") && !strings.HasPrefix(e, "HOME=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{args: args, stdout: so.String(), stderr: se.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

// push runs crpe import FILE --to-registry ... --json and decodes its summary.
func push(t *testing.T, env []string, args ...string) registrypush.Result {
	t.Helper()
	r := crpe(t, env, append([]string{"import"}, append(args, "--json")...)...)
	if r.err != nil {
		t.Fatalf("%s", r)
	}
	var res registrypush.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
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

// tagDigest is the digest repo:tag has in the registry at base ("" when
// it has no such tag).
func tagDigest(t *testing.T, c *http.Client, base, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// blobDigestOK fetches every blob of p from repo and checks its bytes.
func checkImages(t *testing.T, c *http.Client, base, prefix string, n registrypush.Naming, p *seedtest.Package) {
	t.Helper()
	tg := registrypush.Target{Host: "x", Prefix: prefix}
	for _, im := range p.Images {
		repo, err := tg.Repository(im.Name, n)
		if err != nil {
			t.Fatal(err)
		}
		if got := tagDigest(t, c, base, repo, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("%s:%s is %q, want %s", repo, im.Tag, got, im.Top.Desc.Digest)
		}
		for _, ch := range im.Children {
			for _, b := range append([]seedtest.Blob{ch.Blob, ch.Config}, ch.Layers...) {
				kind := "blobs"
				if b.Desc.Digest == ch.Desc.Digest {
					kind = "manifests"
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/"+kind+"/"+string(b.Desc.Digest), nil)
				req.Header.Set("Accept", b.Desc.MediaType)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(body, b.Data) {
					t.Errorf("%s %s: %d, %d bytes, want the archive's %d", repo, b.Desc.Digest, resp.StatusCode, len(body), len(b.Data))
				}
			}
		}
	}
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
