package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/oci"
)

// checker is a Handler checking the order of the calls and the content of
// every blob independently of the reader.
type checker struct {
	calls []string
	pkg   []byte
	index *ocispec.Index
	blobs map[digest.Digest][]byte
	err   error
}

func (c *checker) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, args...)
	}
}

func (c *checker) Package(data []byte) error {
	if len(c.calls) != 0 {
		c.fail("Package after %v", c.calls)
	}
	c.calls = append(c.calls, "package")
	c.pkg = append([]byte(nil), data...)
	return nil
}

func (c *checker) Index(idx ocispec.Index) error {
	if len(c.calls) != 1 {
		c.fail("Index after %v", c.calls)
	}
	c.calls = append(c.calls, "index")
	c.index = &idx
	return nil
}

func (c *checker) Blob(_ context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if len(c.calls) < 2 {
		c.fail("Blob after %v", c.calls)
	}
	c.calls = append(c.calls, "blob")
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != desc.Size || desc.Digest.Algorithm().FromBytes(data) != desc.Digest {
		c.fail("blob %s delivered with %d bytes hashing to %s", desc.Digest, len(data), desc.Digest.Algorithm().FromBytes(data))
	}
	if c.blobs == nil {
		c.blobs = map[digest.Digest][]byte{}
	}
	if _, ok := c.blobs[desc.Digest]; ok {
		c.fail("blob %s delivered twice", desc.Digest)
	}
	c.blobs[desc.Digest] = data
	return nil
}

// verify checks, after Read succeeded, that input really is a valid archive
// holding what the handler got, with the standard library's gzip and tar.
func (c *checker) verify(input []byte, sum *Summary) error {
	if c.err != nil {
		return c.err
	}
	if c.index == nil || c.pkg == nil || !bytes.Equal(c.pkg, sum.Package) || len(sum.Blobs) != len(c.blobs) {
		return fmt.Errorf("summary disagrees with the handler")
	}
	// every blob is referenced by index.json or by a delivered manifest, and
	// every image of index.json is present
	refs := map[digest.Digest]bool{}
	for _, m := range c.index.Manifests {
		refs[m.Digest] = true
		if c.blobs[m.Digest] == nil {
			return fmt.Errorf("index.json lists %s, not delivered", m.Digest)
		}
	}
	for _, data := range c.blobs {
		pm, err := oci.ParseManifest("", data)
		if err != nil {
			continue
		}
		for _, d := range pm.Manifests {
			refs[d.Digest] = true
		}
		for _, d := range pm.Layers {
			refs[d.Digest] = true
		}
		if pm.Config != nil {
			refs[pm.Config.Digest] = true
		}
		if pm.Subject != nil {
			refs[pm.Subject.Digest] = true
		}
	}
	for d := range c.blobs {
		if !refs[d] {
			return fmt.Errorf("blob %s is not referenced", d)
		}
	}
	var src io.Reader = bytes.NewReader(input)
	if bytes.HasPrefix(input, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return fmt.Errorf("stdlib gzip: %v", err)
		}
		src = zr
	}
	tr := tar.NewReader(src)
	files := 0
	names := map[string]int{}
	seed := false // a blob came before index.json: a seed layout
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("stdlib tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("stdlib tar: %s has type %c", hdr.Name, hdr.Typeflag)
		}
		files++
		name := strings.TrimPrefix(hdr.Name, "./")
		if files == 1 && name != PackageEntry {
			return fmt.Errorf("stdlib tar: first entry %s", hdr.Name)
		}
		if strings.HasPrefix(name, BlobsDir+"/") && names[IndexEntry] == 0 {
			seed = true
		}
		names[name]++
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fmt.Errorf("stdlib tar: %v", err)
		}
	}
	blobs := 0
	for n, k := range names {
		switch {
		case n == PackageEntry && k == 1:
		case (n == LayoutEntry || n == IndexEntry) && (k == 1 || seed):
		case n == DockerManifestEntry && seed:
		case strings.HasPrefix(n, BlobsDir+"/") && (k == 1 || seed):
			blobs++
		default:
			return fmt.Errorf("stdlib tar: %s %d times (seed layout: %v)", n, k, seed)
		}
	}
	if blobs != len(c.blobs) {
		return fmt.Errorf("stdlib tar: %d distinct blobs, %d delivered", blobs, len(c.blobs))
	}
	if !seed && (names[LayoutEntry] != 1 || names[IndexEntry] != 1) {
		return fmt.Errorf("stdlib tar: no oci-layout or index.json")
	}
	return nil
}

// FuzzRead: Read never panics, and never succeeds on something that is not a
// valid archive. raw inputs are tar streams gzipped before reading, so the
// fuzzer explores the tar level too.
func FuzzRead(f *testing.F) {
	s := newSmall(f)
	f.Add(build(f, s.es), false)
	f.Add(rawTar(f, s.es, false), true)
	f.Add(rawTar(f, s.es[:4], false), true)
	f.Add(rawTar(f, insert(s.es, 3, dir("blobs/"), dir("./blobs/sha256")), false), true)
	c := newContent(9)
	l := c.layer(digest.SHA512, ocispec.MediaTypeImageLayerGzip, 100)
	cfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "arm64")
	m := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg, l)
	idx := c.index(digest.SHA256, ocispec.MediaTypeImageIndex, m)
	head := []entry{file(PackageEntry, []byte(`{}`)), file(LayoutEntry, []byte(layoutJSON)), file(IndexEntry, indexJSONFor(idx))}
	f.Add(rawTar(f, append(head, c.blobEntries(m, idx, cfg, l)...), false), true)
	f.Add(rawTar(f, append(head, c.blobEntries(idx, cfg)...), false), true)
	// the seed's layouts, with small blobs: raw tar and, for the plain
	// tar layout, as it is
	for _, l := range seedtest.Layouts {
		sc := newContent(uint64(len(l)))
		lay := seedtest.NewBlob(ocispec.MediaTypeImageLayerGzip, sc.random(300))
		sm := seedtest.NewManifest(l == seedtest.KubepkgV01, "linux/amd64", seedtest.NewConfig(false, "linux/amd64", "x"), lay)
		sp := &seedtest.Package{Name: "s", Version: "1.0.0", Platforms: []string{"linux/amd64"},
			Images: []*seedtest.Image{seedtest.IndexImage("docker.io/library/s:1", "docker.io/library/s", "1", seedtest.NewIndex(false, []seedtest.Manifest{sm}), sm)}}
		f.Add(seedtest.Tar(seedtest.Entries(l, sp)), true)
		f.Add(seedtest.Tar(seedtest.Entries(l, sp)), false)
	}
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0}, false)
	f.Add([]byte("not an archive"), false)
	lim := Limits{MaxPackage: 1 << 16, MaxIndex: 1 << 16, MaxManifest: 1 << 16, MaxManifestBytes: 1 << 18}
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		input := data
		if raw {
			input = gzipBytes(data)
		}
		// ReadAt, taking every blob it offers, agrees with Read on the
		// bytes as they are (a plain tar is read in place) and gzipped
		// (one member: read as a stream)
		for _, in := range [][]byte{data, input} {
			k := &taker{}
			_, aerr := ReadAt(context.Background(), bytes.NewReader(in), int64(len(in)), k, lim)
			for d, verr := range k.verified {
				if verr != nil && aerr == nil {
					aerr = fmt.Errorf("taken blob %s: %w", d, verr)
				}
			}
			_, rerr := Read(context.Background(), bytes.NewReader(in), &checker{}, lim)
			if aerr == nil && rerr != nil && strings.Contains(rerr.Error(), "gzip checksum mismatch") {
				continue // ReadAt does not check a stored member's CRC-32 (its blobs' digests stand for it)
			}
			if (aerr == nil) != (rerr == nil) {
				t.Fatalf("ReadAt: %v; Read: %v", aerr, rerr)
			}
		}
		h := &checker{}
		sum, err := Read(context.Background(), bytes.NewReader(input), h, lim)
		if err != nil {
			return
		}
		if err := h.verify(input, sum); err != nil {
			t.Fatalf("Read succeeded on an invalid archive: %v", err)
		}
	})
}
