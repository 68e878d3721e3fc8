// Package signatures tests signed packages end to end against the real
// cosign CLI: images signed, attested and given an SBOM in a registry by
// cosign (its tag scheme, and OCI 1.1 referrers listed in the fallback
// tag), exported with what is carried with them, imported into an agent
// that checks the signatures offline (--verify-key, --verify-policy), and
// cosign verify, tree and download sbom run against the agent.
package signatures

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/inspect"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// world is an upstream registry with signed images, cosign, and its keys.
type world struct {
	up              *testenv.Distribution
	host            string // the upstream's host:port
	cs              *testenv.Cosign
	siteKey         string
	sitePub         string
	otherKey        string
	otherPub        string
	images          map[string]testenv.Image // by repository path (library/nginx)
	sbom            []byte
	data            string // the pocket's cache
	predicate, tree string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{up: testenv.StartDistribution(t), cs: testenv.StartCosign(t), images: map[string]testenv.Image{}, data: t.TempDir()}
	w.host = strings.TrimPrefix(w.up.URL, "http://")
	w.siteKey, w.sitePub = w.cs.KeyPair(t, "site")
	w.otherKey, w.otherPub = w.cs.KeyPair(t, "other")
	w.sbom = []byte(`{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"nginx","dataLicense":"CC0-1.0","documentNamespace":"https://example.invalid/nginx","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: test"]},"packages":[]}`)
	w.predicate = filepath.Join(t.TempDir(), "predicate.json")
	if err := os.WriteFile(w.predicate, []byte(`{"builder":{"id":"https://example.invalid/ci"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// push pushes a random linux/amd64 image as path:1.
func (w *world) push(t *testing.T, path string) testenv.Image {
	t.Helper()
	im := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, []testenv.Blob{testenv.RandomLayer(t, 64<<10, false)}, false)
	testenv.PushImage(t, w.up.URL, path, "1", im)
	w.images[path] = im
	return im
}

// ref is the upstream reference of path by digest.
func (w *world) ref(path string) string {
	return w.host + "/" + path + "@" + string(w.images[path].Manifest.Desc.Digest)
}

// sbomFile writes the SBOM and returns its path.
func (w *world) sbomFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "sbom.spdx.json")
	if err := os.WriteFile(f, w.sbom, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// export writes a package of the images at paths (docker.io/<path>:1,
// docker.io served by the upstream) and exports it; extra are export flags.
func (w *world) export(t *testing.T, paths []string, extra ...string) (string, export.Result) {
	t.Helper()
	images := map[string]string{}
	for _, p := range paths {
		images["docker.io/"+p+":1"] = ""
	}
	doc, _ := json.Marshal(map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": "signed", "namespace": "default", "annotations": map[string]string{kubepkg.AnnotationPlatform: "linux/amd64"}},
		"spec":     map[string]any{"version": "1.0.0", "images": images}})
	src := filepath.Join(t.TempDir(), "kubepkg.json")
	if err := os.WriteFile(src, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "signed-1.0.0.kubepkg.tgz")
	r := crpe(t, append([]string{"export", "-f", src, "-o", out, "--data", w.data, "--registry-endpoint", "docker.io=" + w.up.URL, "--json"}, extra...)...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	var res export.Result
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	return out, res
}

func crpe(t *testing.T, args ...string) testenv.Result {
	t.Helper()
	// the keys' password, as cosign and crpe read it
	return testenv.RunCrpe(testenv.WaitCtx(t, 2*time.Minute), t, testenv.CrpeOptions{Env: []string{"COSIGN_PASSWORD=" + testenv.CosignPassword}}, args...)
}

// importTo hands file to agent and decodes the answer.
func importTo(t *testing.T, agent *testenv.Proc, file string) (importer.Result, testenv.Result) {
	t.Helper()
	r := crpe(t, "import", file, "--to", agent.URL, "--token", agent.Token, "--json")
	var res struct {
		Import importer.Result `json:"import"`
	}
	if r.Err == nil {
		if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	return res.Import, r
}

// agentHost is the agent as a registry host for cosign.
func agentRef(agent *testenv.Proc, w *world, path string) string {
	return agent.Addr + "/docker.io/" + path + "@" + string(w.images[path].Manifest.Desc.Digest)
}

// nothingPublished checks the agent holds no package and no tag of paths.
func nothingPublished(t *testing.T, agent *testenv.Proc, paths ...string) {
	t.Helper()
	for _, p := range paths {
		resp, err := http.Get(agent.URL + "/v2/docker.io/" + p + "/manifests/1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("docker.io/%s:1 answers %d after a refused import", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, agent.URL+"/api/v1/kubepkgs/default/signed", nil)
	req.Header.Set("Authorization", "Bearer "+agent.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the package answers %d after a refused import", resp.StatusCode)
	}
}

func wantRefused(t *testing.T, r testenv.Result, code string, parts ...string) {
	t.Helper()
	if r.Err == nil {
		t.Fatalf("the import succeeded: %s", r)
	}
	for _, p := range append([]string{code}, parts...) {
		if !strings.Contains(r.Stderr, p) {
			t.Errorf("the refusal does not say %q:\n%s", p, r.Stderr)
		}
	}
}

// TestSignedPackage: images signed, attested and with an SBOM by cosign
// (tag scheme) are exported with those artifacts, imported into an agent
// holding the public key (the verdicts recorded), and cosign verify, tree
// and download sbom work against the agent.
func TestSignedPackage(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	w.push(t, "library/app")
	nginx := w.ref("library/nginx")
	w.cs.Sign(t, nginx, w.siteKey)
	w.cs.Attest(t, nginx, w.siteKey, w.predicate, "https://example.invalid/provenance")
	w.cs.AttachSBOM(t, nginx, w.sbomFile(t), "spdx")
	w.cs.Sign(t, w.ref("library/app"), w.siteKey)

	file, res := w.export(t, []string{"library/nginx", "library/app"})
	kinds := map[string]int{}
	for _, a := range res.Artifacts {
		kinds[a.Kind]++
	}
	if kinds["signature"] != 2 || kinds["attestation"] != 1 || kinds["sbom"] != 1 || len(res.Artifacts) != 4 {
		t.Fatalf("exported artifacts %+v", res.Artifacts)
	}
	// crpe inspect shows them
	r := crpe(t, "inspect", file, "--verify", "--json")
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	var rep inspect.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || len(rep.Artifacts) != 4 || len(rep.Problems) != 0 {
		t.Fatalf("inspect: %v %+v", err, rep)
	}

	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.otherPub, "--verify-key", w.sitePub}})
	ir, r := importTo(t, agent, file)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	if len(ir.Signatures) != 2 || len(ir.Artifacts) != 4 {
		t.Fatalf("import result: %+v\n%s", ir, r.Stdout)
	}
	for _, v := range ir.Signatures {
		if !v.Verified || !strings.HasSuffix(v.KeyName, "site.pub") || !strings.HasPrefix(v.Key, "sha256:") {
			t.Errorf("verdict %+v", v)
		}
	}
	// recorded with the package
	req, _ := http.NewRequest(http.MethodGet, agent.URL+"/api/v1/kubepkgs/default/signed", nil)
	req.Header.Set("Authorization", "Bearer "+agent.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rec repodb.Package
	err = json.NewDecoder(resp.Body).Decode(&rec)
	resp.Body.Close()
	if err != nil || len(rec.History) != 1 {
		t.Fatalf("package record: %v %+v", err, rec)
	}
	var hist []kubepkg.Signature
	_ = json.Unmarshal(rec.History[0].Signatures, &hist)
	pkgs, err := kubepkg.Parse(rec.Object)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := pkgs[0].StatusSignatures()
	if len(hist) != 2 || len(status) != 2 || !hist[0].Verified || !status[1].Verified {
		t.Errorf("verdicts in the import history %+v, in status.signatures %+v", hist, status)
	}

	// the site's own tools check again against the agent
	aref := agentRef(agent, w, "library/nginx")
	if out, err := w.cs.Verify(aref, w.sitePub); err != nil {
		t.Fatalf("cosign verify against the agent: %v\n%s", err, out)
	}
	if out, err := w.cs.Verify(aref, w.otherPub); err == nil {
		t.Fatalf("cosign verify with another key passed against the agent:\n%s", out)
	}
	if out, err := w.cs.VerifyAttestation(aref, w.sitePub, "https://example.invalid/provenance"); err != nil {
		t.Fatalf("cosign verify-attestation against the agent: %v\n%s", err, out)
	}
	tree, err := w.cs.Tree(aref)
	if err != nil {
		t.Fatalf("cosign tree: %v\n%s", err, tree)
	}
	for _, s := range []string{".sig", ".att", ".sbom"} {
		if !strings.Contains(tree, s) {
			t.Errorf("cosign tree against the agent lists no %s:\n%s", s, tree)
		}
	}
	got, err := w.cs.DownloadSBOM(aref)
	if err != nil || got != string(w.sbom) {
		t.Errorf("cosign download sbom: %v %q", err, got)
	}
}

// TestRefused: what the agent refuses, with nothing published.
func TestRefused(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	w.push(t, "library/bare")
	w.push(t, "library/replay")
	w.cs.Sign(t, w.ref("library/nginx"), w.siteKey)
	// a signature of nginx copied as replay's: its payload names nginx
	nginxDigest := w.images["library/nginx"].Manifest.Desc.Digest
	replayDigest := w.images["library/replay"].Manifest.Desc.Digest
	crane := testenv.Peer(t, "crane", "go install github.com/google/go-containerregistry/cmd/crane@v0.22.1")
	if out, err := exec.Command(crane, "copy", "--insecure",
		w.host+"/library/nginx:sha256-"+nginxDigest.Encoded()+".sig", w.host+"/library/replay:sha256-"+replayDigest.Encoded()+".sig").CombinedOutput(); err != nil {
		t.Fatalf("crane copy: %v\n%s", err, out)
	}

	good, _ := w.export(t, []string{"library/nginx"})

	t.Run("unsigned image", func(t *testing.T) {
		file, _ := w.export(t, []string{"library/nginx", "library/bare"})
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
		_, r := importTo(t, agent, file)
		wantRefused(t, r, "SIGNATURE_REFUSED", "docker.io/library/bare:1", "not signed")
		nothingPublished(t, agent, "library/nginx", "library/bare")
	})
	t.Run("tag moved to an unsigned digest", func(t *testing.T) {
		// library/moved:1 is signed, then pushed again: the tag now names an
		// image nobody signed, which is what the export resolves
		w.push(t, "library/moved")
		w.cs.Sign(t, w.ref("library/moved"), w.siteKey)
		signed := w.images["library/moved"].Manifest.Desc.Digest
		w.push(t, "library/moved")
		file, _ := w.export(t, []string{"library/moved"})
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
		_, r := importTo(t, agent, file)
		wantRefused(t, r, "SIGNATURE_REFUSED", "docker.io/library/moved:1", "not signed", string(w.images["library/moved"].Manifest.Desc.Digest))
		if strings.Contains(r.Stderr, string(signed)) {
			t.Errorf("the refusal names the old, signed digest: %s", r.Stderr)
		}
		nothingPublished(t, agent, "library/moved")
	})
	t.Run("signed by another key", func(t *testing.T) {
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.otherPub}})
		_, r := importTo(t, agent, good)
		wantRefused(t, r, "SIGNATURE_REFUSED", "docker.io/library/nginx:1", "signed with another key")
		nothingPublished(t, agent, "library/nginx")
	})
	t.Run("payload names another digest", func(t *testing.T) {
		file, _ := w.export(t, []string{"library/replay"})
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
		_, r := importTo(t, agent, file)
		wantRefused(t, r, "SIGNATURE_REFUSED", "docker.io/library/replay:1", "names "+string(nginxDigest))
		nothingPublished(t, agent, "library/replay")
	})
	t.Run("flipped byte in the signature layer", func(t *testing.T) {
		b, err := os.ReadFile(good)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte("cosign container image signature"))
		if i < 0 {
			t.Fatal("the signature payload is not in the archive as it is")
		}
		b[i] ^= 0x20
		bad := filepath.Join(t.TempDir(), "bad.kubepkg.tgz")
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
		_, r := importTo(t, agent, bad)
		// the archive reader finds it before any signature is read
		if r.Err == nil || !strings.Contains(r.Stderr, "IMPORT_INVALID") || !strings.Contains(r.Stderr, "content does not match its name") {
			t.Fatalf("a flipped byte in the signature was not refused as such: %s\n%s", r, r.Stderr)
		}
		nothingPublished(t, agent, "library/nginx")
	})
	t.Run("policy requires a key not used", func(t *testing.T) {
		dir := t.TempDir()
		pol := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(pol, []byte("rules:\n  - match: docker.io/library/*\n    keys: ["+w.otherPub+"]\n    required: true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-policy", pol}})
		_, r := importTo(t, agent, good)
		wantRefused(t, r, "SIGNATURE_REFUSED", "docker.io/library/nginx:1")
		nothingPublished(t, agent, "library/nginx")
	})
	t.Run("no artifacts carried", func(t *testing.T) {
		file, res := w.export(t, []string{"library/nginx"}, "--artifacts", "none")
		if len(res.Artifacts) != 0 {
			t.Fatalf("--artifacts none carried %+v", res.Artifacts)
		}
		agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
		_, r := importTo(t, agent, file)
		wantRefused(t, r, "SIGNATURE_REFUSED", "not signed")
	})
}

// TestSignedPackageFile: crpe keygen makes a key pair cosign uses, and a key
// pair cosign made signs a package too; crpe export --sign-key signs
// kubepkg.json; crpe inspect --verify --key checks it (and the images'
// signatures), and cosign verify-blob checks kubepkg.json.sig as it is in
// the archive.
func TestSignedPackageFile(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	w.cs.Sign(t, w.ref("library/nginx"), w.siteKey)

	dir := t.TempDir()
	prefix := filepath.Join(dir, "crpe")
	r := testenv.RunCrpe(testenv.WaitCtx(t, time.Minute), t, testenv.CrpeOptions{Env: []string{"COSIGN_PASSWORD=" + testenv.CosignPassword}}, "keygen", "--output-key-prefix", prefix)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	for _, c := range []struct{ name, key, pub string }{
		{"crpe keygen's key", prefix + ".key", prefix + ".pub"},
		{"cosign's key", w.siteKey, w.sitePub},
	} {
		t.Run(c.name, func(t *testing.T) {
			file, _ := w.export(t, []string{"library/nginx"}, "--sign-key", c.key)
			r := crpe(t, "inspect", file, "--verify", "--key", c.pub, "--json")
			if r.Err != nil {
				t.Fatalf("%s", r)
			}
			var rep inspect.Report
			if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
				t.Fatal(err)
			}
			if ps := rep.PackageSignature; ps == nil || !ps.Verified || len(rep.Problems) != 0 {
				t.Fatalf("inspect --key: %+v", rep)
			}
			// another key: a problem, exit 1
			if r := crpe(t, "inspect", file, "--verify", "--key", w.otherPub); r.Err == nil || !strings.Contains(r.Stdout, "package's signature") {
				t.Fatalf("inspect with another key: %s", r)
			}
			// cosign checks kubepkg.json.sig against kubepkg.json as they are
			// in the archive
			x := t.TempDir()
			if out, err := exec.Command("tar", "-xzf", file, "-C", x, "kubepkg.json", "kubepkg.json.sig").CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			if err := w.cs.VerifyBlob(c.pub, filepath.Join(x, "kubepkg.json.sig"), filepath.Join(x, "kubepkg.json")); err != nil {
				t.Fatalf("cosign verify-blob: %v", err)
			}
			if err := w.cs.VerifyBlob(w.otherPub, filepath.Join(x, "kubepkg.json.sig"), filepath.Join(x, "kubepkg.json")); err == nil {
				t.Fatal("cosign verify-blob passed with another key")
			}
		})
	}
	// an unsigned package: a problem for inspect --key
	file, _ := w.export(t, []string{"library/nginx"})
	if r := crpe(t, "inspect", file, "--verify", "--key", w.sitePub); r.Err == nil || !strings.Contains(r.Stdout, "not signed") {
		t.Fatalf("inspect of an unsigned package with --key: %s", r)
	}
}

// TestReferrersMode: cosign's OCI 1.1 mode (a signature and an SBOM as
// referrers, an attestation as a Sigstore bundle; the upstream lists them
// in the fallback tag, having no referrers API): exported with the image,
// imported into an agent that verifies the signature, served by the
// agent's referrers API (artifactType filter included), and checked again
// by cosign against the agent.
func TestReferrersMode(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	ref := w.ref("library/nginx")
	x := *w.cs
	x.Env = append(append([]string(nil), w.cs.Env...), "COSIGN_EXPERIMENTAL=1")
	x.Sign(t, ref, w.siteKey, "--registry-referrers-mode=oci-1-1")
	x.AttachSBOM(t, ref, w.sbomFile(t), "spdx", "--registry-referrers-mode=oci-1-1")
	x.Attest(t, ref, w.siteKey, w.predicate, "https://example.invalid/provenance", "--new-bundle-format")

	file, res := w.export(t, []string{"library/nginx"})
	kinds := map[string]int{}
	for _, a := range res.Artifacts {
		kinds[a.Kind]++
		if !strings.Contains(a.Ref, "@sha256:") {
			t.Errorf("a referrer named %s, not by its digest", a.Ref)
		}
	}
	if kinds["signature"] != 1 || kinds["sbom"] != 1 || kinds["attestation"] != 1 {
		t.Fatalf("exported artifacts %+v", res.Artifacts)
	}
	// the attestations alone
	_, only := w.export(t, []string{"library/nginx"}, "--artifacts", "attestation")
	if len(only.Artifacts) != 1 || only.Artifacts[0].Kind != "attestation" {
		t.Fatalf("--artifacts attestation carried %+v", only.Artifacts)
	}

	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
	ir, r := importTo(t, agent, file)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	if len(ir.Signatures) != 1 || !ir.Signatures[0].Verified {
		t.Fatalf("verdicts %+v", ir.Signatures)
	}
	d := string(w.images["library/nginx"].Manifest.Desc.Digest)
	list := func(query string) (ocispec.Index, http.Header) {
		resp, err := http.Get(agent.URL + "/v2/docker.io/library/nginx/referrers/" + d + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var idx ocispec.Index
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&idx) != nil {
			t.Fatalf("referrers%s: %d", query, resp.StatusCode)
		}
		return idx, resp.Header
	}
	if idx, _ := list(""); len(idx.Manifests) != 3 {
		t.Fatalf("the agent lists %d referrers: %+v", len(idx.Manifests), idx.Manifests)
	}
	idx, hdr := list("?artifactType=application/vnd.dev.cosign.artifact.sig.v1%2Bjson")
	if len(idx.Manifests) != 1 || hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %+v %v", idx.Manifests, hdr)
	}

	aref := agentRef(agent, w, "library/nginx")
	tree, err := x.Tree(aref, "--experimental-oci11")
	if err != nil {
		t.Fatalf("cosign tree against the agent: %v\n%s", err, tree)
	}
	for _, want := range []string{"application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.cosign.artifact.sbom.v1+json"} {
		if !strings.Contains(tree, want) {
			t.Errorf("cosign tree against the agent lacks %s:\n%s", want, tree)
		}
	}
	// with a bundle attached, cosign verifies bundles (with a trusted root)
	if out, err := x.Verify(aref, w.sitePub, "--experimental-oci11"); err != nil {
		t.Errorf("cosign verify --experimental-oci11 against the agent: %v\n%s", err, out)
	}
	if out, err := x.VerifyAttestation(aref, w.sitePub, "https://example.invalid/provenance"); err != nil {
		t.Errorf("cosign verify-attestation against the agent: %v\n%s", err, out)
	}
	if out, err := x.Verify(aref, w.otherPub, "--experimental-oci11"); err == nil {
		t.Errorf("cosign verify with another key passed against the agent:\n%s", out)
	}
}

// TestToRegistry: crpe import --to-registry checks signatures too: a signed
// archive lands in the site registry (distribution v3) with its signatures
// beside the images; an unsigned one is refused and nothing is tagged.
func TestToRegistry(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	w.push(t, "library/bare")
	w.cs.Sign(t, w.ref("library/nginx"), w.siteKey)
	good, _ := w.export(t, []string{"library/nginx"})
	bad, _ := w.export(t, []string{"library/nginx", "library/bare"})
	site := testenv.StartRegistry3(t, testenv.Registry3Options{})
	target := site.Addr + "/site"

	r := crpe(t, "import", good, "--to-registry", target, "--plain-http", "--verify-key", w.sitePub, "--json")
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	var res struct {
		Signatures []kubepkg.Signature `json:"signatures"`
		Artifacts  []struct {
			Tag string `json:"tag"`
		} `json:"artifacts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res.Signatures) != 1 || !res.Signatures[0].Verified || len(res.Artifacts) != 1 {
		t.Fatalf("%v %+v\n%s", err, res, r.Stdout)
	}
	// cosign checks it in the site registry
	if out, err := w.cs.Verify(target+"/docker.io/library/nginx@"+string(w.images["library/nginx"].Manifest.Desc.Digest), w.sitePub); err != nil {
		t.Fatalf("cosign verify in the site registry: %v\n%s", err, out)
	}

	r = crpe(t, "import", bad, "--to-registry", target, "--plain-http", "--verify-key", w.sitePub)
	if r.Err == nil || !strings.Contains(r.Stderr, "docker.io/library/bare:1") || !strings.Contains(r.Stderr, "nothing was tagged") {
		t.Fatalf("an unsigned image was not refused: %s", r)
	}
	resp, err := http.Get(site.URL + "/v2/site/docker.io/library/bare/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the refused image is tagged in the site registry (%d)", resp.StatusCode)
	}
}

// TestPocketSyncCarriesArtifacts: a pocket's sync caches what is carried
// with the package's images (the signature, its layer), so that an export
// with the upstream gone (--offline, through the running pocket) still
// carries it, and an agent checking signatures takes the package.
func TestPocketSyncCarriesArtifacts(t *testing.T) {
	w := newWorld(t)
	w.push(t, "library/nginx")
	w.cs.Sign(t, w.ref("library/nginx"), w.siteKey)
	p := pt.StartPocket(t, w.up.URL)
	ev := pt.Subscribe(t, p.URL)
	api := p.URL + "/api/v1/kubepkgs"
	pt.Call(t, "POST", api, pt.Package("signed", "1.0.0", "docker.io/library/nginx:1", "linux/amd64")).Must(t, 201)
	var j pt.Job
	pt.Call(t, "POST", api+"/signed/sync", nil).Must(t, http.StatusAccepted).JSON(t, &j)
	if done := ev.WaitJob(t, j.ID, 60*time.Second); done.State != "done" {
		t.Fatalf("sync: %+v", done)
	}
	w.up.Stop() // the internet is gone

	src := filepath.Join(t.TempDir(), "signed.yaml")
	if err := os.WriteFile(src, []byte(pt.Package("signed", "1.0.0", "docker.io/library/nginx:1", "linux/amd64")), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "signed.kubepkg.tgz")
	r := crpe(t, "export", "-f", src, "-o", out, "--data", p.Data, "--offline", "--json")
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	var res export.Result
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res.Artifacts) != 1 || res.Artifacts[0].Kind != "signature" {
		t.Fatalf("offline export: %v %+v", err, res.Artifacts)
	}
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", w.sitePub}})
	if ir, r := importTo(t, agent, out); r.Err != nil || len(ir.Signatures) != 1 || !ir.Signatures[0].Verified {
		t.Fatalf("%s %+v", r, ir.Signatures)
	}
}
