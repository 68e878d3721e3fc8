package export

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

var (
	amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = ocispec.Platform{OS: "linux", Architecture: "arm64"}
	s390x = ocispec.Platform{OS: "linux", Architecture: "s390x"}
)

// kinds of blobs, in archive order
const (
	kManifest = iota
	kConfig
	kLayer
)

// index is a pushed multi-platform image.
type index struct {
	images []testenv.Image
	blob   testenv.Blob
}

// fixture is a docker-registry holding every image the tests export. It is
// shared by parallel tests: nothing may change it once built.
type fixture struct {
	up *testenv.Distribution
	// library/multi:1.0: OCI index linux/amd64, linux/arm64, linux/s390x;
	// the amd64 and arm64 images share a layer
	multi index
	// library/dlist:2.0: Docker manifest list linux/amd64, linux/arm64,
	// sharing the same layer as multi (as a Docker layer)
	dlist index
	// library/single:3.0: a single-platform (linux/amd64) Docker image
	single testenv.Image
	// library/pinned:4.0: first pinnedOld, then re-tagged to pinnedNew;
	// packages pin pinnedOld by digest
	pinnedOld, pinnedNew index
	// library/armonly:1.0: a single-platform linux/arm64 OCI image
	armonly testenv.Image
	// library/fromtemplate:1.0: OCI index linux/amd64, linux/arm64, used
	// only in a pod template
	tmpl index
	// library/real:1.0: OCI index linux/amd64, linux/arm64 of images with
	// true diff IDs (containerd can unpack them), one file each
	real index

	shared testenv.Blob
	kinds  map[digest.Digest]int
	data   map[digest.Digest][]byte
}

func (f *fixture) note(b testenv.Blob, kind int) {
	f.kinds[b.Desc.Digest] = kind
	f.data[b.Desc.Digest] = b.Data
}

func (f *fixture) noteImage(im testenv.Image) {
	f.note(im.Manifest, kManifest)
	f.note(im.Config, kConfig)
	for _, l := range im.Layers {
		f.note(l, kLayer)
	}
}

func (f *fixture) pushIndex(t *testing.T, repo, tag string, docker bool, images ...testenv.Image) index {
	t.Helper()
	ix := index{images: images, blob: testenv.NewIndex(images, docker)}
	testenv.PushIndex(t, f.up.URL, repo, tag, images, ix.blob)
	f.note(ix.blob, kManifest)
	for _, im := range images {
		f.noteImage(im)
	}
	return ix
}

func asDocker(b testenv.Blob) testenv.Blob {
	b.Desc.MediaType = testenv.DockerLayer
	return b
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{up: testenv.StartDistribution(t), kinds: map[digest.Digest]int{}, data: map[digest.Digest][]byte{}}
	layer := func(docker bool) testenv.Blob { return testenv.RandomLayer(t, 48<<10, docker) }
	f.shared = testenv.RandomLayer(t, 160<<10, false)
	img := func(p ocispec.Platform, docker bool, layers ...testenv.Blob) testenv.Image {
		return testenv.NewImage(t, p, layers, docker)
	}
	f.multi = f.pushIndex(t, "library/multi", "1.0", false,
		img(amd64, false, f.shared, layer(false)),
		img(arm64, false, f.shared, layer(false)),
		img(s390x, false, layer(false)))
	f.dlist = f.pushIndex(t, "library/dlist", "2.0", true,
		img(amd64, true, asDocker(f.shared), layer(true)),
		img(arm64, true, layer(true)))
	f.single = img(amd64, true, layer(true))
	testenv.PushImage(t, f.up.URL, "library/single", "3.0", f.single)
	f.noteImage(f.single)
	f.pinnedOld = f.pushIndex(t, "library/pinned", "4.0", false, img(amd64, false, layer(false)), img(arm64, false, layer(false)))
	f.pinnedNew = f.pushIndex(t, "library/pinned", "4.0", false, img(amd64, false, layer(false)), img(arm64, false, layer(false)))
	f.armonly = img(arm64, false, layer(false))
	testenv.PushImage(t, f.up.URL, "library/armonly", "1.0", f.armonly)
	f.noteImage(f.armonly)
	f.tmpl = f.pushIndex(t, "library/fromtemplate", "1.0", false, img(amd64, false, layer(false)), img(arm64, false, f.shared))
	f.real = f.pushIndex(t, "library/real", "1.0", false,
		realImage(t, amd64, "hello.txt", "hello from amd64\n"), realImage(t, arm64, "hello.txt", "hello from arm64\n"))
	return f
}

// blobSet is the set of blobs an archive must hold.
type blobSet map[digest.Digest]bool

func (s blobSet) image(im testenv.Image) blobSet {
	s[im.Manifest.Desc.Digest] = true
	s[im.Config.Desc.Digest] = true
	for _, l := range im.Layers {
		s[l.Desc.Digest] = true
	}
	return s
}

// index adds ix and its children of the given platforms.
func (s blobSet) index(ix index, plats ...ocispec.Platform) blobSet {
	s[ix.blob.Desc.Digest] = true
	for _, im := range ix.images {
		for _, p := range plats {
			if im.Platform.Architecture == p.Architecture {
				s.image(im)
			}
		}
	}
	return s
}

// entry is one tar entry of an archive.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// archiveFile is a parsed kubepkg.tgz.
type archiveFile struct {
	entries []entry
	byName  map[string][]byte
	pkg     map[string]any
	index   ocispec.Index
}

func readArchive(t *testing.T, data []byte) *archiveFile {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	a := &archiveFile{byName: map[string][]byte{}}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		if _, dup := a.byName[h.Name]; dup {
			t.Errorf("entry %s appears twice", h.Name)
		}
		a.entries = append(a.entries, entry{hdr: h, data: b})
		a.byName[h.Name] = b
	}
	if err := json.Unmarshal(a.byName["kubepkg.json"], &a.pkg); err != nil {
		t.Fatalf("kubepkg.json: %v", err)
	}
	if err := json.Unmarshal(a.byName["index.json"], &a.index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	return a
}

// blobs returns the digests of the blob entries, in archive order.
func (a *archiveFile) blobs() []digest.Digest {
	var out []digest.Digest
	for _, e := range a.entries {
		if strings.HasPrefix(e.hdr.Name, "blobs/") {
			parts := strings.Split(e.hdr.Name, "/")
			out = append(out, digest.Digest(parts[1]+":"+parts[2]))
		}
	}
	return out
}

// checkLayout checks the entry order and kinds, that every blob is there once
// with upstream's exact bytes, and that the blobs are exactly want.
func (f *fixture) checkLayout(t *testing.T, a *archiveFile, want blobSet) {
	t.Helper()
	if len(a.entries) < 3 {
		t.Fatalf("only %d entries", len(a.entries))
	}
	for i, n := range []string{"kubepkg.json", "oci-layout", "index.json"} {
		if a.entries[i].hdr.Name != n {
			t.Errorf("entry %d is %s, want %s", i, a.entries[i].hdr.Name, n)
		}
	}
	if got := string(a.byName["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	for _, e := range a.entries {
		if e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("entry %s has type %q, want a regular file", e.hdr.Name, e.hdr.Typeflag)
		}
		if strings.HasSuffix(e.hdr.Name, "/") {
			t.Errorf("directory entry %s", e.hdr.Name)
		}
		if e.hdr.Mode != 0o644 || e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" {
			t.Errorf("entry %s: mode %o uid %d gid %d uname %q gname %q", e.hdr.Name, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname)
		}
	}
	got := a.blobs()
	if len(a.entries) != 3+len(got) {
		t.Errorf("%d entries besides the first three and the blobs", len(a.entries)-3-len(got))
	}
	seen := map[digest.Digest]bool{}
	prevKind, prev := -1, digest.Digest("")
	for _, d := range got {
		if seen[d] {
			t.Errorf("blob %s stored twice", d)
		}
		seen[d] = true
		k, ok := f.kinds[d]
		if !ok {
			t.Errorf("blob %s is not a fixture blob", d)
			continue
		}
		if k < prevKind {
			t.Errorf("blob %s (kind %d) after a blob of kind %d", d, k, prevKind)
		} else if k == prevKind && d < prev {
			t.Errorf("blob %s not sorted by digest within its kind (after %s)", d, prev)
		}
		prevKind, prev = k, d
		if body := a.byName["blobs/sha256/"+d.Encoded()]; !bytes.Equal(body, f.data[d]) {
			t.Errorf("blob %s differs from upstream's bytes", d)
		}
	}
	for d := range want {
		if !seen[d] {
			t.Errorf("blob %s (kind %d) missing", d, f.kinds[d])
		}
	}
	for d := range seen {
		if !want[d] {
			t.Errorf("blob %s (kind %d) should not be in the archive", d, f.kinds[d])
		}
	}
}

// indexRefs returns index.json's refs → digests, checking both annotations.
func (a *archiveFile) indexRefs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	if a.index.SchemaVersion != 2 {
		t.Errorf("index.json schemaVersion %d", a.index.SchemaVersion)
	}
	for _, m := range a.index.Manifests {
		ref := m.Annotations["io.containerd.image.name"]
		if ref == "" || m.Annotations["org.opencontainers.image.ref.name"] != ref {
			t.Errorf("index.json entry %s: annotations %v", m.Digest, m.Annotations)
		}
		out[ref] = string(m.Digest)
	}
	return out
}

// pkgImages returns spec.images of a KubePkg (as decoded JSON).
func pkgImages(p map[string]any) map[string]string {
	out := map[string]string{}
	spec, _ := p["spec"].(map[string]any)
	imgs, _ := spec["images"].(map[string]any)
	for k, v := range imgs {
		out[k], _ = v.(string)
	}
	return out
}

func pkgPlatform(p map[string]any) string {
	md, _ := p["metadata"].(map[string]any)
	an, _ := md["annotations"].(map[string]any)
	s, _ := an["octohelm.tech/platform"].(string)
	return s
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// result of a crpe run.
type result struct {
	stdout, stderr []byte
	err            error
}

func (r result) String() string {
	s := "stdout:\n" + string(r.stdout)
	if len(r.stdout) > 4096 {
		s = fmt.Sprintf("stdout: %d bytes", len(r.stdout))
	}
	return s + "\nstderr:\n" + string(r.stderr)
}

// crpe runs the binary with env (SOURCE_DATE_EPOCH and CRPE_* of the test
// process are dropped) and separate stdout and stderr.
func crpe(ctx context.Context, t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := crpeCmd(ctx, t, env, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return result{stdout: so.Bytes(), stderr: se.Bytes(), err: err}
}

// crpeCmd is the command running the crpe binary with env added to the test
// process's environment, less its SOURCE_DATE_EPOCH and CRPE_* variables.
func crpeCmd(ctx context.Context, t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") || strings.HasPrefix(e, "CRPE_") {
			continue
		}
		cmd.Env = append(cmd.Env, e)
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// export runs crpe export of src into out with data as the cache.
func (f *fixture) export(ctx context.Context, t *testing.T, env []string, src, out, data string, extra ...string) result {
	t.Helper()
	args := append([]string{"export", "-f", src, "-o", out, "--data", data,
		"--registry-endpoint", "docker.io=" + f.up.URL}, extra...)
	return crpe(ctx, t, env, args...)
}

// mustExport exports and returns the archive's bytes and the --json summary.
func (f *fixture) mustExport(ctx context.Context, t *testing.T, src, data string, extra ...string) ([]byte, exportSummary) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "a.kubepkg.tgz")
	r := f.export(ctx, t, nil, src, out, data, append(extra, "--json")...)
	if r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}
	var sum exportSummary
	if err := json.Unmarshal(r.stdout, &sum); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, sum
}

type exportSummary struct {
	Output   string `json:"output"`
	Packages []struct {
		Name      string `json:"name"`
		Version   string `json:"version"`
		Platforms string `json:"platforms"`
	} `json:"packages"`
	Images []struct {
		Ref       string   `json:"ref"`
		Digest    string   `json:"digest"`
		Platforms []string `json:"platforms"`
	} `json:"images"`
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	return testenv.WaitCtx(t, d)
}

// repack rewrites an archive's entries (same headers) through mutate, as a
// plain single-member gzip.
func repack(t *testing.T, a *archiveFile, mutate func(name string, data []byte) []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range a.entries {
		h := *e.hdr
		data := mutate(h.Name, append([]byte(nil), e.data...))
		h.Size = int64(len(data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// realImage is an image whose config has the true diff IDs of its gzipped
// layer (one file, name, holding content), so that containerd can unpack it.
func realImage(t *testing.T, p ocispec.Platform, name, content string) testenv.Image {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(content))
	_ = tw.Close()
	var gzBuf bytes.Buffer
	zw := gzip.NewWriter(&gzBuf)
	_, _ = zw.Write(tarBuf.Bytes())
	_ = zw.Close()
	layer := testenv.Blob{Data: gzBuf.Bytes(), Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest: digest.FromBytes(gzBuf.Bytes()), Size: int64(gzBuf.Len())}}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": p.Architecture, "os": p.OS,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{string(digest.FromBytes(tarBuf.Bytes()))}},
		"config": map[string]any{"Cmd": []string{"/" + name}},
	})
	config := testenv.Blob{Data: cfg, Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": config.Desc, "layers": []ocispec.Descriptor{layer.Desc}})
	return testenv.Image{Manifest: testenv.Blob{Data: m, Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
		Digest: digest.FromBytes(m), Size: int64(len(m))}}, Config: config, Layers: []testenv.Blob{layer}, Platform: p}
}
