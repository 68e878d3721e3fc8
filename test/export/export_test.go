// Package export tests `crpe export` and `crpe inspect` end to end: fixtures
// are pushed to a real CNCF distribution (Debian's docker-registry) on
// loopback, the crpe binary exports them into kubepkg.tgz files, and the
// archives are checked entry by entry and read by real consumers (tar,
// containerd's ctr, skopeo).
package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

const (
	refMulti  = "docker.io/library/multi:1.0"
	refDlist  = "docker.io/library/dlist:2.0"
	refSingle = "docker.io/library/single:3.0"
	refPinned = "docker.io/library/pinned:4.0"
	refTmpl   = "docker.io/library/fromtemplate:1.0"
	refArm    = "docker.io/library/armonly:1.0"
)

// TestExport runs the export tests in parallel against one registry.
func TestExport(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name string
		fn   func(*testing.T, *fixture)
	}{
		{"ArchiveLayout", testExportArchiveLayout},
		{"Platforms", testExportPlatforms},
		{"KubePkgList", testExportKubePkgList},
		{"Reproducible", testExportReproducible},
		{"Inspect", testInspect},
		{"BadInput", testBadInput},
		{"KeepsExistingOutput", testExportKeepsExistingOutput},
		{"Interrupted", testExportInterrupted},
		{"Containerd", testContainerdImport},
		{"Skopeo", testSkopeo},
		// bugs fixed: these fail if one comes back
		{"JSONToStdout", testExportJSONToStdout},
		{"ListConflictingPins", testExportListConflictingPins},
		{"InspectDigestMismatch", testInspectDigestMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, f)
		})
	}
}

// demoYAML is a KubePkg with a multi-arch OCI index, a Docker manifest list
// (named in short form), a single-platform Docker image, an image pinned by
// digest and, only in a Deployment's pod template, one more image.
func (f *fixture) demoYAML(annotations string) string {
	return `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: demo
  namespace: default
` + annotations + `spec:
  version: 1.2.3
  images:
    "docker.io/library/multi:1.0": ""
    "dlist:2.0": ""
    "docker.io/library/single:3.0": ""
    "docker.io/library/pinned:4.0": "` + string(f.pinnedOld.blob.Desc.Digest) + `"
  manifests:
    web.default.deployment:
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: web
        namespace: default
      spec:
        replicas: 1
        template:
          spec:
            initContainers:
              - name: init
                image: fromtemplate:1.0
            containers:
              - name: web
                image: multi:1.0
              - name: sidecar
                image: docker.io/library/single:3.0
`
}

const bothPlatforms = "  annotations:\n    octohelm.tech/platform: linux/amd64,linux/arm64\n"

// demoWant is what the demo package exported for plats must hold.
func (f *fixture) demoWant(plats ...ocispec.Platform) blobSet {
	s := blobSet{}
	s.index(f.multi, plats...).index(f.dlist, plats...).index(f.pinnedOld, plats...).index(f.tmpl, plats...)
	s.image(f.single)
	return s
}

func (f *fixture) demoImages() map[string]string {
	return map[string]string{
		refMulti:  string(f.multi.blob.Desc.Digest),
		refDlist:  string(f.dlist.blob.Desc.Digest),
		refSingle: string(f.single.Manifest.Desc.Digest),
		refPinned: string(f.pinnedOld.blob.Desc.Digest),
		refTmpl:   string(f.tmpl.blob.Desc.Digest),
	}
}

// testExportArchiveLayout exports the demo package for linux/amd64 and
// linux/arm64 and checks the archive entry by entry, then with tar.
func testExportArchiveLayout(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	out := filepath.Join(t.TempDir(), "demo.kubepkg.tgz")
	r := f.export(ctx, t, nil, src, out, t.TempDir(), "--json")
	if r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}
	// the image found only in the pod template was added, with a warning
	if !strings.Contains(string(r.stderr), "fromtemplate:1.0") || !strings.Contains(string(r.stderr), "not listed in spec.images") {
		t.Errorf("no warning about the image added from the pod template:\n%s", r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	a := readArchive(t, data)
	want := f.demoWant(amd64, arm64)
	f.checkLayout(t, a, want)

	// sparse: the s390x child of multi is not there, its index is as upstream
	// stored it (checked by checkLayout: every blob has upstream's bytes)
	s390 := f.multi.images[2]
	if _, ok := a.byName["blobs/sha256/"+s390.Manifest.Desc.Digest.Encoded()]; ok {
		t.Error("the linux/s390x manifest is in the archive")
	}
	if !bytes.Equal(a.byName["blobs/sha256/"+f.multi.blob.Desc.Digest.Encoded()], f.multi.blob.Data) {
		t.Error("the multi-platform index is not byte-identical to upstream's")
	}
	// the pinned image is the one of the digest, not the tag's current one
	for d := range (blobSet{}).index(f.pinnedNew, amd64, arm64) {
		if _, ok := a.byName["blobs/sha256/"+d.Encoded()]; ok {
			t.Errorf("blob %s of the re-tagged pinned image is in the archive", d)
		}
	}
	// the layer shared by four images is stored once
	n := 0
	for _, d := range a.blobs() {
		if d == f.shared.Desc.Digest {
			n++
		}
	}
	if n != 1 {
		t.Errorf("shared layer stored %d times", n)
	}

	// kubepkg.json: the package, every image pinned, the platforms exported
	if a.pkg["kind"] != "KubePkg" {
		t.Fatalf("kubepkg.json kind %v", a.pkg["kind"])
	}
	if got, wantImgs := pkgImages(a.pkg), f.demoImages(); !equalMaps(got, wantImgs) {
		t.Errorf("kubepkg.json spec.images = %v\nwant %v", got, wantImgs)
	}
	if p := pkgPlatform(a.pkg); p != "linux/amd64,linux/arm64" {
		t.Errorf("platform annotation %q", p)
	}
	if spec := a.pkg["spec"].(map[string]any); spec["version"] != "1.2.3" || spec["manifests"] == nil {
		t.Errorf("spec not kept: %v", spec)
	}
	// index.json: exactly the references of spec.images, with their digests
	// and media types
	if refs := a.indexRefs(t); !equalMaps(refs, f.demoImages()) {
		t.Errorf("index.json refs = %v\nwant %v", refs, f.demoImages())
	}
	mediaTypes := map[string]string{refMulti: ocispec.MediaTypeImageIndex, refDlist: testenv.DockerManifestList,
		refSingle: testenv.DockerManifest, refPinned: ocispec.MediaTypeImageIndex, refTmpl: ocispec.MediaTypeImageIndex}
	for _, m := range a.index.Manifests {
		ref := m.Annotations["io.containerd.image.name"]
		if m.MediaType != mediaTypes[ref] {
			t.Errorf("index.json %s: media type %s, want %s", ref, m.MediaType, mediaTypes[ref])
		}
	}

	// the --json summary
	var sum exportSummary
	if err := json.Unmarshal(r.stdout, &sum); err != nil {
		t.Fatalf("--json: %v\n%s", err, r)
	}
	if sum.Output != out || sum.Blobs != len(want) || len(sum.Images) != 5 || len(sum.Packages) != 1 ||
		sum.Packages[0].Platforms != "linux/amd64,linux/arm64" || sum.Packages[0].Version != "1.2.3" {
		t.Errorf("summary: %+v (want %d blobs)", sum, len(want))
	}
	for _, im := range sum.Images {
		if im.Digest != f.demoImages()[im.Ref] {
			t.Errorf("summary image %s: digest %s", im.Ref, im.Digest)
		}
		if im.Ref == refMulti && !slices.Equal(im.Platforms, []string{"linux/amd64", "linux/arm64"}) {
			t.Errorf("summary: multi exported for %v", im.Platforms)
		}
	}

	// tar lists and extracts it: the same files, the same bytes
	list, err := exec.CommandContext(ctx, "tar", "tzf", out).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tzf: %v\n%s", err, list)
	}
	var names []string
	for _, e := range a.entries {
		names = append(names, e.hdr.Name)
	}
	if got := strings.Fields(string(list)); !slices.Equal(got, names) {
		t.Errorf("tar tzf lists %v\nwant %v", got, names)
	}
	dir := t.TempDir()
	if b, err := exec.CommandContext(ctx, "tar", "xzf", out, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar xzf: %v\n%s", err, b)
	}
	files := 0
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		files++
		rel, _ := filepath.Rel(dir, p)
		b, _ := os.ReadFile(p)
		if !bytes.Equal(b, a.byName[rel]) {
			t.Errorf("extracted %s differs", rel)
		}
		return nil
	})
	if err != nil || files != len(a.entries) {
		t.Errorf("extracted %d files (%v), want %d", files, err, len(a.entries))
	}
}

// testExportPlatforms: --platform keeps only that platform; without it the
// package's annotation decides, else linux/amd64,linux/arm64.
func testExportPlatforms(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	pkg := func(annotations string) string {
		return `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"plat"` + annotations + `},
"spec":{"version":"0.1.0","images":{"docker.io/library/multi:1.0":"","docker.io/library/dlist:2.0":"",
"docker.io/library/pinned:4.0":"` + string(f.pinnedOld.blob.Desc.Digest) + `"}}}`
	}
	armOnly := blobSet{}.index(f.multi, arm64).index(f.dlist, arm64).index(f.pinnedOld, arm64)

	// --platform linux/arm64 overrides the annotation
	flagSrc := writeFile(t, "flag.json", pkg(`,"annotations":{"octohelm.tech/platform":"linux/amd64,linux/arm64"}`))
	byFlag, _ := f.mustExport(ctx, t, flagSrc, t.TempDir(), "--platform", "linux/arm64")
	a := readArchive(t, byFlag)
	f.checkLayout(t, a, armOnly)
	if p := pkgPlatform(a.pkg); p != "linux/arm64" {
		t.Errorf("--platform linux/arm64: annotation %q", p)
	}
	if !bytes.Equal(a.byName["blobs/sha256/"+f.multi.blob.Desc.Digest.Encoded()], f.multi.blob.Data) {
		t.Error("index not kept as upstream's")
	}

	// the annotation alone says linux/arm64: the same archive
	annSrc := writeFile(t, "ann.json", pkg(`,"annotations":{"octohelm.tech/platform":"linux/arm64"}`))
	byAnn, sum := f.mustExport(ctx, t, annSrc, t.TempDir())
	f.checkLayout(t, readArchive(t, byAnn), armOnly)
	if !bytes.Equal(byAnn, byFlag) {
		t.Error("exports by --platform and by annotation of the same content differ")
	}
	for _, im := range sum.Images {
		if !slices.Equal(im.Platforms, []string{"linux/arm64"}) {
			t.Errorf("summary: %s exported for %v", im.Ref, im.Platforms)
		}
	}

	// no annotation: linux/amd64,linux/arm64 (s390x left out of the index)
	defSrc := writeFile(t, "def.json", pkg(``))
	byDef, _ := f.mustExport(ctx, t, defSrc, t.TempDir())
	a = readArchive(t, byDef)
	f.checkLayout(t, a, blobSet{}.index(f.multi, amd64, arm64).index(f.dlist, amd64, arm64).index(f.pinnedOld, amd64, arm64))
	if p := pkgPlatform(a.pkg); p != "linux/amd64,linux/arm64" {
		t.Errorf("default: annotation %q", p)
	}

	// a single-platform image of the chosen platform is taken as it is
	armSrc := writeFile(t, "arm.yaml", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: arm}
spec:
  version: 0.0.1
  images: {"armonly:1.0": ""}
`)
	byArm, _ := f.mustExport(ctx, t, armSrc, t.TempDir(), "--platform", "linux/arm64")
	a = readArchive(t, byArm)
	f.checkLayout(t, a, blobSet{}.image(f.armonly))
	if got := pkgImages(a.pkg); !equalMaps(got, map[string]string{refArm: string(f.armonly.Manifest.Desc.Digest)}) {
		t.Errorf("spec.images = %v", got)
	}
}

// testExportKubePkgList: two packages sharing images go into one archive.
func testExportKubePkgList(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	pinnedByDigest := "docker.io/library/pinned@" + string(f.pinnedOld.blob.Desc.Digest)
	src := writeFile(t, "list.json", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[
 {"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"one","namespace":"apps"},
  "spec":{"version":"1.0.0","images":{"multi:1.0":"","docker.io/library/single:3.0":""}}},
 {"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"two","namespace":"apps"},
  "spec":{"version":"2.0.0","images":{"docker.io/library/multi:1.0":"","`+pinnedByDigest+`":"","dlist:2.0":""}}}]}`)
	data, sum := f.mustExport(ctx, t, src, t.TempDir())
	a := readArchive(t, data)
	f.checkLayout(t, a, blobSet{}.index(f.multi, amd64, arm64).image(f.single).index(f.pinnedOld, amd64, arm64).index(f.dlist, amd64, arm64))
	if a.pkg["kind"] != "KubePkgList" {
		t.Fatalf("kubepkg.json kind %v", a.pkg["kind"])
	}
	items, _ := a.pkg["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("kubepkg.json has %d items", len(items))
	}
	one, two := items[0].(map[string]any), items[1].(map[string]any)
	wantOne := map[string]string{refMulti: string(f.multi.blob.Desc.Digest), refSingle: string(f.single.Manifest.Desc.Digest)}
	wantTwo := map[string]string{refMulti: string(f.multi.blob.Desc.Digest), pinnedByDigest: string(f.pinnedOld.blob.Desc.Digest),
		refDlist: string(f.dlist.blob.Desc.Digest)}
	if got := pkgImages(one); !equalMaps(got, wantOne) {
		t.Errorf("package one: spec.images %v\nwant %v", got, wantOne)
	}
	if got := pkgImages(two); !equalMaps(got, wantTwo) {
		t.Errorf("package two: spec.images %v\nwant %v", got, wantTwo)
	}
	union := map[string]string{}
	for k, v := range wantOne {
		union[k] = v
	}
	for k, v := range wantTwo {
		union[k] = v
	}
	if refs := a.indexRefs(t); !equalMaps(refs, union) {
		t.Errorf("index.json refs %v\nwant %v", refs, union)
	}
	if len(sum.Packages) != 2 || sum.Packages[0].Name != "one" || sum.Packages[1].Name != "two" {
		t.Errorf("summary packages %+v", sum.Packages)
	}

	// the same two packages as a YAML stream give the same archive
	yamlSrc := writeFile(t, "list.yaml", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: one, namespace: apps}
spec:
  version: 1.0.0
  images: {"multi:1.0": "", "docker.io/library/single:3.0": ""}
---
apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: two, namespace: apps}
spec:
  version: 2.0.0
  images: {"docker.io/library/multi:1.0": "", "`+pinnedByDigest+`": "", "dlist:2.0": ""}
`)
	fromYAML, _ := f.mustExport(ctx, t, yamlSrc, t.TempDir())
	if !bytes.Equal(fromYAML, data) {
		t.Error("the YAML stream and the JSON KubePkgList of the same packages give different archives")
	}
}

// testExportReproducible: the same content gives the same bytes, whatever
// the cache; SOURCE_DATE_EPOCH sets the entries' time; -o - streams the same
// bytes to stdout.
func testExportReproducible(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	data1 := t.TempDir()
	first, _ := f.mustExport(ctx, t, src, data1)
	second, _ := f.mustExport(ctx, t, src, t.TempDir()) // a fresh cache
	if !bytes.Equal(first, second) {
		t.Fatalf("two exports differ (%d and %d bytes)", len(first), len(second))
	}
	third, _ := f.mustExport(ctx, t, src, data1, "--parallel", "1") // a warm cache, one fetch at a time
	if !bytes.Equal(first, third) {
		t.Fatalf("export from a warm cache differs")
	}
	for _, e := range readArchive(t, first).entries {
		if e.hdr.ModTime.Unix() != 0 {
			t.Errorf("entry %s: time %v, want the Unix epoch", e.hdr.Name, e.hdr.ModTime)
		}
	}

	out := filepath.Join(t.TempDir(), "epoch.kubepkg.tgz")
	r := f.export(ctx, t, []string{"SOURCE_DATE_EPOCH=1700000000"}, src, out, data1)
	if r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}
	epoch, _ := os.ReadFile(out)
	if bytes.Equal(epoch, first) {
		t.Error("SOURCE_DATE_EPOCH changed nothing")
	}
	for _, e := range readArchive(t, epoch).entries {
		if e.hdr.ModTime.Unix() != 1700000000 {
			t.Errorf("entry %s: time %v, want 1700000000", e.hdr.Name, e.hdr.ModTime)
		}
	}
	r = f.export(ctx, t, []string{"SOURCE_DATE_EPOCH=yesterday"}, src, filepath.Join(t.TempDir(), "x.tgz"), data1)
	if r.err == nil || !strings.Contains(string(r.stderr), "SOURCE_DATE_EPOCH") {
		t.Errorf("SOURCE_DATE_EPOCH=yesterday: %v\n%s", r.err, r)
	}

	// -o - writes the same bytes to stdout, nothing else
	r = crpe(ctx, t, nil, "export", "-f", src, "-o", "-", "--data", t.TempDir(), "--registry-endpoint", "docker.io="+f.up.URL)
	if r.err != nil {
		t.Fatalf("export -o -: %v\n%s", r.err, r.stderr)
	}
	if !bytes.Equal(r.stdout, first) {
		t.Errorf("export -o - wrote %d bytes that differ from the file's %d", len(r.stdout), len(first))
	}
	// the package can come from stdin too
	cmd := crpeCmd(ctx, t, nil, "export", "-f", "-", "-o", "-", "--data", data1, "--registry-endpoint", "docker.io="+f.up.URL)
	cmd.Stdin = strings.NewReader(f.demoYAML(bothPlatforms))
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil || !bytes.Equal(so.Bytes(), first) {
		t.Errorf("export -f - -o -: %v, %d bytes\n%s", err, so.Len(), se.String())
	}
}

// TestExportOffline: once the cache holds everything, the export works with
// the upstream gone, and with --offline; a cold cache fails cleanly.
func TestExportOffline(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 40*time.Second)
	f := newFixture(t)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	data := t.TempDir()
	synced, _ := f.mustExport(ctx, t, src, data)
	f.up.Stop()

	start := time.Now()
	out := filepath.Join(t.TempDir(), "gone.kubepkg.tgz")
	r := f.export(ctx, t, nil, src, out, data)
	if r.err != nil {
		t.Fatalf("export with the upstream gone: %v\n%s", r.err, r)
	}
	gone, _ := os.ReadFile(out)
	if !bytes.Equal(gone, synced) {
		t.Error("export with the upstream gone differs from the synced one")
	}
	t.Logf("export with the upstream gone took %v", time.Since(start))
	// it says so: which tag came from the cache, and since when
	for _, ref := range []string{"docker.io/library/multi:1.0", "docker.io/library/dlist:2.0", "docker.io/library/single:3.0", "docker.io/library/fromtemplate:1.0"} {
		stderr := string(r.stderr)
		if !strings.Contains(stderr, "using the cached manifest") || !strings.Contains(stderr, `"image":"`+ref+`"`) || !strings.Contains(stderr, `"cached":"20`) {
			t.Errorf("export with the upstream gone does not say it used the cached %s:\n%s", ref, r)
		}
	}
	offline, _ := f.mustExport(ctx, t, src, data, "--offline")
	if !bytes.Equal(offline, synced) {
		t.Error("export --offline differs from the synced one")
	}

	// a cold cache cannot: error, and no file
	outDir := t.TempDir()
	r = f.export(ctx, t, nil, src, filepath.Join(outDir, "cold.tgz"), t.TempDir(), "--offline")
	if r.err == nil {
		t.Fatal("export --offline from an empty cache succeeded")
	}
	assertNoOutput(t, outDir)
}

// testInspect: crpe inspect --verify is clean on an export and lists its
// images and platforms; a corrupted layer or a missing blob is named.
func testInspect(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	data, _ := f.mustExport(ctx, t, src, t.TempDir())
	dir := t.TempDir()
	file := filepath.Join(dir, "demo.kubepkg.tgz")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := crpe(ctx, t, nil, "inspect", file, "--verify", "--json")
	if r.err != nil {
		t.Fatalf("inspect --verify: %v\n%s", r.err, r)
	}
	var rep struct {
		Packages []struct {
			Name      string   `json:"name"`
			Version   string   `json:"version"`
			Platforms []string `json:"platforms"`
		} `json:"packages"`
		Images []struct {
			Ref       string   `json:"ref"`
			Digest    string   `json:"digest"`
			Platforms []string `json:"platforms"`
		} `json:"images"`
		Blobs    int      `json:"blobs"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal(r.stdout, &rep); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r)
	}
	if len(rep.Problems) > 0 || rep.Blobs != len(f.demoWant(amd64, arm64)) {
		t.Errorf("inspect: %d blobs, problems %v", rep.Blobs, rep.Problems)
	}
	if len(rep.Packages) != 1 || rep.Packages[0].Name != "demo" || rep.Packages[0].Version != "1.2.3" ||
		!slices.Equal(rep.Packages[0].Platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("inspect packages: %+v", rep.Packages)
	}
	got := map[string]string{}
	for _, im := range rep.Images {
		got[im.Ref] = im.Digest
		want := []string{"linux/amd64", "linux/arm64"}
		if im.Ref == refSingle {
			want = []string{"linux/amd64"} // from its config, as export names it
		}
		if !slices.Equal(im.Platforms, want) {
			t.Errorf("inspect: %s platforms %v, want %v", im.Ref, im.Platforms, want)
		}
	}
	if !equalMaps(got, f.demoImages()) {
		t.Errorf("inspect images %v\nwant %v", got, f.demoImages())
	}
	// the text form names the same
	r = crpe(ctx, t, nil, "inspect", file, "--verify")
	if r.err != nil || !strings.Contains(string(r.stdout), refMulti) || !strings.Contains(string(r.stdout), string(f.multi.blob.Desc.Digest)) {
		t.Errorf("inspect (text): %v\n%s", r.err, r)
	}

	a := readArchive(t, data)
	// re-packed as is (one gzip member): still clean
	plain := filepath.Join(dir, "repacked.tgz")
	if err := os.WriteFile(plain, repack(t, a, func(_ string, b []byte) []byte { return b }), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := crpe(ctx, t, nil, "inspect", plain, "--verify"); r.err != nil {
		t.Fatalf("inspect of the re-packed archive: %v\n%s", r.err, r)
	}

	// one byte of a layer flipped
	victim := f.multi.images[0].Layers[1].Desc.Digest
	name := "blobs/sha256/" + victim.Encoded()
	corrupt := filepath.Join(dir, "corrupt.tgz")
	err := os.WriteFile(corrupt, repack(t, a, func(n string, b []byte) []byte {
		if n == name {
			b[len(b)/2] ^= 0x01
		}
		return b
	}), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r = crpe(ctx, t, nil, "inspect", corrupt, "--verify", "--json")
	if r.err == nil {
		t.Fatalf("inspect --verify of a corrupt archive succeeded\n%s", r)
	}
	if !strings.Contains(string(r.stderr)+string(r.stdout), victim.Encoded()) {
		t.Errorf("the error does not name the corrupt blob %s:\n%s", victim, r)
	}

	// a layer left out
	missing := filepath.Join(dir, "missing.tgz")
	b := repack(t, &archiveFile{entries: slices.DeleteFunc(slices.Clone(a.entries), func(e entry) bool { return e.hdr.Name == name })}, func(_ string, b []byte) []byte { return b })
	if err := os.WriteFile(missing, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r = crpe(ctx, t, nil, "inspect", missing, "--verify")
	if r.err == nil {
		t.Fatalf("inspect --verify of an archive lacking a layer succeeded\n%s", r)
	}
	if !strings.Contains(string(r.stderr)+string(r.stdout), victim.Encoded()) {
		t.Errorf("the error does not name the missing blob %s:\n%s", victim, r)
	}
}

// testBadInput: each bad input fails with a message naming the problem and
// leaves nothing in the output folder.
func testBadInput(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 40*time.Second)
	pkg := func(version string, images ...string) string {
		var kv []string
		for _, im := range images {
			kv = append(kv, fmt.Sprintf("%q: \"\"", im))
		}
		return "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: bad}\nspec:\n  version: " + version +
			"\n  images: {" + strings.Join(kv, ", ") + "}\n"
	}
	cases := []struct {
		name  string
		src   string
		args  []string
		wants []string
	}{
		{"bad semver", pkg("1.x", refMulti), nil, []string{"spec.version", "1.x"}},
		{"unknown platform", pkg("1.0.0", refMulti), []string{"--platform", "linux/sparc"}, []string{"linux/sparc", "sparc"}},
		{"image not upstream", pkg("1.0.0", refMulti, "docker.io/library/nothere:9.9"), nil, []string{"docker.io/library/nothere:9.9"}},
		{"index lacking the platform", pkg("1.0.0", refMulti, refDlist), []string{"--platform", "linux/riscv64"}, []string{"linux/riscv64", "docker.io/library/"}},
		{"image lacking the platform", pkg("1.0.0", refArm), []string{"--platform", "linux/amd64"}, []string{refArm, "linux/arm64", "linux/amd64"}},
		{"pinned digest not upstream", "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: bad}\nspec:\n  version: 1.0.0\n" +
			"  images: {\"docker.io/library/multi:1.0\": \"" + string(f.pinnedOld.blob.Desc.Digest) + "\"}\n", nil,
			[]string{refMulti, string(f.pinnedOld.blob.Desc.Digest)}},
		{"bad digest value", "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: bad}\nspec:\n  version: 1.0.0\n" +
			"  images: {\"docker.io/library/multi:1.0\": \"sha256:abc\"}\n", nil, []string{"spec.images", "sha256:abc"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := writeFile(t, "pkg.yaml", c.src)
			outDir := t.TempDir()
			r := f.export(ctx, t, nil, src, filepath.Join(outDir, "out.kubepkg.tgz"), t.TempDir(), c.args...)
			if r.err == nil {
				t.Fatalf("export succeeded\n%s", r)
			}
			if ee, ok := r.err.(*exec.ExitError); !ok || ee.ExitCode() <= 0 {
				t.Errorf("exit: %v", r.err)
			}
			t.Logf("message: %s", strings.TrimSpace(string(r.stderr)))
			for _, w := range c.wants {
				if !strings.Contains(string(r.stderr), w) {
					t.Errorf("message does not name %q:\n%s", w, r.stderr)
				}
			}
			assertNoOutput(t, outDir)
		})
	}
}

func assertNoOutput(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in the output folder: %s", e.Name())
	}
}

// testExportKeepsExistingOutput: a failed export leaves an existing file at
// the output path untouched.
func testExportKeepsExistingOutput(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	outDir := t.TempDir()
	out := filepath.Join(outDir, "demo.kubepkg.tgz")
	if err := os.WriteFile(out, []byte("previous archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := writeFile(t, "pkg.yaml", "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata: {name: gone}\nspec:\n  version: 1.0.0\n  images: {\"docker.io/library/nothere:1\": \"\"}\n")
	r := f.export(ctx, t, nil, src, out, t.TempDir())
	if r.err == nil {
		t.Fatal("export of a missing image succeeded")
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "previous archive" {
		t.Errorf("the existing output was touched: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Errorf("%d files in the output folder, want 1", len(ents))
	}
}

// testExportInterrupted: SIGINT while blobs are being fetched ends the
// export promptly with an error and no file, temp or final.
func testExportInterrupted(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 30*time.Second)
	// a proxy to the registry whose blob GETs hang
	target, _ := url.Parse(f.up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	release := make(chan struct{})
	var blobGets atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	defer close(release)

	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	outDir := t.TempDir()
	cmd := crpeCmd(ctx, t, nil, "export", "-f", src, "-o", filepath.Join(outDir, "demo.kubepkg.tgz"),
		"--data", t.TempDir(), "--registry-endpoint", "docker.io="+proxy.URL)
	var se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &se, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// wait until the export is stuck on a blob, with its temp file made
	deadline := time.Now().Add(10 * time.Second)
	for blobGets.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no blob request reached the upstream\n%s", se.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// the temp file is there while the export runs (made before the first
	// fetch), so its absence at the end shows it was cleaned up
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), ".demo.kubepkg.tgz.tmp-") {
		t.Errorf("output folder while exporting: %v, want the temp file only", ents)
	}
	start := time.Now()
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("interrupted export exited 0\n%s", se.String())
		}
		t.Logf("exited %v after the signal in %v", err, time.Since(start))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("export still running 10s after SIGINT\n%s", se.String())
	}
	assertNoOutput(t, outDir)
}
