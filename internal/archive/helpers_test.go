package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/oci"
)

// content is a set of generated blobs and images to archive.
type content struct {
	data   map[digest.Digest][]byte
	blobs  []Blob
	images []Image
	rng    *rand.Rand
}

func newContent(seed uint64) *content {
	return &content{data: map[digest.Digest][]byte{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// add stores data as a blob of kind and returns its descriptor.
func (c *content) add(alg digest.Algorithm, mediaType string, data []byte, kind oci.Kind) ocispec.Descriptor {
	d := alg.FromBytes(data)
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
	if _, ok := c.data[d]; !ok {
		c.data[d] = data
	}
	c.blobs = append(c.blobs, Blob{Desc: desc, Kind: kind})
	return desc
}

// random returns n random bytes.
func (c *content) random(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := c.rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(c.rng.Uint32())
	}
	return b
}

func (c *content) layer(alg digest.Algorithm, mediaType string, n int) ocispec.Descriptor {
	return c.add(alg, mediaType, c.random(n), oci.KindLayer)
}

func (c *content) config(alg digest.Algorithm, mediaType, arch string) ocispec.Descriptor {
	cfg := fmt.Sprintf(`{"architecture":%q,"os":"linux","rootfs":{"type":"layers","diff_ids":[]},"salt":%d}`, arch, c.rng.Uint64())
	return c.add(alg, mediaType, []byte(cfg), oci.KindConfig)
}

func (c *content) manifest(alg digest.Algorithm, mediaType string, config ocispec.Descriptor, layers ...ocispec.Descriptor) ocispec.Descriptor {
	m := map[string]any{"schemaVersion": 2, "mediaType": mediaType, "config": config, "layers": layers}
	return c.add(alg, mediaType, mustJSON(m), oci.KindManifest)
}

func (c *content) index(alg digest.Algorithm, mediaType string, children ...ocispec.Descriptor) ocispec.Descriptor {
	m := map[string]any{"schemaVersion": 2, "mediaType": mediaType, "manifests": children}
	return c.add(alg, mediaType, mustJSON(m), oci.KindManifest)
}

func (c *content) image(ref string, desc ocispec.Descriptor) {
	c.images = append(c.images, Image{Ref: ref, Desc: desc})
}

func (c *content) open(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	b, ok := c.data[d]
	if !ok {
		return nil, fmt.Errorf("no blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func withPlatform(d ocispec.Descriptor, arch string) ocispec.Descriptor {
	d.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
	return d
}

const testPkg = `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"demo"}}`

// richContent is the round-trip fixture: an OCI index with two platform
// manifests, a Docker manifest list, layers shared across images, sha512
// blobs, a child manifest referenced by two indexes.
func richContent(t testing.TB) *content {
	c := newContent(42)
	base := c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 300<<10)
	shared := c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 70<<10+3)

	// OCI index, two platforms, sharing base
	amdCfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	amd := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, amdCfg, base, c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 1<<20+17), shared)
	armCfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "arm64")
	arm := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, armCfg, base, c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 513))
	idx := c.index(digest.SHA256, ocispec.MediaTypeImageIndex, withPlatform(amd, "amd64"), withPlatform(arm, "arm64"))
	c.image("docker.io/library/nginx:alpine", idx)

	// Docker manifest list sharing a layer with the OCI image
	dcfg := c.config(digest.SHA256, "application/vnd.docker.container.image.v1+json", "amd64")
	dm := c.manifest(digest.SHA256, oci.MediaTypeDockerManifest, dcfg, shared, c.layer(digest.SHA256, "application/vnd.docker.image.rootfs.diff.tar.gzip", 4096))
	dl := c.index(digest.SHA256, oci.MediaTypeDockerManifestList, withPlatform(dm, "amd64"))
	c.image("ghcr.io/octohelm/demo:v1", dl)

	// sha512 manifest, config and layer; an empty layer
	scfg := c.config(digest.SHA512, ocispec.MediaTypeImageConfig, "riscv64")
	sm := c.manifest(digest.SHA512, ocispec.MediaTypeImageManifest, scfg,
		c.layer(digest.SHA512, ocispec.MediaTypeImageLayerGzip, 20000),
		c.layer(digest.SHA256, ocispec.MediaTypeImageLayer, 0))
	img := sm
	img.Platform = &ocispec.Platform{OS: "linux", Architecture: "riscv64"}
	c.image("quay.io/x/sha512:1", img)

	// the amd64 manifest is also an image of its own
	c.image("docker.io/library/nginx:alpine-amd64", amd)
	return c
}

// write writes c with Write.
func (c *content) write(t testing.TB, o Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, []byte(testPkg), c.images, c.blobs, c.open, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// collector is a Handler keeping everything it gets.
type collector struct {
	pkg    []byte
	index  *ocispec.Index
	blobs  map[digest.Digest][]byte
	kinds  map[digest.Digest]oci.Kind
	descs  []ocispec.Descriptor
	calls  []string
	readN  int // read at most this many bytes of layers, then return nil (0: all)
	failOn digest.Digest
}

func (c *collector) Package(data []byte) error {
	c.calls = append(c.calls, "package")
	c.pkg = append([]byte(nil), data...)
	return nil
}

func (c *collector) Index(idx ocispec.Index) error {
	c.calls = append(c.calls, "index")
	c.index = &idx
	return nil
}

func (c *collector) Blob(_ context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	c.calls = append(c.calls, "blob "+string(desc.Digest))
	if c.blobs == nil {
		c.blobs, c.kinds = map[digest.Digest][]byte{}, map[digest.Digest]oci.Kind{}
	}
	if _, ok := c.blobs[desc.Digest]; ok {
		return fmt.Errorf("blob %s delivered twice", desc.Digest)
	}
	if desc.Digest == c.failOn {
		return fmt.Errorf("handler refuses %s", desc.Digest)
	}
	var data []byte
	var err error
	if c.readN > 0 && kind == oci.KindLayer {
		data = make([]byte, min(int64(c.readN), desc.Size))
		_, err = io.ReadFull(r, data)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	c.blobs[desc.Digest] = data
	c.kinds[desc.Digest] = kind
	c.descs = append(c.descs, desc)
	return nil
}

// entry is one tar entry of a hand-made archive.
type entry struct {
	hdr  tar.Header
	body []byte
}

func file(name string, body []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body)), Mode: 0o644, ModTime: time.Unix(0, 0)}, body: body}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(0, 0)}}
}

// entries lists the entries of a kubepkg.tgz.
func entries(t testing.TB, archive []byte) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{hdr: *hdr, body: body})
	}
}

// rawTar builds a tar of es, with the end marker unless noEnd.
func rawTar(t testing.TB, es []entry, noEnd bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		h.Format = tar.FormatUnknown
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if noEnd {
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// small is a minimal valid archive's entries: one image, one manifest, its
// config and two layers, as Write orders them.
type small struct {
	c        *content
	manifest ocispec.Descriptor
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor
	es       []entry
}

func newSmall(t testing.TB) *small {
	c := newContent(7)
	s := &small{c: c}
	s.layers = []ocispec.Descriptor{
		c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 5000),
		c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 1234),
	}
	s.config = c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	s.manifest = c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, s.config, s.layers...)
	c.image("docker.io/library/small:1", s.manifest)
	s.es = entries(t, c.write(t, Options{}))
	return s
}

// build gzips es into an archive.
func build(t testing.TB, es []entry) []byte { return gzipBytes(rawTar(t, es, false)) }

// indexOf finds the entry named name.
func indexOf(es []entry, name string) int {
	for i, e := range es {
		if e.hdr.Name == name {
			return i
		}
	}
	return -1
}

// indexJSONFor is an index.json listing descs under made-up names.
func indexJSONFor(descs ...ocispec.Descriptor) []byte {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for i, d := range descs {
		d.Annotations = map[string]string{AnnotationRefName: fmt.Sprintf("example.com/x:%d", i)}
		idx.Manifests = append(idx.Manifests, d)
	}
	return mustJSON(idx)
}

// blobEntries are file entries for blobs of c in the given order.
func (c *content) blobEntries(descs ...ocispec.Descriptor) []entry {
	var out []entry
	for _, d := range descs {
		out = append(out, file(BlobEntry(d.Digest), c.data[d.Digest]))
	}
	return out
}

func sortedNames(m map[digest.Digest][]byte) []string {
	var out []string
	for d := range m {
		out = append(out, string(d))
	}
	sort.Strings(out)
	return out
}
