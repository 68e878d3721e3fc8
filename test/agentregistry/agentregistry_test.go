//go:build linux

// Package agentregistry tests `crpe agent --registry`: agents holding no
// blob in front of CNCF distribution v3 (htpasswd auth, TLS from a CA the
// test makes), their package records as KubePkg objects in a real
// kube-apiserver (etcd + kube-apiserver from testenv), so that any replica
// answers; and `crpe install --registry --replicas` applied to it.
package agentregistry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
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
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) {
	code := testenv.Main(m)
	testenv.StopSharedKube()
	os.Exit(code)
}

type result = testenv.Result

// crpe runs the binary with HOME an empty folder (no Docker credentials but
// the test's) and none of the test's CRPE_ or DOCKER_CONFIG variables.
func crpe(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	return testenv.RunCrpe(ctx, t, testenv.CrpeOptions{Drop: []string{"DOCKER_CONFIG", "HOME"}, Env: []string{"HOME=" + t.TempDir()}}, args...)
}

func mustCrpe(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	r := crpe(ctx, t, args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r
}

func kubectl(ctx context.Context, t *testing.T, k *testenv.Kube, args ...string) string {
	t.Helper()
	out, err := k.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kpkg is the KubePkg object ns/name (nil when there is none).
func kpkg(ctx context.Context, t *testing.T, k *testenv.Kube, ns, name string) map[string]any {
	t.Helper()
	out := kubectl(ctx, t, k, "get", "-n", ns, "kubepkgs.octohelm.tech", name, "-o", "json", "--ignore-not-found")
	if strings.TrimSpace(out) == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return m
}

func str(v any, path ...string) string {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

// fixture is seedtest's demo package (an index of linux/amd64 and
// linux/arm64, complete: distribution refuses an index whose children are
// not all there, and a single image sharing a layer with it) named demo at
// version in ns. salt changes the configs and keeps the layers; seed
// changes everything.
func fixture(t *testing.T, ns, version, salt string, seed uint64) (*seedtest.Package, string) {
	t.Helper()
	p := seedtest.Demo("demo"+salt, version, false, seed)
	p.Name, p.Namespace = "demo", ns
	p.Images[0].Top = seedtest.NewIndex(false, p.Images[0].Children)
	f := filepath.Join(t.TempDir(), "demo-"+version+".kubepkg.tgz")
	if err := os.WriteFile(f, testenv.CrpeArchive(t, p), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, f
}

// layers are the distinct layers of p, with their total size.
func layers(p *seedtest.Package) (map[string]int64, int64) {
	out := map[string]int64{}
	var n int64
	for _, im := range p.Images {
		for _, c := range im.Children {
			for _, l := range c.Layers {
				if _, ok := out[string(l.Desc.Digest)]; !ok {
					out[string(l.Desc.Digest)] = l.Desc.Size
					n += l.Desc.Size
				}
			}
		}
	}
	return out, n
}

func tagDigest(t *testing.T, c *http.Client, base, repo, tag string) string {
	return testenv.TagDigest(t, c, base, repo, tag)
}

// prefix is where the agents put the packages' images in the site registry.
const prefix = "site"

// siteSetup is what the registry-mode tests share: a bounded context, the
// shared kube-apiserver, distribution v3 with htpasswd and TLS, a fresh
// namespace (named after base) watched by an operator (which installs the
// KubePkg CRD and applies the objects), and the flags of an agent in
// registry mode reaching the registry at host with the CA in caFile.
func siteSetup(t *testing.T, base string) (context.Context, *testenv.Kube, *testenv.Registry3, string, func(host, caFile string) []string) {
	t.Helper()
	ctx := testenv.WaitCtx(t, 5*time.Minute)
	k := testenv.SharedKube(t)
	reg := testenv.StartRegistry3(t, testenv.Registry3Options{Auth: true, TLS: true})
	ns := base + "-" + fmt.Sprint(time.Now().UnixNano()%1000000)
	kubectl(ctx, t, k, "create", "namespace", ns)
	testenv.StartOperator(t, k.Kubeconfig, ns)
	return ctx, k, reg, ns, func(host, caFile string) []string {
		return []string{"--registry", host + "/" + prefix, "--username", reg.User, "--password", reg.Password,
			"--ca-file", caFile, "--kubeconfig", k.Kubeconfig, "--namespace", ns}
	}
}

// checkImages is testenv.CheckImages under prefix.
func checkImages(t *testing.T, c *http.Client, base string, p *seedtest.Package) {
	t.Helper()
	testenv.CheckImages(t, c, base, func(name string) string { return prefix + "/" + name }, p)
}

type importOut struct {
	Import struct {
		Packages []struct {
			Namespace, Name, Version, Previous string
		} `json:"packages"`
		BlobsReceived  int               `json:"blobsReceived"`
		BlobsPresent   int               `json:"blobsPresent"`
		KubePkgObjects map[string]string `json:"kubepkgObjects"`
	} `json:"import"`
	BytesSent    int64 `json:"bytesSent"`
	BlobsOmitted int   `json:"blobsOmitted"`
	BytesOmitted int64 `json:"bytesOmitted"`
}

// denyingProxy is a TLS reverse proxy in front of the site registry that
// answers 403 DENIED to an upload start in any repository containing deny,
// as a registry that will not create a repository does. It returns its
// address and a CA file trusting both it and the registry.
func denyingProxy(t *testing.T, reg *testenv.Registry3, deny string) (string, string) {
	t.Helper()
	return siteProxy(t, reg, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, deny) && strings.Contains(r.URL.Path, "/blobs/uploads") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"project does not exist (the test's proxy)"}]}`)
			return true
		}
		return false
	})
}

// pause holds every upload start (POST …/blobs/uploads/) a pausingProxy
// sees once armed, until released: an import through it stays in
// progress, past its semver gate and its lease, for as long as the test
// needs.
type pause struct {
	mu      sync.Mutex
	armed   bool
	reached chan struct{} // closed at the first upload held
	release chan struct{}
	once    sync.Once
}

func (p *pause) hold(r *http.Request) {
	if r.Method != http.MethodPost || !strings.Contains(r.URL.Path, "/blobs/uploads") {
		return
	}
	p.mu.Lock()
	armed := p.armed
	if armed {
		select {
		case <-p.reached:
		default:
			close(p.reached)
		}
	}
	p.mu.Unlock()
	if armed {
		<-p.release
	}
}

func (p *pause) arm() {
	p.mu.Lock()
	p.armed = true
	p.mu.Unlock()
}

func (p *pause) resume() { p.once.Do(func() { close(p.release) }) }

// pausingProxy is a TLS reverse proxy in front of the site registry whose
// upload starts wait while the pause is armed and not released.
func pausingProxy(t *testing.T, reg *testenv.Registry3) (string, string, *pause) {
	t.Helper()
	p := &pause{reached: make(chan struct{}), release: make(chan struct{})}
	host, ca := siteProxy(t, reg, func(w http.ResponseWriter, r *http.Request) bool {
		p.hold(r)
		return false
	})
	t.Cleanup(p.resume) // before the server's Close, which waits for its requests
	return host, ca, p
}

// siteProxy is a TLS reverse proxy in front of the site registry: intercept
// sees each request first and answers it itself when it returns true. It
// returns its address and a CA file trusting both it and the registry.
func siteProxy(t *testing.T, reg *testenv.Registry3, intercept func(http.ResponseWriter, *http.Request) bool) (string, string) {
	t.Helper()
	u, _ := url.Parse(reg.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(reg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	rp.Transport = tr
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	both := append(append([]byte{}, caPEM...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, both, 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "https://"), f
}

// TestAgentRegistryMode: two `crpe agent --registry` replicas (no blob of
// their own, records as KubePkg objects) in front of distribution v3 with
// htpasswd and TLS. An import through replica A pushes into the registry
// and writes the KubePkg object; the next version through replica B sends
// only the layers the registry lacks (the delta is asked of the registry)
// and updates the object; B refuses a downgrade; the images pull by tag
// with the archive's digests; an import refused by the registry moves no
// tag and leaves the object alone; a package exported by crpe from a source
// registry is applied by the operator; `crpe agent inventory --from B` lists
// what the registry holds, and `crpe export --since` with it leaves those
// layers out. The agents' /v2 says where the images are, and their data
// folders stay empty.
func TestAgentRegistryMode(t *testing.T) {
	ctx, k, reg, ns, agentArgs := siteSetup(t, "agentregistry")
	dataA := t.TempDir()
	a := testenv.StartAgent(t, testenv.AgentOptions{Data: dataA, Args: agentArgs(reg.Addr, reg.CAFile)})
	b := testenv.StartAgent(t, testenv.AgentOptions{Args: agentArgs(reg.Addr, reg.CAFile)})

	importTo := func(agent *testenv.Proc, file string, extra ...string) result {
		return crpe(ctx, t, append([]string{"import", file, "--to", agent.URL, "--token", agent.Token, "--json"}, extra...)...)
	}
	decode := func(r result) importOut {
		t.Helper()
		var out importOut
		if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		return out
	}

	// 1.0.0 through A: everything pushed, the object created
	p1, f1 := fixture(t, ns, "1.0.0", "", 1)
	r := importTo(a, f1)
	if r.Err != nil {
		t.Fatalf("%s\nagent A:\n%s", r, a.Logs())
	}
	out := decode(r)
	if out.Import.KubePkgObjects[ns+"/demo"] != "created" || out.BlobsOmitted != 0 {
		t.Errorf("first import: objects %v, %d layers left out, want created and 0:\n%s", out.Import.KubePkgObjects, out.BlobsOmitted, r)
	}
	checkImages(t, reg.Client, reg.URL, p1)
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "1.0.0" {
		t.Fatalf("KubePkg %s/demo at %q after the import, want 1.0.0", ns, v)
	}

	// 2.0.0 (new configs, the same layers) through B: the delta, asked of
	// the site registry, leaves every layer out
	p2, f2 := fixture(t, ns, "2.0.0", "-two", 1)
	ls, lbytes := layers(p2)
	r = importTo(b, f2)
	if r.Err != nil {
		t.Fatalf("%s\nagent B:\n%s", r, b.Logs())
	}
	out = decode(r)
	if out.BlobsOmitted != len(ls) || out.BytesOmitted != lbytes {
		t.Errorf("2.0.0 through B left out %d layers (%d bytes), want every layer the registry holds: %d (%d bytes)", out.BlobsOmitted, out.BytesOmitted, len(ls), lbytes)
	}
	if out.Import.BlobsReceived != 3 { // the three new configs
		t.Errorf("2.0.0: %d blobs pushed, want the 3 new configs:\n%s", out.Import.BlobsReceived, r)
	}
	if out.Import.KubePkgObjects[ns+"/demo"] != "updated" {
		t.Errorf("2.0.0: objects %v, want updated", out.Import.KubePkgObjects)
	}
	checkImages(t, reg.Client, reg.URL, p2)
	obj := kpkg(ctx, t, k, ns, "demo")
	if v := str(obj, "spec", "version"); v != "2.0.0" {
		t.Fatalf("KubePkg at %q, want 2.0.0", v)
	}
	if got := str(obj, "spec", "images", "docker.io/library/nginx:alpine"); got != string(p2.Images[0].Top.Desc.Digest) {
		t.Errorf("spec.images pin %q, want %s", got, p2.Images[0].Top.Desc.Digest)
	}
	// any replica answers: A lists what B imported
	resp, err := http.Get(a.URL + "/api/v1/kubepkgs")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var list struct {
		Items []struct{ Namespace, Name, Version string }
	}
	_ = json.Unmarshal(body, &list)
	found := false
	for _, it := range list.Items {
		found = found || it.Namespace == ns && it.Name == "demo" && it.Version == "2.0.0"
	}
	if resp.StatusCode != 200 || !found {
		t.Errorf("A's GET /api/v1/kubepkgs: %d %s, want %s/demo 2.0.0", resp.StatusCode, body, ns)
	}

	// B refuses a downgrade; nothing changes
	r = importTo(b, f1)
	if r.Code == 0 || !strings.Contains(r.Stderr, "VERSION_CONFLICT") {
		t.Errorf("1.0.0 after 2.0.0 through B: want refused with VERSION_CONFLICT:\n%s", r)
	}
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "2.0.0" {
		t.Errorf("a refused downgrade changed the object to %q", v)
	}
	if got := tagDigest(t, reg.Client, reg.URL, prefix+"/docker.io/library/nginx", "alpine"); got != string(p2.Images[0].Top.Desc.Digest) {
		t.Errorf("a refused downgrade moved nginx:alpine to %s", got)
	}

	// a registry refusing a repository: no tag moved, the object unchanged
	proxyHost, proxyCA := denyingProxy(t, reg, prefix+"/ghcr.io/octohelm/app")
	c := testenv.StartAgent(t, testenv.AgentOptions{Args: agentArgs(proxyHost, proxyCA)})
	_, f3 := fixture(t, ns, "3.0.0", "", 3)
	r = importTo(c, f3)
	if r.Code == 0 || !strings.Contains(r.Stderr, "REGISTRY_REFUSED") || !strings.Contains(r.Stderr, prefix+"/ghcr.io/octohelm/app") {
		t.Errorf("3.0.0 through a registry refusing the app repository: want refused, naming it:\n%s\nagent C:\n%s", r, c.Logs())
	}
	for _, im := range p2.Images {
		if got := tagDigest(t, reg.Client, reg.URL, prefix+"/"+im.Name, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("the refused import moved %s:%s to %s (want %s)", im.Name, im.Tag, got, im.Top.Desc.Digest)
		}
	}
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "2.0.0" {
		t.Errorf("the refused import changed the object to %q", v)
	}

	// a package crpe exports from a source registry, with a manifest: the
	// operator applies it
	src := testenv.StartDistribution(t)
	img := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"},
		[]testenv.Blob{testenv.RandomLayer(t, 64<<10, false), testenv.RandomLayer(t, 8<<10, false)}, false)
	testenv.PushImage(t, src.URL, "library/busybox", "1.36", img)
	webYAML := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(webYAML, []byte(fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: web, namespace: %s, annotations: {octohelm.tech/platform: linux/amd64}}
spec:
  version: 1.0.0
  images: {"docker.io/library/busybox:1.36": ""}
  manifests:
    web-config.%s.configmap: {apiVersion: v1, kind: ConfigMap, metadata: {name: web-config}, data: {version: "1.0.0"}}
`, ns, ns)), 0o644); err != nil {
		t.Fatal(err)
	}
	pocket := t.TempDir()
	webTgz := filepath.Join(t.TempDir(), "web.kubepkg.tgz")
	mustCrpe(ctx, t, "export", "-f", webYAML, "-o", webTgz, "--data", pocket, "--registry-endpoint", "docker.io="+src.URL)
	if r := importTo(a, webTgz); r.Err != nil {
		t.Fatalf("%s\nagent A:\n%s", r, a.Logs())
	}
	testenv.Eventually(t, 60*time.Second, "the operator applied web 1.0.0", func() (bool, string) {
		o := kpkg(ctx, t, k, ns, "web")
		out, _ := k.Kubectl(ctx, "get", "-n", ns, "configmap", "web-config", "-o", "jsonpath={.data.version}")
		return str(o, "status", "appliedVersion") == "1.0.0" && out == "1.0.0", fmt.Sprintf("status %v, configmap %q", o["status"], out)
	})

	// the inventory of B is what the registry holds of the packages
	r = mustCrpe(ctx, t, "agent", "inventory", "--from", b.URL)
	var inv struct {
		Digests  []string `json:"digests"`
		Packages []struct{ Namespace, Name, Version string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &inv); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	have := map[string]bool{}
	for _, d := range inv.Digests {
		have[d] = true
	}
	for _, bl := range p2.Blobs() {
		if !have[string(bl.Desc.Digest)] {
			t.Errorf("inventory lacks %s (%s) of demo 2.0.0", bl.Desc.Digest, bl.Desc.MediaType)
		}
	}
	for _, bl := range append([]testenv.Blob{img.Manifest, img.Config}, img.Layers...) {
		if !have[string(bl.Desc.Digest)] {
			t.Errorf("inventory lacks %s of web 1.0.0", bl.Desc.Digest)
		}
	}
	want := 0
	for _, p := range inv.Packages {
		if p.Namespace == ns && (p.Name == "demo" && p.Version == "2.0.0" || p.Name == "web" && p.Version == "1.0.0") {
			want++
		}
	}
	if want != 2 {
		t.Errorf("inventory packages %v, want %s/demo 2.0.0 and %s/web 1.0.0", inv.Packages, ns, ns)
	}
	invFile := filepath.Join(t.TempDir(), "inv.json")
	if err := os.WriteFile(invFile, []byte(r.Stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	// export --since leaves out the layers the registry holds
	delta := filepath.Join(t.TempDir(), "web-delta.kubepkg.tgz")
	r = mustCrpe(ctx, t, "export", "-f", webYAML, "-o", delta, "--data", pocket, "--registry-endpoint", "docker.io="+src.URL, "--since", invFile, "--json")
	var sum struct {
		Excluded int `json:"excluded"`
	}
	_ = json.Unmarshal([]byte(r.Stdout), &sum)
	if sum.Excluded != len(img.Layers) {
		t.Errorf("export --since left out %d layers, want %d:\n%s", sum.Excluded, len(img.Layers), r)
	}
	full, _ := os.Stat(webTgz)
	part, _ := os.Stat(delta)
	if part == nil || full == nil || part.Size() >= full.Size()-64<<10 {
		t.Errorf("the delta archive is not smaller by the layers: %v vs %v", part, full)
	}

	// the agents' /v2 names the site registry; A kept nothing in its folder
	resp, err = http.Get(a.URL + "/v2/docker.io/library/nginx/manifests/alpine")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), "registry mode") || !strings.Contains(string(body), reg.Addr+"/"+prefix) {
		t.Errorf("/v2 of an agent in registry mode: %d %s", resp.StatusCode, body)
	}
	if ents, _ := os.ReadDir(dataA); len(ents) != 0 {
		t.Errorf("agent A wrote into its data folder in registry mode: %v", ents)
	}
}

// TestAgentRegistryImportLock: two imports of one package through two
// replicas at once. While replica A's import of demo 2.0.0 is held in
// progress (its registry's upload starts paused, after its gate and lease),
// B's import of demo 3.0.0 answers 409 IMPORT_IN_PROGRESS naming A, sends
// no blob, moves no tag and leaves the object alone; the Lease
// crpe-import.NS.demo names A. Once A's import ends (2.0.0 written, the
// lease deleted), B's import of 3.0.0 succeeds.
func TestAgentRegistryImportLock(t *testing.T) {
	ctx, k, reg, ns, agentArgs := siteSetup(t, "agentlock")
	proxyHost, proxyCA, hold := pausingProxy(t, reg)
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: agentArgs(proxyHost, proxyCA)})
	b := testenv.StartAgent(t, testenv.AgentOptions{Args: agentArgs(reg.Addr, reg.CAFile)})
	importTo := func(agent *testenv.Proc, file string) result {
		return crpe(ctx, t, "import", file, "--to", agent.URL, "--token", agent.Token, "--json")
	}
	tags := func(p *seedtest.Package) map[string]string {
		out := map[string]string{}
		for _, im := range p.Images {
			out[im.Name+":"+im.Tag] = tagDigest(t, reg.Client, reg.URL, prefix+"/"+im.Name, im.Tag)
		}
		return out
	}

	// 1.0.0 through B
	p1, f1 := fixture(t, ns, "1.0.0", "", 1)
	if r := importTo(b, f1); r.Err != nil {
		t.Fatalf("%s\nagent B:\n%s", r, b.Logs())
	}
	before := tags(p1)

	// 2.0.0 through A, held in progress
	p2, f2 := fixture(t, ns, "2.0.0", "", 2)
	hold.arm()
	aDone := make(chan result, 1)
	go func() { aDone <- importTo(a, f2) }()
	select {
	case <-hold.reached:
	case r := <-aDone:
		t.Fatalf("A's import ended before any upload: %s\nagent A:\n%s", r, a.Logs())
	}
	holder := os.Getenv("POD_NAME")
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s pid %d", host, a.Cmd.Process.Pid)
	}
	lease := "crpe-import." + ns + ".demo"
	if got := kubectl(ctx, t, k, "get", "-n", ns, "lease", lease, "-o", "jsonpath={.spec.holderIdentity}/{.spec.leaseDurationSeconds}"); got != holder+"/120" {
		t.Errorf("Lease %s/%s during A's import: %q, want holder %q for 120 s", ns, lease, got, holder+"/120")
	}

	// 3.0.0 through B meanwhile: 409 naming A, nothing sent or moved
	p3, f3 := fixture(t, ns, "3.0.0", "", 3)
	r := importTo(b, f3)
	if r.Code == 0 || !strings.Contains(r.Stderr, "IMPORT_IN_PROGRESS") || !strings.Contains(r.Stderr, holder) {
		t.Errorf("3.0.0 through B during A's import: want IMPORT_IN_PROGRESS naming %q:\n%s\nagent B:\n%s", holder, r, b.Logs())
	}
	for im, d := range tags(p1) {
		if d != before[im] {
			t.Errorf("B's refused import moved %s from %s to %s", im, before[im], d)
		}
	}
	for _, im := range p3.Images {
		for _, ch := range im.Children {
			for _, bl := range append([]seedtest.Blob{ch.Config}, ch.Layers...) {
				req, _ := http.NewRequest(http.MethodHead, reg.URL+"/v2/"+prefix+"/"+im.Name+"/blobs/"+string(bl.Desc.Digest), nil)
				resp, err := reg.Client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("B's refused import sent %s (%s) to %s: HEAD %d", bl.Desc.Digest, bl.Desc.MediaType, im.Name, resp.StatusCode)
				}
			}
		}
	}
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "1.0.0" {
		t.Errorf("during A's import the object is at %q, want 1.0.0", v)
	}

	// A ends: 2.0.0 written, the lease gone
	hold.resume()
	if r := <-aDone; r.Err != nil {
		t.Fatalf("A's import: %s\nagent A:\n%s", r, a.Logs())
	}
	checkImages(t, reg.Client, reg.URL, p2)
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "2.0.0" {
		t.Errorf("after A's import the object is at %q, want 2.0.0", v)
	}
	if got := kubectl(ctx, t, k, "get", "-n", ns, "lease", lease, "--ignore-not-found", "-o", "name"); strings.TrimSpace(got) != "" {
		t.Errorf("Lease %s left after A's import: %s", lease, got)
	}

	// and B's import of 3.0.0 now succeeds
	r = importTo(b, f3)
	if r.Err != nil {
		t.Fatalf("3.0.0 through B after A's import: %s\nagent B:\n%s", r, b.Logs())
	}
	checkImages(t, reg.Client, reg.URL, p3)
	if v := str(kpkg(ctx, t, k, ns, "demo"), "spec", "version"); v != "3.0.0" {
		t.Errorf("after B's import the object is at %q, want 3.0.0", v)
	}
}

// TestInstallRegistryMode: `crpe install --registry --replicas 2` writes the
// agent as two stateless replicas (no PersistentVolumeClaim, no data
// volume, the registry credentials from a Secret, the CA from a ConfigMap,
// registry mode's arguments), and kubectl applies it to a real
// kube-apiserver without error; the Deployment there has 2 replicas, and
// the agents' service account may use Leases (their import locks) in their
// namespace only.
func TestInstallRegistryMode(t *testing.T) {
	ctx := testenv.WaitCtx(t, 2*time.Minute)
	k := testenv.SharedKube(t)
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	caFile := filepath.Join(t.TempDir(), "site-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := "crpe-regmode-" + fmt.Sprint(time.Now().UnixNano()%1000000)
	r := mustCrpe(ctx, t, "install", "--namespace", ns, "--registry", "harbor.lan/crpe", "--replicas", "2",
		"--registry-username", "ci", "--registry-password", "s3cret", "--registry-ca-file", caFile, "--image", "crpe.local/crpe:test")
	docs := map[string]map[string]any{}
	for _, doc := range strings.Split(r.Stdout, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%v:\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		docs[str(m, "kind")+"/"+str(m, "metadata", "name")] = m
	}
	for key := range docs {
		if strings.HasPrefix(key, "PersistentVolumeClaim/") {
			t.Errorf("registry mode writes %s", key)
		}
	}
	if s := docs["Secret/crpe-agent-registry"]; str(s, "stringData", "username") != "ci" || str(s, "stringData", "password") != "s3cret" {
		t.Errorf("Secret crpe-agent-registry: %v", s)
	}
	if cm := docs["ConfigMap/crpe-agent-registry-ca"]; !strings.Contains(str(cm, "data", "ca.crt"), "BEGIN CERTIFICATE") {
		t.Errorf("ConfigMap crpe-agent-registry-ca: %v", cm)
	}
	dep := docs["Deployment/crpe-agent"]
	spec, _ := dep["spec"].(map[string]any)
	if spec["replicas"] != float64(2) {
		t.Errorf("agent Deployment replicas %v, want 2", spec["replicas"])
	}
	pod, _ := spec["template"].(map[string]any)["spec"].(map[string]any)
	b, _ := json.Marshal(pod)
	podJSON := string(b)
	for _, want := range []string{`"--registry","harbor.lan/crpe"`, `"--ca-file","/etc/crpe/registry-ca/ca.crt"`,
		`{"name":"CRPE_USERNAME","valueFrom":{"secretKeyRef":{"key":"username","name":"crpe-agent-registry"`,
		`{"name":"CRPE_PASSWORD","valueFrom":{"secretKeyRef":{"key":"password","name":"crpe-agent-registry"`,
		`"configMap":{"name":"crpe-agent-registry-ca"}`} {
		if !strings.Contains(podJSON, want) {
			t.Errorf("agent pod lacks %s:\n%s", want, podJSON)
		}
	}
	for _, bad := range []string{"persistentVolumeClaim", `"--data"`} {
		if strings.Contains(podJSON, bad) {
			t.Errorf("agent pod in registry mode has %s:\n%s", bad, podJSON)
		}
	}
	if _, err := k.KubectlInput(ctx, r.Stdout, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of crpe install --registry: %v", err)
	}
	if got := kubectl(ctx, t, k, "get", "-n", ns, "deployment", "crpe-agent", "-o", "jsonpath={.spec.replicas}"); got != "2" {
		t.Errorf("the applied Deployment has %q replicas, want 2", got)
	}
	// the import locks: the agents' service account may get, create,
	// update and delete Leases in their namespace (RBAC is on), not
	// elsewhere
	sa := "system:serviceaccount:" + ns + ":crpe-agent"
	for _, verb := range []string{"get", "create", "update", "delete"} {
		if out, err := k.Kubectl(ctx, "auth", "can-i", verb, "leases.coordination.k8s.io", "-n", ns, "--as", sa); err != nil || strings.TrimSpace(out) != "yes" {
			t.Errorf("the agent may not %s leases in %s: %q %v", verb, ns, out, err)
		}
	}
	if out, _ := k.Kubectl(ctx, "auth", "can-i", "update", "leases.coordination.k8s.io", "-n", "kube-system", "--as", sa); strings.TrimSpace(out) != "no" {
		t.Errorf("the agent may update leases in kube-system: %q", out)
	}
	if !strings.Contains(podJSON, `{"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}`) {
		t.Errorf("agent pod lacks POD_NAME (its holder identity in the leases):\n%s", podJSON)
	}
	// more than one agent with its own store is refused
	if r := crpe(ctx, t, "install", "--replicas", "2"); r.Code == 0 || !strings.Contains(r.Stderr, "--registry") {
		t.Errorf("install --replicas 2 without --registry: %s", r)
	}
}
