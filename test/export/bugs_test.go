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

// Tests of bugs that were found and fixed: each fails if its bug comes back.

// testExportJSONToStdout: with -o -, stdout carries the archive and nothing
// else, even with --json: the summary then goes to stderr (a summary after
// the archive made `tar tzf` and `gzip -t` of the stream fail with "trailing
// garbage").
func testExportJSONToStdout(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	want, wantSum := f.mustExport(ctx, t, src, t.TempDir())
	r := crpe(ctx, t, nil, "export", "-f", src, "-o", "-", "--json", "--data", t.TempDir(), "--registry-endpoint", "docker.io="+f.up.URL)
	if r.err != nil {
		t.Fatalf("export -o - --json: %v\n%s", r.err, r)
	}
	if !bytes.Equal(r.stdout, want) {
		if bytes.HasPrefix(r.stdout, want) {
			t.Errorf("export -o - --json wrote %d bytes after the archive on stdout: %q...", len(r.stdout)-len(want),
				r.stdout[len(want):min(len(r.stdout), len(want)+40)])
		} else {
			t.Errorf("export -o - --json wrote %d bytes on stdout that are not the archive (%d bytes)", len(r.stdout), len(want))
		}
	}
	// the summary is on stderr, after any log lines
	i := bytes.Index(r.stderr, []byte(`"output": "-"`))
	if i < 0 {
		t.Fatalf("no --json summary with \"output\": \"-\" on stderr:\n%s", r.stderr)
	}
	var sum exportSummary
	if err := json.NewDecoder(bytes.NewReader(r.stderr[bytes.LastIndexByte(r.stderr[:i], '{'):])).Decode(&sum); err != nil {
		t.Fatalf("the --json summary on stderr: %v\n%s", err, r.stderr)
	}
	if sum.Output != "-" || len(sum.Packages) != 1 || sum.Packages[0].Name != "demo" || len(sum.Images) != len(wantSum.Images) {
		t.Errorf("--json summary on stderr: %+v\nwant the packages and images of %+v", sum, wantSum)
	}
}

// testExportListConflictingPins: two packages of a list pinning the same
// reference to different digests are refused, naming the reference and both
// digests, and leave no archive (export once wrote an archive whose
// index.json named only the last package's digest, lacking the other
// package's image).
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
	if r.err == nil {
		data, _ := os.ReadFile(out)
		a := readArchive(t, data)
		items, _ := a.pkg["items"].([]any)
		var pins []string
		for _, it := range items {
			p := it.(map[string]any)
			pins = append(pins, p["metadata"].(map[string]any)["name"].(string)+"→"+pkgImages(p)[refPinned])
		}
		t.Fatalf("packages one and two of a list pin %s to %s and %s, and export succeeded: kubepkg.json pins %v, "+
			"index.json names %s", refPinned, oldD, newD, pins, a.indexRefs(t)[refPinned])
	}
	for _, s := range []string{refPinned, oldD, newD} {
		if !strings.Contains(string(r.stderr), s) {
			t.Errorf("the error does not name %s:\n%s", s, r.stderr)
		}
	}
	assertNoOutput(t, outDir)
}

// testInspectDigestMismatch: inspect --verify notices a spec.images digest
// that is not the one index.json gives for that reference, and names both
// (it once compared only the references).
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
	if r.err == nil {
		t.Fatalf("kubepkg.json pins %s to %s while index.json (and the archive) has %s, and `crpe inspect --verify` is clean\n%s",
			refMulti, other, f.multi.blob.Desc.Digest, r)
	}
	for _, s := range []string{refMulti, other, string(f.multi.blob.Desc.Digest)} {
		if !strings.Contains(string(r.stdout)+string(r.stderr), s) {
			t.Errorf("inspect --verify fails without naming %s:\n%s", s, r)
		}
	}
}
