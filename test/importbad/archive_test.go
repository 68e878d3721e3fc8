package importbad

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// blob is a blob of a fixture.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func toBlob(b testenv.Blob) blob { return blob{desc: b.Desc, data: b.Data} }

// fixture is a package with its images, ready to be put in an archive.
type fixture struct {
	name, version string
	platforms     string            // the octohelm.tech/platform annotation
	images        map[string]string // reference -> top digest
	tops          map[string]ocispec.Descriptor
	repos         map[string]string // reference -> repository (as the agent stores it)
	tags          map[string]string // reference -> tag

	manifests []blob // indexes first, then image manifests
	configs   []blob
	layers    []blob

	// absent are blobs an index references that the archive leaves out
	// (the children of platforms not exported)
	absent []blob

	pkgJSON   []byte
	indexJSON []byte
}

type fixtureOptions struct {
	// layerSizes of the single-platform image (default 4 KiB and 12 KiB)
	layerSizes []int
	// extraImages adds that many more single-platform images with the
	// same layer sizes (distinct random layers)
	extraImages int
	// noMulti leaves out the multi-platform image
	noMulti bool
}

// newFixture makes a package name@version of a single-platform image
// docker.io/importbad/<name>-app:<version> and (unless noMulti) a
// linux/amd64+linux/arm64 index ghcr.io/importbad/<name>-multi:<version>
// exported for linux/amd64 only (a sparse index: the arm64 image is absent).
func newFixture(t testing.TB, name, version string, o fixtureOptions) *fixture {
	t.Helper()
	if o.layerSizes == nil {
		o.layerSizes = []int{4 << 10, 12 << 10}
	}
	f := &fixture{name: name, version: version, platforms: "linux/amd64",
		images: map[string]string{}, tops: map[string]ocispec.Descriptor{}, repos: map[string]string{}, tags: map[string]string{}}
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	single := func(ref, repo string) {
		var ls []testenv.Blob
		for _, s := range o.layerSizes {
			l := fastLayer(t, s)
			ls = append(ls, testenv.Blob{Desc: l.desc, Data: l.data})
		}
		im := testenv.NewImage(t, amd64, ls, false)
		f.addImage(ref, repo, version, im.Manifest.Desc)
		f.manifests = append(f.manifests, toBlob(im.Manifest))
		f.configs = append(f.configs, toBlob(im.Config))
		for _, l := range ls {
			f.layers = append(f.layers, toBlob(l))
		}
	}
	single("docker.io/importbad/"+name+"-app:"+version, "docker.io/importbad/"+name+"-app")
	for i := 0; i < o.extraImages; i++ {
		r := "docker.io/importbad/" + name + "-app" + string(rune('a'+i))
		single(r+":"+version, r)
	}
	if !o.noMulti {
		la := testenv.RandomLayer(t, 6<<10, false)
		lb := testenv.RandomLayer(t, 6<<10, false)
		ia := testenv.NewImage(t, amd64, []testenv.Blob{la}, false)
		ib := testenv.NewImage(t, arm64, []testenv.Blob{lb}, false)
		idx := testenv.NewIndex([]testenv.Image{ia, ib}, false)
		ref := "ghcr.io/importbad/" + name + "-multi:" + version
		f.addImage(ref, "ghcr.io/importbad/"+name+"-multi", version, idx.Desc)
		// the index first, then its (exported) child
		f.manifests = append([]blob{toBlob(idx)}, f.manifests...)
		f.manifests = append(f.manifests, toBlob(ia.Manifest))
		f.configs = append(f.configs, toBlob(ia.Config))
		f.layers = append(f.layers, toBlob(la))
		f.absent = append(f.absent, toBlob(ib.Manifest), toBlob(ib.Config), toBlob(lb))
	}
	f.pkgJSON = f.packageJSON(nil)
	f.indexJSON = f.makeIndexJSON(nil)
	return f
}

func (f *fixture) addImage(ref, repo, tag string, d ocispec.Descriptor) {
	f.images[ref] = string(d.Digest)
	f.tops[ref] = d
	f.repos[ref] = repo
	f.tags[ref] = tag
}

// refs lists the references, sorted.
func (f *fixture) refs() []string {
	var rs []string
	for r := range f.images {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	return rs
}

// packageJSON is kubepkg.json; edit may change the object first.
func (f *fixture) packageJSON(edit func(map[string]any)) []byte {
	images := map[string]any{}
	for r, d := range f.images {
		images[r] = d
	}
	p := map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1",
		"kind":       "KubePkg",
		"metadata": map[string]any{
			"name":        f.name,
			"annotations": map[string]any{"octohelm.tech/platform": f.platforms},
		},
		"spec": map[string]any{
			"version": f.version,
			"images":  images,
			"manifests": map[string]any{
				f.name + ".default.configmap": map[string]any{
					"apiVersion": "v1", "kind": "ConfigMap",
					"metadata": map[string]any{"name": f.name},
					"data":     map[string]any{"version": f.version},
				},
			},
		},
	}
	if edit != nil {
		edit(p)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

// makeIndexJSON is index.json; edit may change the manifest list first.
func (f *fixture) makeIndexJSON(edit func([]map[string]any) []map[string]any) []byte {
	var ms []map[string]any
	for _, r := range f.refs() {
		d := f.tops[r]
		ms = append(ms, map[string]any{
			"mediaType": d.MediaType, "digest": d.Digest, "size": d.Size,
			"annotations": map[string]string{
				"io.containerd.image.name":          r,
				"org.opencontainers.image.ref.name": r,
			},
		})
	}
	if edit != nil {
		ms = edit(ms)
	}
	b, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex, "manifests": ms})
	if err != nil {
		panic(err)
	}
	return b
}

// allBlobs is every blob of the archive, in archive order.
func (f *fixture) allBlobs() []blob {
	var out []blob
	out = append(out, f.manifests...)
	out = append(out, f.configs...)
	return append(out, f.layers...)
}

func (f *fixture) totalBlobBytes() int64 {
	var n int64
	for _, b := range f.allBlobs() {
		n += b.desc.Size
	}
	return n
}

// entry is a tar entry to write. When data is shorter than hdr.Size the
// tar stream ends right after data (a header claiming more than follows).
type entry struct {
	hdr  tar.Header
	data []byte
}

var epoch = time.Unix(1700000000, 0)

func file(name string, data []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}, data: data}
}

func blobName(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }

func blobEntry(b blob) entry { return file(blobName(b.desc.Digest), b.data) }

// entries is the archive of f as crpe export writes it.
func (f *fixture) entries() []entry {
	es := []entry{
		file("kubepkg.json", f.pkgJSON),
		file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		file("index.json", f.indexJSON),
	}
	for _, b := range f.allBlobs() {
		es = append(es, blobEntry(b))
	}
	return es
}

// tarBytes writes es as a tar stream, with the end marker when end is set.
// An entry whose data is shorter than its size ends the stream there.
func tarBytes(t testing.TB, es []entry, end bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatalf("tar data %s: %v", h.Name, err)
			}
		}
		if h.Typeflag == tar.TypeReg && int64(len(e.data)) < h.Size {
			return buf.Bytes() // the header claims more than follows
		}
	}
	if end {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	} else if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gz compresses b as one gzip member.
func gz(b []byte) []byte {
	return gzLevel(b, gzip.DefaultCompression)
}

func gzLevel(b []byte, level int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, level)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// tgz is the archive of entries es.
func tgz(t testing.TB, es []entry) []byte { return gz(tarBytes(t, es, true)) }

// archive is f's valid archive.
func (f *fixture) archive(t testing.TB) []byte { return tgz(t, f.entries()) }

var (
	zerosOnce   sync.Once
	zerosMember []byte
)

const zerosMemberSize = 64 << 20

// zeros64M is one gzip member of 64 MiB of zeros (about 64 KiB).
func zeros64M() []byte {
	zerosOnce.Do(func() {
		zerosMember = gzLevel(make([]byte, zerosMemberSize), gzip.BestCompression)
	})
	return zerosMember
}

// bomb is prefix (a gzip stream) followed by gzip members holding n bytes of
// zeros (a multiple of 64 MiB): a few MiB that inflate to n bytes.
func bomb(prefix []byte, n int64) []byte {
	z := zeros64M()
	out := append([]byte{}, prefix...)
	for i := int64(0); i < n/zerosMemberSize; i++ {
		out = append(out, z...)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// readAllTar lists the entry names of a tgz (to check a fixture).
func readAllTar(b []byte) ([]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return names, err
		}
		names = append(names, h.Name)
	}
}

// storedGzip is b as one gzip member of stored (uncompressed) deflate
// blocks, as crpe export writes layers: much faster to make than
// compress/gzip's NoCompression.
func storedGzip(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/65535*5+32)
	out = append(out, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
	for i := 0; ; i += 65535 {
		end := min(i+65535, len(b))
		final := byte(0)
		if end == len(b) {
			final = 1
		}
		n := end - i
		out = append(out, final, byte(n), byte(n>>8), ^byte(n), ^byte(n>>8))
		out = append(out, b[i:end]...)
		if final == 1 {
			break
		}
	}
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(b))
	return binary.LittleEndian.AppendUint32(out, uint32(len(b)))
}

// fastLayer is a gzipped tar (stored blocks) of one file of size random
// bytes, as an OCI layer.
func fastLayer(t testing.TB, size int) blob {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	payload := make([]byte, size)
	_, _ = mrand.NewChaCha8(seed).Read(payload)
	tb := tarBytes(t, []entry{file("data.bin", payload)}, true)
	b := storedGzip(tb)
	return blob{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(b), Size: int64(len(b))}, data: b}
}
