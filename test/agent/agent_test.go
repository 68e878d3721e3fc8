// Package agent tests the running `crpe agent` binary as a real process on
// loopback: token auth, the token file, read-only mode, crane as a client
// (and containerd's ?ns= mirror dialect), /healthz and /metrics, graceful
// shutdown on SIGTERM, TLS, settings from the environment, and the version
// and help output.
package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuth: anonymous reads, token-only writes, the 401 format, Bearer and
// Basic (any user name) carrying the token, wrong credentials refused even
// on reads.
func TestAuth(t *testing.T) {
	t.Parallel()
	a := testenv.StartAgent(t, testenv.AgentOptions{Token: "s3cret-token", Args: []string{"--allow-push"}})
	base, tok := a.URL, a.Token
	repo := base + "/v2/test/auth"

	// anonymous reads
	r := do(t, anon(), http.MethodGet, base+"/v2/", nil)
	expectStatus(t, "anonymous GET /v2/", r, http.StatusOK)
	if got := r.Header.Get("Docker-Distribution-Api-Version"); got != "registry/2.0" {
		t.Errorf("GET /v2/: Docker-Distribution-Api-Version %q", got)
	}
	img := pushImage(t, base, "test/auth", "v1", tok, randBytes(t, 4096))
	r = do(t, anon(), http.MethodGet, repo+"/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	expectStatus(t, "anonymous GET manifest", r, http.StatusOK)
	if !bytes.Equal(r.Body, img.Manifest) {
		t.Errorf("anonymous GET manifest: body differs from what was pushed")
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != img.Digest {
		t.Errorf("anonymous GET manifest: Docker-Content-Digest %q, want %q", got, img.Digest)
	}
	expectStatus(t, "anonymous HEAD manifest", do(t, anon(), http.MethodHead, repo+"/manifests/"+img.Digest, nil), http.StatusOK)
	r = do(t, anon(), http.MethodGet, repo+"/blobs/"+img.LayerDig, nil)
	expectStatus(t, "anonymous GET blob", r, http.StatusOK)
	if !bytes.Equal(r.Body, img.Layer) {
		t.Errorf("anonymous GET blob: body differs from what was pushed")
	}
	expectStatus(t, "anonymous GET tags", do(t, anon(), http.MethodGet, repo+"/tags/list", nil), http.StatusOK)
	expectStatus(t, "anonymous GET catalog", do(t, anon(), http.MethodGet, base+"/v2/_catalog", nil), http.StatusOK)

	// writes without credentials
	uploads := repo + "/blobs/uploads/"
	expectUnauthorized(t, "anonymous POST upload", do(t, anon(), http.MethodPost, uploads, nil))
	blob := []byte("monolithic")
	expectUnauthorized(t, "anonymous monolithic POST", do(t, anon(), http.MethodPost, uploads+"?digest="+sha(blob), blob))
	expectUnauthorized(t, "anonymous PUT manifest", do(t, anon(), http.MethodPut, repo+"/manifests/v2", tinyManifest(),
		"Content-Type", "application/vnd.oci.image.manifest.v1+json"))
	expectUnauthorized(t, "anonymous DELETE manifest", do(t, anon(), http.MethodDelete, repo+"/manifests/"+img.Digest, nil))
	expectUnauthorized(t, "anonymous DELETE tag", do(t, anon(), http.MethodDelete, repo+"/manifests/v1", nil))
	expectUnauthorized(t, "anonymous DELETE blob", do(t, anon(), http.MethodDelete, repo+"/blobs/"+img.LayerDig, nil))

	// wrong credentials
	for name, c := range map[string]cred{
		"wrong Bearer":                   bearer("not-the-token"),
		"wrong Basic password":           basic("crpe", "not-the-token"),
		"token as Basic user name":       basic(tok, ""),
		"token prefix as Bearer":         bearer(tok[:len(tok)-1]),
		"token with a suffix as Bearer":  bearer(tok + "x"),
		"wrong Basic, token as the user": basic(tok, "x"),
	} {
		expectUnauthorized(t, name+": POST upload", do(t, c, http.MethodPost, uploads, nil))
		expectUnauthorized(t, name+": GET /v2/", do(t, c, http.MethodGet, base+"/v2/", nil))
	}
	for name, h := range map[string]string{
		"empty Bearer":       "Bearer ",
		"malformed Basic":    "Basic !!!not-base64",
		"Basic without pass": "Basic " + basicAuthValue("crpe", ""),
		"unknown scheme":     "Token " + tok,
	} {
		expectUnauthorized(t, name+": POST upload", do(t, anon(), http.MethodPost, uploads, nil, "Authorization", h))
	}

	// the token, as Bearer and as the Basic password with any user name
	for name, c := range map[string]cred{
		"Bearer":                     bearer(tok),
		"Basic crpe":                 basic("crpe", tok),
		"Basic other user":           basic("someone-else", tok),
		"Basic empty user":           basic("", tok),
		"Basic user with odd chars!": basic("a b@c", tok),
	} {
		r := do(t, c, http.MethodPost, uploads, nil)
		expectStatus(t, name+": POST upload", r, http.StatusAccepted)
		if r.Status == http.StatusAccepted && r.Header.Get("Location") == "" {
			t.Errorf("%s: POST upload: no Location", name)
		}
		expectStatus(t, name+": GET manifest", do(t, c, http.MethodGet, repo+"/manifests/v1", nil), http.StatusOK)
	}

	// reads carrying wrong credentials are refused, not served anonymously
	expectUnauthorized(t, "GET manifest with a wrong Bearer", do(t, bearer("nope"), http.MethodGet, repo+"/manifests/v1", nil))
	expectUnauthorized(t, "GET blob with a wrong Basic password", do(t, basic("crpe", "nope"), http.MethodGet, repo+"/blobs/"+img.LayerDig, nil))
	r = do(t, bearer("nope"), http.MethodHead, repo+"/manifests/v1", nil)
	expectStatus(t, "HEAD manifest with a wrong Bearer", r, http.StatusUnauthorized)
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("HEAD 401 without WWW-Authenticate")
	}

	// nothing refused above changed anything; the token can delete
	expectStatus(t, "manifest still there", do(t, anon(), http.MethodGet, repo+"/manifests/v1", nil), http.StatusOK)
	expectStatus(t, "DELETE manifest with the token", do(t, bearer(tok), http.MethodDelete, repo+"/manifests/"+img.Digest, nil), http.StatusAccepted)
	expectStatus(t, "GET deleted manifest", do(t, anon(), http.MethodGet, repo+"/manifests/"+img.Digest, nil), http.StatusNotFound)

	// probes and metrics are not behind the guard
	expectStatus(t, "GET /healthz", do(t, anon(), http.MethodGet, base+"/healthz", nil), http.StatusOK)
}

// TestPullTokenRequired: with --pull-token-required every read needs the
// token too; /healthz stays open.
func TestPullTokenRequired(t *testing.T) {
	t.Parallel()
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push", "--pull-token-required"}})
	base, tok := a.URL, a.Token
	repo := base + "/v2/test/private"
	img := pushImage(t, base, "test/private", "v1", tok, randBytes(t, 1024))

	for _, u := range []string{base + "/v2/", base + "/v2/_catalog", repo + "/tags/list", repo + "/manifests/v1",
		repo + "/manifests/" + img.Digest, repo + "/blobs/" + img.LayerDig} {
		expectUnauthorized(t, "anonymous GET "+u, do(t, anon(), http.MethodGet, u, nil))
		expectUnauthorized(t, "wrong token GET "+u, do(t, bearer("nope"), http.MethodGet, u, nil))
		expectStatus(t, "Bearer GET "+u, do(t, bearer(tok), http.MethodGet, u, nil), http.StatusOK)
		expectStatus(t, "Basic GET "+u, do(t, basic("whoever", tok), http.MethodGet, u, nil), http.StatusOK)
	}
	expectStatus(t, "anonymous HEAD manifest", do(t, anon(), http.MethodHead, repo+"/manifests/v1", nil), http.StatusUnauthorized)
	expectUnauthorized(t, "anonymous POST upload", do(t, anon(), http.MethodPost, repo+"/blobs/uploads/", nil))
	expectStatus(t, "anonymous /healthz", do(t, anon(), http.MethodGet, base+"/healthz", nil), http.StatusOK)
}

// startWithTokenFile runs `crpe agent --allow-push` with the given token
// file and waits until it is healthy.
func startWithTokenFile(t *testing.T, tokenFile string, extra ...string) *testenv.Proc {
	t.Helper()
	addr := testenv.FreeAddr(t)
	data := t.TempDir()
	args := append([]string{"agent", "--addr", addr, "--data", data, "--token-file", tokenFile, "--log-format", "text"}, extra...)
	p := testenv.Start(t, args...)
	p.Addr, p.URL, p.Data = addr, "http://"+addr, data
	testenv.WaitHealthy(t, p)
	return p
}

// canWrite reports whether tok may start an upload.
func canWrite(t testing.TB, base, tok string) bool {
	t.Helper()
	r := do(t, bearer(tok), http.MethodPost, base+"/v2/test/tokens/blobs/uploads/", nil)
	switch r.Status {
	case http.StatusAccepted:
		return true
	case http.StatusUnauthorized:
		return false
	}
	t.Fatalf("POST upload with token %q: %s", tok, r)
	return false
}

// waitToken polls until tok's acceptance is want, for up to limit; it
// returns how long that took.
func waitToken(t *testing.T, base, tok string, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if canWrite(t, base, tok) == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("token %q: accepted should be %v, still not after %v", tok, want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTokenFileReload: the token file is re-read when it changes, in place or
// replaced by a rename; a missing file keeps the last good tokens.
func TestTokenFileReload(t *testing.T) {
	t.Parallel()
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte("# the write tokens\n\nfirst-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startWithTokenFile(t, tf, "--allow-push")
	base := p.URL
	if !canWrite(t, base, "first-token") {
		t.Fatal("first-token refused")
	}
	for _, bad := range []string{"# the write tokens", "#", "first-token-"} {
		if canWrite(t, base, bad) {
			t.Errorf("token %q accepted", bad)
		}
	}

	// rewritten in place (same path)
	if err := os.WriteFile(tf, []byte("second-token-is-longer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	took := waitToken(t, base, "second-token-is-longer", true, 3*time.Second)
	if took > 1500*time.Millisecond {
		t.Errorf("new token accepted only after %v, want within ~1s", took)
	}
	if canWrite(t, base, "first-token") {
		t.Error("old token still accepted after the file was rewritten")
	}

	// rewritten in place with a token of the same length
	time.Sleep(20 * time.Millisecond) // a distinct modification time
	if err := os.WriteFile(tf, []byte("second-token-is-LONGER\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	took = waitToken(t, base, "second-token-is-LONGER", true, 3*time.Second)
	if took > 1500*time.Millisecond {
		t.Errorf("same-length token accepted only after %v, want within ~1s", took)
	}
	if canWrite(t, base, "second-token-is-longer") {
		t.Error("old same-length token still accepted")
	}

	// replaced atomically by a rename, with two tokens
	tmp := tf + ".new"
	if err := os.WriteFile(tmp, []byte("third-token\nfourth-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tf); err != nil {
		t.Fatal(err)
	}
	waitToken(t, base, "fourth-token", true, 3*time.Second)
	if !canWrite(t, base, "third-token") {
		t.Error("first of two tokens refused")
	}
	if canWrite(t, base, "second-token-is-LONGER") {
		t.Error("token of the replaced file still accepted")
	}

	// briefly missing (mid-rewrite): the last good tokens stay
	if err := os.Remove(tf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if !canWrite(t, base, "third-token") {
		t.Error("token refused while the token file is missing: want the last good set kept")
	}
	if err := os.WriteFile(tf, []byte("fifth-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitToken(t, base, "fifth-token", true, 3*time.Second)
	if canWrite(t, base, "third-token") {
		t.Error("old token accepted after the token file came back")
	}
}

// TestGeneratedToken: without --token-file the agent creates <data>/token
// (0600), logs its path, and keeps it across restarts.
func TestGeneratedToken(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	start := func() *testenv.Proc {
		addr := testenv.FreeAddr(t)
		p := testenv.Start(t, "agent", "--addr", addr, "--data", data, "--allow-push", "--log-format", "text")
		p.Addr, p.URL, p.Data = addr, "http://"+addr, data
		testenv.WaitHealthy(t, p)
		return p
	}
	p := start()
	tf := filepath.Join(data, "token")
	fi, err := os.Stat(tf)
	if err != nil {
		t.Fatalf("no generated token file: %v\n%s", err, p.Logs())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(tf)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(raw))
	if len(tok) < 32 {
		t.Errorf("generated token %q is short", tok)
	}
	if _, err := hex.DecodeString(tok); err != nil {
		t.Errorf("generated token %q is not hex: %v", tok, err)
	}
	if !strings.Contains(p.Logs(), tf) {
		t.Errorf("logs do not name the token file %s:\n%s", tf, p.Logs())
	}
	if strings.Contains(p.Logs(), tok) {
		t.Errorf("logs contain the token itself")
	}
	if _, err := os.Stat(tf + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file of the token left behind: %v", err)
	}
	if !canWrite(t, p.URL, tok) {
		t.Error("generated token refused")
	}
	if canWrite(t, p.URL, tok[:len(tok)-2]) {
		t.Error("a prefix of the generated token accepted")
	}
	expectUnauthorized(t, "anonymous POST", do(t, anon(), http.MethodPost, p.URL+"/v2/test/tokens/blobs/uploads/", nil))
	if code := stop(t, p, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	p2 := start()
	raw2, err := os.ReadFile(tf)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw2) != string(raw) {
		t.Errorf("token changed across a restart: %q -> %q", raw, raw2)
	}
	if !canWrite(t, p2.URL, tok) {
		t.Error("generated token refused after a restart")
	}
	if strings.Contains(p2.Logs(), "created a random token") {
		t.Errorf("restart claims to have created a new token:\n%s", p2.Logs())
	}
}

// TestReadOnly: without --allow-push every write answers 405 UNSUPPORTED,
// even with the token; content pushed earlier is served.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	a := testenv.StartAgent(t, testenv.AgentOptions{Data: data, Args: []string{"--allow-push"}})
	img := pushImage(t, a.URL, "test/ro", "v1", a.Token, randBytes(t, 2048))
	if code := stop(t, a, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	b := testenv.StartAgent(t, testenv.AgentOptions{Data: data})
	base, tok := b.URL, b.Token
	repo := base + "/v2/test/ro"
	blob := []byte("read-only")
	writes := []struct {
		method, url string
		body        []byte
	}{
		{http.MethodPost, repo + "/blobs/uploads/", nil},
		{http.MethodPost, repo + "/blobs/uploads/?digest=" + sha(blob), blob},
		{http.MethodPost, base + "/v2/test/other/blobs/uploads/?mount=" + img.LayerDig + "&from=test/ro", nil},
		{http.MethodPatch, repo + "/blobs/uploads/some-session", blob},
		{http.MethodPut, repo + "/blobs/uploads/some-session?digest=" + sha(blob), blob},
		{http.MethodDelete, repo + "/blobs/uploads/some-session", nil},
		{http.MethodPut, repo + "/manifests/v2", tinyManifest()},
		{http.MethodPut, repo + "/manifests/v1", img.Manifest},
		{http.MethodDelete, repo + "/manifests/v1", nil},
		{http.MethodDelete, repo + "/manifests/" + img.Digest, nil},
		{http.MethodDelete, repo + "/blobs/" + img.LayerDig, nil},
	}
	for _, w := range writes {
		for name, c := range map[string]cred{"Bearer": bearer(tok), "Basic": basic("crpe", tok)} {
			r := do(t, c, w.method, w.url, w.body, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
			if r.Status != http.StatusMethodNotAllowed || errorCode(r.Body) != "UNSUPPORTED" {
				t.Errorf("%s %s %s: got %s, want 405 UNSUPPORTED", name, w.method, w.url, r)
			}
		}
		// without the token it is refused too (401 from the guard, or 405)
		if r := do(t, anon(), w.method, w.url, w.body); r.Status != http.StatusUnauthorized && r.Status != http.StatusMethodNotAllowed {
			t.Errorf("anonymous %s %s: got %s, want 401 or 405", w.method, w.url, r)
		}
	}

	// reads work
	expectStatus(t, "GET /v2/", do(t, anon(), http.MethodGet, base+"/v2/", nil), http.StatusOK)
	r := do(t, anon(), http.MethodGet, repo+"/manifests/v1", nil)
	expectStatus(t, "GET manifest by tag", r, http.StatusOK)
	if !bytes.Equal(r.Body, img.Manifest) {
		t.Error("manifest differs after a restart")
	}
	expectStatus(t, "GET manifest by digest", do(t, anon(), http.MethodGet, repo+"/manifests/"+img.Digest, nil), http.StatusOK)
	r = do(t, bearer(tok), http.MethodGet, repo+"/blobs/"+img.LayerDig, nil)
	expectStatus(t, "GET blob", r, http.StatusOK)
	if !bytes.Equal(r.Body, img.Layer) {
		t.Error("layer differs after a restart")
	}
	r = do(t, anon(), http.MethodGet, repo+"/tags/list", nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"v1"`) {
		t.Errorf("GET tags: %s", r)
	}
	r = do(t, anon(), http.MethodGet, base+"/v2/_catalog", nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"test/ro"`) {
		t.Errorf("GET catalog: %s", r)
	}
	if r := do(t, anon(), http.MethodGet, base+"/v2/test/other/blobs/"+img.LayerDig, nil); r.Status != http.StatusNotFound {
		t.Errorf("refused mount linked the blob anyway: %s", r)
	}
}

// layerTar is a tar holding one file.
func layerTar(t testing.TB, name string, content []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fileInLayer returns the content of name in a (gzipped or plain) layer.
func fileInLayer(t testing.TB, layer []byte, name string) []byte {
	t.Helper()
	var rd io.Reader = bytes.NewReader(layer)
	if len(layer) > 2 && layer[0] == 0x1f && layer[1] == 0x8b {
		zr, err := gzip.NewReader(rd)
		if err != nil {
			t.Fatal(err)
		}
		rd = zr
	}
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the layer: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// crane runs the crane peer with DOCKER_CONFIG=cfg, bounded in time.
type craneRunner struct {
	t    *testing.T
	bin  string
	cfg  string
	work string
}

func (c craneRunner) run(args ...string) (string, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.work
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+c.cfg, "HOME="+c.work)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), errors.New(err.Error() + ": " + stderr.String())
	}
	return stdout.String(), nil
}

func (c craneRunner) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("crane %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func dockerConfig(t testing.TB, host, user, pw string) string {
	t.Helper()
	dir := t.TempDir()
	auths := map[string]any{}
	if user != "" || pw != "" {
		auths[host] = map[string]string{"auth": basicAuthValue(user, pw)}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCrane drives the agent with the real crane client: append (push),
// manifest, digest, pull (OCI layout), push of that layout, ls, catalog,
// copy, delete; then pulls through containerd's ?ns= mirror dialect.
func TestCrane(t *testing.T) {
	t.Parallel()
	bin := testenv.Peer(t, "crane", "go install github.com/google/go-containerregistry/cmd/crane@v0.22.1")
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push"}})
	host := a.Addr
	work := t.TempDir()
	cr := craneRunner{t: t, bin: bin, cfg: dockerConfig(t, host, "crpe", a.Token), work: work}

	content := []byte(hex.EncodeToString(randBytes(t, 32<<10)))
	layerFile := filepath.Join(work, "layer.tar")
	if err := os.WriteFile(layerFile, layerTar(t, "hello.txt", content), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/test/app:v1"

	// no credentials: the push is refused
	anonCrane := craneRunner{t: t, bin: bin, cfg: dockerConfig(t, host, "", ""), work: work}
	if out, err := anonCrane.run("append", "--insecure", "-f", layerFile, "-t", host+"/test/denied:v1"); err == nil {
		t.Errorf("crane append without credentials succeeded: %s", out)
	} else if !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("crane append without credentials: %v (want 401 UNAUTHORIZED)", err)
	}
	wrongCrane := craneRunner{t: t, bin: bin, cfg: dockerConfig(t, host, "crpe", "wrong"), work: work}
	if out, err := wrongCrane.run("append", "--insecure", "-f", layerFile, "-t", host+"/test/denied:v1"); err == nil {
		t.Errorf("crane append with a wrong password succeeded: %s", out)
	}

	out := cr.must("append", "--insecure", "--platform", "linux/amd64", "-f", layerFile, "-t", ref)
	t.Logf("crane append: %s", strings.TrimSpace(out))

	manifest := cr.must("manifest", "--insecure", ref)
	dig := strings.TrimSpace(cr.must("digest", "--insecure", ref))
	if want := sha([]byte(manifest)); dig != want {
		t.Errorf("crane digest %s, but the manifest hashes to %s", dig, want)
	}
	if !strings.Contains(out, dig) {
		t.Errorf("crane append printed %q, not the digest %s", out, dig)
	}
	if again := strings.TrimSpace(cr.must("digest", "--insecure", host+"/test/app@"+dig)); again != dig {
		t.Errorf("digest by digest %s, want %s", again, dig)
	}
	var m struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatalf("crane manifest: %v\n%s", err, manifest)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1:\n%s", len(m.Layers), manifest)
	}
	r := do(t, anon(), http.MethodHead, a.URL+"/v2/test/app/manifests/v1", nil, "Accept", m.MediaType)
	if r.Status != http.StatusOK || r.Header.Get("Docker-Content-Digest") != dig {
		t.Errorf("HEAD manifest: %s digest %q, want %s", r, r.Header.Get("Docker-Content-Digest"), dig)
	}

	// pull as an OCI layout: the layer holds the file
	layout := filepath.Join(work, "layout")
	cr.must("pull", "--insecure", "--format=oci", ref, layout)
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err != nil {
		t.Fatalf("crane pull wrote no OCI layout: %v", err)
	}
	lb, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(m.Layers[0].Digest, "sha256:")))
	if err != nil {
		t.Fatalf("pulled layout lacks the layer: %v", err)
	}
	if sha(lb) != m.Layers[0].Digest || int64(len(lb)) != m.Layers[0].Size {
		t.Errorf("pulled layer hashes to %s (%d bytes), manifest says %s (%d)", sha(lb), len(lb), m.Layers[0].Digest, m.Layers[0].Size)
	}
	if got := fileInLayer(t, lb, "hello.txt"); !bytes.Equal(got, content) {
		t.Error("hello.txt in the pulled layer differs from what was appended")
	}
	mb, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(dig, "sha256:")))
	if err != nil || string(mb) != manifest {
		t.Errorf("pulled layout lacks the manifest byte for byte (%v)", err)
	}

	// push that layout back under another name: same digest
	pushed := strings.TrimSpace(cr.must("push", "--insecure", layout, host+"/test/app-copy:v1"))
	if d := strings.TrimSpace(cr.must("digest", "--insecure", host+"/test/app-copy:v1")); d != dig {
		t.Errorf("digest after crane push of the pulled layout %s (push said %q), want %s", d, pushed, dig)
	}

	// tags and catalog
	cr.must("tag", "--insecure", ref, "v1.0")
	tags := strings.Fields(cr.must("ls", "--insecure", host+"/test/app"))
	if strings.Join(tags, ",") != "v1,v1.0" {
		t.Errorf("crane ls: %q, want [v1 v1.0]", tags)
	}

	// copy to a full name, then pull it the way containerd does as a mirror
	cr.must("copy", "--insecure", ref, host+"/docker.io/app:v1")
	if d := strings.TrimSpace(cr.must("digest", "--insecure", host+"/docker.io/app:v1")); d != dig {
		t.Errorf("digest of the copy %s, want %s", d, dig)
	}
	catalog := strings.Fields(cr.must("catalog", "--insecure", host))
	for _, want := range []string{"docker.io/app", "test/app", "test/app-copy"} {
		if !contains(catalog, want) {
			t.Errorf("crane catalog %q lacks %s", catalog, want)
		}
	}
	if contains(catalog, "test/denied") {
		t.Errorf("crane catalog %q lists the refused push", catalog)
	}
	for _, ns := range []string{"docker.io", "registry-1.docker.io", "index.docker.io", "DOCKER.IO"} {
		r := do(t, anon(), http.MethodGet, a.URL+"/v2/app/manifests/v1?ns="+ns, nil,
			"Accept", m.MediaType+", application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json")
		if r.Status != http.StatusOK {
			t.Errorf("mirror GET manifest ?ns=%s: %s", ns, r)
			continue
		}
		if string(r.Body) != manifest {
			t.Errorf("mirror GET manifest ?ns=%s: body differs", ns)
		}
		if got := r.Header.Get("OCI-Namespace"); got != "docker.io" {
			t.Errorf("mirror GET manifest ?ns=%s: OCI-Namespace %q, want docker.io", ns, got)
		}
		if got := r.Header.Get("Docker-Content-Digest"); got != dig {
			t.Errorf("mirror GET manifest ?ns=%s: Docker-Content-Digest %q, want %s", ns, got, dig)
		}
	}
	r = do(t, anon(), http.MethodGet, a.URL+"/v2/app/blobs/"+m.Layers[0].Digest+"?ns=docker.io", nil)
	if r.Status != http.StatusOK || sha(r.Body) != m.Layers[0].Digest {
		t.Errorf("mirror GET layer: %d, hashes to %s", r.Status, sha(r.Body))
	}
	r = do(t, anon(), http.MethodGet, a.URL+"/v2/app/manifests/"+dig+"?ns=docker.io", nil)
	expectStatus(t, "mirror GET manifest by digest", r, http.StatusOK)
	r = do(t, anon(), http.MethodGet, a.URL+"/v2/app/manifests/v1?ns=quay.io", nil)
	expectStatus(t, "mirror GET of another namespace", r, http.StatusNotFound)
	r = do(t, anon(), http.MethodGet, a.URL+"/v2/app/manifests/v1?ns=bad/host", nil)
	if r.Status != http.StatusBadRequest || errorCode(r.Body) != "NAME_INVALID" {
		t.Errorf("mirror GET with an invalid ns: %s, want 400 NAME_INVALID", r)
	}

	// delete by digest: gone by digest and by tag, in that repository only
	cr.must("delete", "--insecure", host+"/test/app@"+dig)
	if out, err := cr.run("manifest", "--insecure", host+"/test/app@"+dig); err == nil {
		t.Errorf("crane manifest after delete succeeded: %s", out)
	}
	expectStatus(t, "GET deleted manifest by tag", do(t, anon(), http.MethodGet, a.URL+"/v2/test/app/manifests/v1", nil), http.StatusNotFound)
	if d := strings.TrimSpace(cr.must("digest", "--insecure", host+"/docker.io/app:v1")); d != dig {
		t.Errorf("the copy went with the delete: %s", d)
	}
	// delete a tag of the copy
	cr.must("delete", "--insecure", host+"/test/app-copy:v1")
	if out, err := cr.run("digest", "--insecure", host+"/test/app-copy:v1"); err == nil {
		t.Errorf("deleted tag still resolves: %s", out)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// metricValue returns the value of the first sample of name whose labels
// contain every one of labels (`k="v"`), and whether there is one.
func metricValue(text, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		lbl, val := "", rest
		if rest[0] == '{' {
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			lbl, val = rest[:end+1], rest[end+1:]
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(lbl, l)
		}
		if !all {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(val)[0], 64)
		if err != nil {
			continue
		}
		return f, true
	}
	return 0, false
}

// TestHealthzAndMetrics: /healthz answers 200; /metrics exposes the HTTP,
// store and Go/process metrics.
func TestHealthzAndMetrics(t *testing.T) {
	t.Parallel()
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push"}})
	r := do(t, anon(), http.MethodGet, a.URL+"/healthz", nil)
	if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != "ok" {
		t.Errorf("/healthz: %s", r)
	}

	expectStatus(t, "GET /v2/", do(t, anon(), http.MethodGet, a.URL+"/v2/", nil), http.StatusOK)
	img := pushImage(t, a.URL, "test/metrics", "v1", a.Token, randBytes(t, 10000))
	expectStatus(t, "GET blob", do(t, anon(), http.MethodGet, a.URL+"/v2/test/metrics/blobs/"+img.LayerDig, nil), http.StatusOK)
	expectStatus(t, "anonymous POST", do(t, anon(), http.MethodPost, a.URL+"/v2/test/metrics/blobs/uploads/", nil), http.StatusUnauthorized)
	expectStatus(t, "GET unknown manifest", do(t, anon(), http.MethodGet, a.URL+"/v2/test/metrics/manifests/nope", nil), http.StatusNotFound)

	r = do(t, anon(), http.MethodGet, a.URL+"/metrics", nil)
	expectStatus(t, "GET /metrics", r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	text := string(r.Body)
	checks := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"crpe_http_requests_total", []string{`route="ping"`, `code="200"`, `method="GET"`}, 1},
		{"crpe_http_requests_total", []string{`route="unauthorized"`, `code="401"`}, 1},
		{"crpe_http_requests_total", []string{`route="manifest"`, `code="201"`, `method="PUT"`}, 1},
		{"crpe_http_requests_total", []string{`route="manifest"`, `code="404"`}, 1},
		{"crpe_http_requests_total", []string{`route="uploads"`, `code="201"`, `method="POST"`}, 2},
		{"crpe_http_requests_total", []string{`route="healthz"`, `code="200"`}, 1},
		{"crpe_http_response_bytes_total", []string{`route="blob"`}, float64(len(img.Layer))},
		{"crpe_http_response_bytes_total", []string{`route="ping"`}, 2},
		{"crpe_http_request_duration_seconds_count", []string{`route="blob"`}, 1},
		{"crpe_blobs_stored_total", nil, 2},
		{"crpe_blob_bytes_stored_total", nil, float64(len(img.Layer))},
		{"crpe_store_blobs", nil, 2},
		{"crpe_store_bytes", nil, float64(len(img.Layer))},
		{"go_goroutines", nil, 1},
		{"go_memstats_alloc_bytes", nil, 1},
		{"process_resident_memory_bytes", nil, 1},
		{"process_open_fds", nil, 1},
	}
	for _, c := range checks {
		v, ok := metricValue(text, c.name, c.labels...)
		if !ok {
			t.Errorf("/metrics lacks %s%v", c.name, c.labels)
		} else if v < c.min {
			t.Errorf("/metrics %s%v = %v, want >= %v", c.name, c.labels, v, c.min)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
	// route labels stay low-cardinality: no repository names or digests
	if regexp.MustCompile(`route="[^"]*(test/metrics|sha256)`).MatchString(text) {
		t.Error("a route label carries a repository name or digest")
	}

	// the store gauges match the data folder; a blob pushed again is not
	// stored again; after a restart the gauges are rebuilt from the folder
	storeFiles := func() float64 {
		n := 0
		for _, alg := range []string{"sha256", "sha512"} {
			ents, _ := os.ReadDir(filepath.Join(a.Data, "blobs", alg))
			n += len(ents)
		}
		return float64(n)
	}
	metric := func(p *testenv.Proc, name string) float64 {
		t.Helper()
		r := do(t, anon(), http.MethodGet, p.URL+"/metrics", nil)
		v, ok := metricValue(string(r.Body), name)
		if !ok {
			t.Fatalf("/metrics lacks %s", name)
		}
		return v
	}
	stored := metric(a, "crpe_blobs_stored_total")
	pushBlob(t, a.URL, "test/metrics-again", a.Token, img.Layer)
	if again := metric(a, "crpe_blobs_stored_total"); again != stored {
		t.Errorf("crpe_blobs_stored_total %v -> %v after pushing a stored blob again", stored, again)
	}
	if got, want := metric(a, "crpe_store_blobs"), storeFiles(); got != want {
		t.Errorf("crpe_store_blobs %v, but the store holds %v files", got, want)
	}
	if code := stop(t, a, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	b := testenv.StartAgent(t, testenv.AgentOptions{Data: a.Data})
	if got, want := metric(b, "crpe_store_blobs"), storeFiles(); got != want {
		t.Errorf("after a restart crpe_store_blobs %v, but the store holds %v files", got, want)
	}
	if got := metric(b, "crpe_blobs_stored_total"); got != 0 {
		t.Errorf("after a restart crpe_blobs_stored_total %v, want 0 (since start)", got)
	}
}

// pushBig pushes n pseudo-random bytes and returns them with their digest.
func pushBig(t *testing.T, a *testenv.Proc, repo string, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	var seed [32]byte
	copy(seed[:], randBytes(t, 32))
	_, _ = mrand.NewChaCha8(seed).Read(b)
	return b, pushBlob(t, a.URL, repo, a.Token, b)
}

// TestGracefulShutdown: on SIGTERM the listener closes at once, an in-flight
// slow download completes, then the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push", "--shutdown-grace", "5s"}})
	const size = 64 << 20
	big, d := pushBig(t, a, "test/big", size)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	res, err := hc.Get(a.URL + "/v2/test/big/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.ContentLength != size {
		t.Fatalf("GET big blob: %d, %d bytes", res.StatusCode, res.ContentLength)
	}
	got := make([]byte, 0, size)
	buf := make([]byte, 1<<20)
	readSome := func(n int) {
		t.Helper()
		for i := 0; i < n && len(got) < size; i++ {
			k, err := io.ReadFull(res.Body, buf[:min(len(buf), size-len(got))])
			got = append(got, buf[:k]...)
			if err != nil {
				t.Fatalf("download cut after %d bytes: %v", len(got), err)
			}
		}
	}
	readSome(2)

	if err := a.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()

	// the listener closes: new connections are refused
	for {
		c, err := net.DialTimeout("tcp", a.Addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(sent) > 2*time.Second {
			t.Fatal("still accepting connections 2s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// the download goes on, slowly, and the process waits for it
	for len(got) < size/2 {
		readSome(1)
		time.Sleep(15 * time.Millisecond)
	}
	select {
	case <-a.Stopped():
		t.Fatalf("crpe exited during an in-flight download:\n%s", a.Logs())
	default:
	}
	readSome(size)
	if len(got) != size || !bytes.Equal(got, big) {
		t.Fatalf("download after SIGTERM: %d bytes, equal %v", len(got), bytes.Equal(got, big))
	}
	if n, err := res.Body.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("body not at EOF after %d bytes: %d, %v", size, n, err)
	}
	res.Body.Close()
	finished := time.Now()
	if finished.Sub(sent) > 5*time.Second {
		t.Fatalf("slow download took %v, beyond the grace period: test too slow", finished.Sub(sent))
	}

	select {
	case <-a.Stopped():
	case <-time.After(3 * time.Second):
		t.Fatalf("crpe still running 3s after the last request ended:\n%s", a.Logs())
	}
	t.Logf("exit %v after SIGTERM, %v after the download ended", time.Since(sent).Round(time.Millisecond), time.Since(finished).Round(time.Millisecond))
	if code := a.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0:\n%s", code, a.Logs())
	}
	if logs := a.Logs(); !strings.Contains(logs, "shutting down") || strings.Contains(logs, "graceful shutdown incomplete") {
		t.Errorf("shutdown logs:\n%s", logs)
	}
}

// TestShutdownGraceExceeded: a download that does not finish within
// --shutdown-grace is cut and the process still exits 0, in time.
func TestShutdownGraceExceeded(t *testing.T) {
	t.Parallel()
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push", "--shutdown-grace", "1s"}})
	const size = 64 << 20
	_, d := pushBig(t, a, "test/big", size)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	res, err := hc.Get(a.URL + "/v2/test/big/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadFull(res.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// stall: the server cannot finish
	if err := a.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case <-a.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatalf("crpe still running 5s after SIGTERM with --shutdown-grace 1s:\n%s", a.Logs())
	}
	took := time.Since(sent)
	if took < 900*time.Millisecond {
		t.Errorf("exited after %v, before the 1s grace period", took)
	}
	if code := a.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d, want 0:\n%s", code, a.Logs())
	}
	if n, err := io.Copy(io.Discard, res.Body); err == nil {
		t.Errorf("download completed (%d more bytes) though the grace period ended", n)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key;
// it returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "crpe test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLS: with --tls-cert/--tls-key the agent speaks HTTPS only.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	addr := testenv.FreeAddr(t)
	data := t.TempDir()
	p := testenv.Start(t, "agent", "--addr", addr, "--data", data, "--allow-push", "--log-format", "text",
		"--tls-cert", certFile, "--tls-key", keyFile)
	tc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + addr
	waitURL(t, tc, base+"/healthz", p.Stopped(), p.Logs)

	res, err := tc.Get(base + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "{}" || res.TLS == nil {
		t.Errorf("GET https /v2/: %d %q (TLS %v)", res.StatusCode, body, res.TLS != nil)
	}

	// a write with the generated token, over TLS
	raw, err := os.ReadFile(filepath.Join(data, "token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(raw))
	blob := []byte("over tls")
	r := doWith(t, tc, basic("crpe", tok), http.MethodPost, base+"/v2/test/tls/blobs/uploads/?digest="+sha(blob), blob)
	expectStatus(t, "POST blob over TLS", r, http.StatusCreated)
	r = doWith(t, tc, anon(), http.MethodGet, base+"/v2/test/tls/blobs/"+sha(blob), nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, blob) {
		t.Errorf("GET blob over TLS: %s", r)
	}
	expectUnauthorized(t, "anonymous POST over TLS", doWith(t, tc, anon(), http.MethodPost, base+"/v2/test/tls/blobs/uploads/", nil))

	// a client that does not trust the certificate fails
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	if res, err := plain.Get(base + "/v2/"); err == nil {
		res.Body.Close()
		t.Error("a client without the certificate connected")
	}
	// plain HTTP to the TLS port is not served
	if res, err := plain.Get("http://" + addr + "/v2/"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Error("plain HTTP served on the TLS port")
		}
	}
	if !strings.Contains(p.Logs(), "tls=true") {
		t.Errorf("logs do not say tls=true:\n%s", p.Logs())
	}
	if code := stop(t, p, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// TestTLSBadKey: a missing key file fails at start with exit code 1.
func TestTLSBadKey(t *testing.T) {
	t.Parallel()
	certFile, _, _ := selfSigned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), "agent", "--addr", testenv.FreeAddr(t), "--data", t.TempDir(),
		"--tls-cert", certFile, "--tls-key", filepath.Join(t.TempDir(), "missing.key"), "--log-format", "text")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("crpe agent with a missing TLS key: %v, want exit 1\n%s", err, out)
	}
}

// TestEnvironment: every flag can be set as CRPE_<FLAG>; the command line
// wins over the environment; a bad value fails at start.
func TestEnvironment(t *testing.T) {
	t.Parallel()
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte("env-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("set", func(t *testing.T) {
		t.Parallel()
		addr, data := testenv.FreeAddr(t), t.TempDir()
		p := startProc(t, cleanEnv("CRPE_ADDR="+addr, "CRPE_DATA="+data, "CRPE_TOKEN_FILE="+tf,
			"CRPE_ALLOW_PUSH=true", "CRPE_LOG_FORMAT=json", "CRPE_LOG_LEVEL=debug", "CRPE_SHUTDOWN_GRACE=3s"), "agent")
		base := "http://" + addr
		waitURL(t, client, base+"/healthz", p.done, p.Logs)
		blob := []byte("from the environment")
		expectStatus(t, "POST blob with the env token file", do(t, bearer("env-token"), http.MethodPost,
			base+"/v2/test/env/blobs/uploads/?digest="+sha(blob), blob), http.StatusCreated)
		if _, err := os.Stat(filepath.Join(data, "token")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("<data>/token created though CRPE_TOKEN_FILE is set: %v", err)
		}
		if _, err := os.Stat(filepath.Join(data, "index.db")); err != nil {
			t.Errorf("CRPE_DATA not used: %v", err)
		}
		// JSON logs at debug level
		var listening, request bool
		for _, line := range strings.Split(strings.TrimSpace(p.Logs()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("log line is not JSON (CRPE_LOG_FORMAT=json): %q", line)
				continue
			}
			switch rec["msg"] {
			case "crpe agent listening":
				listening = rec["allow_push"] == true && rec["data"] == data
			case "request":
				request = true
			}
		}
		if !listening || !request {
			t.Errorf("logs lack the listening line with allow_push=true (%v) or debug request lines (%v):\n%s", listening, request, p.Logs())
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatal("no exit 10s after SIGTERM")
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})

	t.Run("flags win", func(t *testing.T) {
		t.Parallel()
		envAddr, flagAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
		p := startProc(t, cleanEnv("CRPE_ADDR="+envAddr, "CRPE_DATA="+t.TempDir(), "CRPE_TOKEN_FILE="+tf, "CRPE_ALLOW_PUSH=true"),
			"agent", "--addr", flagAddr, "--allow-push=false", "--log-format", "text")
		waitURL(t, client, "http://"+flagAddr+"/healthz", p.done, p.Logs)
		r := do(t, bearer("env-token"), http.MethodPost, "http://"+flagAddr+"/v2/test/env/blobs/uploads/", nil)
		if r.Status != http.StatusMethodNotAllowed || errorCode(r.Body) != "UNSUPPORTED" {
			t.Errorf("--allow-push=false with CRPE_ALLOW_PUSH=true: %s, want 405 UNSUPPORTED", r)
		}
		if c, err := net.DialTimeout("tcp", envAddr, time.Second); err == nil {
			c.Close()
			t.Errorf("listening on CRPE_ADDR %s too, though --addr was given", envAddr)
		}
	})

	t.Run("bad value", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.Crpe(t), "agent")
		cmd.Env = cleanEnv("CRPE_ADDR="+testenv.FreeAddr(t), "CRPE_DATA="+t.TempDir(), "CRPE_TOKEN_FILE="+tf, "CRPE_ALLOW_PUSH=maybe")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "CRPE_ALLOW_PUSH") {
			t.Errorf("CRPE_ALLOW_PUSH=maybe: %v, want exit 1 naming the variable:\n%s", err, out)
		}
	})
}

// TestVersionAndHelp: `crpe version` and `crpe agent --help`.
func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("crpe %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("version")
	for _, want := range []string{"crpe ", "\ncommit: ", "\ngo: " + runtime.Version() + "\n", "platform: " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("crpe version lacks %q:\n%s", want, out)
		}
	}
	var v struct {
		Version, Commit, GoVersion string
	}
	if err := json.Unmarshal([]byte(run("version", "--json")), &v); err != nil || v.Version == "" || v.Commit == "" || v.GoVersion != runtime.Version() {
		t.Errorf("crpe version --json: %+v, %v", v, err)
	}

	help := run("agent", "--help")
	for _, want := range []string{"Usage:", "Examples:", "crpe agent", "--allow-push", "--token-file", "--pull-token-required",
		"--tls-cert", "--shutdown-grace", "CRPE_"} {
		if !strings.Contains(help, want) {
			t.Errorf("crpe agent --help lacks %q:\n%s", want, help)
		}
	}
	if i := strings.Index(help, "Examples:"); i >= 0 && !strings.Contains(help[i:], "crpe agent") {
		t.Errorf("the Examples section shows no crpe agent command:\n%s", help[i:])
	}
}
