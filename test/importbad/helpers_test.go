package importbad

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

const token = "test-token"

// privateTmp is TMPDIR of this test process and of every agent it starts:
// the tests check that agents write nothing there.
var privateTmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "importbad-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	privateTmp = dir
	os.Setenv("TMPDIR", dir)
	code := testenv.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// httpc bounds every plain request of these tests; it never uses a proxy.
var httpc = &http.Client{
	Timeout:   20 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 8},
}

// ---------------------------------------------------------------- PUT

// putOptions tune one PUT /api/v1/kubepkgs.
type putOptions struct {
	// auth is the Authorization header; "-" sends none; "" means the
	// agent's token as a Bearer token.
	auth string
	// query is appended to the path (e.g. "force=true").
	query string
	// chunked sends no Content-Length (chunked transfer encoding).
	chunked bool
	// contentLength, when > 0, is sent instead of the body's length.
	contentLength int64
	// chunk and pause throttle the body: chunk bytes, then pause.
	chunk int
	pause time.Duration
	// at, if set, is called once when at least atBytes bytes of the body
	// were written (with the writer blocked until it returns).
	atBytes int64
	at      func()
	// timeout bounds the whole exchange (default 30 s).
	timeout time.Duration
	// closeWrite half-closes the connection after the body, and sends
	// only half of it (for a body shorter than its Content-Length)
	closeWrite bool
	// hangUpAt closes the connection once that many body bytes were
	// written (a client that goes away midway)
	hangUpAt int64
}

var errHungUp = errors.New("the client hung up on purpose")

// answer is what the agent answered (or err when it did not).
type answer struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
	sent    int64 // body bytes written
	err     error
}

func (a answer) String() string {
	if a.err != nil {
		return "no answer: " + a.err.Error()
	}
	b := a.body
	if len(b) > 600 {
		b = b[:600]
	}
	return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(b))
}

// apiError is the first error of a {"errors":[...]} body.
type apiError struct {
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Detail  map[string]string `json:"detail"`
}

func (a answer) apiError() (apiError, bool) {
	var e struct {
		Errors []apiError `json:"errors"`
	}
	if json.Unmarshal(a.body, &e) != nil || len(e.Errors) == 0 {
		return apiError{}, false
	}
	return e.Errors[0], true
}

// importResult is the 201 summary.
type importResult struct {
	Packages []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Version   string `json:"version"`
		Previous  string `json:"previous"`
		Forced    bool   `json:"forced"`
		Unchanged bool   `json:"unchanged"`
	} `json:"packages"`
	Images        map[string]string `json:"images"`
	BlobsReceived int               `json:"blobsReceived"`
	BlobsPresent  int               `json:"blobsPresent"`
	BytesReceived int64             `json:"bytesReceived"`
	BytesPresent  int64             `json:"bytesPresent"`
	Partial       bool              `json:"partial"`
}

func (a answer) result(t testing.TB) importResult {
	t.Helper()
	var r importResult
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("import summary is not JSON: %v: %s", err, a)
	}
	return r
}

// put sends body to PUT /api/v1/kubepkgs over a raw connection: the body
// is written while the answer is read, so an answer sent before the whole
// body was read (a refusal at the first bad header) is always seen, and
// broken pipes on our side do not hide it.
func put(t testing.TB, p *testenv.Proc, body io.Reader, size int64, o putOptions) answer {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 30 * time.Second
	}
	if o.closeWrite {
		if o.contentLength == 0 {
			o.contentLength = size
		}
		body = io.LimitReader(body, size/2)
	}
	if !strings.HasPrefix(p.Addr, "127.0.0.1:") {
		t.Fatalf("agent not on loopback: %s", p.Addr)
	}
	start := time.Now()
	conn, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(o.timeout))

	path := "/api/v1/kubepkgs"
	if o.query != "" {
		path += "?" + o.query
	}
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/gzip\r\nUser-Agent: importbad-test\r\n", path, p.Addr)
	switch o.auth {
	case "-":
	case "":
		fmt.Fprintf(&hdr, "Authorization: Bearer %s\r\n", p.Token)
	default:
		fmt.Fprintf(&hdr, "Authorization: %s\r\n", o.auth)
	}
	switch {
	case o.chunked:
		hdr.WriteString("Transfer-Encoding: chunked\r\n")
	case o.contentLength > 0:
		fmt.Fprintf(&hdr, "Content-Length: %d\r\n", o.contentLength)
	default:
		fmt.Fprintf(&hdr, "Content-Length: %d\r\n", size)
	}
	hdr.WriteString("Connection: close\r\n\r\n")

	type wres struct {
		n   int64
		err error
	}
	wdone := make(chan wres, 1)
	go func() {
		var n int64
		err := func() error {
			bw := bufio.NewWriterSize(conn, 64<<10)
			if _, err := bw.WriteString(hdr.String()); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			var w io.Writer = conn
			var cw io.WriteCloser
			if o.chunked {
				cw = httputil.NewChunkedWriter(conn)
				w = cw
			}
			chunk := o.chunk
			if chunk <= 0 {
				chunk = 256 << 10
			}
			buf := make([]byte, chunk)
			fired := o.at == nil
			for {
				want := len(buf)
				if !fired && o.atBytes-n < int64(want) && o.atBytes > n {
					want = int(o.atBytes - n)
				}
				m, rerr := io.ReadFull(body, buf[:want])
				if m > 0 {
					if _, err := w.Write(buf[:m]); err != nil {
						return err
					}
					n += int64(m)
				}
				if o.hangUpAt > 0 && n >= o.hangUpAt {
					conn.Close()
					return errHungUp
				}
				if !fired && n >= o.atBytes {
					fired = true
					o.at()
				}
				if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
					break
				}
				if rerr != nil {
					return rerr
				}
				if o.pause > 0 {
					time.Sleep(o.pause)
				}
			}
			if !fired {
				o.at()
			}
			if cw != nil {
				if err := cw.Close(); err != nil {
					return err
				}
				if _, err := io.WriteString(conn, "\r\n"); err != nil {
					return err
				}
			}
			if o.closeWrite {
				return conn.(*net.TCPConn).CloseWrite()
			}
			return nil
		}()
		wdone <- wres{n, err}
	}()

	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	a := answer{}
	if err != nil {
		a.err = err
	} else {
		a.status, a.header = resp.StatusCode, resp.Header
		a.body, a.err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	a.elapsed = time.Since(start)
	conn.Close() // stops the writer if it is still going
	w := <-wdone
	a.sent = w.n
	return a
}

// putBytes sends b.
func putBytes(t testing.TB, p *testenv.Proc, b []byte, o putOptions) answer {
	t.Helper()
	return put(t, p, bytes.NewReader(b), int64(len(b)), o)
}

// mustImport imports b and fails the test unless it answers 201.
func mustImport(t testing.TB, p *testenv.Proc, b []byte, o putOptions) importResult {
	t.Helper()
	a := putBytes(t, p, b, o)
	if a.err != nil || a.status != http.StatusCreated {
		t.Fatalf("import: %s", a)
	}
	return a.result(t)
}

// ---------------------------------------------------------------- reads

type getReply struct {
	status int
	header http.Header
	body   []byte
}

func get(t testing.TB, p *testenv.Proc, path string, accept ...string) getReply {
	t.Helper()
	return request(t, http.MethodGet, p.URL+path, accept...)
}

func request(t testing.TB, method, url string, accept ...string) getReply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(accept) > 0 {
		req.Header.Set("Accept", strings.Join(accept, ", "))
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", method, url, err)
	}
	return getReply{resp.StatusCode, resp.Header, b}
}

var manifestTypes = []string{
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}

// pkgItem is one item of GET /api/v1/kubepkgs.
type pkgItem struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Images    map[string]string `json:"images"`
}

func listPackages(t testing.TB, p *testenv.Proc) []pkgItem {
	t.Helper()
	r := get(t, p, "/api/v1/kubepkgs")
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/v1/kubepkgs: %d %s", r.status, r.body)
	}
	var l struct {
		Items []pkgItem `json:"items"`
	}
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("GET /api/v1/kubepkgs: %v: %s", err, r.body)
	}
	return l.Items
}

func catalog(t testing.TB, p *testenv.Proc) []string {
	t.Helper()
	r := get(t, p, "/v2/_catalog")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v2/_catalog: %d %s", r.status, r.body)
	}
	var c struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(r.body, &c); err != nil {
		t.Fatalf("GET /v2/_catalog: %v: %s", err, r.body)
	}
	sort.Strings(c.Repositories)
	return c.Repositories
}

// tagsOf lists repo's tags, or nil with false when the repository is unknown
// (404).
func tagsOf(t testing.TB, p *testenv.Proc, repo string) ([]string, bool) {
	t.Helper()
	r := get(t, p, "/v2/"+repo+"/tags/list")
	if r.status == http.StatusNotFound {
		return nil, false
	}
	if r.status != http.StatusOK {
		t.Fatalf("GET /v2/%s/tags/list: %d %s", repo, r.status, r.body)
	}
	var l struct {
		Tags []string `json:"tags"`
	}
	_ = json.Unmarshal(r.body, &l)
	sort.Strings(l.Tags)
	return l.Tags, true
}

// state is what the agent publishes, as a comparable string.
func state(t testing.TB, p *testenv.Proc, fxs ...*fixture) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "catalog %v\n", catalog(t, p))
	items := listPackages(t, p)
	sort.Slice(items, func(i, j int) bool {
		return items[i].Namespace+"/"+items[i].Name < items[j].Namespace+"/"+items[j].Name
	})
	for _, it := range items {
		fmt.Fprintf(&b, "package %s/%s %s %v\n", it.Namespace, it.Name, it.Version, it.Images)
	}
	seen := map[string]bool{}
	for _, f := range fxs {
		for _, r := range f.refs() {
			repo := f.repos[r]
			if seen[repo] {
				continue
			}
			seen[repo] = true
			tags, ok := tagsOf(t, p, repo)
			fmt.Fprintf(&b, "repo %s %v %v\n", repo, ok, tags)
		}
	}
	return b.String()
}

// requireNothingOf fails if anything of f is published: its package, its
// repositories (404 on tags/list, absent from the catalog), its tags.
func requireNothingOf(t testing.TB, p *testenv.Proc, f *fixture) {
	t.Helper()
	cat := catalog(t, p)
	for _, r := range f.refs() {
		repo := f.repos[r]
		for _, c := range cat {
			if c == repo {
				t.Errorf("repository %s is in the catalog after a refused import", repo)
			}
		}
		if tags, ok := tagsOf(t, p, repo); ok {
			t.Errorf("GET /v2/%s/tags/list answers 200 (tags %v) after a refused import, want 404", repo, tags)
		}
		if g := get(t, p, "/v2/"+repo+"/manifests/"+f.tags[r], manifestTypes...); g.status != http.StatusNotFound {
			t.Errorf("GET /v2/%s/manifests/%s: %d after a refused import, want 404", repo, f.tags[r], g.status)
		}
	}
	for _, it := range listPackages(t, p) {
		if it.Name == f.name {
			t.Errorf("package %s/%s@%s is listed after a refused import", it.Namespace, it.Name, it.Version)
		}
	}
	if g := get(t, p, "/api/v1/kubepkgs/default/"+f.name); g.status != http.StatusNotFound {
		t.Errorf("GET /api/v1/kubepkgs/default/%s: %d after a refused import, want 404", f.name, g.status)
	}
}

// requirePublished fails unless every image of f is served by tag with its
// digest, every blob of the archive is served, and the package is listed at
// f.version.
func requirePublished(t testing.TB, p *testenv.Proc, f *fixture) {
	t.Helper()
	for _, r := range f.refs() {
		repo := f.repos[r]
		g := get(t, p, "/v2/"+repo+"/manifests/"+f.tags[r], manifestTypes...)
		if g.status != http.StatusOK {
			t.Errorf("GET /v2/%s/manifests/%s: %d %s", repo, f.tags[r], g.status, truncate(g.body))
			continue
		}
		if d := g.header.Get("Docker-Content-Digest"); d != f.images[r] {
			t.Errorf("GET /v2/%s/manifests/%s: digest %s, want %s", repo, f.tags[r], d, f.images[r])
		}
	}
	// every manifest by digest, every config and layer as a blob, through
	// one of the package's repositories
	isManifest := map[string]bool{}
	for _, b := range f.manifests {
		isManifest[string(b.desc.Digest)] = true
	}
	for _, b := range f.allBlobs() {
		ok := false
		for _, r := range f.refs() {
			var g getReply
			if isManifest[string(b.desc.Digest)] {
				g = get(t, p, "/v2/"+f.repos[r]+"/manifests/"+string(b.desc.Digest), manifestTypes...)
			} else {
				g = request(t, http.MethodGet, p.URL+"/v2/"+f.repos[r]+"/blobs/"+string(b.desc.Digest))
			}
			if g.status == http.StatusOK {
				if !bytes.Equal(g.body, b.data) {
					t.Errorf("%s of %s served with other bytes", b.desc.Digest, f.name)
				}
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("%s of %s is not served by any of its repositories", b.desc.Digest, f.name)
		}
	}
	found := false
	for _, it := range listPackages(t, p) {
		if it.Name == f.name {
			found = true
			if it.Version != f.version {
				t.Errorf("package %s is at %s, want %s", f.name, it.Version, f.version)
			}
		}
	}
	if !found {
		t.Errorf("package %s is not listed", f.name)
	}
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func requireHealthy(t testing.TB, p *testenv.Proc) {
	t.Helper()
	g := get(t, p, "/healthz")
	if g.status != http.StatusOK {
		t.Fatalf("/healthz: %d %s", g.status, g.body)
	}
}

// ---------------------------------------------------------------- process

// stopAgent stops the agent gracefully (SIGTERM), or kills it after 10 s.
func stopAgent(t testing.TB, p *testenv.Proc) {
	t.Helper()
	select {
	case <-p.Stopped():
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Stopped():
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.Stopped()
		t.Errorf("the agent did not stop within 10 s of SIGTERM")
	}
}

// kill9 kills the agent with SIGKILL and waits for it to be gone.
func kill9(t testing.TB, p *testenv.Proc) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	select {
	case <-p.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not die within 10 s of SIGKILL")
	}
}

// startAgent runs an agent on data (created inside a sandbox folder when
// empty) and returns it.
func startAgent(t testing.TB, data string, args ...string) *testenv.Proc {
	t.Helper()
	if data == "" {
		data = filepath.Join(t.TempDir(), "data")
	}
	return testenv.StartAgent(t, testenv.AgentOptions{Data: data, Token: token, Args: args})
}

// fsckReport is `crpe fsck --json`.
type fsckReport struct {
	Summary struct {
		Blobs     int `json:"blobs"`
		Repos     int `json:"repositories"`
		Manifests int `json:"manifests"`
		Tags      int `json:"tags"`
		Problems  int `json:"problems"`
		Info      int `json:"info"`
	} `json:"summary"`
	Findings []struct {
		Problem bool   `json:"problem"`
		Where   string `json:"where"`
		Message string `json:"message"`
	} `json:"findings"`
}

// requireFsckClean runs `crpe fsck --data data --json` (the agent must be
// gone) and fails on any problem; information findings are allowed only for
// leftover files in data/ingest (a killed write). It returns the report.
func requireFsckClean(t testing.TB, label, data string) fsckReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), "fsck", "--data", data, "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: crpe fsck: %v", label, err)
	}
	var rep fsckReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%s: crpe fsck (exit %d): report is not JSON: %v\n%s\n%s", label, code, err, stdout.Bytes(), stderr.Bytes())
	}
	ingest := filepath.Join(data, "ingest") + string(filepath.Separator)
	for _, f := range rep.Findings {
		if f.Problem {
			t.Errorf("%s: fsck PROBLEM %s: %s", label, f.Where, f.Message)
		} else if !strings.HasPrefix(f.Where, ingest) {
			t.Errorf("%s: fsck note outside the ingest folder: %s: %s", label, f.Where, f.Message)
		}
	}
	if code != 0 || rep.Summary.Problems != 0 {
		t.Errorf("%s: fsck exit %d, summary %+v: want exit 0 and no problem\n%s", label, code, rep.Summary, stderr.Bytes())
	}
	return rep
}

// runCrpe runs crpe with args (bounded) and returns its output and exit code.
func runCrpe(t testing.TB, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := testenv.Run(ctx, t, args...)
	if ctx.Err() != nil {
		t.Fatalf("crpe %v did not finish within %v:\n%s", args, timeout, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("crpe %v: %v", args, err)
	}
	return out, 0
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// storedBlobs lists the digests of the blobs in data's store.
func storedBlobs(t testing.TB, data string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, alg := range []string{"sha256", "sha512"} {
		es, err := os.ReadDir(filepath.Join(data, "blobs", alg))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Type().IsRegular() {
				out[alg+":"+e.Name()] = true
			}
		}
	}
	return out
}

func ingestFiles(t testing.TB, data string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(data, "ingest"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
