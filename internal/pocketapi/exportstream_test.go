package pocketapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pocketapi"
	"github.com/octohelm/crpe/internal/pullthrough"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// exportPocket is the pocket's API over a fresh data folder, on a loopback
// test server, reaching upstreams through transport.
type exportPocket struct {
	url string
	api *pocketapi.API
	st  *storage.Storage
}

func newExportPocket(ctx context.Context, t *testing.T, transport http.RoundTripper, offline bool) *exportPocket {
	t.Helper()
	st, err := storage.Open(ctx, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api, err := pocketapi.New(ctx, pocketapi.Config{Storage: st, Offline: offline,
		Upstream: upstream.Options{Transport: transport, Backoff: time.Millisecond, Keychain: authn.NewMultiKeychain()}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = api.Upstreams().Close(cctx)
	})
	return &exportPocket{url: srv.URL, api: api, st: st}
}

func demoPackage(refs ...string) string {
	images := map[string]string{}
	for _, r := range refs {
		images[r] = ""
	}
	b, _ := json.Marshal(map[string]any{"apiVersion": kubepkg.APIVersion, "kind": "KubePkg",
		"metadata": map[string]any{"name": "demo", "namespace": "default"},
		"spec":     map[string]any{"version": "1.0.0", "images": images}})
	return string(b)
}

func post(ctx context.Context, t *testing.T, u, ctype, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decodeHeader(t *testing.T, resp *http.Response, name string, v any) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(resp.Header.Get(name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v (%s)", name, err, b)
	}
}

func getJob(ctx context.Context, t *testing.T, base, id string) pocketapi.JobView {
	t.Helper()
	status, body, err := pt.Get(ctx, base+"/api/v1/jobs/"+id)
	if err != nil || status != http.StatusOK {
		t.Fatalf("job %s: %d %s %v", id, status, body, err)
	}
	var j pocketapi.JobView
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// TestExportStream: POST /api/v1/export streams the archive of the posted
// package — the bytes export.Export writes through a cache of its own with
// the same options — with its summary in a header before the first byte;
// the JSON request and a bare package with the options in the query are
// the same export; the package is not added to the library, and the job
// tells the export.
func TestExportStream(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up := pt.NewUpstream(t)
	idx, _ := pt.Index(t, 2, 64<<10, "linux/amd64", "linux/arm64")
	up.PushIndex(ctx, t, "demo/app:1.0", idx)
	single := pt.Image(t, "linux/arm64", 1, 32<<10)
	up.PushImage(ctx, t, "demo/tool:2.0", single)
	refs := []string{up.Repo("demo/app:1.0"), up.Repo("demo/tool:2.0")}
	pkgDoc := demoPackage(refs...)
	p := newExportPocket(ctx, t, pt.NewCounter(), false)

	// what a local export writes
	local := pt.NewCache(t, pt.NewCounter(), pullthrough.Options{})
	pkgs, err := kubepkg.Parse([]byte(pkgDoc))
	if err != nil {
		t.Fatal(err)
	}
	plats, _ := oci.ParsePlatforms("linux/arm64")
	var want bytes.Buffer
	wantRes, err := export.Export(ctx, local.Cache, local.Store, pkgs, &want,
		export.Options{Platforms: plats, ModTime: time.Unix(1700000000, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}

	epoch := int64(1700000000)
	reqBody, _ := json.Marshal(pocketapi.ExportRequest{KubePkg: json.RawMessage(pkgDoc), Platform: "linux/arm64", SourceDateEpoch: &epoch})
	resp := post(ctx, t, p.url+"/api/v1/export", "application/json", string(reqBody))
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v1/export: %d %v %.300s", resp.StatusCode, err, got)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("the pocket's archive (%d bytes) differs from a local export's (%d bytes)", len(got), want.Len())
	}
	h := resp.Header
	if h.Get("Content-Type") != "application/gzip" || h.Get("Content-Disposition") != `attachment; filename="demo-1.0.0.kubepkg.tgz"` {
		t.Errorf("headers: %v", h)
	}
	var sum export.Result
	decodeHeader(t, resp, pocketapi.HeaderExportSummary, &sum)
	sumJSON, _ := json.Marshal(sum)
	wantJSON, _ := json.Marshal(wantRes)
	if !bytes.Equal(sumJSON, wantJSON) {
		t.Errorf("summary header:\n%s\nwant:\n%s", sumJSON, wantJSON)
	}
	if h.Get(pocketapi.HeaderExportWarnings) != "" {
		t.Errorf("warnings for a package that has none: %s", h.Get(pocketapi.HeaderExportWarnings))
	}
	j := getJob(ctx, t, p.url, h.Get(pocketapi.HeaderJob))
	if j.Kind != pocketapi.KindStream || j.State != pocketapi.StateDone || j.Package != "demo" || j.Bytes != sum.Bytes || len(j.Images) != 2 {
		t.Errorf("the export's job: %+v", j)
	}

	// a bare YAML package, the options in the query: the same export
	yamlDoc := "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: demo, namespace: default}\nspec:\n  version: 1.0.0\n  images:\n    " +
		refs[0] + ": \"\"\n    " + refs[1] + ": \"\"\n"
	resp = post(ctx, t, p.url+"/api/v1/export?platform=linux/arm64&sourceDateEpoch=1700000000&offline=true&parallel=1", "application/yaml", yamlDoc)
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("a YAML body with query options (offline, all cached): %d %v, %d bytes, want %d", resp.StatusCode, err, len(got), want.Len())
	}

	// the package was not added to the library
	status, body, _ := pt.Get(ctx, p.url+"/api/v1/kubepkgs")
	if status != http.StatusOK || strings.Contains(string(body), `"demo"`) {
		t.Errorf("the library after an export: %d %s", status, body)
	}

	// a manifest's image not listed is added, with a warning; excluded
	// layers are left out
	withTemplate := `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"demo","namespace":"default"},
		"spec":{"version":"1.0.0","images":{"` + refs[0] + `":""},"manifests":{"web.default.deployment":{"apiVersion":"apps/v1","kind":"Deployment",
		"metadata":{"name":"web","namespace":"default"},"spec":{"template":{"spec":{"containers":[{"name":"tool","image":"` + refs[1] + `"}]}}}}}}}`
	_, layers, _ := pt.Blobs(t, single)
	reqBody, _ = json.Marshal(pocketapi.ExportRequest{KubePkg: json.RawMessage(withTemplate), Platform: "linux/arm64", Exclude: []string{string(layers[0])}})
	resp = post(ctx, t, p.url+"/api/v1/export", "application/json", string(reqBody))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export with a template image: %d", resp.StatusCode)
	}
	var warn pocketapi.ExportWarnings
	decodeHeader(t, resp, pocketapi.HeaderExportWarnings, &warn)
	if len(warn.Warnings) != 1 || !strings.Contains(warn.Warnings[0], refs[1]+" is used by the manifests") {
		t.Errorf("warnings: %+v", warn)
	}
	decodeHeader(t, resp, pocketapi.HeaderExportSummary, &sum)
	if sum.Excluded != 1 || len(sum.Images) != 2 {
		t.Errorf("summary of an export with an excluded layer: %+v", sum)
	}

	// the upstream goes away: the tags come from the cache, and the answer
	// says so
	up.Close()
	resp = post(ctx, t, p.url+"/api/v1/export?platform=linux/arm64&sourceDateEpoch=1700000000", "application/json", pkgDoc)
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("export with the upstream gone: %d %v %.300s", resp.StatusCode, err, got)
	}
	decodeHeader(t, resp, pocketapi.HeaderExportWarnings, &warn)
	if len(warn.Fallbacks) != 2 || warn.Fallbacks[0].Cached == nil || warn.Fallbacks[0].Error == "" {
		t.Errorf("fallbacks with the upstream gone: %+v", warn)
	}
}

// TestExportStreamRefusals: what cannot be exported is refused before the
// first byte, with a JSON error naming why: the request (400, naming the
// field), what is not cached offline (409 NOT_CACHED), an upstream that
// cannot be reached (502 UPSTREAM_UNAVAILABLE); and the token rules of a
// change apply.
func TestExportStreamRefusals(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up := pt.NewUpstream(t)
	img := pt.Image(t, "linux/amd64", 1, 16<<10)
	up.PushImage(ctx, t, "demo/app:1.0", img)
	ref := up.Repo("demo/app:1.0")
	p := newExportPocket(ctx, t, pt.NewCounter(), false)
	offline := newExportPocket(ctx, t, pt.NewCounter(), true)
	gone := pt.NewUpstream(t)
	gone.Close()

	list := `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[
		{"metadata":{"name":"a"},"spec":{"version":"1.0.0","images":{"` + ref + `":"sha256:` + strings.Repeat("a", 64) + `"}}},
		{"metadata":{"name":"b"},"spec":{"version":"1.0.0","images":{"` + ref + `":"sha256:` + strings.Repeat("b", 64) + `"}}}]}`
	for _, c := range []struct {
		name, url, ctype, body string
		hdr                    []string
		status                 int
		code, field, says      string
	}{
		{"invalid package", p.url + "/api/v1/export", "application/json",
			`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"demo"},"spec":{"version":"latest"}}`, nil,
			400, "INVALID", "spec.version", "semantic version"},
		{"not a package", p.url + "/api/v1/export", "application/yaml", "- just\n- a list\n", nil, 400, "INVALID", "", ""},
		{"empty body", p.url + "/api/v1/export", "application/json", " ", nil, 400, "INVALID", "", "empty body"},
		{"bad platform", p.url + "/api/v1/export?platform=linux", "application/json", demoPackage(ref), nil, 400, "INVALID", "platform", ""},
		{"bad epoch", p.url + "/api/v1/export?sourceDateEpoch=yesterday", "application/json", demoPackage(ref), nil, 400, "INVALID", "sourceDateEpoch", ""},
		{"bad exclude", p.url + "/api/v1/export?exclude=sha256:nope", "application/json", demoPackage(ref), nil, 400, "INVALID", "exclude", ""},
		{"unknown option", p.url + "/api/v1/export", "application/json", `{"kubepkg":` + demoPackage(ref) + `,"platforms":"linux/amd64"}`, nil,
			400, "INVALID", "", "unknown field"},
		{"conflicting pins", p.url + "/api/v1/export", "application/json", list, nil, 400, "INVALID", "", "pins"},
		{"offline request, not cached", p.url + "/api/v1/export?offline=true", "application/json", demoPackage(ref), nil,
			409, "NOT_CACHED", "", "offline"},
		{"offline pocket, not cached", offline.url + "/api/v1/export", "application/json", demoPackage(ref), nil,
			409, "NOT_CACHED", "", "offline"},
		{"upstream down", p.url + "/api/v1/export", "application/json", demoPackage(gone.Repo("demo/app:1.0")), nil,
			502, "UPSTREAM_UNAVAILABLE", "", "cannot be reached"},
		{"another host's client, no token", p.url + "/api/v1/export", "application/json", demoPackage(ref), []string{"Host", "pocket.example"},
			401, "UNAUTHORIZED", "", ""},
		{"a page of another origin", p.url + "/api/v1/export", "application/json", demoPackage(ref), []string{"Origin", "http://evil.example"},
			403, "DENIED", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := post(ctx, t, c.url, c.ctype, c.body, c.hdr...)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("HTTP %d %s, want %d JSON: %s", resp.StatusCode, resp.Header.Get("Content-Type"), c.status, body)
			}
			var e struct {
				Errors []struct {
					Code    string            `json:"code"`
					Message string            `json:"message"`
					Detail  map[string]string `json:"detail"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
				t.Fatalf("not an error body: %s", body)
			}
			fields := map[string]bool{}
			for _, x := range e.Errors {
				fields[x.Detail["field"]] = true
			}
			if e.Errors[0].Code != c.code || (c.field != "" && !fields[c.field]) || !strings.Contains(string(body), c.says) {
				t.Errorf("errors %+v, want code %s, field %q, saying %q", e.Errors, c.code, c.field, c.says)
			}
		})
	}
}

// stallTransport passes requests on; the first GET of blob d sends its
// first after bytes and then waits until stop is closed, to break; every
// later GET of d is refused as by a stopped upstream.
type stallTransport struct {
	base    http.RoundTripper
	d       digest.Digest
	after   int64
	stalled chan struct{}
	stop    chan struct{}
	started atomic.Bool
}

func (s *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/blobs/"+string(s.d)) {
		return s.base.RoundTrip(req)
	}
	if s.started.Swap(true) {
		return nil, &url.Error{Op: "Get", URL: req.URL.String(), Err: errors.New("dial tcp: connect: connection refused")}
	}
	resp, err := s.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &stallBody{rc: resp.Body, left: s.after, stalled: s.stalled, stop: s.stop}
	return resp, nil
}

type stallBody struct {
	rc      io.ReadCloser
	left    int64
	stalled chan struct{}
	stop    chan struct{}
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		close(b.stalled)
		<-b.stop
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *stallBody) Close() error { return b.rc.Close() }

// TestExportStreamCutOff: an export whose layer cannot be completed after
// the archive's first byte is cut off (the client's read fails: never a
// clean end) and its job says why.
func TestExportStreamCutOff(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up := pt.NewUpstream(t)
	img := pt.Image(t, "linux/amd64", 1, 3<<20)
	up.PushImage(ctx, t, "demo/big:1.0", img)
	_, layers, _ := pt.Blobs(t, img)
	st := &stallTransport{base: pt.NewCounter(), d: layers[0], after: 2 << 20, stalled: make(chan struct{}), stop: make(chan struct{})}
	p := newExportPocket(ctx, t, st, false)

	resp := post(ctx, t, p.url+"/api/v1/export", "application/json", demoPackage(up.Repo("demo/big:1.0")))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	<-st.stalled
	close(st.stop)
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("the transfer ended cleanly after %d more bytes", n)
	}
	j := getJob(ctx, t, p.url, resp.Header.Get(pocketapi.HeaderJob))
	if j.State != pocketapi.StateFailed || !strings.Contains(j.Error, string(layers[0])) || !strings.Contains(j.Error, "cannot be reached") {
		t.Errorf("the job of a cut-off export: %+v", j)
	}
}
