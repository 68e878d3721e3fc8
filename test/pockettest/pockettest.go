// Package pockettest holds what the pocket's API and web UI tests share: a
// real upstream (Debian's docker-registry) with generated images behind a
// loopback proxy that can slow or break blob transfers, `crpe serve` and
// `crpe agent` as real processes, and small API and event-stream clients.
// Everything listens on 127.0.0.1.
package pockettest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// Platforms of the fixtures.
var (
	AMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	ARM64 = ocispec.Platform{OS: "linux", Architecture: "arm64"}
)

// Client bounds every request of the tests in time.
var Client = &http.Client{Timeout: 60 * time.Second}

// Fixture is an upstream registry holding:
//
//	library/app:1.0  an OCI index for linux/amd64 and linux/arm64, whose
//	                 images share a layer (Shared)
//	library/app:2.0  a single linux/amd64 image with Shared and a new layer
//	library/tool:1.0 a single linux/amd64 image (not used by the packages)
type Fixture struct {
	Up     *testenv.Distribution
	Proxy  *Proxy
	Shared testenv.Blob
	App1   []testenv.Image
	App2   testenv.Image
	Tool   testenv.Image
}

// NewFixture starts docker-registry, pushes the images and puts a proxy in
// front. layerSize sizes the layers (the shared one is twice as large).
func NewFixture(t testing.TB, layerSize int) *Fixture {
	t.Helper()
	up := testenv.StartDistribution(t)
	f := &Fixture{Up: up}
	f.Shared = testenv.RandomLayer(t, 2*layerSize, false)
	a := testenv.NewImage(t, AMD64, []testenv.Blob{f.Shared, testenv.RandomLayer(t, layerSize, false)}, false)
	b := testenv.NewImage(t, ARM64, []testenv.Blob{f.Shared, testenv.RandomLayer(t, layerSize, false)}, false)
	f.App1 = []testenv.Image{a, b}
	testenv.PushIndex(t, up.URL, "library/app", "1.0", f.App1, testenv.NewIndex(f.App1, false))
	f.App2 = testenv.NewImage(t, AMD64, []testenv.Blob{f.Shared, testenv.RandomLayer(t, layerSize, false)}, false)
	testenv.PushImage(t, up.URL, "library/app", "2.0", f.App2)
	f.Tool = testenv.NewImage(t, AMD64, []testenv.Blob{testenv.RandomLayer(t, layerSize/2+1, false)}, false)
	testenv.PushImage(t, up.URL, "library/tool", "1.0", f.Tool)
	f.Proxy = StartProxy(t, up.URL)
	return f
}

// Package is a KubePkg (YAML) of version using image ref, for platforms.
func Package(name, version, ref, platforms string) string {
	return fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: %s
  namespace: default
  annotations: {octohelm.tech/platform: %q}
spec:
  version: %s
  images: {%q: ""}
  manifests:
    web.default.deployment:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: web, namespace: default}
      spec:
        selector: {matchLabels: {app: web}}
        template:
          metadata: {labels: {app: web}}
          spec: {containers: [{name: web, image: %q}]}
`, name, platforms, version, ref, ref)
}

// Proxy is a loopback reverse proxy to the upstream that can slow blob
// bodies down (BytesPerSecond) and refuse blobs (Fail: 503 for any blob
// GET while set).
type Proxy struct {
	URL            string
	BytesPerSecond atomic.Int64
	Fail           atomic.Bool
	BlobGETs       atomic.Int64
	// BlobOKs counts blob GETs served (not refused).
	BlobOKs atomic.Int64
	// Auth, when set to "user:password", makes every request need those
	// Basic credentials.
	Auth atomic.Value
}

// StartProxy starts a proxy to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &Proxy{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want, _ := p.Auth.Load().(string); want != "" {
			if u, pw, ok := r.BasicAuth(); !ok || u+":"+pw != want {
				w.Header().Set("WWW-Authenticate", `Basic realm="pockettest"`)
				http.Error(w, "credentials required", http.StatusUnauthorized)
				return
			}
		}
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			rp.ServeHTTP(w, r)
			return
		}
		p.BlobGETs.Add(1)
		if p.Fail.Load() {
			http.Error(w, "upstream down for the test", http.StatusServiceUnavailable)
			return
		}
		p.BlobOKs.Add(1)
		rp.ServeHTTP(&slowWriter{ResponseWriter: w, p: p, ctx: r.Context()}, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.URL = "http://" + ln.Addr().String()
	return p
}

type slowWriter struct {
	http.ResponseWriter
	p   *Proxy
	ctx context.Context
}

func (s *slowWriter) Write(b []byte) (int, error) {
	bps := s.p.BytesPerSecond.Load()
	if bps <= 0 {
		return s.ResponseWriter.Write(b)
	}
	chunk := int(bps / 20) // 50 ms worth
	if chunk < 1024 {
		chunk = 1024
	}
	n := 0
	for len(b) > 0 {
		c := min(chunk, len(b))
		w, err := s.ResponseWriter.Write(b[:c])
		n += w
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		b = b[c:]
		select {
		case <-s.ctx.Done():
			return n, s.ctx.Err()
		case <-time.After(time.Duration(float64(c) / float64(bps) * float64(time.Second))):
		}
	}
	return n, nil
}

func (s *slowWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// PocketToken is the token of the pockets the tests start.
const PocketToken = "pocket-test-token"

// StartPocket runs `crpe serve` on a free loopback port with docker.io sent
// to upstream, and waits until it is healthy.
func StartPocket(t testing.TB, upstream string, extra ...string) *testenv.Proc {
	t.Helper()
	addr := testenv.FreeAddr(t)
	data := t.TempDir()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte(PocketToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--addr", addr, "--data", data, "--log-format", "text", "--token-file", tok,
		"--registry-endpoint", "docker.io=" + upstream}, extra...)
	p := testenv.Start(t, args...)
	p.Addr, p.URL, p.Data, p.Token = addr, "http://"+addr, data, PocketToken
	testenv.WaitHealthy(t, p)
	return p
}

// Response is an API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
}

// Call sends method url with body (string, []byte or a value sent as
// JSON) and headers (name, value pairs).
func Call(t testing.TB, method, u string, body any, hdr ...string) *Response {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		ctype = "application/yaml"
	case []byte:
		rd = bytes.NewReader(b)
		ctype = "application/octet-stream"
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
		ctype = "application/json"
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", method, u, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Must checks the status.
func (r *Response) Must(t testing.TB, status int) *Response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}

// Event is one Server-Sent Event.
type Event struct {
	At   time.Time
	Name string
	Data json.RawMessage
}

// Job is the part of a job event the tests read.
type Job struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`
	Package string          `json:"package"`
	Agent   string          `json:"agent"`
	State   string          `json:"state"`
	Phase   string          `json:"phase"`
	Error   string          `json:"error"`
	Bytes   int64           `json:"bytes"`
	Total   int64           `json:"total"`
	Rate    int64           `json:"rate"`
	Percent int             `json:"percent"`
	Result  json.RawMessage `json:"result"`
	Images  []struct {
		Ref   string `json:"ref"`
		Bytes int64  `json:"bytes"`
		Total int64  `json:"total"`
		Rate  int64  `json:"rate"`
	} `json:"images"`
}

// Events is an open event stream.
type Events struct {
	mu     sync.Mutex
	events []Event
	cond   *sync.Cond
	closed bool
	cancel context.CancelFunc
}

// Subscribe opens GET /api/v1/events of base until the test ends.
func Subscribe(t testing.TB, base string) *Events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Events{cancel: cancel}
	e.cond = sync.NewCond(&e.mu)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(e.Close)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				e.mu.Lock()
				e.events = append(e.events, Event{At: time.Now(), Name: name, Data: json.RawMessage(strings.TrimPrefix(line, "data: "))})
				e.cond.Broadcast()
				e.mu.Unlock()
			}
		}
		e.mu.Lock()
		e.closed = true
		e.cond.Broadcast()
		e.mu.Unlock()
	}()
	return e
}

// Close ends the stream.
func (e *Events) Close() { e.cancel() }

// Jobs returns the job events for id so far.
func (e *Events) Jobs(id string) []Job {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Job
	for _, ev := range e.events {
		if ev.Name != "job" {
			continue
		}
		var j Job
		if json.Unmarshal(ev.Data, &j) == nil && j.ID == id {
			out = append(out, j)
		}
	}
	return out
}

// Times returns when each job event for id arrived.
func (e *Events) Times(id string) []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []time.Time
	for _, ev := range e.events {
		var j Job
		if ev.Name == "job" && json.Unmarshal(ev.Data, &j) == nil && j.ID == id {
			out = append(out, ev.At)
		}
	}
	return out
}

// WaitJob waits until job id is over and returns its last event.
func (e *Events) WaitJob(t testing.TB, id string, d time.Duration) Job {
	t.Helper()
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() {
		e.mu.Lock()
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	defer timer.Stop()
	for {
		js := e.Jobs(id)
		if n := len(js); n > 0 && js[n-1].State != "running" {
			return js[n-1]
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			t.Fatalf("event stream closed before job %s ended", id)
		}
		if time.Now().After(deadline) {
			e.mu.Unlock()
			t.Fatalf("job %s not over after %v: %+v", id, d, js)
		}
		e.cond.Wait()
		e.mu.Unlock()
	}
}

// Figure logs a measured figure and, when CRPE_FIGURES names a file, appends
// "name value" to it for bench/webui.sh. Goals on time are checked there,
// not in the tests (timed assertions do not belong in a test suite).
func Figure(t testing.TB, name string, value float64) {
	t.Helper()
	t.Logf("figure %s = %g", name, value)
	if path := os.Getenv("CRPE_FIGURES"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, "%s %g\n", name, value); err != nil {
			t.Fatal(err)
		}
	}
}
