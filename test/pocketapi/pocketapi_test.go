// Package pocketapi tests the pocket's JSON API (crpe serve, /api/v1) with
// real processes: docker-registry as the upstream (behind a loopback proxy
// that slows or breaks blob transfers), `crpe serve`, and `crpe agent` as
// the receiver of the delta handover.
package pocketapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

const kib = 1 << 10

type pkgView struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Source   string `json:"source"`
	Platform string `json:"platforms"`
	Cache    struct {
		State       string `json:"state"`
		Percent     int    `json:"percent"`
		Bytes       int64  `json:"bytes"`
		CachedBytes int64  `json:"cachedBytes"`
		Unresolved  int    `json:"unresolved"`
	} `json:"cache"`
	Images []struct {
		Ref    string `json:"ref"`
		Digest string `json:"digest"`
	} `json:"images"`
	Object json.RawMessage `json:"object"`
}

type apiErrors struct {
	Errors []struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Detail  map[string]string `json:"detail"`
	} `json:"errors"`
}

func list(t *testing.T, base string) map[string]pkgView {
	t.Helper()
	var out struct {
		Items []pkgView `json:"items"`
	}
	pt.Call(t, "GET", base+"/api/v1/kubepkgs", nil).Must(t, 200).JSON(t, &out)
	m := map[string]pkgView{}
	for _, p := range out.Items {
		m[p.Name] = p
	}
	return m
}

func startJob(t *testing.T, method, u string) pt.Job {
	t.Helper()
	var j pt.Job
	pt.Call(t, method, u, nil).Must(t, http.StatusAccepted).JSON(t, &j)
	if j.ID == "" {
		t.Fatal("no job id")
	}
	return j
}

// TestPackageLibrary: packages added as YAML, as JSON and from a
// deployments center URL (re-fetched later, with ETag), listed, got and
// deleted; invalid packages are refused naming the field, storing nothing.
func TestPackageLibrary(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 16*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	api := p.URL + "/api/v1/kubepkgs"

	var added struct {
		Items []pkgView `json:"items"`
	}
	pt.Call(t, "POST", api, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")).Must(t, 201).JSON(t, &added)
	if len(added.Items) != 1 || added.Items[0].Name != "demo" || added.Items[0].Cache.State != "none" {
		t.Fatalf("added: %+v", added)
	}

	// invalid: the field is named, nothing is stored
	bad := pt.Package("other", "latest", "docker.io/library/app:1.0", "linux/amd64")
	var e apiErrors
	pt.Call(t, "POST", api, bad).Must(t, 400).JSON(t, &e)
	if len(e.Errors) == 0 || e.Errors[0].Detail["field"] != "spec.version" || !strings.Contains(e.Errors[0].Message, "latest") {
		t.Fatalf("invalid version: %+v", e)
	}
	listDoc := `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[
	  {"metadata":{"name":"good"},"spec":{"version":"1.0.0"}},
	  {"metadata":{"name":"Bad_Name"},"spec":{"version":"1.0.0","images":{"docker.io/library/app:1.0":"nope"}}}]}`
	e = apiErrors{}
	pt.Call(t, "POST", api, []byte(listDoc)).Must(t, 400).JSON(t, &e)
	fields := map[string]bool{}
	for _, x := range e.Errors {
		fields[x.Detail["field"]] = true
	}
	if !fields["metadata.name"] || !fields[`spec.images["docker.io/library/app:1.0"]`] {
		t.Fatalf("list errors: %+v", e)
	}
	pt.Call(t, "POST", api, []byte(`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"x"},"spec":{"version":"1.0.0","images":5}}`)).Must(t, 400)
	pt.Call(t, "POST", api, []byte(`{"url":"file:///etc/passwd"}`)).Must(t, 400)
	if got := list(t, p.URL); len(got) != 1 {
		t.Fatalf("something invalid was stored: %+v", got)
	}

	// a deployments center (loopback), with ETag
	var version atomic.Value
	version.Store("1.1.0")
	var gets, notModified atomic.Int64
	center := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		if r.Header.Get("Authorization") != "Bearer center-token" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		v := version.Load().(string)
		etag := `"` + v + `"`
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		fmt.Fprintf(w, `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[
		  {"metadata":{"name":"center-a"},"spec":{"version":%q,"images":{"docker.io/library/app:2.0":""}}},
		  {"metadata":{"name":"center-b"},"spec":{"version":"0.1.0"}}]}`, v)
	}))
	defer center.Close()
	pt.Call(t, "POST", api, map[string]string{"url": center.URL + "/kubepkgs", "token": "wrong"}).Must(t, http.StatusBadGateway)
	pt.Call(t, "POST", api, map[string]string{"url": center.URL + "/kubepkgs", "token": "center-token"}).Must(t, 201)
	got := list(t, p.URL)
	if got["center-a"].Version != "1.1.0" || got["center-a"].Source != center.URL+"/kubepkgs" || got["center-b"].Version != "0.1.0" {
		t.Fatalf("from the center: %+v", got)
	}
	pt.Call(t, "POST", api+"/center-a/refresh", nil).Must(t, 200)
	if notModified.Load() != 1 {
		t.Fatalf("refresh did not revalidate with the ETag (304s: %d)", notModified.Load())
	}
	version.Store("1.2.0")
	pt.Call(t, "POST", api+"/center-b/refresh", nil).Must(t, 200)
	if v := list(t, p.URL)["center-a"].Version; v != "1.2.0" {
		t.Fatalf("after refresh: %s", v)
	}
	pt.Call(t, "POST", api+"/demo/refresh", nil).Must(t, http.StatusConflict)

	// get (with the object), delete
	var one pkgView
	pt.Call(t, "GET", api+"/demo", nil).Must(t, 200).JSON(t, &one)
	if one.Platform != "linux/amd64" || !strings.Contains(string(one.Object), `"web.default.deployment"`) {
		t.Fatalf("get: %+v", one)
	}
	pt.Call(t, "DELETE", api+"/center-b", nil).Must(t, 204)
	pt.Call(t, "DELETE", api+"/center-b", nil).Must(t, 404)
	pt.Call(t, "GET", api+"/center-b", nil).Must(t, 404)
	if got := list(t, p.URL); len(got) != 2 {
		t.Fatalf("after delete: %+v", got)
	}
}

// TestSyncDownloadSend: a package synced into the cache with progress
// events at least twice a second, downloaded as an archive that `crpe
// inspect --verify` accepts, sent to a real agent; a second version sent
// with only what the agent lacks; the agent's status compared.
func TestSyncDownloadSend(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 768*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	api := p.URL + "/api/v1/kubepkgs"
	ev := pt.Subscribe(t, p.URL)

	pt.Call(t, "POST", api, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64,linux/arm64")).Must(t, 201)
	f.Proxy.BytesPerSecond.Store(1 << 20) // 1 MiB/s per transfer: the 1.5 MiB layer takes ≈ 1.5 s
	start := time.Now()
	j := startJob(t, "POST", api+"/demo/sync")
	// a second sync request while it runs gets the same job
	if again := startJob(t, "POST", api+"/demo/sync"); again.ID != j.ID {
		t.Fatalf("second sync started another job")
	}
	done := ev.WaitJob(t, j.ID, 60*time.Second)
	took := time.Since(start)
	if done.State != "done" || done.Percent != 100 || done.Bytes != done.Total {
		t.Fatalf("sync: %+v", done)
	}
	times := ev.Times(j.ID)
	if len(times) < 2 {
		t.Fatalf("%d progress events during a sync of %v", len(times), took)
	}
	var maxGap time.Duration
	for i := 1; i < len(times); i++ {
		maxGap = max(maxGap, times[i].Sub(times[i-1]))
	}
	pt.Figure(t, "sync_seconds", took.Seconds())
	pt.Figure(t, "sync_events_per_second", float64(len(times))/took.Seconds())
	pt.Figure(t, "sync_events_max_gap_ms", float64(maxGap.Milliseconds()))
	var sawRate, sawPartial bool
	for _, x := range ev.Jobs(j.ID) {
		if x.State == "running" && x.Bytes > 0 && x.Bytes < x.Total {
			sawPartial = true
		}
		for _, im := range x.Images {
			if im.Rate > 0 {
				sawRate = true
			}
		}
	}
	if !sawPartial || !sawRate {
		t.Fatalf("no intermediate progress with a rate: %+v", ev.Jobs(j.ID))
	}
	f.Proxy.BytesPerSecond.Store(0)
	if st := list(t, p.URL)["demo"].Cache; st.State != "synced" || st.Percent != 100 {
		t.Fatalf("after sync: %+v", st)
	}

	// download: straight from the cache (the upstream is down)
	f.Proxy.Fail.Store(true)
	before := f.Proxy.BlobGETs.Load()
	req, _ := http.NewRequest("GET", api+"/demo/kubepkg.tgz", nil)
	resp, err := pt.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") != `attachment; filename="demo-1.0.0.kubepkg.tgz"` {
		t.Fatalf("download: %d %v", resp.StatusCode, resp.Header)
	}
	out := filepath.Join(t.TempDir(), "demo.kubepkg.tgz")
	fh, _ := os.Create(out)
	if _, err := fh.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fh.Close()
	if f.Proxy.BlobGETs.Load() != before {
		t.Fatal("the download asked the upstream for blobs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if o, err := testenv.Run(ctx, t, "inspect", out, "--verify"); err != nil {
		t.Fatalf("inspect --verify: %v\n%s", err, o)
	}
	// a platform subset
	resp2 := pt.Call(t, "GET", api+"/demo/kubepkg.tgz?platform=linux/arm64", nil).Must(t, 200)
	if !strings.Contains(resp2.Header.Get("Content-Disposition"), "linux_arm64") {
		t.Fatalf("platform download: %v", resp2.Header)
	}
	f.Proxy.Fail.Store(false)

	// send to the agent: everything goes the first time
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"name": "plant", "url": ag.URL, "token": ag.Token}).Must(t, 201)
	js := startJob(t, "POST", api+"/demo/send?agent=plant")
	sent := ev.WaitJob(t, js.ID, 60*time.Second)
	var r1 struct {
		BytesSent    int64 `json:"bytesSent"`
		BytesOmitted int64 `json:"bytesOmitted"`
		BlobsOmitted int   `json:"blobsOmitted"`
	}
	if sent.State != "done" {
		t.Fatalf("send: %+v", sent)
	}
	_ = json.Unmarshal(sent.Result, &r1)
	if r1.BytesOmitted != 0 || r1.BytesSent < f.Shared.Desc.Size {
		t.Fatalf("first send: %+v", r1)
	}
	// version 2 shares its big layer with version 1: the delta leaves it out
	pt.Call(t, "POST", api, pt.Package("demo", "2.0.0", "docker.io/library/app:2.0", "linux/amd64")).Must(t, 201)
	var st struct {
		Reachable     bool `json:"reachable"`
		TokenAccepted bool `json:"tokenAccepted"`
		Packages      []struct {
			Name          string `json:"name"`
			Version       string `json:"version"`
			PocketVersion string `json:"pocketVersion"`
			Action        string `json:"action"`
		} `json:"packages"`
	}
	pt.Call(t, "GET", p.URL+"/api/v1/agents/plant", nil).Must(t, 200).JSON(t, &st)
	if !st.Reachable || !st.TokenAccepted || len(st.Packages) != 1 || st.Packages[0].Action != "upgrade" || st.Packages[0].Version != "1.0.0" || st.Packages[0].PocketVersion != "2.0.0" {
		t.Fatalf("agent status before the upgrade: %+v", st)
	}
	js = startJob(t, "POST", api+"/demo/send?agent=plant")
	sent = ev.WaitJob(t, js.ID, 60*time.Second)
	if sent.State != "done" {
		t.Fatalf("second send: %+v", sent)
	}
	var r2 struct {
		BytesSent    int64 `json:"bytesSent"`
		BytesOmitted int64 `json:"bytesOmitted"`
		BlobsOmitted int   `json:"blobsOmitted"`
	}
	_ = json.Unmarshal(sent.Result, &r2)
	if r2.BlobsOmitted != 1 || r2.BytesOmitted != f.Shared.Desc.Size || r2.BytesSent >= f.Shared.Desc.Size {
		t.Fatalf("delta send: %+v (shared layer %d bytes)", r2, f.Shared.Desc.Size)
	}
	pt.Call(t, "GET", p.URL+"/api/v1/agents/plant", nil).Must(t, 200).JSON(t, &st)
	if len(st.Packages) != 1 || st.Packages[0].Action != "current" || st.Packages[0].Version != "2.0.0" {
		t.Fatalf("agent status after the upgrade: %+v", st)
	}
	// the agent holds it
	var agentPkgs struct {
		Items []struct{ Name, Version string } `json:"items"`
	}
	pt.Call(t, "GET", ag.URL+"/api/v1/kubepkgs", nil).Must(t, 200).JSON(t, &agentPkgs)
	if len(agentPkgs.Items) != 1 || agentPkgs.Items[0].Version != "2.0.0" {
		t.Fatalf("agent: %+v", agentPkgs)
	}
}

// TestBadInput: a sync cut off midway is resumable with honest progress;
// a download offline of a package not cached is a JSON error, not a file;
// an agent that is down or refuses the token is told plainly.
func TestBadInput(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 256*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	api := p.URL + "/api/v1/kubepkgs"
	ev := pt.Subscribe(t, p.URL)
	pt.Call(t, "POST", api, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64,linux/arm64")).Must(t, 201)

	// the upstream dies once manifests are in: the sync fails, nothing lies
	f.Proxy.Fail.Store(true)
	j := startJob(t, "POST", api+"/demo/sync")
	failed := ev.WaitJob(t, j.ID, 60*time.Second)
	if failed.State != "failed" || !strings.Contains(failed.Error, "sync again") || failed.Bytes >= failed.Total {
		t.Fatalf("cut-off sync: %+v", failed)
	}
	st := list(t, p.URL)["demo"].Cache
	if st.State == "synced" || st.Percent >= 100 {
		t.Fatalf("after a failed sync: %+v", st)
	}
	// download online but with the upstream down: a JSON error before any byte
	r := pt.Call(t, "GET", api+"/demo/kubepkg.tgz", nil)
	if r.Status < 400 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || r.Header.Get("Content-Disposition") != "" {
		t.Fatalf("download with blobs missing: %d %v %s", r.Status, r.Header, r.Body)
	}
	// the upstream is back: the sync resumes and fetches only what is missing
	f.Proxy.Fail.Store(false)
	j = startJob(t, "POST", api+"/demo/sync")
	done := ev.WaitJob(t, j.ID, 60*time.Second)
	if done.State != "done" {
		t.Fatalf("resumed sync: %+v", done)
	}
	var res struct {
		Blobs        int `json:"blobs"`
		FetchedBlobs int `json:"fetchedBlobs"`
	}
	_ = json.Unmarshal(done.Result, &res)
	// every blob came from the upstream exactly once, whichever attempt
	// (or detached retry of the cut-off one) fetched it: the manifests at
	// the first sync, the rest after the upstream came back
	if oks := f.Proxy.BlobOKs.Load(); int(oks) != res.Blobs-3 {
		t.Fatalf("%d blob GETs served for %d blobs (3 of them manifests: an index and two images)", oks, res.Blobs)
	}
	if st := list(t, p.URL)["demo"].Cache; st.State != "synced" {
		t.Fatalf("after the resumed sync: %+v", st)
	}

	// offline pocket, package not cached: a clear JSON error
	off := pt.StartPocket(t, f.Proxy.URL, "--offline")
	pt.Call(t, "POST", off.URL+"/api/v1/kubepkgs", pt.Package("cold", "1.0.0", "docker.io/library/tool:1.0", "linux/amd64")).Must(t, 201)
	r = pt.Call(t, "GET", off.URL+"/api/v1/kubepkgs/cold/kubepkg.tgz", nil)
	var e apiErrors
	r.JSON(t, &e)
	if r.Status != http.StatusConflict || len(e.Errors) != 1 || e.Errors[0].Code != "NOT_CACHED" || !strings.Contains(e.Errors[0].Message, "offline") || r.Header.Get("Content-Disposition") != "" {
		t.Fatalf("offline download: %d %s", r.Status, r.Body)
	}

	// an agent that refuses the token, one that is down
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"name": "wrongtoken", "url": ag.URL, "token": "nope"}).Must(t, 201)
	var ast struct {
		Reachable     bool   `json:"reachable"`
		TokenAccepted bool   `json:"tokenAccepted"`
		Error         string `json:"error"`
	}
	pt.Call(t, "GET", p.URL+"/api/v1/agents/wrongtoken", nil).Must(t, 200).JSON(t, &ast)
	if !ast.Reachable || ast.TokenAccepted || !strings.Contains(ast.Error, "refused the token") {
		t.Fatalf("wrong token: %+v", ast)
	}
	j = startJob(t, "POST", api+"/demo/send?agent=wrongtoken")
	if x := ev.WaitJob(t, j.ID, 30*time.Second); x.State != "failed" || !strings.Contains(x.Error, "refused the token") {
		t.Fatalf("send with a wrong token: %+v", x)
	}
	down := "http://" + testenv.FreeAddr(t)
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"name": "down", "url": down, "token": "x"}).Must(t, 201)
	pt.Call(t, "GET", p.URL+"/api/v1/agents/down", nil).Must(t, 200).JSON(t, &ast)
	if ast.Reachable || !strings.Contains(ast.Error, "cannot be reached") {
		t.Fatalf("agent down: %+v", ast)
	}
	j = startJob(t, "POST", api+"/demo/send?agent=down")
	if x := ev.WaitJob(t, j.ID, 30*time.Second); x.State != "failed" || !strings.Contains(x.Error, "cannot be reached") {
		t.Fatalf("send to an agent that is down: %+v", x)
	}
	pt.Call(t, "POST", api+"/demo/send?agent=nobody", nil).Must(t, 404)
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"url": "ftp://x"}).Must(t, 400)
}

// TestTokenRules: reads are anonymous; changes need the token unless the
// client is on loopback and names the pocket by a loopback name; a wrong
// token is refused even for reads; a page of another origin cannot change
// anything; only a trusted client is shown the token.
func TestTokenRules(t *testing.T) {
	testenv.Crpe(t)
	up := testenv.StartDistribution(t)
	p := pt.StartPocket(t, up.URL)
	api := p.URL + "/api/v1/kubepkgs"
	doc := pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")
	// a DNS name rebound to 127.0.0.1 is not trusted
	pt.Call(t, "POST", api, doc, "Host", "pocket.example:6060").Must(t, 401)
	pt.Call(t, "GET", api, nil, "Host", "pocket.example:6060").Must(t, 200)
	pt.Call(t, "POST", api, doc, "Host", "pocket.example:6060", "Authorization", "Bearer "+pt.PocketToken).Must(t, 201)
	pt.Call(t, "POST", api, doc, "Host", "pocket.example:6060", "Authorization", "Basic "+basic("any", pt.PocketToken)).Must(t, 201)
	pt.Call(t, "GET", api, nil, "Authorization", "Bearer wrong").Must(t, 401)
	pt.Call(t, "DELETE", api+"/demo", nil, "Origin", "http://evil.example").Must(t, 403)
	pt.Call(t, "DELETE", api+"/demo", nil, "Origin", p.URL).Must(t, 204)

	var info struct {
		Trusted bool   `json:"trusted"`
		Token   string `json:"token"`
	}
	pt.Call(t, "GET", p.URL+"/api/v1/pocket", nil).Must(t, 200).JSON(t, &info)
	if !info.Trusted || info.Token != pt.PocketToken {
		t.Fatalf("loopback info: %+v", info)
	}
	info = struct {
		Trusted bool   `json:"trusted"`
		Token   string `json:"token"`
	}{}
	pt.Call(t, "GET", p.URL+"/api/v1/pocket", nil, "Host", "pocket.example:6060").Must(t, 200).JSON(t, &info)
	if info.Trusted || info.Token != "" {
		t.Fatalf("untrusted info: %+v", info)
	}
	qr := pt.Call(t, "GET", p.URL+"/api/v1/pocket/qr?url=http://192.0.2.1:6060/", nil).Must(t, 200)
	if !strings.HasPrefix(qr.Header.Get("Content-Type"), "image/svg+xml") || !strings.Contains(string(qr.Body), "<path") {
		t.Fatalf("qr: %v %.200s", qr.Header, qr.Body)
	}
	pt.Call(t, "GET", p.URL+"/api/v1/pocket/qr?url=javascript:alert(1)", nil).Must(t, 400)
	pt.Call(t, "GET", p.URL+"/api/v1/nope", nil).Must(t, 404)
}

func basic(user, pass string) string {
	return b64(user + ":" + pass)
}

// TestRegistriesAndCache: a registry stored through the API takes effect
// at once (its traffic sent to the upstream); the cache reports what the
// library needs, and a clean-up removes the rest and nothing else.
func TestRegistriesAndCache(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 64*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	api := p.URL + "/api/v1"
	ev := pt.Subscribe(t, p.URL)

	// registry.test:5000 needs credentials
	private := pt.StartProxy(t, f.Up.URL)
	private.Auth.Store("u:secret")
	pt.Call(t, "PUT", api+"/registries/registry.test:5000", map[string]any{"endpoint": private.URL, "username": "u", "password": "wrong"}).Must(t, 200)
	pt.Call(t, "PUT", api+"/registries/bad host", map[string]any{}).Must(t, 400)
	pt.Call(t, "PUT", api+"/registries/x.test", map[string]any{"endpoint": "ftp://x"}).Must(t, 400)
	regs := pt.Call(t, "GET", api+"/registries", nil).Must(t, 200)
	if strings.Contains(string(regs.Body), "secret") || !strings.Contains(string(regs.Body), `"hasPassword": true`) || !strings.Contains(string(regs.Body), `"source": "flag"`) {
		t.Fatalf("registries: %s", regs.Body)
	}
	pt.Call(t, "POST", api+"/kubepkgs", pt.Package("viaapi", "1.0.0", "registry.test:5000/library/app:2.0", "linux/amd64")).Must(t, 201)
	j := startJob(t, "POST", api+"/kubepkgs/viaapi/sync")
	if x := ev.WaitJob(t, j.ID, 60*time.Second); x.State != "failed" || !strings.Contains(x.Error, "401") {
		t.Fatalf("sync with wrong credentials: %+v", x)
	}
	// the right password: taken at once, the username kept
	pt.Call(t, "PUT", api+"/registries/registry.test:5000", map[string]any{"endpoint": private.URL, "username": "u", "password": "secret"}).Must(t, 200)
	j = startJob(t, "POST", api+"/kubepkgs/viaapi/sync")
	if x := ev.WaitJob(t, j.ID, 60*time.Second); x.State != "done" {
		t.Fatalf("sync through a stored registry with credentials: %+v", x)
	}

	// an image no package needs, pulled through /v2
	pt.Call(t, "GET", p.URL+"/v2/docker.io/library/tool/blobs/"+string(f.Tool.Layers[0].Desc.Digest), nil).Must(t, 200)
	var ci struct {
		Blobs         int   `json:"blobs"`
		NeededBlobs   int   `json:"neededBlobs"`
		UnneededBlobs int   `json:"unneededBlobs"`
		UnneededBytes int64 `json:"unneededBytes"`
	}
	// a client gets a blob once it is verified; the cache commits it just
	// after (fsync, then link)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		pt.Call(t, "GET", api+"/cache", nil).Must(t, 200).JSON(t, &ci)
		if ci.UnneededBlobs == 1 || time.Now().After(deadline) {
			break
		}
	}
	if ci.UnneededBlobs != 1 || ci.UnneededBytes != f.Tool.Layers[0].Desc.Size || ci.NeededBlobs != 4 {
		t.Fatalf("cache: %+v", ci)
	}
	var cr struct {
		BlobsRemoved int   `json:"blobsRemoved"`
		BytesFreed   int64 `json:"bytesFreed"`
		Young        int   `json:"young"`
	}
	pt.Call(t, "POST", api+"/cache/clean", nil).Must(t, 200).JSON(t, &cr)
	if cr.BlobsRemoved != 0 || cr.Young != 1 {
		t.Fatalf("clean within the grace period: %+v", cr)
	}
	pt.Call(t, "POST", api+"/cache/clean?grace=0s", nil).Must(t, 200).JSON(t, &cr)
	if cr.BlobsRemoved != 1 || cr.BytesFreed != f.Tool.Layers[0].Desc.Size {
		t.Fatalf("clean: %+v", cr)
	}
	if st := list(t, p.URL)["viaapi"].Cache; st.State != "synced" {
		t.Fatalf("the package lost blobs to the clean-up: %+v", st)
	}
	pt.Call(t, "DELETE", api+"/registries/registry.test:5000", nil).Must(t, 204)
	pt.Call(t, "DELETE", api+"/registries/registry.test:5000", nil).Must(t, 404)
	// the pocket's own data folder is still consistent
	_ = p.Cmd.Process.Kill()
	<-p.Stopped()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := testenv.Run(ctx, t, "fsck", "--data", p.Data); err != nil {
		t.Fatalf("fsck after clean-up: %v\n%s", err, out)
	}
}

// TestEventStreamsCost: 16 open event streams cost the pocket less than
// 5 MiB of resident memory, and each gets the events.
func TestEventStreamsCost(t *testing.T) {
	testenv.Crpe(t)
	up := testenv.StartDistribution(t)
	p := pt.StartPocket(t, up.URL)
	// warm up: one stream and the UI's first calls
	warm := pt.Subscribe(t, p.URL)
	pt.Call(t, "GET", p.URL+"/api/v1/kubepkgs", nil).Must(t, 200)
	pt.Call(t, "GET", p.URL+"/api/v1/pocket", nil).Must(t, 200)
	time.Sleep(300 * time.Millisecond)
	before := rss(t, p.Cmd.Process.Pid)
	var streams []*pt.Events
	for i := 0; i < 16; i++ {
		streams = append(streams, pt.Subscribe(t, p.URL))
	}
	time.Sleep(300 * time.Millisecond)
	pt.Call(t, "POST", p.URL+"/api/v1/kubepkgs", pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")).Must(t, 201)
	time.Sleep(300 * time.Millisecond)
	after := rss(t, p.Cmd.Process.Pid)
	pt.Figure(t, "rss_16_streams_delta_kib", float64((after-before)>>10))
	if after-before > 5<<20 {
		t.Fatalf("16 event streams cost %d KiB", (after-before)>>10)
	}
	warm.Close()
	for _, s := range streams {
		s.Close()
	}
}

func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skip("no /proc: ", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// cutProxy forwards TCP to target and, once armed, cuts the first
// connection that has carried more than after bytes towards the target.
type cutProxy struct {
	addr  string
	armed atomic.Bool
	after int64
	cuts  atomic.Int64
}

func startCutProxy(t *testing.T, target string, after int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &cutProxy{addr: ln.Addr().String(), after: after}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(c, s); c.Close() }()
				buf := make([]byte, 32<<10)
				var n int64
				for {
					k, err := c.Read(buf)
					if k > 0 {
						n += int64(k)
						if n > p.after && p.armed.CompareAndSwap(true, false) {
							p.cuts.Add(1)
							return // both ends closed midway
						}
						if _, err := s.Write(buf[:k]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// TestSendCutOffResumes: a send whose connection breaks midway is retried
// with a fresh delta: the layers the agent committed before the break are
// not sent again, and the job's result says so.
func TestSendCutOffResumes(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 768*kib) // shared layer 1.5 MiB, the amd64 one 768 KiB
	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	cut := startCutProxy(t, ag.Addr, 2<<20) // past the first layer, within the second
	api := p.URL + "/api/v1/kubepkgs"
	ev := pt.Subscribe(t, p.URL)
	pt.Call(t, "POST", api, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")).Must(t, 201)
	j := startJob(t, "POST", api+"/demo/sync")
	if x := ev.WaitJob(t, j.ID, 60*time.Second); x.State != "done" {
		t.Fatalf("sync: %+v", x)
	}
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"name": "flaky", "url": "http://" + cut.addr, "token": ag.Token}).Must(t, 201)
	cut.armed.Store(true)
	j = startJob(t, "POST", api+"/demo/send?agent=flaky")
	x := ev.WaitJob(t, j.ID, 60*time.Second)
	var res struct {
		Attempts     int   `json:"attempts"`
		BlobsOmitted int   `json:"blobsOmitted"`
		BytesOmitted int64 `json:"bytesOmitted"`
	}
	_ = json.Unmarshal(x.Result, &res)
	if x.State != "done" || cut.cuts.Load() != 1 || res.Attempts != 2 || res.BlobsOmitted != 1 {
		t.Fatalf("cut-off send: %+v, result %+v, cuts %d", x, res, cut.cuts.Load())
	}
	var agentPkgs struct {
		Items []struct{ Name, Version string } `json:"items"`
	}
	pt.Call(t, "GET", ag.URL+"/api/v1/kubepkgs", nil).Must(t, 200).JSON(t, &agentPkgs)
	if len(agentPkgs.Items) != 1 || agentPkgs.Items[0].Version != "1.0.0" {
		t.Fatalf("agent after the resumed send: %+v", agentPkgs)
	}
}
