package pullthrough_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/pullthrough"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/upstream"
)

const testTimeout = 60 * time.Second

// fixture is an upstream holding one image (demo/app:1.0) and a cache in
// front of it.
type fixture struct {
	up       *pt.Upstream
	ctr      *pt.Counter
	c        *pt.Cache
	repo     string
	manifest digest.Digest
	config   digest.Digest
	layers   []digest.Digest
	data     map[digest.Digest][]byte
}

func newFixture(ctx context.Context, t *testing.T, o pullthrough.Options) *fixture {
	t.Helper()
	f := &fixture{up: pt.NewUpstream(t), ctr: pt.NewCounter()}
	img := pt.Image(t, "linux/amd64", 2, 256<<10)
	f.manifest = f.up.PushImage(ctx, t, "demo/app:1.0", img)
	f.config, f.layers, f.data = pt.Blobs(t, img)
	raw, _ := img.RawManifest()
	f.data[f.manifest] = raw
	f.c = pt.NewCache(t, f.ctr, o)
	f.repo = f.up.Repo("demo/app")
	return f
}

func (f *fixture) gets(kind string) int { return f.ctr.Count(f.up.Host, http.MethodGet, kind) }

// server is the cache in front of crpe's registry over the same store, as
// the pocket serves /v2.
func (f *fixture) server(t *testing.T) *httptest.Server {
	s := httptest.NewServer(f.c.Handler(registry.New(f.c.Store, f.c.DB, registry.Options{})))
	t.Cleanup(s.Close)
	return s
}

// assertNotCached checks that blob d is neither stored, nor linked in
// repo, nor left half-written in the store's ingest folder.
func (f *fixture) assertNotCached(ctx context.Context, t *testing.T, d digest.Digest) {
	t.Helper()
	if _, err := f.c.Store.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
		t.Errorf("blob %s is in the store (err %v)", d, err)
	}
	_ = f.c.DB.View(func(tx *repodb.Tx) error {
		if _, err := tx.Blob(f.repo, d); err == nil {
			t.Errorf("blob %s is linked in %s", d, f.repo)
		}
		return nil
	})
	if left, _ := os.ReadDir(f.c.Store.IngestDir()); len(left) > 0 {
		t.Errorf("%d half-written files left in the ingest folder", len(left))
	}
}

func (f *fixture) assertCached(ctx context.Context, t *testing.T, d digest.Digest) {
	t.Helper()
	b, err := cas.ReadAll(ctx, f.c.Store, d, 1<<30)
	if err != nil {
		t.Fatalf("blob %s not in the store: %v", d, err)
	}
	if !bytes.Equal(b, f.data[d]) {
		t.Fatalf("blob %s in the store differs from the upstream's", d)
	}
	if err := f.c.DB.View(func(tx *repodb.Tx) error {
		_, err := tx.Blob(f.repo, d)
		return err
	}); err != nil {
		t.Fatalf("blob %s not linked in %s: %v", d, f.repo, err)
	}
}

// TestConcurrentBlobMissesFetchOnce: N readers of one missing blob, all
// joining while the upstream transfer is held, share one upstream fetch
// and all get its bytes.
func TestConcurrentBlobMissesFetchOnce(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	d := f.layers[0]
	arrived, release := f.up.Hold(string(d))
	defer release()

	const n = 8
	readers := make([]io.ReadCloser, n)
	errs := make([]error, n)
	pt.Concurrently(n, func(i int) {
		readers[i], errs[i] = f.c.Open(ctx, f.repo, d, int64(len(f.data[d])))
	})() // every reader is open while the upstream holds the transfer
	select {
	case <-arrived:
	case <-ctx.Done():
		t.Fatal("the upstream was never asked for the blob")
	}
	release()
	for i, rc := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, f.data[d]) {
			t.Fatalf("reader %d: %d bytes, err %v; want the blob's %d bytes", i, len(b), err, len(f.data[d]))
		}
	}
	if _, err := f.c.Blob(ctx, f.repo, d, -1); err != nil { // waits for the commit
		t.Fatal(err)
	}
	if got := f.gets("blobs"); got != 1 {
		t.Errorf("%d upstream GETs of the blob for %d concurrent misses, want 1", got, n)
	}
	if got := f.c.Stats.BlobFetches.Load(); got != 1 {
		t.Errorf("Stats.BlobFetches = %d, want 1", got)
	}
	f.assertCached(ctx, t, d)

	// once cached it is served from the store
	rc, err := f.c.Open(ctx, f.repo, d, -1)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got := f.gets("blobs"); got != 1 {
		t.Errorf("%d upstream GETs after a hit, want 1", got)
	}
}

// TestConcurrentHTTPBlobMissesFetchOnce: the same through /v2, as the
// pocket's clients pull.
func TestConcurrentHTTPBlobMissesFetchOnce(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	s := f.server(t)
	d := f.layers[1]
	arrived, release := f.up.Hold(string(d))
	defer release()

	const n = 6
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make([]answer, n)
	wait := pt.Concurrently(n, func(i int) {
		a := &answers[i]
		a.status, a.body, a.err = pt.Get(ctx, s.URL+"/v2/"+f.repo+"/blobs/"+string(d))
	})
	<-arrived
	pt.WaitParked(ctx, t, "pullthrough.(*Cache).ServeBlob", n)
	release()
	wait()
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusOK || !bytes.Equal(a.body, f.data[d]) {
			t.Fatalf("client %d: HTTP %d, %d bytes, err %v", i, a.status, len(a.body), a.err)
		}
	}
	if got := f.gets("blobs"); got != 1 {
		t.Errorf("%d upstream GETs of the blob for %d concurrent clients, want 1", got, n)
	}
}

// TestConcurrentManifestMissesFetchOnce: N callers resolving one tag the
// cache has never seen, while the upstream holds the first request, cause
// one upstream manifest fetch.
func TestConcurrentManifestMissesFetchOnce(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	// the cache's connection to the upstream (ping, credentials) is made
	// before the misses: only the manifest requests remain to be sent
	if _, err := f.c.Blob(ctx, f.repo, f.config, -1); err != nil {
		t.Fatal(err)
	}
	arrived, release := f.up.Hold("1.0")
	defer release()

	const n = 8
	got := make([]*pullthrough.Manifest, n)
	errs := make([]error, n)
	wait := pt.Concurrently(n, func(i int) {
		got[i], errs[i] = f.c.Manifest(ctx, f.repo, "1.0")
	})
	<-arrived
	// every caller waits: on the fetch in flight, or on a request of its own
	// (which the counter has then seen)
	pt.WaitParked(ctx, t, "pullthrough.(*Cache).Manifest", n)
	release()
	wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i].Digest != f.manifest || !bytes.Equal(got[i].Body, f.data[f.manifest]) {
			t.Fatalf("caller %d got %s, want %s", i, got[i].Digest, f.manifest)
		}
	}
	if g := f.gets("manifests"); g != 1 {
		t.Errorf("%d upstream GETs of the manifest for %d concurrent misses, want 1", g, n)
	}
	if g := f.c.Stats.ManifestFetches.Load(); g != 1 {
		t.Errorf("Stats.ManifestFetches = %d, want 1", g)
	}
	if err := f.c.DB.View(func(tx *repodb.Tx) error {
		d, err := tx.Tag(f.repo, "1.0")
		if err == nil && d != f.manifest {
			t.Errorf("tag 1.0 recorded at %s, want %s", d, f.manifest)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestLyingBlobIsRefused: an upstream that serves other bytes under a
// blob's digest: the caller gets ErrUpstreamInvalid, a reader never sees a
// clean end, an HTTP client sees its transfer fail, and nothing is cached.
func TestLyingBlobIsRefused(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	s := f.server(t)
	d := f.layers[0]
	f.up.Lie(string(d), randomBytes(len(f.data[d])), "")

	if _, err := f.c.Blob(ctx, f.repo, d, int64(len(f.data[d]))); !errors.Is(err, pullthrough.ErrUpstreamInvalid) {
		t.Fatalf("Blob of a lying upstream: %v, want ErrUpstreamInvalid", err)
	}
	f.assertNotCached(ctx, t, d)

	rc, err := f.c.Open(ctx, f.repo, d, -1)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil {
		t.Fatal("a reader of a lying upstream's blob reached a clean end")
	}
	if _, err := f.c.Blob(ctx, f.repo, d, -1); err == nil { // waits for that fetch to end
		t.Fatal("the lying upstream's blob was accepted")
	}
	f.assertNotCached(ctx, t, d)

	status, body, err := pt.Get(ctx, s.URL+"/v2/"+f.repo+"/blobs/"+string(d))
	if err == nil && status == http.StatusOK {
		t.Fatalf("an HTTP client got a clean %d-byte answer from a lying upstream", len(body))
	}
	if _, err := f.c.Blob(ctx, f.repo, d, -1); err == nil {
		t.Fatal("the lying upstream's blob was accepted")
	}
	f.assertNotCached(ctx, t, d)
	if got := f.c.Stats.BlobFailures.Load(); got < 3 {
		t.Errorf("Stats.BlobFailures = %d, want every fetch counted", got)
	}
}

// TestLyingManifestIsRefused: a manifest whose bytes are not those of the
// digest the upstream claims for it (by tag or by digest), or that does not
// parse, is refused with ErrUpstreamInvalid (502 through /v2), and neither
// the manifest nor a tag is recorded.
func TestLyingManifestIsRefused(t *testing.T) {
	other := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	garbage := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":"none"}`)
	for _, c := range []struct {
		name    string
		ref     func(f *fixture) string
		body    []byte
		claimed func(f *fixture) digest.Digest
	}{
		{"tag with another digest", func(*fixture) string { return "1.0" }, other, func(f *fixture) digest.Digest { return f.manifest }},
		{"digest", func(f *fixture) string { return string(f.manifest) }, other, func(f *fixture) digest.Digest { return f.manifest }},
		{"tag that does not parse", func(*fixture) string { return "1.0" }, garbage, func(*fixture) digest.Digest { return digest.FromBytes(garbage) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := pt.Context(t, testTimeout)
			f := newFixture(ctx, t, pullthrough.Options{})
			ref := c.ref(f)
			f.up.Lie(ref, c.body, c.claimed(f))
			if _, err := f.c.Manifest(ctx, f.repo, ref); !errors.Is(err, pullthrough.ErrUpstreamInvalid) {
				t.Errorf("Manifest of a lying upstream: %v, want ErrUpstreamInvalid", err)
			}
			status, body, err := pt.Get(ctx, f.server(t).URL+"/v2/"+f.repo+"/manifests/"+ref)
			if err != nil || status != http.StatusBadGateway {
				t.Errorf("through /v2: HTTP %d %s (err %v), want 502", status, body, err)
			}
			if err := f.c.DB.View(func(tx *repodb.Tx) error {
				if tx.RepoExists(f.repo) {
					t.Errorf("repository %s recorded", f.repo)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for _, d := range []digest.Digest{f.manifest, digest.FromBytes(c.body)} {
				if _, err := f.c.Store.Stat(ctx, d); err == nil {
					t.Errorf("manifest bytes %s stored", d)
				}
			}
		})
	}
}

// TestDroppedBlobTransfer: a connection that drops mid-blob on every try
// fails the client's transfer and caches nothing; once the upstream serves
// it whole, a retry succeeds.
func TestDroppedBlobTransfer(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{ResumeAttempts: 2})
	s := f.server(t)
	d := f.layers[0]
	url := s.URL + "/v2/" + f.repo + "/blobs/" + string(d)
	f.up.Drop(string(d), 3) // the first GET and both resumptions

	// the client's transfer fails only once the fetch has failed
	status, body, err := pt.Get(ctx, url)
	if err == nil && status == http.StatusOK {
		t.Fatalf("the client got a clean %d-byte answer of a transfer that dropped", len(body))
	}
	if len(body) >= len(f.data[d]) {
		t.Fatalf("the client got all %d bytes of a transfer that dropped", len(body))
	}
	f.assertNotCached(ctx, t, d)
	if got := f.gets("blobs"); got != 3 {
		t.Errorf("%d upstream GETs, want the first and both resumptions", got)
	}
	if got := f.c.Stats.BlobResumes.Load(); got != 2 {
		t.Errorf("Stats.BlobResumes = %d, want 2", got)
	}
	if got := f.c.Stats.BlobFailures.Load(); got != 1 {
		t.Errorf("Stats.BlobFailures = %d, want 1", got)
	}

	status, body, err = pt.Get(ctx, url)
	if err != nil || status != http.StatusOK || !bytes.Equal(body, f.data[d]) {
		t.Fatalf("retry: HTTP %d, %d bytes, err %v", status, len(body), err)
	}
	if _, err := f.c.Blob(ctx, f.repo, d, -1); err != nil { // waits for the commit
		t.Fatal(err)
	}
	f.assertCached(ctx, t, d)
	if got := f.gets("blobs"); got != 4 {
		t.Errorf("%d upstream GETs, want one more for the retry", got)
	}
}

// TestDroppedBlobTransferResumes: one drop is resumed with a Range request;
// the reader sees the whole blob and no error.
func TestDroppedBlobTransferResumes(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	d := f.layers[1]
	f.up.Drop(string(d), 1)
	rc, err := f.c.Open(ctx, f.repo, d, int64(len(f.data[d])))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, f.data[d]) {
		t.Fatalf("read %d bytes, err %v; want the blob's %d", len(b), err, len(f.data[d]))
	}
	if _, err := f.c.Blob(ctx, f.repo, d, -1); err != nil {
		t.Fatal(err)
	}
	f.assertCached(ctx, t, d)
	if got, resumes := f.gets("blobs"), f.c.Stats.BlobResumes.Load(); got != 2 || resumes != 1 {
		t.Errorf("%d upstream GETs and %d resumptions, want 2 and 1", got, resumes)
	}
}

// TestUnreachableUpstreamFallsBackToCachedTag: a tag cached while the
// upstream was up is served, through the Go API and /v2, once it cannot be
// reached; a tag never cached is an error.
func TestUnreachableUpstreamFallsBackToCachedTag(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	var told []pullthrough.Fallback
	var mu sync.Mutex
	f := newFixture(ctx, t, pullthrough.Options{OnFallback: func(fb pullthrough.Fallback) {
		mu.Lock()
		told = append(told, fb)
		mu.Unlock()
	}})
	s := f.server(t)
	if _, err := f.c.Manifest(ctx, f.repo, "1.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Blob(ctx, f.repo, f.config, -1); err != nil {
		t.Fatal(err)
	}
	f.up.Close()

	m, err := f.c.Manifest(ctx, f.repo, "1.0")
	if err != nil {
		t.Fatalf("cached tag with the upstream unreachable: %v", err)
	}
	if m.Digest != f.manifest || !bytes.Equal(m.Body, f.data[f.manifest]) {
		t.Fatalf("fallback served %s, want %s", m.Digest, f.manifest)
	}
	if got := f.c.Stats.Fallbacks.Load(); got != 1 {
		t.Errorf("Stats.Fallbacks = %d, want 1", got)
	}
	// the caller is told which tag, what it served and since when it was cached
	mu.Lock()
	if len(told) != 1 || told[0].Repo != f.repo || told[0].Tag != "1.0" || told[0].Digest != f.manifest ||
		told[0].Cached.IsZero() || time.Since(told[0].Cached) > time.Hour || told[0].Err == nil {
		t.Errorf("OnFallback told %+v", told)
	}
	mu.Unlock()
	status, body, err := pt.Get(ctx, s.URL+"/v2/"+f.repo+"/manifests/1.0")
	if err != nil || status != http.StatusOK || !bytes.Equal(body, f.data[f.manifest]) {
		t.Fatalf("through /v2: HTTP %d %s (err %v)", status, body, err)
	}
	status, body, err = pt.Get(ctx, s.URL+"/v2/"+f.repo+"/blobs/"+string(f.config))
	if err != nil || status != http.StatusOK || !bytes.Equal(body, f.data[f.config]) {
		t.Fatalf("cached blob through /v2: HTTP %d (err %v)", status, err)
	}
	if got := f.c.Stats.Fallbacks.Load(); got != 2 {
		t.Errorf("Stats.Fallbacks = %d, want 2", got)
	}

	if _, err := f.c.Manifest(ctx, f.repo, "2.0"); err == nil || !upstream.IsTemporary(err) {
		t.Errorf("uncached tag with the upstream unreachable: %v, want a temporary upstream error", err)
	}
	// through /v2, what is not cached is unknown (404, as the spec and
	// containerd's fallback expect), with the reason in the detail
	for _, c := range []struct{ path, code string }{
		{"/manifests/2.0", "MANIFEST_UNKNOWN"},
		{"/manifests/" + string(digest.FromString("never cached")), "MANIFEST_UNKNOWN"},
		{"/blobs/" + string(digest.FromString("never cached")), "BLOB_UNKNOWN"},
	} {
		status, body, err := pt.Get(ctx, s.URL+"/v2/"+f.repo+c.path)
		var eb struct {
			Errors []struct {
				Code   string            `json:"code"`
				Detail map[string]string `json:"detail"`
			} `json:"errors"`
		}
		_ = json.Unmarshal(body, &eb)
		if err != nil || status != http.StatusNotFound || len(eb.Errors) != 1 || eb.Errors[0].Code != c.code || eb.Errors[0].Detail["reason"] == "" {
			t.Errorf("%s with the upstream unreachable: HTTP %d %s (err %v), want 404 %s with a reason", c.path, status, body, err, c.code)
		}
	}
}

// TestOfflineNeverAsksUpstream: an offline cache serves what it holds and
// says ErrNotCached for the rest, without a request.
func TestOfflineNeverAsksUpstream(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	f := newFixture(ctx, t, pullthrough.Options{})
	if _, err := f.c.Manifest(ctx, f.repo, "1.0"); err != nil {
		t.Fatal(err)
	}
	ctr := pt.NewCounter()
	off := pullthrough.New(f.c.Store, f.c.DB, pt.Client(ctr, nil, nil), pullthrough.Options{Offline: true})
	m, err := off.Manifest(ctx, f.repo, "1.0")
	if err != nil || m.Digest != f.manifest {
		t.Fatalf("offline, cached tag: %v", err)
	}
	if _, err := off.Manifest(ctx, f.repo, "2.0"); !errors.Is(err, pullthrough.ErrNotCached) {
		t.Errorf("offline, uncached tag: %v, want ErrNotCached", err)
	}
	if _, err := off.Blob(ctx, f.repo, f.layers[0], -1); !errors.Is(err, pullthrough.ErrNotCached) {
		t.Errorf("offline, uncached blob: %v, want ErrNotCached", err)
	}
	for _, k := range []string{"ping", "manifests", "blobs"} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			if n := ctr.Count(f.up.Host, m, k); n > 0 {
				t.Errorf("offline cache sent %d %s requests for %s", n, m, k)
			}
		}
	}
}

// TestSetUpstreamKeepsFetchesInFlight: a change of upstream settings while
// a blob is in flight does not start a second fetch of it (the new miss
// joins the one in flight); a miss after the change goes to the new
// endpoint, with the new credentials.
func TestSetUpstreamKeepsFetchesInFlight(t *testing.T) {
	ctx := pt.Context(t, testTimeout)
	a, b := pt.NewUpstream(t), pt.NewUpstream(t)
	img := pt.Image(t, "linux/arm64", 2, 128<<10)
	a.PushImage(ctx, t, "demo/app:1.0", img)
	b.RequireAuth("carol", "s3cret")
	b.PushImage(ctx, t, "demo/app:1.0", img)
	config, layers, data := pt.Blobs(t, img)

	const host = "registry.test" // the name images use; endpoints say where it is
	repo := host + "/demo/app"
	ctr := pt.NewCounter()
	c := pt.NewCache(t, ctr, pullthrough.Options{})
	c.SetUpstream(pt.Client(ctr, map[string]string{host: a.URL()}, nil))

	d := layers[0]
	arrived, release := a.Hold(string(d))
	defer release()
	first, err := c.Open(ctx, repo, d, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	<-arrived

	// the settings change: another endpoint, which wants credentials
	c.SetUpstream(pt.Client(ctr, map[string]string{host: b.URL()}, nil))
	second, err := c.Open(ctx, repo, d, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	release()
	for i, rc := range []io.Reader{first, second} {
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, data[d]) {
			t.Fatalf("reader %d: %d bytes, err %v", i, len(got), err)
		}
	}
	if _, err := c.Blob(ctx, repo, d, -1); err != nil {
		t.Fatal(err)
	}
	if na, nb := ctr.Count(a.Host, http.MethodGet, "blobs"), ctr.Count(b.Host, http.MethodGet, "blobs"); na != 1 || nb != 0 {
		t.Fatalf("blob GETs: %d to the old endpoint, %d to the new one; want 1 and 0", na, nb)
	}

	// a new miss goes to the new endpoint, which refuses it without
	// credentials...
	if _, err := c.Blob(ctx, repo, config, -1); err == nil {
		t.Fatal("the new endpoint served a blob without credentials")
	}
	if n := ctr.Count(b.Host, http.MethodGet, "blobs") + ctr.Count(b.Host, http.MethodGet, "ping"); n == 0 {
		t.Fatal("the miss after the change was not sent to the new endpoint")
	}
	// ...and serves it with the credentials of the next change
	c.SetUpstream(pt.Client(ctr, map[string]string{host: b.URL()}, map[string]string{b.Host: "carol:s3cret"}))
	if _, err := c.Blob(ctx, repo, config, -1); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	got, err := cas.ReadAll(ctx, c.Store, config, 1<<20)
	if err != nil || !bytes.Equal(got, data[config]) {
		t.Fatalf("config not cached: %v", err)
	}
	if m, err := c.Manifest(ctx, repo, "1.0"); err != nil {
		t.Fatalf("manifest after the change: %v", err)
	} else if n := ctr.Count(b.Host, http.MethodGet, "manifests"); n != 1 || m.Digest != pt.Digest(t, img) {
		t.Fatalf("manifest %s, %d GETs to the new endpoint", m.Digest, n)
	}
	if n := ctr.Count(a.Host, http.MethodGet, "manifests") + ctr.Count(a.Host, http.MethodGet, "blobs"); n != 1 {
		t.Errorf("%d requests to the old endpoint after the change, want only the first blob's", n)
	}
}
