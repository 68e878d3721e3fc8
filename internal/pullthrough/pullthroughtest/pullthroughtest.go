// Package pullthroughtest is the in-process upstream that the unit tests of
// the pull-through cache and of its users (export, the pocket) run against,
// as net/http/httptest is for HTTP: go-containerregistry's pkg/registry on a
// loopback server, a RoundTripper that counts what the cache sends, a gate
// that holds a transfer in flight until the test lets it go, and faults (an
// upstream that lies about a digest, a connection dropped mid-transfer, an
// upstream that wants credentials). Images are random, built in the test.
package pullthroughtest

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// Counter is an http.RoundTripper that counts the requests sent through it
// by host, method and kind of route ("manifests", "blobs", "tags", "ping").
type Counter struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

// NewCounter counts over a transport of its own (no proxy, loopback only).
func NewCounter() *Counter {
	return &Counter{base: &http.Transport{}, n: map[string]int{}}
}

func countKey(host, method, kind string) string { return host + " " + method + " " + kind }

// RoundTrip counts req, then sends it.
func (c *Counter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[countKey(req.URL.Host, req.Method, Kind(req.URL.Path))]++
	c.mu.Unlock()
	return c.base.RoundTrip(req)
}

// Count is how many requests of method for kind went to host.
func (c *Counter) Count(host, method, kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[countKey(host, method, kind)]
}

// Kind names the route of a /v2 path.
func Kind(path string) string {
	for _, k := range []string{"manifests", "blobs", "tags"} {
		if strings.Contains(path, "/"+k+"/") {
			return k
		}
	}
	if path == "/v2/" || path == "/v2" {
		return "ping"
	}
	return "other"
}

// Upstream is a registry on a loopback port.
type Upstream struct {
	// Host is its host:port, the first component of its repositories' full
	// names (127.0.0.1:PORT/demo/app).
	Host   string
	server *httptest.Server
	reg    http.Handler

	mu    sync.Mutex
	holds map[string]*hold
	lies  map[string]lie
	drops map[string]int
	user  string
	pass  string
}

type lie struct {
	body    []byte
	claimed digest.Digest
}

type hold struct {
	arrived chan struct{}
	once    sync.Once
	release chan struct{}
}

// NewUpstream starts an empty upstream, stopped when the test ends.
func NewUpstream(t testing.TB) *Upstream {
	t.Helper()
	u := &Upstream{reg: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))),
		holds: map[string]*hold{}, lies: map[string]lie{}, drops: map[string]int{}}
	u.server = httptest.NewServer(http.HandlerFunc(u.serve))
	u.Host = strings.TrimPrefix(u.server.URL, "http://")
	t.Cleanup(u.Close)
	return u
}

// URL is the upstream's base URL (http://127.0.0.1:PORT).
func (u *Upstream) URL() string { return u.server.URL }

// Close stops the upstream: from then on it cannot be reached.
func (u *Upstream) Close() {
	u.mu.Lock()
	for _, h := range u.holds {
		h.once.Do(func() { close(h.release) })
	}
	u.mu.Unlock()
	u.server.CloseClientConnections()
	u.server.Close()
}

// Repo is the full repository name of path on this upstream.
func (u *Upstream) Repo(path string) string { return u.Host + "/" + path }

// target is what a GET of a manifest or blob names: the last path element.
func target(r *http.Request) string {
	if k := Kind(r.URL.Path); k != "manifests" && k != "blobs" {
		return ""
	}
	return r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	user, pass := u.user, u.pass
	u.mu.Unlock()
	if user != "" {
		if gu, gp, ok := r.BasicAuth(); !ok || gu != user || gp != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="pullthroughtest"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"credentials wanted"}]}`, http.StatusUnauthorized)
			return
		}
	}
	tg := target(r)
	if tg == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		u.reg.ServeHTTP(w, r)
		return
	}
	u.mu.Lock()
	h := u.holds[tg]
	lie, lying := u.lies[tg]
	drop := r.Method == http.MethodGet && u.drops[tg] > 0
	if drop {
		u.drops[tg]--
	}
	u.mu.Unlock()
	if h != nil && r.Method == http.MethodGet {
		h.once.Do(func() { close(h.arrived) })
		select {
		case <-h.release:
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case lying:
		if Kind(r.URL.Path) == "manifests" {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		if lie.claimed != "" {
			w.Header().Set("Docker-Content-Digest", string(lie.claimed))
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(lie.body))
	case drop:
		// the real answer's headers and its first half, then the
		// connection goes away
		rec := u.answer(r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		_, _ = w.Write(body[:len(body)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler)
	case r.Header.Get("Range") != "":
		rec := u.answer(r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	default:
		u.reg.ServeHTTP(w, r)
	}
}

// answer is the registry's answer to r, with any byte range served as real
// registries do (go-containerregistry's registry takes only closed ranges,
// and a resumption asks "bytes=N-").
func (u *Upstream) answer(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	if r.Header.Get("Range") == "" || Kind(r.URL.Path) != "blobs" {
		u.reg.ServeHTTP(rec, r)
		return rec
	}
	whole := httptest.NewRecorder()
	r2 := r.Clone(r.Context())
	r2.Header.Del("Range")
	u.reg.ServeHTTP(whole, r2)
	if whole.Code != http.StatusOK {
		return whole
	}
	for _, k := range []string{"Content-Type", "Docker-Content-Digest"} {
		rec.Header().Set(k, whole.Header().Get(k))
	}
	http.ServeContent(rec, r, "", time.Time{}, bytes.NewReader(whole.Body.Bytes()))
	return rec
}

// Hold makes GETs of what (a blob digest, or a manifest's tag or digest) wait
// until release is called (or the upstream closes). arrived is closed when
// the first of them has come in.
func (u *Upstream) Hold(what string) (arrived <-chan struct{}, release func()) {
	h := &hold{arrived: make(chan struct{}), release: make(chan struct{})}
	u.mu.Lock()
	u.holds[what] = h
	u.mu.Unlock()
	var once sync.Once
	return h.arrived, func() {
		once.Do(func() {
			u.mu.Lock()
			delete(u.holds, what)
			u.mu.Unlock()
			close(h.release)
		})
	}
}

// Lie makes the upstream answer body to GET and HEAD of what (a blob
// digest, or a manifest's tag or digest), with a Docker-Content-Digest
// header claiming claimed when it is set.
func (u *Upstream) Lie(what string, body []byte, claimed digest.Digest) {
	u.mu.Lock()
	u.lies[what] = lie{body, claimed}
	u.mu.Unlock()
}

// Drop makes the next times GETs of what send half of their answer and then
// close the connection.
func (u *Upstream) Drop(what string, times int) {
	u.mu.Lock()
	u.drops[what] = times
	u.mu.Unlock()
}

// RequireAuth makes every request need Basic credentials user:pass.
func (u *Upstream) RequireAuth(user, pass string) {
	u.mu.Lock()
	u.user, u.pass = user, pass
	u.mu.Unlock()
}

// ref parses a reference on this upstream (path:tag).
func (u *Upstream) ref(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(u.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (u *Upstream) writeOptions(ctx context.Context) []remote.Option {
	u.mu.Lock()
	defer u.mu.Unlock()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(&http.Transport{})}
	if u.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: u.user, Password: u.pass}))
	}
	return opts
}

// PushImage pushes img as ref (path:tag) and returns its digest.
func (u *Upstream) PushImage(ctx context.Context, t testing.TB, ref string, img v1.Image) digest.Digest {
	t.Helper()
	if err := remote.Write(u.ref(t, ref), img, u.writeOptions(ctx)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return Digest(t, img)
}

// PushIndex pushes idx (and its images) as ref (path:tag) and returns its
// digest.
func (u *Upstream) PushIndex(ctx context.Context, t testing.TB, ref string, idx v1.ImageIndex) digest.Digest {
	t.Helper()
	if err := remote.WriteIndex(u.ref(t, ref), idx, u.writeOptions(ctx)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String())
}

// Digest is an image's manifest digest.
func Digest(t testing.TB, img v1.Image) digest.Digest {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String())
}

// Image is a random image of layers layers of size bytes each, whose config
// names platform plat ("os/arch[/variant]"; "" names none).
func Image(t testing.TB, plat string, layers int, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	if plat == "" {
		return img
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	p := Platform(plat)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Platform parses "os/arch[/variant]".
func Platform(s string) *v1.Platform {
	parts := strings.SplitN(s, "/", 3)
	p := &v1.Platform{OS: parts[0]}
	if len(parts) > 1 {
		p.Architecture = parts[1]
	}
	if len(parts) > 2 {
		p.Variant = parts[2]
	}
	return p
}

// Index is a multi-platform index of one random image per platform (each
// of layers layers of size bytes); images are in the order of plats.
func Index(t testing.TB, layers int, size int64, plats ...string) (v1.ImageIndex, []v1.Image) {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	var imgs []v1.Image
	for _, p := range plats {
		img := Image(t, p, layers, size)
		imgs = append(imgs, img)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: Platform(p)}})
	}
	return idx, imgs
}

// Blobs are an image's config and layer digests with their bytes.
func Blobs(t testing.TB, img v1.Image) (config digest.Digest, layers []digest.Digest, data map[digest.Digest][]byte) {
	t.Helper()
	data = map[digest.Digest][]byte{}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	config = digest.FromBytes(raw)
	data[config] = raw
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b)
		layers = append(layers, d)
		data[d] = b
	}
	return config, layers, data
}

// Get sends a GET of url and reads the answer whole.
func Get(ctx context.Context, url string) (status int, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", upstream.ManifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Concurrently runs fn(0), ..., fn(n-1), each in a goroutine of its own;
// wait waits for them all.
func Concurrently(n int, fn func(i int)) (wait func()) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	return wg.Wait
}

// Context is a context for one test, done after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Cache is a pull-through cache over a fresh data folder (store and
// index) in a temp folder.
type Cache struct {
	*pullthrough.Cache
	*storage.Storage
}

// NewCache opens a data folder in a temp folder and a cache over it whose
// upstream requests go through transport (a Counter), retried with short
// waits.
func NewCache(t testing.TB, transport http.RoundTripper, o pullthrough.Options) *Cache {
	t.Helper()
	st, err := storage.Open(context.Background(), t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := pullthrough.New(st.Store, st.DB, Client(transport, nil, nil), o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
		_ = st.Close()
	})
	return &Cache{Cache: c, Storage: st}
}

// Client is an upstream client over transport with short retry waits,
// sending hosts' traffic to endpoints, answering credentials from creds
// (by host, as "user:pass") and never from the machine's Docker config.
func Client(transport http.RoundTripper, endpoints map[string]string, creds map[string]string) *upstream.Client {
	return upstream.New(upstream.Options{Transport: transport, Endpoints: endpoints, Keychain: keychain(creds), Backoff: time.Millisecond})
}

// WaitParked waits until n goroutines are parked (blocked, not running)
// with fn among their callers, or ctx is done (a failure). A test uses it to
// know that callers have all reached a point where they wait on something
// the test holds.
func WaitParked(ctx context.Context, t testing.TB, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		got := 0
		for {
			m := runtime.Stack(buf, true)
			if m < len(buf) {
				got = parked(string(buf[:m]), fn)
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d goroutines parked in %s, want %d: %v", got, fn, n, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func parked(stacks, fn string) int {
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "[running]") || strings.Contains(head, "[runnable]") || strings.Contains(head, "[syscall") {
			continue
		}
		if strings.Contains(g, fn+"(") {
			n++
		}
	}
	return n
}

// keychain answers "user:pass" credentials by registry host, and anonymous
// access for the others.
type keychain map[string]string

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if up, ok := k[r.RegistryStr()]; ok {
		user, pass, _ := strings.Cut(up, ":")
		return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}), nil
	}
	return authn.Anonymous, nil
}
