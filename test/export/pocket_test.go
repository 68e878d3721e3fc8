package export

import (
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/testenv"
)

// startPocket runs crpe serve on data with docker.io sent to upstream.
func startPocket(t *testing.T, data, upstream string) *testenv.Proc {
	t.Helper()
	addr := testenv.FreeAddr(t)
	p := testenv.Start(t, "serve", "--addr", addr, "--data", data, "--log-format", "text",
		"--registry-endpoint", "docker.io="+upstream)
	p.Addr, p.URL, p.Data = addr, "http://"+addr, data
	testenv.WaitHealthy(t, p)
	return p
}

// readPocketFile reads data's pocket.json and checks it is the pocket p's,
// for its user only.
func readPocketFile(t *testing.T, data string, p *testenv.Proc) *storage.PocketFile {
	t.Helper()
	fi, err := os.Stat(storage.PocketFilePath(data))
	if err != nil {
		t.Fatalf("crpe serve wrote no pocket.json: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("pocket.json has mode %v, want 0600", fi.Mode().Perm())
	}
	pf, err := storage.ReadPocketFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if pf.PID != p.Cmd.Process.Pid || len(pf.URLs) == 0 || pf.URLs[0] != p.URL || pf.Instance == "" {
		t.Errorf("pocket.json: %+v, want pid %d and first URL %s", pf, p.Cmd.Process.Pid, p.URL)
	}
	b, _ := os.ReadFile(storage.PocketFilePath(data))
	if tok, _ := os.ReadFile(filepath.Join(data, "token")); len(bytes.TrimSpace(tok)) > 0 && bytes.Contains(b, bytes.TrimSpace(tok)) {
		t.Error("pocket.json holds the pocket's token")
	}
	return pf
}

func stopPocket(t *testing.T, p *testenv.Proc, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	<-p.Stopped()
}

// summaryWithoutOutput is an export's --json summary less its output path.
func summaryWithoutOutput(t *testing.T, b []byte) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("--json output: %v\n%s", err, b)
	}
	delete(m, "output")
	out, _ := json.Marshal(m)
	return string(out)
}

// TestExportBesidePocket: crpe export on the data folder of a running crpe
// serve goes through the pocket (it no longer fails on the locked index)
// and writes the same bytes, with the same summary, as the same export with
// the pocket stopped; the pocket's file goes with a clean stop; a file left
// by a killed pocket does not matter while the folder is free, and a folder
// held by a process while that file names no pocket that answers fails
// clearly, with no output.
func TestExportBesidePocket(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 120*time.Second)
	f := newFixture(t)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	data := t.TempDir()
	env := []string{"SOURCE_DATE_EPOCH=1700000000"}
	// the same flags every time; with a pocket the upstream flags are its own
	flags := []string{"--data", data, "--platform", "linux/amd64", "--registry-endpoint", "docker.io=" + f.up.URL}
	exportTo := func(out string, extra ...string) result {
		t.Helper()
		return crpe(ctx, t, env, append(append([]string{"export", "-f", src, "-o", out}, flags...), extra...)...)
	}

	p := startPocket(t, data, f.up.URL)
	readPocketFile(t, data, p)

	r := exportTo("-")
	if r.err != nil {
		t.Fatalf("export -o - beside the pocket: %v\n%s", r.err, r)
	}
	through := r.stdout
	if !strings.Contains(string(r.stderr), "exporting through it") || !strings.Contains(string(r.stderr), "--registry-endpoint is not used") {
		t.Errorf("export does not say it goes through the pocket:\n%s", r.stderr)
	}
	// the image of the pod template is added, with the warning of a local export
	if !strings.Contains(string(r.stderr), "image fromtemplate:1.0 is used by the manifests but not listed in spec.images; added") {
		t.Errorf("no warning for the pod template's image:\n%s", r.stderr)
	}
	outDir := t.TempDir()
	fileThrough := filepath.Join(outDir, "through.kubepkg.tgz")
	r = exportTo(fileThrough, "--json", "--fsync")
	if r.err != nil {
		t.Fatalf("export --json beside the pocket: %v\n%s", r.err, r)
	}
	sumThrough := summaryWithoutOutput(t, r.stdout)
	if b, _ := os.ReadFile(fileThrough); !bytes.Equal(b, through) {
		t.Fatalf("the file (%d bytes) differs from -o - (%d bytes)", len(b), len(through))
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Errorf("%d files in the output folder, want 1", len(ents))
	}
	// on a terminal, the progress bars follow the pocket's job
	ttyOut := filepath.Join(t.TempDir(), "tty.kubepkg.tgz")
	tty := onTerminal(ctx, t, env, append([]string{"export", "-f", src, "-o", ttyOut}, flags...)...)
	if !strings.Contains(tty, "fetch total") || !strings.Contains(tty, "write archive") || !strings.Contains(tty, "docker.io/library/multi:1.0") {
		t.Errorf("no progress bars on a terminal:\n%s", tty)
	}
	if b, _ := os.ReadFile(ttyOut); !bytes.Equal(b, through) {
		t.Errorf("the export on a terminal wrote %d bytes that differ", len(b))
	}
	// --offline, with everything cached: the same archive
	if r = exportTo("-", "--offline"); r.err != nil || !bytes.Equal(r.stdout, through) {
		t.Errorf("export --offline beside the pocket: %v, %d bytes\n%s", r.err, len(r.stdout), r.stderr)
	}
	// --since an agent's inventory holding the shared layer
	inv := writeFile(t, "inventory.json", `{"digests": ["`+string(f.shared.Desc.Digest)+`"]}`)
	r = exportTo("-", "--since", inv)
	if r.err != nil {
		t.Fatalf("export --since beside the pocket: %v\n%s", r.err, r)
	}
	sinceThrough := r.stdout
	if bytes.Equal(sinceThrough, through) || bytes.Contains(sinceThrough, f.shared.Data[:4096]) {
		t.Error("export --since beside the pocket kept the layer the agent holds")
	}
	// offline, what is not cached fails before the first byte: no file
	outDir = t.TempDir()
	arm := writeFile(t, "arm.yaml", "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: arm}\nspec:\n  version: 1.0.0\n  images: {\"docker.io/library/armonly:1.0\": \"\"}\n")
	r = crpe(ctx, t, env, "export", "-f", arm, "-o", filepath.Join(outDir, "arm.tgz"), "--data", data, "--offline")
	if r.err == nil || !strings.Contains(string(r.stderr), "409 NOT_CACHED") {
		t.Errorf("export --offline of what is not cached, beside the pocket: %v\n%s", r.err, r)
	}
	assertNoOutput(t, outDir)

	a := readArchive(t, through)
	f.checkLayout(t, a, f.demoWant(amd64))
	for _, e := range a.entries {
		if e.hdr.ModTime.Unix() != 1700000000 {
			t.Fatalf("entry %s: time %v, want SOURCE_DATE_EPOCH", e.hdr.Name, e.hdr.ModTime)
		}
	}

	// a clean stop removes the pocket's file
	stopPocket(t, p, syscall.SIGTERM)
	if _, err := os.Stat(storage.PocketFilePath(data)); !os.IsNotExist(err) {
		t.Errorf("pocket.json after a clean stop: %v", err)
	}

	// the same exports with the pocket stopped: the same bytes and summary
	r = exportTo("-")
	if r.err != nil {
		t.Fatalf("export -o - with the pocket stopped: %v\n%s", r.err, r)
	}
	if strings.Contains(string(r.stderr), "through") {
		t.Errorf("a local export talks of a pocket:\n%s", r.stderr)
	}
	if !bytes.Equal(r.stdout, through) {
		t.Fatalf("export with the pocket stopped wrote %d bytes that differ from the %d written through it", len(r.stdout), len(through))
	}
	fileLocal := filepath.Join(t.TempDir(), "local.kubepkg.tgz")
	r = exportTo(fileLocal, "--json")
	if r.err != nil {
		t.Fatalf("export --json with the pocket stopped: %v\n%s", r.err, r)
	}
	if s := summaryWithoutOutput(t, r.stdout); s != sumThrough {
		t.Errorf("summaries differ:\nthrough the pocket: %s\nlocal:              %s", sumThrough, s)
	}
	if r = exportTo("-", "--since", inv); r.err != nil || !bytes.Equal(r.stdout, sinceThrough) {
		t.Errorf("export --since with the pocket stopped: %v, %d bytes that differ from the %d written through it\n%s", r.err, len(r.stdout), len(sinceThrough), r.stderr)
	}

	// a pocket killed leaves its file: with the folder free, export
	// ignores it
	p = startPocket(t, data, f.up.URL)
	stale := readPocketFile(t, data, p)
	stopPocket(t, p, syscall.SIGKILL)
	r = exportTo("-")
	if r.err != nil {
		t.Fatalf("export with a stale pocket.json: %v\n%s", r.err, r)
	}
	if !bytes.Equal(r.stdout, through) || strings.Contains(string(r.stderr), "through") {
		t.Errorf("export with a stale pocket.json: %d bytes (want the same %d), stderr:\n%s", len(r.stdout), len(through), r.stderr)
	}

	// another process holds the folder, and the file names a pocket that
	// is gone: a clear error, no output
	db, err := repodb.Open(storage.IndexPath(data), false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	outDir = t.TempDir()
	r = exportTo(filepath.Join(outDir, "held.kubepkg.tgz"))
	if r.err == nil {
		t.Fatalf("export on a held folder whose pocket is gone succeeded:\n%s", r)
	}
	t.Logf("export on a held folder: %s", r.stderr)
	for _, want := range []string{"is in use by another process", "does not answer", "pid " + strconv.Itoa(stale.PID), stale.URLs[0]} {
		if !strings.Contains(string(r.stderr), want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	assertNoOutput(t, outDir)
}

// onTerminal runs crpe with args on a pseudo-terminal (script(1)) and
// returns what it showed.
func onTerminal(ctx context.Context, t *testing.T, env []string, args ...string) string {
	t.Helper()
	script := testenv.Peer(t, "script", "apt-get install bsdutils")
	quoted := []string{shellQuote(testenv.Crpe(t))}
	for _, a := range args {
		quoted = append(quoted, shellQuote(a))
	}
	cmd := crpeCmd(ctx, t, env)
	// a terminal of no size shows no bars
	cmd.Path, cmd.Args = script, []string{"script", "-qefc", "stty cols 120 rows 40; " + strings.Join(quoted, " "), "/dev/null"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("crpe %v on a terminal: %v\n%s", args, err, out)
	}
	return string(out)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// stallProxy forwards to a registry; a GET of the blob stall sends its
// first half, then waits until the test stops the proxy (the upstream
// going away mid-transfer).
type stallProxy struct {
	url   string
	srv   *http.Server
	stop  chan struct{}
	once  sync.Once
	stall string
}

func startStallProxy(t *testing.T, target, stall string) *stallProxy {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &stallProxy{stop: make(chan struct{}), stall: stall}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+stall) {
			rp.ServeHTTP(w, r)
			return
		}
		resp, err := http.Get(target + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("upstream: %d %v", resp.StatusCode, err), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Docker-Content-Digest", stall)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body[:len(body)/2])
		http.NewResponseController(w).Flush()
		select {
		case <-p.stop:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler)
	})}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(p.Stop)
	p.url = "http://" + ln.Addr().String()
	return p
}

// Stop stops the proxy: its connections are cut, its port refuses.
func (p *stallProxy) Stop() {
	p.once.Do(func() {
		close(p.stop)
		_ = p.srv.Close()
	})
}

// TestExportBesidePocketCutOff: an export through the pocket whose upstream
// goes away while a layer that is not cached streams is cut off after its
// first bytes: export fails, saying why (the pocket's job), and leaves no
// file; the pocket keeps running.
func TestExportBesidePocketCutOff(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 120*time.Second)
	up := testenv.StartDistribution(t)
	layer := testenv.RandomLayer(t, 6<<20, false)
	img := testenv.NewImage(t, amd64, []testenv.Blob{layer}, false)
	testenv.PushImage(t, up.URL, "library/big", "1.0", img)
	proxy := startStallProxy(t, up.URL, string(layer.Desc.Digest))
	data := t.TempDir()
	p := startPocket(t, data, proxy.url)

	src := writeFile(t, "big.yaml", "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: big, namespace: default}\nspec:\n  version: 1.0.0\n  images: {\"docker.io/library/big:1.0\": \"\"}\n")
	outDir := t.TempDir()
	cmd := crpeCmd(ctx, t, nil, "export", "-f", src, "-o", filepath.Join(outDir, "big.kubepkg.tgz"), "--data", data, "--platform", "linux/amd64")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// the archive streams: its first bytes reach the output's temp file
	// while the layer is still on its way
	for {
		if n := outputBytes(t, outDir); n > 0 {
			t.Logf("%d bytes written when the upstream goes away", n)
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no byte of the archive arrived:\n%s", se.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	proxy.Stop()
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("an export cut off succeeded:\n%s", se.String())
	}
	t.Logf("export cut off: %s", se.String())
	for _, want := range []string{"cut off", "cannot be reached", string(layer.Desc.Digest)} {
		if !strings.Contains(se.String(), want) {
			t.Errorf("the error does not say %q:\n%s", want, se.String())
		}
	}
	assertNoOutput(t, outDir)
	// the pocket is still there, and says so in its log
	resp, herr := http.Get(p.URL + "/healthz")
	if herr != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the pocket after a cut-off export: %v", herr)
	}
	resp.Body.Close()
	if !strings.Contains(p.Logs(), "export cut off") {
		t.Errorf("the pocket's log does not tell the cut-off export:\n%s", p.Logs())
	}
}

// outputBytes sums the sizes of the files in dir.
func outputBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}
