package export

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests of behaviour found broken: each skips, naming the bug, while the bug
// is there, and passes once it is fixed.

// testExportJSONToStdout: with -o -, stdout must carry the archive and
// nothing else, even with --json (the summary then belongs on stderr, or the
// combination is refused).
func testExportJSONToStdout(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	want, _ := f.mustExport(ctx, t, src, t.TempDir())
	r := crpe(ctx, t, nil, "export", "-f", src, "-o", "-", "--json", "--data", t.TempDir(), "--registry-endpoint", "docker.io="+f.up.URL)
	if r.err != nil {
		if strings.Contains(string(r.stderr), "--json") {
			return // refused, naming the flag: fine
		}
		t.Fatalf("export -o - --json: %v\n%s", r.err, r.stderr)
	}
	if bytes.Equal(r.stdout, want) {
		return
	}
	if bytes.HasPrefix(r.stdout, want) {
		t.Skipf("BUG (reported): `crpe export -o - --json` writes the JSON summary to stdout after the archive "+
			"(internal/cli/export.go encodes the summary to cmd.OutOrStdout() even when -o is -): %d trailing bytes %q..., "+
			"so `tar tzf` and `gzip -t` of the stream fail with \"trailing garbage\"", len(r.stdout)-len(want), r.stdout[len(want):min(len(r.stdout), len(want)+20)])
	}
	t.Fatalf("export -o - --json wrote %d bytes that are not the archive (%d bytes)", len(r.stdout), len(want))
}

// testExportListConflictingPins: two packages of a list pinning the same
// reference to different digests must not give an archive in which one
// package's pinned image is missing.
func testExportListConflictingPins(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	oldD, newD := string(f.pinnedOld.blob.Desc.Digest), string(f.pinnedNew.blob.Desc.Digest)
	src := writeFile(t, "list.yaml", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: one}
spec:
  version: 1.0.0
  images: {"docker.io/library/pinned:4.0": "`+oldD+`"}
---
apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: two}
spec:
  version: 1.0.0
  images: {"docker.io/library/pinned:4.0": "`+newD+`"}
`)
	outDir := t.TempDir()
	out := filepath.Join(outDir, "list.kubepkg.tgz")
	r := f.export(ctx, t, nil, src, out, t.TempDir())
	if r.err != nil {
		if !strings.Contains(string(r.stderr), refPinned) {
			t.Errorf("the error does not name %s:\n%s", refPinned, r.stderr)
		}
		assertNoOutput(t, outDir)
		return
	}
	data, _ := os.ReadFile(out)
	a := readArchive(t, data)
	items, _ := a.pkg["items"].([]any)
	var missing []string
	for _, it := range items {
		p := it.(map[string]any)
		d := pkgImages(p)[refPinned]
		if _, ok := a.byName["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]; !ok {
			missing = append(missing, p["metadata"].(map[string]any)["name"].(string)+"→"+d)
		}
	}
	if len(missing) == 0 {
		return
	}
	ins := crpe(ctx, t, nil, "inspect", out, "--verify")
	t.Skipf("BUG (reported): packages one and two of a list pin %s to %s and %s; export succeeds, index.json names only %s "+
		"and the archive lacks the image of %v (internal/export/export.go: the conflict check `pinned` is per package, "+
		"and byRef[ref].top.Digest is overwritten by the last package); inspect --verify exit=%v (it does not compare "+
		"spec.images digests with index.json)", refPinned, oldD, newD, a.indexRefs(t)[refPinned], missing, ins.err)
}

// testInspectDigestMismatch: inspect --verify must notice a spec.images
// digest that is not the one index.json gives for that reference.
func testInspectDigestMismatch(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	data, _ := f.mustExport(ctx, t, src, t.TempDir())
	a := readArchive(t, data)
	other := string(f.pinnedNew.blob.Desc.Digest) // a well-formed digest the archive does not hold
	edited := repack(t, a, func(name string, b []byte) []byte {
		if name != "kubepkg.json" {
			return b
		}
		var p map[string]any
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		p["spec"].(map[string]any)["images"].(map[string]any)[refMulti] = other
		nb, _ := json.Marshal(p)
		return nb
	})
	file := filepath.Join(t.TempDir(), "edited.tgz")
	if err := os.WriteFile(file, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	r := crpe(ctx, t, nil, "inspect", file, "--verify")
	if r.err != nil {
		if !strings.Contains(string(r.stdout)+string(r.stderr), refMulti) {
			t.Errorf("inspect --verify fails without naming %s:\n%s", refMulti, r)
		}
		return
	}
	t.Skipf("BUG (reported): kubepkg.json pins %s to %s while index.json (and the archive) has %s, and `crpe inspect --verify` "+
		"is clean (internal/inspect/inspect.go collects spec.images refs but never compares their digests with index.json's)",
		refMulti, other, f.multi.blob.Desc.Digest)
}
