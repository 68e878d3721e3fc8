package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// client bounds every request of these tests in time.
var client = &http.Client{Timeout: 20 * time.Second}

// cred is how a request authenticates.
type cred struct {
	bearer     string
	user, pass string
	basic      bool
}

func anon() cred                 { return cred{} }
func bearer(tok string) cred     { return cred{bearer: tok} }
func basic(user, pw string) cred { return cred{user: user, pass: pw, basic: true} }
func (c cred) apply(r *http.Request) {
	switch {
	case c.bearer != "":
		r.Header.Set("Authorization", "Bearer "+c.bearer)
	case c.basic:
		r.SetBasicAuth(c.user, c.pass)
	}
}

// resp is an answer, read in full.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.Status, truncate(string(r.Body), 300)) }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func do(t testing.TB, c cred, method, url string, body []byte, hdr ...string) resp {
	t.Helper()
	return doWith(t, client, c, method, url, body, hdr...)
}

func doWith(t testing.TB, hc *http.Client, c cred, method, url string, body []byte, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c.apply(req)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: b}
}

// errorCode returns the code of the first entry of an OCI error body, or "".
func errorCode(b []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func expectStatus(t testing.TB, what string, r resp, want int) {
	t.Helper()
	if r.Status != want {
		t.Errorf("%s: got %s, want status %d", what, r, want)
	}
}

// expectUnauthorized checks a 401 with the spec's JSON body and the Basic
// challenge.
func expectUnauthorized(t testing.TB, what string, r resp) {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Errorf("%s: got %s, want 401", what, r)
		return
	}
	if c := errorCode(r.Body); c != "UNAUTHORIZED" {
		t.Errorf("%s: error code %q, want UNAUTHORIZED (body %s)", what, c, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	if got := r.Header.Get("WWW-Authenticate"); got != `Basic realm="crpe"` {
		t.Errorf("%s: WWW-Authenticate %q, want %q", what, got, `Basic realm="crpe"`)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// pushBlob uploads b monolithically (POST ?digest=) into repo.
func pushBlob(t testing.TB, base, repo, tok string, b []byte) string {
	t.Helper()
	d := sha(b)
	r := do(t, bearer(tok), http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+d, b,
		"Content-Type", "application/octet-stream")
	if r.Status != http.StatusCreated {
		t.Fatalf("push blob %s to %s: %s", d, repo, r)
	}
	return d
}

// image is what pushImage pushed.
type image struct {
	Manifest []byte
	Digest   string
	Layer    []byte
	LayerDig string
}

// pushImage pushes a tiny OCI image (config, one layer) to repo:tag.
func pushImage(t testing.TB, base, repo, tag, tok string, layer []byte) image {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + sha(layer) + `"]}}`)
	cd := pushBlob(t, base, repo, tok, cfg)
	ld := pushBlob(t, base, repo, tok, layer)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		cd, len(cfg), ld, len(layer))
	r := do(t, bearer(tok), http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, []byte(m),
		"Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if r.Status != http.StatusCreated {
		t.Fatalf("push manifest %s:%s: %s", repo, tag, r)
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != sha([]byte(m)) {
		t.Errorf("push manifest: Docker-Content-Digest %q, want %q", got, sha([]byte(m)))
	}
	return image{Manifest: []byte(m), Digest: sha([]byte(m)), Layer: layer, LayerDig: ld}
}

// tinyManifest is a valid manifest body for PUTs that must be refused.
func tinyManifest() []byte {
	return []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
}

// stop sends SIGTERM and waits up to d for p to exit; it returns the exit
// code.
func stop(t testing.TB, p *testenv.Proc, d time.Duration) int {
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.Stopped():
	case <-time.After(d):
		t.Fatalf("crpe still running %v after SIGTERM:\n%s", d, p.Logs())
	}
	return p.Cmd.ProcessState.ExitCode()
}

// waitURL polls url with c until it answers 200, for up to 15 s or until
// exited is closed.
func waitURL(t testing.TB, c *http.Client, url string, exited <-chan struct{}, logs func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Errorf("status %d", res.StatusCode)
		} else {
			last = err
		}
		select {
		case <-exited:
			t.Fatalf("crpe exited before %s answered:\n%s", url, logs())
		case <-ctx.Done():
			t.Fatalf("%s not answering after 15s (%v):\n%s", url, last, logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// proc is a crpe process run with a chosen environment (testenv.Start
// inherits the test's).
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// cleanEnv is the test's environment without any CRPE_ variable.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRPE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func basicAuthValue(user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
}

// startProc runs crpe with env (not the test's) until the test ends.
func startProc(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(testenv.Crpe(t), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("crpe %v output:\n%s", args, p.Logs())
		}
	})
	return p
}
