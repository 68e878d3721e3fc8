package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

// expectedNames is the entry order Write must produce for c.
func expectedNames(c *content) []string {
	seen := map[digest.Digest]bool{}
	var groups [3][]string
	for _, b := range c.blobs {
		if seen[b.Desc.Digest] {
			continue
		}
		seen[b.Desc.Digest] = true
		groups[b.Kind] = append(groups[b.Kind], string(b.Desc.Digest))
	}
	names := []string{PackageEntry, LayoutEntry, IndexEntry}
	for _, g := range groups {
		sort.Strings(g)
		for _, d := range g {
			names = append(names, BlobEntry(digest.Digest(d)))
		}
	}
	return names
}

func TestRoundTrip(t *testing.T) {
	c := richContent(t)
	archive := c.write(t, Options{})

	h := &collector{}
	sum, err := Read(context.Background(), bytes.NewReader(archive), h, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sum.Package) != testPkg || string(h.pkg) != testPkg {
		t.Fatalf("package: %q", sum.Package)
	}
	if h.calls[0] != "package" || h.calls[1] != "index" {
		t.Fatalf("calls start with %v", h.calls[:2])
	}
	if len(h.blobs) != len(c.data) || len(sum.Blobs) != len(c.data) {
		t.Fatalf("got %d blobs (summary %d), want %d", len(h.blobs), len(sum.Blobs), len(c.data))
	}
	var total int64
	for d, want := range c.data {
		if !bytes.Equal(h.blobs[d], want) {
			t.Errorf("blob %s differs", d)
		}
		total += int64(len(want))
	}
	if sum.Bytes != total {
		t.Errorf("Bytes = %d, want %d", sum.Bytes, total)
	}
	for _, b := range c.blobs {
		if h.kinds[b.Desc.Digest] != b.Kind {
			t.Errorf("blob %s delivered as %s, want %s", b.Desc.Digest, h.kinds[b.Desc.Digest], b.Kind)
		}
	}
	for _, d := range sum.Blobs {
		if d.MediaType == "" {
			t.Errorf("blob %s delivered without a media type", d.Digest)
		}
	}

	// index.json: the images sorted by reference, with both annotations and
	// the platform the caller set
	refs := []string{}
	for _, m := range sum.Index.Manifests {
		ref := m.Annotations[AnnotationRefName]
		if ref == "" || m.Annotations[AnnotationImageName] != ref {
			t.Errorf("annotations %v", m.Annotations)
		}
		refs = append(refs, ref)
		var img Image
		for _, i := range c.images {
			if i.Ref == ref {
				img = i
			}
		}
		if m.Digest != img.Desc.Digest || m.Size != img.Desc.Size || m.MediaType != img.Desc.MediaType {
			t.Errorf("%s: descriptor %+v, want %+v", ref, m, img.Desc)
		}
		if (m.Platform == nil) != (img.Desc.Platform == nil) {
			t.Errorf("%s: platform %v, want %v", ref, m.Platform, img.Desc.Platform)
		}
	}
	if !sort.StringsAreSorted(refs) || len(refs) != len(c.images) {
		t.Errorf("index.json refs %v", refs)
	}
	if sum.Index.MediaType != ocispec.MediaTypeImageIndex || sum.Index.SchemaVersion != 2 {
		t.Errorf("index.json %+v", sum.Index)
	}
}

func TestReproducible(t *testing.T) {
	c := richContent(t)
	mt := time.Unix(1700000000, 0)
	a := c.write(t, Options{ModTime: mt})
	b := c.write(t, Options{ModTime: mt})
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same content differ")
	}
	// the order of the inputs and duplicates do not matter
	c2 := richContent(t)
	for i, j := 0, len(c2.blobs)-1; i < j; i, j = i+1, j-1 {
		c2.blobs[i], c2.blobs[j] = c2.blobs[j], c2.blobs[i]
	}
	c2.blobs = append(c2.blobs, c2.blobs[:3]...)
	c2.images = append([]Image{c2.images[2]}, c2.images...)
	if !bytes.Equal(a, c2.write(t, Options{ModTime: mt})) {
		t.Fatal("shuffled and duplicated inputs give other bytes")
	}
	// sub-second times are rounded; another time gives other bytes
	if !bytes.Equal(a, c.write(t, Options{ModTime: mt.Add(100 * time.Millisecond)})) {
		t.Fatal("sub-second mtime changed the output")
	}
	if bytes.Equal(a, c.write(t, Options{})) {
		t.Fatal("the mtime is not in the output")
	}
}

func TestEntryOrderAndHeaders(t *testing.T) {
	c := richContent(t)
	mt := time.Unix(1234567890, 0)
	archive := c.write(t, Options{ModTime: mt})
	es := entries(t, archive)
	var names []string
	for _, e := range es {
		names = append(names, e.hdr.Name)
		h := e.hdr
		if h.Typeflag != tar.TypeReg || h.Mode != 0o644 || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(mt) {
			t.Errorf("%s: header %+v", h.Name, h)
		}
		if strings.Contains(h.Name, "sha512") && h.Format != tar.FormatPAX {
			t.Errorf("%s: format %v, want PAX", h.Name, h.Format)
		}
		if !strings.Contains(h.Name, "sha512") && h.Format != tar.FormatUSTAR {
			t.Errorf("%s: format %v, want USTAR", h.Name, h.Format)
		}
	}
	want := expectedNames(c)
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("entries:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if string(es[1].body) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", es[1].body)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(es[2].body, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != len(c.images) {
		t.Errorf("index.json has %d manifests", len(idx.Manifests))
	}
	if !strings.Contains(string(es[2].body), `"io.containerd.image.name":"docker.io/library/nginx:alpine"`) {
		t.Errorf("index.json = %s", es[2].body)
	}
}

// members splits a gzip stream into its members.
func members(t *testing.T, archive []byte) [][]byte {
	t.Helper()
	var out [][]byte
	r := bytes.NewReader(archive)
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	for {
		zr.Multistream(false)
		if zr.Header.Name != "" || !zr.Header.ModTime.IsZero() {
			t.Errorf("gzip header has name %q, mtime %v", zr.Header.Name, zr.Header.ModTime)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		if err := zr.Reset(r); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

func TestTwoGzipMembers(t *testing.T) {
	c := richContent(t)
	archive := c.write(t, Options{})
	ms := members(t, archive)
	if len(ms) != 2 {
		t.Fatalf("%d gzip members, want 2", len(ms))
	}
	// the first member ends where the first layer's header starts
	es := entries(t, archive)
	first := -1
	for i, e := range es {
		if e.hdr.Name == expectedNames(c)[len(expectedNames(c))-countLayers(c)] {
			first = i
		}
	}
	if first < 0 {
		t.Fatal("no layer")
	}
	tr := tar.NewReader(bytes.NewReader(ms[1]))
	hdr, err := tr.Next()
	if err != nil || hdr.Name != es[first].hdr.Name {
		t.Fatalf("second member starts with %v, %v; want %s", hdr, err, es[first].hdr.Name)
	}
	// stored blocks: the layers are not compressed again; the compressed
	// size of the second member is its size plus a few bytes per 64 KiB
	var layerBytes int64
	for _, b := range c.blobs {
		if b.Kind == oci.KindLayer {
			layerBytes += b.Desc.Size
		}
	}
	if int64(len(ms[1])) < layerBytes {
		t.Fatalf("second member has %d bytes, layers have %d", len(ms[1]), layerBytes)
	}
	overhead := len(archive) - len(ms[1])
	if overhead < 0 || overhead > 64<<10 {
		t.Fatalf("archive has %d bytes, the layer member %d uncompressed", len(archive), len(ms[1]))
	}
	// a package without layers is a single member
	c2 := newContent(1)
	cfg := c2.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	c2.image("example.com/empty:1", c2.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg))
	if n := len(members(t, c2.write(t, Options{}))); n != 1 {
		t.Fatalf("%d members without layers", n)
	}
}

func countLayers(c *content) int {
	seen := map[digest.Digest]bool{}
	for _, b := range c.blobs {
		if b.Kind == oci.KindLayer {
			seen[b.Desc.Digest] = true
		}
	}
	return len(seen)
}

func TestTarCommand(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar command")
	}
	c := richContent(t)
	dirPath := t.TempDir()
	path := filepath.Join(dirPath, "kubepkg.tgz")
	if err := os.WriteFile(path, c.write(t, Options{}), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "tzf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tzf: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if want := expectedNames(c); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tar tzf:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	x := filepath.Join(dirPath, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "xzf", path, "-C", x).CombinedOutput(); err != nil {
		t.Fatalf("tar xzf: %v\n%s", err, out)
	}
	for d, want := range c.data {
		got, err := os.ReadFile(filepath.Join(x, filepath.FromSlash(BlobEntry(d))))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("extracted %s differs", d)
		}
	}
	if pkg, _ := os.ReadFile(filepath.Join(x, PackageEntry)); string(pkg) != testPkg {
		t.Errorf("extracted kubepkg.json = %q", pkg)
	}
	if _, err := exec.LookPath("gzip"); err == nil {
		if out, err := exec.Command("gzip", "-t", path).CombinedOutput(); err != nil {
			t.Fatalf("gzip -t: %v\n%s", err, out)
		}
	}
}

// badOpen serves wrong content for one digest.
type badOpen struct {
	c    *content
	d    digest.Digest
	data []byte
}

func (b *badOpen) open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if d == b.d {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	return b.c.open(ctx, d)
}

func TestWriteRefuses(t *testing.T) {
	s := newSmall(t)
	c := s.c
	layer := s.layers[0]
	good := c.data[layer.Digest]
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 1
	mf := c.data[s.manifest.Digest]
	stray := []byte("stray")
	strayDesc := ocispec.Descriptor{MediaType: "x", Digest: digest.FromBytes(stray), Size: int64(len(stray))}
	c.data[strayDesc.Digest] = stray

	cases := []struct {
		name   string
		images []Image
		blobs  []Blob
		open   OpenFunc
		want   string
	}{
		{"short layer", c.images, c.blobs, (&badOpen{c, layer.Digest, good[:10]}).open, "size mismatch"},
		{"long layer", c.images, c.blobs, (&badOpen{c, layer.Digest, append(append([]byte(nil), good...), 'x')}).open, "size mismatch"},
		{"wrong layer bytes", c.images, c.blobs, (&badOpen{c, layer.Digest, flipped}).open, "digest mismatch"},
		{"wrong manifest bytes", c.images, c.blobs, (&badOpen{c, s.manifest.Digest, append([]byte(" "), mf[1:]...)}).open, "digest mismatch"},
		{"open fails", c.images, c.blobs, func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
			if d == s.config.Digest {
				return nil, errors.New("boom")
			}
			return c.open(ctx, d)
		}, "boom"},
		{"image not among blobs", []Image{{Ref: "x/y:1", Desc: s.layers[1]}}, c.blobs[:1], c.open, "not among the blobs"},
		{"image is a layer", []Image{{Ref: "x/y:1", Desc: layer}}, c.blobs, c.open, "not a manifest"},
		{"unreferenced blob", c.images, append(append([]Blob(nil), c.blobs...), Blob{Desc: strayDesc, Kind: oci.KindLayer}), c.open, "not referenced"},
		{"missing layer", c.images, withoutBlob(c.blobs, layer.Digest), c.open, "not among the blobs"},
		{"wrong kind", c.images, withKind(c.blobs, s.config.Digest, oci.KindLayer), c.open, "referenced as a config"},
		{"size conflict", c.images, append(append([]Blob(nil), c.blobs...), Blob{Desc: ocispec.Descriptor{Digest: layer.Digest, Size: 1}, Kind: oci.KindLayer}), c.open, "sizes"},
		{"bad digest", c.images, append(append([]Blob(nil), c.blobs...), Blob{Desc: ocispec.Descriptor{Digest: "sha256:ABC", Size: 1}}), c.open, "invalid digest"},
		{"no ref", []Image{{Desc: s.manifest}}, c.blobs, c.open, "no reference"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(context.Background(), &buf, []byte(testPkg), tc.images, tc.blobs, tc.open, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if buf.Len() > 0 {
				if _, rerr := Read(context.Background(), bytes.NewReader(buf.Bytes()), &collector{}, Limits{}); rerr == nil {
					t.Fatal("the partial output reads as a valid archive")
				}
			}
		})
	}
	if err := Write(context.Background(), io.Discard, []byte(testPkg), c.images, c.blobs, (&badOpen{c, layer.Digest, flipped}).open, Options{}); !errors.Is(err, cas.ErrDigestMismatch) || !strings.Contains(err.Error(), string(layer.Digest)) {
		t.Fatalf("err = %v, want a digest mismatch naming %s", err, layer.Digest)
	}
}

func withoutBlob(bs []Blob, d digest.Digest) []Blob {
	var out []Blob
	for _, b := range bs {
		if b.Desc.Digest != d {
			out = append(out, b)
		}
	}
	return out
}

func withKind(bs []Blob, d digest.Digest, k oci.Kind) []Blob {
	out := append([]Blob(nil), bs...)
	for i := range out {
		if out[i].Desc.Digest == d {
			out[i].Kind = k
		}
	}
	return out
}

func TestWriteProgressAndCancel(t *testing.T) {
	c := richContent(t)
	last := map[digest.Digest]int64{}
	o := Options{Progress: func(d digest.Digest, n int64) {
		if n < last[d] {
			t.Errorf("progress of %s went back", d)
		}
		last[d] = n
	}}
	c.write(t, o)
	for d, b := range c.data {
		if len(b) > 0 && last[d] != int64(len(b)) {
			t.Errorf("progress of %s ended at %d of %d", d, last[d], len(b))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Write(ctx, io.Discard, []byte(testPkg), c.images, c.blobs, c.open, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestSkopeo reads an archive with skopeo (containers/image, another gzip and
// tar implementation), which verifies every digest it copies. skopeo only
// addresses index.json entries with OCI media types and hashes configs with
// sha256 whatever their digest says, so it is given the OCI sha256 images.
func TestSkopeo(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("no skopeo command")
	}
	c := richContent(t)
	dirPath := t.TempDir()
	path := filepath.Join(dirPath, "kubepkg.tgz")
	if err := os.WriteFile(path, c.write(t, Options{}), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, ref := range []string{"docker.io/library/nginx:alpine", "docker.io/library/nginx:alpine-amd64"} {
		dst := "oci:" + filepath.Join(dirPath, "out") + ":" + string(rune('a'+i))
		cmd := exec.Command("skopeo", "copy", "--all", "--quiet", "oci-archive:"+path+":"+ref, dst)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy %s: %v\n%s", ref, err, out)
		}
	}
}
