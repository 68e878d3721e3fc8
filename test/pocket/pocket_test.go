// Package pocket tests `crpe serve` as a pull-through cache in front of a
// real CNCF distribution (Debian's docker-registry) on loopback.
package pocket

import (
	"bytes"
	"context"
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
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

func startPocket(t *testing.T, upstream string, extra ...string) *testenv.Proc {
	t.Helper()
	addr := testenv.FreeAddr(t)
	data := t.TempDir()
	args := append([]string{"serve", "--addr", addr, "--data", data, "--log-format", "text",
		"--registry-endpoint", "docker.io=" + upstream}, extra...)
	p := testenv.Start(t, args...)
	p.Addr, p.URL, p.Data = addr, "http://"+addr, data
	testenv.WaitHealthy(t, p)
	return p
}

func get(t *testing.T, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", u, err)
	}
	return resp, b
}

var amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
var arm64 = ocispec.Platform{OS: "linux", Architecture: "arm64"}

func TestPullThroughIndexAndDialect(t *testing.T) {
	up := testenv.StartDistribution(t)
	shared := testenv.RandomLayer(t, 100<<10, false)
	a := testenv.NewImage(t, amd64, []testenv.Blob{shared, testenv.RandomLayer(t, 50<<10, false)}, false)
	b := testenv.NewImage(t, arm64, []testenv.Blob{shared}, false)
	idx := testenv.NewIndex([]testenv.Image{a, b}, false)
	testenv.PushIndex(t, up.URL, "library/app", "1.0", []testenv.Image{a, b}, idx)
	p := startPocket(t, up.URL)

	resp, body := get(t, p.URL+"/v2/docker.io/library/app/manifests/1.0", "Accept", ocispec.MediaTypeImageIndex)
	if resp.StatusCode != 200 || !bytes.Equal(body, idx.Data) || resp.Header.Get("Docker-Content-Digest") != string(idx.Desc.Digest) {
		t.Fatalf("index via full name: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, p.URL+"/v2/library/app/manifests/"+string(a.Manifest.Desc.Digest)+"?ns=docker.io")
	if resp.StatusCode != 200 || !bytes.Equal(body, a.Manifest.Data) || resp.Header.Get("OCI-Namespace") != "docker.io" {
		t.Fatalf("child via ns: %d %s", resp.StatusCode, body)
	}
	for _, l := range a.Layers {
		resp, body = get(t, p.URL+"/v2/library/app/blobs/"+string(l.Desc.Digest)+"?ns=registry-1.docker.io")
		if resp.StatusCode != 200 || !bytes.Equal(body, l.Data) {
			t.Fatalf("layer via ns: %d", resp.StatusCode)
		}
	}
	// a second read is served from the cache: no new upstream blob GET
	before := up.Requests("GET", "/blobs/"+string(shared.Desc.Digest))
	resp, body = get(t, p.URL+"/v2/docker.io/library/app/blobs/"+string(shared.Desc.Digest), "Range", "bytes=10-19")
	if resp.StatusCode != 206 || !bytes.Equal(body, shared.Data[10:20]) {
		t.Fatalf("range from cache: %d", resp.StatusCode)
	}
	if after := up.Requests("GET", "/blobs/"+string(shared.Desc.Digest)); after != before {
		t.Fatalf("cached blob fetched again (%d → %d)", before, after)
	}
	// unknown content
	resp, _ = get(t, p.URL+"/v2/docker.io/library/app/manifests/nope")
	if resp.StatusCode != 404 {
		t.Fatalf("unknown tag: %d", resp.StatusCode)
	}
	// pushes are refused
	r, _ := http.Post(p.URL+"/v2/docker.io/library/app/blobs/uploads/", "", nil)
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("push: %d", r.StatusCode)
	}
	r.Body.Close()
	// crpe fsck is clean on the cache once the pocket is stopped
	_ = p.Cmd.Process.Kill()
	<-p.Stopped()
	out, err := execCrpe(t, "fsck", "--data", p.Data)
	if err != nil {
		t.Fatalf("fsck: %v\n%s", err, out)
	}
}

// TestDockerMirrorRequests replays what the Docker daemon sends to a
// registry mirror (daemon.json "registry-mirrors", which mirrors Docker Hub
// only): the Docker Hub path with no registry host and no ?ns= —
// GET /v2/, then GET /v2/library/<name>/manifests/<tag> with Docker's Accept
// list, then GET /v2/library/<name>/blobs/<digest> for the config and
// layers (moby's distribution client through the mirror endpoint; no Docker
// daemon runs on this machine). The pocket serves them as docker.io's
// (--default-registry), and with --default-registry "" as a repository of
// that literal name (404 here).
func TestDockerMirrorRequests(t *testing.T) {
	up := testenv.StartDistribution(t)
	a := testenv.NewImage(t, amd64, []testenv.Blob{testenv.RandomLayer(t, 40<<10, false)}, false)
	b := testenv.NewImage(t, arm64, []testenv.Blob{testenv.RandomLayer(t, 30<<10, false)}, false)
	idx := testenv.NewIndex([]testenv.Image{a, b}, false)
	testenv.PushIndex(t, up.URL, "library/web", "alpine", []testenv.Image{a, b}, idx)
	p := startPocket(t, up.URL)

	dockerAccept := []string{"Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v1+prettyjws, application/json"}
	resp, _ := get(t, p.URL+"/v2/")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v2/: %d", resp.StatusCode)
	}
	resp, body := get(t, p.URL+"/v2/library/web/manifests/alpine", dockerAccept...)
	if resp.StatusCode != 200 || !bytes.Equal(body, idx.Data) || resp.Header.Get("Docker-Content-Digest") != string(idx.Desc.Digest) {
		t.Fatalf("Docker's manifest request: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, p.URL+"/v2/library/web/manifests/"+string(a.Manifest.Desc.Digest), dockerAccept...)
	if resp.StatusCode != 200 || !bytes.Equal(body, a.Manifest.Data) {
		t.Fatalf("Docker's child manifest request: %d", resp.StatusCode)
	}
	for _, bl := range append([]testenv.Blob{a.Config}, a.Layers...) {
		resp, body = get(t, p.URL+"/v2/library/web/blobs/"+string(bl.Desc.Digest))
		if resp.StatusCode != 200 || !bytes.Equal(body, bl.Data) {
			t.Fatalf("Docker's blob request %s: %d", bl.Desc.Digest, resp.StatusCode)
		}
	}
	// it is the same repository as docker.io/library/web: cached once (the
	// upstream's access log is written after its answer: wait for it)
	layerGets := func() int { return up.Requests("GET", "/blobs/"+string(a.Layers[0].Desc.Digest)) }
	testenv.Eventually(t, 5*time.Second, "the upstream logs the layer's GET", func() (bool, string) {
		return layerGets() == 1, fmt.Sprintf("%d GETs", layerGets())
	})
	resp, _ = get(t, p.URL+"/v2/docker.io/library/web/blobs/"+string(a.Layers[0].Desc.Digest))
	time.Sleep(200 * time.Millisecond) // a second upstream GET, if any, is logged by then
	if resp.StatusCode != 200 || layerGets() != 1 {
		t.Fatalf("the full name is not the same repository: %d, %d upstream GETs", resp.StatusCode, layerGets())
	}

	off := startPocket(t, up.URL, "--default-registry", "")
	resp, _ = get(t, off.URL+"/v2/library/web/manifests/alpine", dockerAccept...)
	if resp.StatusCode != 404 {
		t.Fatalf("--default-registry \"\": a hostless name is a repository of its own, want 404, got %d", resp.StatusCode)
	}
}

// TestConcurrentMissesOneFetch: 16 clients ask for the same uncached blob at
// once; the upstream sees one GET and every client gets every byte.
func TestConcurrentMissesOneFetch(t *testing.T) {
	up := testenv.StartDistribution(t)
	big := testenv.RandomLayer(t, 24<<20, false)
	im := testenv.NewImage(t, amd64, []testenv.Blob{big}, false)
	testenv.PushImage(t, up.URL, "library/big", "v1", im)
	p := startPocket(t, up.URL)
	start := time.Now()
	defer func() { t.Logf("16 concurrent cold GETs of %d MiB took %v", big.Desc.Size>>20, time.Since(start)) }()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(p.URL + "/v2/docker.io/library/big/blobs/" + string(big.Desc.Digest))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(b, big.Data) {
				errs <- fmt.Errorf("client got %d bytes (%v)", len(b), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.Requests("GET", "/blobs/"+string(big.Desc.Digest)); n != 1 {
		t.Fatalf("upstream saw %d GETs of the blob, want 1", n)
	}
}

// faulty is an upstream proxy that misbehaves on blob GETs.
type faulty struct {
	mode   atomic.Value // "", "truncate-once", "corrupt", "corrupt-large", "503-twice", "hang", "garbage-manifest"
	blobs  atomic.Int64
	ranges atomic.Int64
	n503   atomic.Int64
}

func startFaulty(t *testing.T, target string) (*faulty, string) {
	u, _ := url.Parse(target)
	f := &faulty{}
	f.mode.Store("")
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := f.mode.Load().(string)
		if mode == "garbage-manifest" && strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write([]byte("this is not a manifest"))
			}
			return
		}
		isBlob := strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet
		if !isBlob {
			rp.ServeHTTP(w, r)
			return
		}
		f.blobs.Add(1)
		if r.Header.Get("Range") != "" {
			f.ranges.Add(1)
		}
		switch mode {
		case "503-twice":
			if f.n503.Add(1) <= 2 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		case "hang":
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return
		}
		rec := &capture{header: http.Header{}}
		rp.ServeHTTP(rec, r)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		body := rec.buf.Bytes()
		switch {
		case mode == "truncate-once" && r.Header.Get("Range") == "" && len(body) > 1000:
			mode = ""
			f.mode.Store("")
			w.WriteHeader(rec.code)
			_, _ = w.Write(body[:len(body)/2])
			// hang up midway: the Content-Length promised more
			w.(http.Flusher).Flush()
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
				}
			}
			return
		case mode == "corrupt" && len(body) > 100, mode == "corrupt-large" && len(body) > 1<<20:
			body = append([]byte(nil), body...)
			body[len(body)-1] ^= 0xff
		}
		w.WriteHeader(rec.code)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return f, srv.URL
}

type capture struct {
	header http.Header
	code   int
	buf    bytes.Buffer
}

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) WriteHeader(code int)        { c.code = code }
func (c *capture) Write(p []byte) (int, error) { return c.buf.Write(p) }

func TestLyingAndBrokenUpstream(t *testing.T) {
	up := testenv.StartDistribution(t)
	f, proxy := startFaulty(t, up.URL)
	layer := testenv.RandomLayer(t, 2<<20, false)
	im := testenv.NewImage(t, amd64, []testenv.Blob{layer}, false)
	testenv.PushImage(t, up.URL, "library/lie", "v1", im)
	p := startPocket(t, proxy)
	blobURL := p.URL + "/v2/docker.io/library/lie/blobs/" + string(layer.Desc.Digest)

	// corrupt bytes: the client's transfer fails, nothing is cached
	f.mode.Store("corrupt")
	resp, err := http.Get(blobURL)
	if err == nil {
		_, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == 200 {
			t.Fatal("a corrupt blob reached the client with a clean end")
		}
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(p.Data, "blobs", "sha256", layer.Desc.Digest.Encoded())); err == nil {
		t.Fatal("corrupt blob present in the cache")
	}

	// a transfer cut midway is resumed with a Range request
	f.mode.Store("truncate-once")
	before := f.blobs.Load()
	resp, body := get(t, blobURL)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer.Data) {
		t.Fatalf("resumed blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if f.blobs.Load()-before != 2 || f.ranges.Load() != 1 {
		t.Fatalf("expected one broken and one resumed (Range) request, saw %d requests, %d with Range", f.blobs.Load()-before, f.ranges.Load())
	}
	if up.Requests("GET", "/blobs/"+string(layer.Desc.Digest)) < 2 {
		t.Fatal("no resume request reached the upstream")
	}

	// a manifest that does not parse is the upstream's fault: 502, nothing cached
	f.mode.Store("garbage-manifest")
	resp, body = get(t, p.URL+"/v2/docker.io/library/lie/manifests/garbage")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "UNAVAILABLE") {
		t.Fatalf("garbage manifest upstream: %d %s", resp.StatusCode, body)
	}
	f.mode.Store("")

	// 5xx answers are retried
	cfg := im.Config
	f.mode.Store("503-twice")
	resp, body = get(t, p.URL+"/v2/docker.io/library/lie/blobs/"+string(cfg.Desc.Digest))
	if resp.StatusCode != 200 || !bytes.Equal(body, cfg.Data) {
		t.Fatalf("after 503s: %d", resp.StatusCode)
	}
}

func TestOfflineFallback(t *testing.T) {
	up := testenv.StartDistribution(t)
	im := testenv.NewImage(t, amd64, []testenv.Blob{testenv.RandomLayer(t, 10<<10, true)}, true)
	testenv.PushImage(t, up.URL, "library/off", "v1", im)
	p := startPocket(t, up.URL)
	resp, _ := get(t, p.URL+"/v2/docker.io/library/off/manifests/v1")
	if resp.StatusCode != 200 {
		t.Fatalf("warm: %d", resp.StatusCode)
	}
	for _, l := range im.Layers {
		get(t, p.URL+"/v2/docker.io/library/off/blobs/"+string(l.Desc.Digest))
	}
	up.Stop()
	resp, body := get(t, p.URL+"/v2/library/off/manifests/v1?ns=docker.io")
	if resp.StatusCode != 200 || !bytes.Equal(body, im.Manifest.Data) {
		t.Fatalf("tag with upstream gone: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, p.URL+"/v2/docker.io/library/off/manifests/other")
	if resp.StatusCode < 400 {
		t.Fatalf("uncached tag with upstream gone: %d", resp.StatusCode)
	}
	// --offline never asks
	_ = p.Cmd.Process.Kill()
	<-p.Stopped()
	addr := testenv.FreeAddr(t)
	q := testenv.Start(t, "serve", "--addr", addr, "--data", p.Data, "--offline", "--registry-endpoint", "docker.io="+up.URL)
	q.Addr = addr
	testenv.WaitHealthy(t, q)
	resp, body = get(t, "http://"+addr+"/v2/docker.io/library/off/manifests/v1")
	if resp.StatusCode != 200 || !bytes.Equal(body, im.Manifest.Data) {
		t.Fatalf("offline: %d", resp.StatusCode)
	}
	resp, _ = get(t, "http://"+addr+"/v2/docker.io/library/off/blobs/"+string(im.Config.Desc.Digest))
	if resp.StatusCode != 404 {
		t.Fatalf("offline uncached blob: %d", resp.StatusCode)
	}
}

func execCrpe(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return testenv.Run(ctx, t, args...)
}

// An export follows each fetch as its bytes arrive (copying them into the
// archive file before the fetch is committed): a corrupt upstream must fail
// the export and leave no archive and no cached blob; a transfer cut midway
// is resumed and the archive is whole.
func TestExportThroughLyingUpstream(t *testing.T) {
	up := testenv.StartDistribution(t)
	f, proxy := startFaulty(t, up.URL)
	layer := testenv.RandomLayer(t, 3<<20, false)
	im := testenv.NewImage(t, amd64, []testenv.Blob{layer}, false)
	testenv.PushImage(t, up.URL, "library/lie", "v1", im)
	dir := t.TempDir()
	pkg := filepath.Join(dir, "lie.json")
	if err := os.WriteFile(pkg, []byte(`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"lie"},"spec":{"version":"1.0.0","images":{"docker.io/library/lie:v1":""}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	out := filepath.Join(dir, "lie.kubepkg.tgz")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	export := func() (string, error) {
		return testenv.Run(ctx, t, "export", "-f", pkg, "-o", out, "--data", data, "--platform", "linux/amd64",
			"--registry-endpoint", "docker.io="+proxy)
	}

	f.mode.Store("corrupt-large")
	if msg, err := export(); err == nil {
		t.Fatalf("export of a corrupt upstream blob succeeded: %s", msg)
	} else if !strings.Contains(msg, string(layer.Desc.Digest)) {
		t.Fatalf("the error does not name the bad blob: %s", msg)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a failed export left an archive under the output name")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".lie.kubepkg.tgz.tmp-*")); len(left) > 0 {
		t.Fatalf("a failed export left its temp file: %v", left)
	}
	if _, err := os.Stat(filepath.Join(data, "blobs", "sha256", layer.Desc.Digest.Encoded())); err == nil {
		t.Fatal("corrupt blob present in the cache")
	}

	f.mode.Store("truncate-once")
	if msg, err := export(); err != nil {
		t.Fatalf("export with a transfer cut midway: %v: %s", err, msg)
	}
	if f.ranges.Load() == 0 {
		t.Fatal("the cut transfer was not resumed with a Range request")
	}
	if msg, err := testenv.Run(ctx, t, "inspect", "--verify", out); err != nil {
		t.Fatalf("inspect --verify: %v: %s", err, msg)
	}
	if msg, err := testenv.Run(ctx, t, "fsck", "--data", data); err != nil {
		t.Fatalf("fsck of the pocket's data after the exports: %v: %s", err, msg)
	}
}

// A client is handed a blob once its bytes are verified, before the cache's
// fsync: a SIGTERM right after must still leave the blob in the cache.
func TestSIGTERMKeepsWhatWasServed(t *testing.T) {
	up := testenv.StartDistribution(t)
	for i := range 3 {
		layer := testenv.RandomLayer(t, 24<<20, false)
		im := testenv.NewImage(t, amd64, []testenv.Blob{layer}, false)
		testenv.PushImage(t, up.URL, "library/term", fmt.Sprintf("v%d", i), im)
		p := startPocket(t, up.URL)
		resp, body := get(t, p.URL+"/v2/docker.io/library/term/blobs/"+string(layer.Desc.Digest))
		if resp.StatusCode != 200 || !bytes.Equal(body, layer.Data) {
			t.Fatalf("pull: %d, %d bytes", resp.StatusCode, len(body))
		}
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Stopped():
		case <-time.After(20 * time.Second):
			t.Fatal("crpe serve did not stop on SIGTERM")
		}
		if _, err := os.Stat(filepath.Join(p.Data, "blobs", "sha256", layer.Desc.Digest.Encoded())); err != nil {
			t.Fatalf("run %d: the blob a client received is not in the cache after SIGTERM: %v", i, err)
		}
	}
}
