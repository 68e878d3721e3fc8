package agentimport

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/testenv"
)

// appYAML is a package of one image, docker.io/library/app:stable, pinned to
// d.
func appYAML(name, ns, version string, images map[string]digest.Digest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata:\n  name: %s\n", name)
	if ns != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", ns)
	}
	fmt.Fprintf(&b, "  annotations:\n    octohelm.tech/platform: linux/amd64\nspec:\n  version: %s\n  images:\n", version)
	for ref, d := range images {
		fmt.Fprintf(&b, "    %q: %q\n", ref, d)
	}
	return b.String()
}

// readPackage returns the kubepkg.json of an archive (its first entry).
func readPackage(t *testing.T, file string) map[string]any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(testenv.ArchivePackage(t, file), &p); err != nil {
		t.Fatalf("kubepkg.json: %v", err)
	}
	return p
}

// TestDeltaOnTheWire: an upgrade that changes 1 of 10 layers puts at most
// 1.1× that layer + 1 MiB on the wire, counted by a TCP proxy between
// `crpe import --to` and the agent; and the same through a disconnected
// handover (inventory → export --since → import).
func TestDeltaOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 70*time.Second)
	reg := testenv.StartDistribution(t)

	// v1: 10 layers of 1–4 MiB random bytes; v2: layer 6 replaced
	var layers []testenv.Blob
	for i := 0; i < 10; i++ {
		layers = append(layers, testenv.RandomLayer(t, (1+i%4)*MiB-(i*4096), false))
	}
	changed := testenv.RandomLayer(t, 3*MiB+12345, false)
	v2layers := append([]testenv.Blob{}, layers...)
	v2layers[6] = changed
	im1 := testenv.NewImage(t, amd64, layers, false)
	im2 := testenv.NewImage(t, amd64, v2layers, false)
	testenv.PushImage(t, reg.URL, "library/app", "v1", im1)
	testenv.PushImage(t, reg.URL, "library/app", "v2", im2)
	const ref = "docker.io/library/app:stable"
	cache := t.TempDir()
	file1 := exportPkg(ctx, t, reg, appYAML("app", "default", "1.0.0", map[string]digest.Digest{ref: im1.Manifest.Desc.Digest}), cache)
	file2 := exportPkg(ctx, t, reg, appYAML("app", "default", "2.0.0", map[string]digest.Digest{ref: im2.Manifest.Desc.Digest}), cache)
	layer := changed.Desc.Size
	limit := int64(float64(layer)*1.1) + MiB
	t.Logf("v1 archive %s, v2 archive %s, changed layer %s, limit %s", mib(fileSize(t, file1)), mib(fileSize(t, file2)), mib(layer), mib(limit))

	// agent A has v1; v2 goes through a counting proxy
	a := testenv.StartAgent(t, testenv.AgentOptions{})
	if s := importTo(ctx, t, file1, a.URL, a.Token); s.BlobsOmitted != 0 || s.Import.BlobsReceived != 12 {
		t.Errorf("v1 into an empty agent: %+v, want 12 blobs received, none omitted", s)
	}
	// the inventory for the disconnected handover, taken while A has only v1
	invRes := mustCrpe(ctx, t, "agent", "inventory", "--from", a.URL)
	var invDoc struct {
		Digests  []string `json:"digests"`
		Packages []struct {
			Namespace, Name, Version string
		} `json:"packages"`
	}
	if err := json.Unmarshal([]byte(invRes.Stdout), &invDoc); err != nil {
		t.Fatalf("agent inventory: %v\n%s", err, invRes)
	}
	if len(invDoc.Digests) != 12 || len(invDoc.Packages) != 1 || invDoc.Packages[0].Version != "1.0.0" {
		t.Errorf("agent inventory after v1: %d digests, packages %+v; want 12 digests and app@1.0.0", len(invDoc.Digests), invDoc.Packages)
	}
	inv := filepath.Join(t.TempDir(), "inv.json")
	if err := os.WriteFile(inv, []byte(invRes.Stdout), 0o644); err != nil {
		t.Fatal(err)
	}

	px := testenv.StartProxy(t, a.Addr, 0, 0)
	s := importTo(ctx, t, file2, px.URL, a.Token)
	wire := px.Up.Load()
	t.Logf("delta import of v2: %d bytes client→agent on the wire (%s; changed layer %s = %d bytes; ratio to layer %.3f), "+
		"crpe reports bytesSent %d, %d layers omitted (%s), attempts %d, agent received %d blobs (%d bytes)",
		wire, mib(wire), mib(layer), layer, float64(wire)/float64(layer), s.BytesSent, s.BlobsOmitted, mib(s.BytesOmitted), s.Attempts,
		s.Import.BlobsReceived, s.Import.BytesReceived)
	if wire > limit {
		t.Errorf("v2 put %d bytes on the wire, want ≤ 1.1×%d + 1 MiB = %d", wire, layer, limit)
	}
	if s.BlobsOmitted != 9 {
		t.Errorf("v2: %d layers omitted, want the 9 unchanged ones", s.BlobsOmitted)
	}
	if got := s.Import.Images[ref]; got != string(im2.Manifest.Desc.Digest) {
		t.Errorf("v2 import: %s = %q, want %s", ref, got, im2.Manifest.Desc.Digest)
	}
	if len(s.Import.Packages) != 1 || s.Import.Packages[0].Version != "2.0.0" || s.Import.Packages[0].Previous != "1.0.0" {
		t.Errorf("v2 import packages: %+v", s.Import.Packages)
	}
	// the agent serves v2 whole
	if code, _, _ := get(t, a.URL+"/v2/docker.io/library/app/manifests/stable"); code != http.StatusOK {
		t.Errorf("app:stable on A: %d", code)
	}
	if code, body, _ := get(t, a.URL+"/v2/library/app/blobs/"+string(changed.Desc.Digest)+"?ns=docker.io"); code != http.StatusOK || int64(len(body)) != layer {
		t.Errorf("changed layer on A: %d, %d bytes", code, len(body))
	}

	// disconnected handover: export --since the inventory, then the
	// partial archive checked and imported
	want := handover{ref: ref, im2: im2.Manifest.Desc.Digest, v1: file1, changed: changed, layers: v2layers, limit: limit}
	t.Run("export-since", func(t *testing.T) {
		partial := filepath.Join(t.TempDir(), "partial.kubepkg.tgz")
		src := writeFile(t, "pkg.yaml", appYAML("app", "default", "2.0.0", map[string]digest.Digest{ref: im2.Manifest.Desc.Digest}))
		r := crpe(ctx, t, "export", "-f", src, "-o", partial, "--data", cache, "--registry-endpoint", "docker.io="+reg.URL, "--since", inv)
		if r.Code != 0 {
			t.Fatalf("%s", r)
		}
		checkPartial(ctx, t, partial, want)
	})
	// the same checks on a partial archive made by hand from the full v2
	// archive (the 9 layers A holds left out, kubepkg.json annotated), as
	// export --since would make it
	t.Run("hand-made-partial", func(t *testing.T) {
		omit := map[digest.Digest]bool{}
		for _, l := range v2layers {
			if l.Desc.Digest != changed.Desc.Digest {
				omit[l.Desc.Digest] = true
			}
		}
		partial := makePartial(t, file2, omit)
		checkPartial(ctx, t, partial, want)
	})
}

// handover is what checkPartial expects of a partial v2 archive.
type handover struct {
	ref     string
	im2     digest.Digest
	v1      string
	changed testenv.Blob
	layers  []testenv.Blob
	limit   int64
}

// checkPartial checks a partial v2 archive: its size, its annotation, crpe
// inspect --verify listing the left-out layers as expected, an import into
// an agent holding v1, and a refused import into a fresh agent.
func checkPartial(ctx context.Context, t *testing.T, partial string, w handover) {
	psize := fileSize(t, partial)
	t.Logf("partial archive %d bytes (%s), limit %s", psize, mib(psize), mib(w.limit))
	if psize > w.limit {
		t.Errorf("partial archive has %d bytes, want ≤ %d", psize, w.limit)
	}
	if ann, _ := readPackage(t, partial)["metadata"].(map[string]any)["annotations"].(map[string]any); ann["octohelm.tech/partial"] != "true" {
		t.Errorf("partial archive annotations %v, want octohelm.tech/partial: \"true\"", ann)
	}
	t.Run("inspect-verify", func(t *testing.T) {
		r := crpe(ctx, t, "inspect", "--verify", partial)
		if r.Code != 0 {
			t.Fatalf("inspect --verify of the partial archive: %s", r)
		}
		absent := 0
		for _, l := range w.layers {
			if l.Desc.Digest == w.changed.Desc.Digest {
				continue
			}
			if strings.Contains(r.Stdout, "absent\t"+string(l.Desc.Digest)+"\t(partial archive: expected)") {
				absent++
			}
		}
		if absent != 9 || strings.Contains(r.Stdout, "PROBLEM") {
			t.Errorf("inspect --verify lists %d of the 9 left-out layers as expected, want all:\n%s", absent, r.Stdout)
		}
	})

	// agent B holds v1, then gets the partial archive
	b := testenv.StartAgent(t, testenv.AgentOptions{})
	importTo(ctx, t, w.v1, b.URL, b.Token)
	pb := importTo(ctx, t, partial, b.URL, b.Token)
	if !pb.Import.Partial || pb.Import.Images[w.ref] != string(w.im2) || pb.Import.BlobsReceived < 1 ||
		len(pb.Import.Packages) != 1 || pb.Import.Packages[0].Version != "2.0.0" {
		t.Errorf("partial import into B: %+v", pb)
	}
	for _, l := range w.layers {
		if code, _, _ := get(t, b.URL+"/v2/docker.io/library/app/blobs/"+string(l.Desc.Digest)); code != http.StatusOK {
			t.Errorf("layer %s on B after the partial import: %d", l.Desc.Digest, code)
		}
	}
	if code, body, _ := get(t, b.URL+"/v2/docker.io/library/app/manifests/stable"); code != http.StatusOK || digest.FromBytes(body) != w.im2 {
		t.Errorf("app:stable on B after the partial import: %d %s", code, digest.FromBytes(body))
	}

	// a fresh agent C lacks what the partial archive leaves out
	c := testenv.StartAgent(t, testenv.AgentOptions{})
	r := crpe(ctx, t, "import", partial, "--to", c.URL, "--token", c.Token)
	if r.Code == 0 {
		t.Fatalf("partial archive into a fresh agent succeeded: %s", r)
	}
	named := ""
	for _, l := range w.layers {
		if l.Desc.Digest != w.changed.Desc.Digest && (strings.Contains(r.Stderr, string(l.Desc.Digest)) || strings.Contains(r.Stderr, "blobs/sha256/"+l.Desc.Digest.Encoded())) {
			named = string(l.Desc.Digest)
		}
	}
	if named == "" || !status4xx.MatchString(r.Stderr) {
		t.Errorf("partial archive into a fresh agent: want a 4xx naming a missing layer, got %s", r)
	}
	t.Logf("a fresh agent refuses the partial archive: %s", strings.TrimSpace(r.Stderr))
	if code, _, _ := get(t, c.URL+"/v2/docker.io/library/app/manifests/stable"); code != http.StatusNotFound {
		t.Errorf("app:stable on C after the refused import: %d, want 404", code)
	}
	if code, body, _ := get(t, c.URL+"/api/v1/kubepkgs"); code != http.StatusOK || strings.Contains(string(body), `"app"`) {
		t.Errorf("packages on C after the refused import: %d %s", code, body)
	}
}

var status4xx = regexp.MustCompile(`\(4\d\d [A-Z_]+\)`)

// makePartial copies an archive leaving out the blobs omit names and
// annotating kubepkg.json with octohelm.tech/partial: "true".
func makePartial(t *testing.T, file string, omit map[digest.Digest]bool) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "partial.kubepkg.tgz")
	of, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	zw := gzip.NewWriter(of)
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(h.Name, "blobs/sha256/") && omit[digest.NewDigestFromEncoded(digest.SHA256, strings.TrimPrefix(h.Name, "blobs/sha256/"))] {
			continue
		}
		var body []byte
		if h.Name == "kubepkg.json" {
			var p map[string]any
			b, _ := io.ReadAll(tr)
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			md := p["metadata"].(map[string]any)
			ann, _ := md["annotations"].(map[string]any)
			if ann == nil {
				ann = map[string]any{}
			}
			ann["octohelm.tech/partial"] = "true"
			md["annotations"] = ann
			body, _ = json.Marshal(p)
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if body != nil {
			_, err = tw.Write(body)
		} else {
			_, err = io.Copy(tw, tr)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestResumeCutUpload: a proxy cuts a ≥ 60 MiB first import after 60% of
// the archive; crpe import retries by itself with a fresh delta and the
// whole exchange (all attempts) stays within 1.2× the archive.
func TestResumeCutUpload(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 70*time.Second)
	reg := testenv.StartDistribution(t)
	var layers []testenv.Blob
	for i := 0; i < 8; i++ {
		layers = append(layers, testenv.RandomLayer(t, 8*MiB, false))
	}
	im := testenv.NewImage(t, amd64, layers, false)
	testenv.PushImage(t, reg.URL, "library/big", "1.0", im)
	const ref = "docker.io/library/big:1.0"
	file := exportPkg(ctx, t, reg, appYAML("big", "default", "1.0.0", map[string]digest.Digest{ref: im.Manifest.Desc.Digest}), t.TempDir())
	size := fileSize(t, file)
	if size < 60*MiB {
		t.Fatalf("archive has %d bytes, want ≥ 60 MiB", size)
	}

	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--log-level", "debug"}})
	cutAt := size * 6 / 10
	px := testenv.StartProxy(t, a.Addr, cutAt, 0)
	s := importTo(ctx, t, file, px.URL, a.Token)
	total := px.Up.Load()
	t.Logf("archive %d bytes (%s); cut after %d bytes; %d connections; total client→agent across attempts %d bytes = %.3f× the archive; "+
		"last attempt sent %d bytes, left out %d layers (%s) committed before the cut; attempts %d",
		size, mib(size), cutAt, px.Conns.Load(), total, float64(total)/float64(size), s.BytesSent, s.BlobsOmitted, mib(s.BytesOmitted), s.Attempts)
	if !px.Cut.Load() {
		t.Fatal("the proxy never cut the upload")
	}
	if s.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (one cut, one resumed)", s.Attempts)
	}
	if float64(total) > 1.2*float64(size) {
		t.Errorf("all attempts put %d bytes on the wire, want ≤ 1.2 × %d = %d", total, size, int64(1.2*float64(size)))
	}
	layerSize := layers[0].Desc.Size
	if s.BytesOmitted < cutAt-layerSize-MiB {
		t.Errorf("the retry left out %d bytes of layers, want at least what arrived before the cut (%d) less one layer", s.BytesOmitted, cutAt)
	}
	if s.Import.Images[ref] != string(im.Manifest.Desc.Digest) {
		t.Errorf("import: %+v", s.Import)
	}
	logs := a.Logs()
	if !strings.Contains(logs, "route=import status=201") {
		t.Errorf("the agent did not log a 201 for the resumed import:\n%s", truncate(grepLines(logs, "route=import"), 2000))
	}
	t.Logf("agent's import requests:\n%s", grepLines(logs, "route=import"))
	for _, l := range layers {
		if code, _, _ := get(t, a.URL+"/v2/docker.io/library/big/blobs/"+string(l.Desc.Digest)); code != http.StatusOK {
			t.Errorf("layer %s after the resumed import: %d", l.Desc.Digest, code)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
