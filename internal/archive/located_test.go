package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/oci"
)

// locateContent is an image whose layers have the sizes that matter to the
// stored framing: empty, one byte, one block exactly, one byte over, and
// several MiB not a multiple of a block.
func locateContent() *content {
	c := newContent(14)
	var layers []ocispec.Descriptor
	for _, n := range []int{0, 1, 65535, 65536, 3<<20 + 12345, 511, 512, 513} {
		layers = append(layers, c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, n))
	}
	layers = append(layers, c.layer(digest.SHA512, ocispec.MediaTypeImageLayerGzip, 2*65535))
	cfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	m := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg, layers...)
	c.image("docker.io/library/locate:1", m)
	return c
}

// taker is a collector that takes every blob offered from the file (or
// those take says), reading each through an ExtentVerifier in odd-sized
// sections, the first one twice (as a resumed upload does).
type taker struct {
	collector
	take     func(ocispec.Descriptor) bool
	taken    map[digest.Digest][]byte
	verified map[digest.Digest]error
}

func (k *taker) BlobAt(_ context.Context, desc ocispec.Descriptor, kind oci.Kind, e *Extent) (bool, error) {
	if k.take != nil && !k.take(desc) {
		return false, nil
	}
	if k.taken == nil {
		k.taken, k.verified = map[digest.Digest][]byte{}, map[digest.Digest]error{}
	}
	v, err := NewExtentVerifier(e, desc)
	if err != nil {
		return false, err
	}
	var got []byte
	step := int64(100003)
	for off := int64(0); off < desc.Size; off += step {
		end := min(off+step, desc.Size)
		if off == 0 && end > 1 {
			// a first try cut short, then the resumed one from the start
			if _, err := io.CopyN(io.Discard, v.Section(0, end), (end+1)/2); err != nil {
				return false, err
			}
		}
		b, err := io.ReadAll(v.Section(off, end))
		if err != nil {
			return false, err
		}
		got = append(got, b...)
	}
	k.taken[desc.Digest] = got
	k.verified[desc.Digest] = v.Verify()
	return true, nil
}

// readAt reads arc with ReadAt and a taker.
func readAt(t *testing.T, arc []byte, take func(ocispec.Descriptor) bool) (*taker, *Summary, error) {
	t.Helper()
	k := &taker{take: take}
	sum, err := ReadAt(context.Background(), bytes.NewReader(arc), int64(len(arc)), k, Limits{})
	return k, sum, err
}

// checkTaken checks that ReadAt gave every blob of c once, the layers of
// the stored member from the file with their exact bytes (verified), the
// rest through Blob, and the same summary as Read.
func checkTaken(t *testing.T, c *content, arc []byte, wantTaken int) {
	t.Helper()
	k, sum, err := readAt(t, arc, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := readArchive(arc, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Blobs) != len(want.Blobs) || sum.Bytes != want.Bytes {
		t.Fatalf("ReadAt took %d blobs (%d bytes), Read %d (%d)", len(sum.Blobs), sum.Bytes, len(want.Blobs), want.Bytes)
	}
	for d, b := range k.taken {
		if !bytes.Equal(b, c.data[d]) {
			t.Errorf("taken blob %s: wrong bytes", d)
		}
		if err := k.verified[d]; err != nil {
			t.Errorf("taken blob %s: %v", d, err)
		}
		if _, both := k.blobs[d]; both {
			t.Errorf("blob %s both taken and given to Blob", d)
		}
	}
	for d, b := range k.blobs {
		if !bytes.Equal(b, c.data[d]) {
			t.Errorf("blob %s: wrong bytes", d)
		}
	}
	if len(k.taken) != wantTaken || len(k.taken)+len(k.blobs) != len(sum.Blobs) {
		t.Fatalf("%d taken from the file, %d through Blob, %d in all; want %d taken", len(k.taken), len(k.blobs), len(sum.Blobs), wantTaken)
	}
}

// layers counts c's layers of at least a byte (an empty one is read as a
// stream: nothing to take), and configs too with withConfigs.
func layers(c *content, withConfigs bool) (n int) {
	for _, b := range c.blobs {
		if b.Desc.Size > 0 && (b.Kind == oci.KindLayer || withConfigs && b.Kind == oci.KindConfig) {
			n++
		}
	}
	return n
}

func TestReadAt(t *testing.T) {
	c := locateContent()
	arc := c.write(t, Options{})
	t.Run("crpe layout", func(t *testing.T) { checkTaken(t, c, arc, layers(c, false)) })
	t.Run("rich", func(t *testing.T) {
		c := richContent(t)
		checkTaken(t, c, c.write(t, Options{}), layers(c, false))
	})
	t.Run("file", func(t *testing.T) { // Write's writev path, read from an *os.File
		path := filepath.Join(t.TempDir(), "a.kubepkg.tgz")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := Write(context.Background(), f, []byte(testPkg), c.images, c.blobs, c.open, Options{}); err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		k := &taker{}
		if _, err := ReadAt(context.Background(), f, fi.Size(), k, Limits{}); err != nil {
			t.Fatal(err)
		}
		if len(k.taken) != layers(c, false) {
			t.Fatalf("%d taken", len(k.taken))
		}
	})
	t.Run("plain tar", func(t *testing.T) {
		// octohelm/kubepkg's: every blob in place, configs too
		checkTaken(t, c, rawTar(t, entries(t, arc), false), layers(c, true))
	})
	t.Run("one gzip member", func(t *testing.T) {
		// the phone app's: nothing in place, all read as a stream
		checkTaken(t, c, gzipBytes(rawTar(t, entries(t, arc), false)), 0)
	})
	t.Run("not taken", func(t *testing.T) {
		k, _, err := readAt(t, arc, func(ocispec.Descriptor) bool { return false })
		if err != nil || len(k.taken) != 0 || len(k.blobs) != len(c.blobs) {
			t.Fatalf("%v: %d taken, %d through Blob", err, len(k.taken), len(k.blobs))
		}
	})
	t.Run("plain handler", func(t *testing.T) {
		h := &collector{}
		if _, err := ReadAt(context.Background(), bytes.NewReader(arc), int64(len(arc)), h, Limits{}); err != nil || len(h.blobs) != len(c.blobs) {
			t.Fatalf("%v: %d blobs", err, len(h.blobs))
		}
	})
}

// storedOffset is the file offset of a byte in the middle of the biggest
// layer of arc (in its stored member), found by its content.
func storedOffset(t *testing.T, c *content, arc []byte) (digest.Digest, int) {
	t.Helper()
	var big digest.Digest
	for d, b := range c.data {
		if big == "" || len(b) > len(c.data[big]) {
			big = d
		}
	}
	b := c.data[big]
	mid := len(b) / 2
	i := bytes.Index(arc, b[mid:mid+4096])
	if i < 0 {
		t.Fatal("the layer's bytes are not in the archive as they are")
	}
	return big, i
}

// TestReadAtRefuses: what ReadAt does not read is still checked by whoever
// takes it, and what it reads it checks as Read does.
func TestReadAtRefuses(t *testing.T) {
	c := locateContent()
	arc := c.write(t, Options{})

	t.Run("flipped byte in a taken layer", func(t *testing.T) {
		big, off := storedOffset(t, c, arc)
		bad := bytes.Clone(arc)
		bad[off] ^= 0x40
		k, _, err := readAt(t, bad, nil)
		if err != nil {
			t.Fatalf("ReadAt: %v (the layer is the taker's to check)", err)
		}
		if err := k.verified[big]; !errors.Is(err, ErrExtentMismatch) {
			t.Fatalf("Verify = %v, want ErrExtentMismatch", err)
		}
		// the same byte read as a stream is found by the reader
		if _, _, err := readAt(t, bad, func(ocispec.Descriptor) bool { return false }); err == nil {
			t.Fatal("ReadAt reading the corrupt layer itself succeeded")
		}
	})
	t.Run("flipped byte in a tar header of the stored member", func(t *testing.T) {
		big, _ := storedOffset(t, c, arc)
		name := []byte(BlobEntry(big))
		i := bytes.LastIndex(arc, name[len(name)-20:])
		if i < 0 {
			t.Fatal("entry name not found")
		}
		bad := bytes.Clone(arc)
		bad[i] ^= 0x01
		if _, _, err := readAt(t, bad, nil); err == nil {
			t.Fatal("a corrupt tar header was read")
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{len(arc) - 1, len(arc) - 8, len(arc) - 600, len(arc) / 2, len(arc) / 3} {
			if _, _, err := readAt(t, arc[:n], nil); err == nil {
				t.Fatalf("truncated at %d of %d: read", n, len(arc))
			}
		}
	})
	t.Run("length in the trailer", func(t *testing.T) {
		bad := bytes.Clone(arc)
		bad[len(bad)-1] ^= 0x01 // ISIZE's top byte
		_, _, err := readAt(t, bad, nil)
		wantEntryError(t, err, "", "gzip checksum")
	})
	t.Run("stored block length", func(t *testing.T) {
		// LEN and NLEN disagree in a block of the stored member: it is read
		// by the gzip reader, which refuses it
		big, off := storedOffset(t, c, arc)
		_ = big
		bad := bytes.Clone(arc)
		// the stored block holding off starts at a multiple of 65540 bytes
		// past the member's first block; find its header by walking back
		for j := off; j > 5; j-- {
			if bad[j-5] == 0 && bad[j-4] == 0xff && bad[j-3] == 0xff && bad[j-2] == 0 && bad[j-1] == 0 {
				bad[j-2] ^= 0xff
				break
			}
		}
		if _, _, err := readAt(t, bad, nil); err == nil {
			t.Fatal("a corrupt stored block was read")
		}
	})
}
