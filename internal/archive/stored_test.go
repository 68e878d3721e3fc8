package archive

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestCRC32Combine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range [][2]int{{0, 0}, {0, 5}, {5, 0}, {1, 1}, {1000, 65535}, {65536, 3}, {7, 1 << 20}} {
		a, b := make([]byte, n[0]), make([]byte, n[1])
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.ChecksumIEEE(append(append([]byte(nil), a...), b...))
		if got := crc32Combine(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), int64(len(b))); got != want {
			t.Errorf("combine %v: got %08x, want %08x", n, got, want)
		}
	}
}

// arriving is a reader whose bytes come in odd-sized pieces, like a fetch
// in progress, and that may fail at some point.
type arriving struct {
	data   []byte
	piece  int
	off    int
	failAt int
}

func (a *arriving) Read(p []byte) (int, error) {
	if a.failAt > 0 && a.off >= a.failAt {
		return 0, errors.New("verification failed")
	}
	if a.off >= len(a.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), a.piece)], a.data[a.off:])
	a.off += n
	return n, nil
}

func (a *arriving) Close() error { return nil }

// Writing into a regular file (vectored writes) gives the same bytes as
// writing through the buffer, however the blobs' bytes arrive.
func TestStoredFramingIsIdentical(t *testing.T) {
	c := richContent(t)
	trusted := Options{Verified: func(digest.Digest) bool { return true }}
	want := c.write(t, trusted)
	for _, piece := range []int{1 << 20, 65535, 1000, 4001} {
		out, err := os.Create(filepath.Join(t.TempDir(), "out.tgz"))
		if err != nil {
			t.Fatal(err)
		}
		open := func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
			return &arriving{data: c.data[d], piece: piece}, nil
		}
		if err := Write(context.Background(), out, []byte(testPkg), c.images, c.blobs, open, trusted); err != nil {
			t.Fatal(err)
		}
		out.Close()
		got, err := os.ReadFile(out.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("pieces of %d: the archive differs from the one written through the buffer (%d vs %d bytes)", piece, len(got), len(want))
		}
		if _, err := Read(context.Background(), bytes.NewReader(got), &collector{}, Limits{}); err != nil {
			t.Fatalf("reading back: %v", err)
		}
	}
}

// A source that fails midway fails the write.
func TestSourceFailureStopsWrite(t *testing.T) {
	c := richContent(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "out.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	open := func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		a := &arriving{data: c.data[d], piece: 4096}
		if len(c.data[d]) > 1<<20 {
			a.failAt = 1 << 19
		}
		return a, nil
	}
	err = Write(context.Background(), out, []byte(testPkg), c.images, c.blobs, open, Options{Verified: func(digest.Digest) bool { return true }})
	if err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("got %v, want the source's error", err)
	}
}

// wrapped is a writer over a regular file that says so (atomicfile.File).
type wrapped struct{ *os.File }

func (w wrapped) OSFile() *os.File { return w.File }

// A wrapper naming its regular file (export's temp file) is written with
// vectored writes too, into the same bytes.
func TestStoredFramingThroughAWrapper(t *testing.T) {
	c := richContent(t)
	trusted := Options{Verified: func(digest.Digest) bool { return true }}
	want := c.write(t, trusted)
	out, err := os.Create(filepath.Join(t.TempDir(), "out.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if regularFile(wrapped{out}) != out {
		t.Fatal("the wrapper's file is not used")
	}
	if err := Write(context.Background(), wrapped{out}, []byte(testPkg), c.images, c.blobs, c.open, trusted); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the archive differs (%v)", err)
	}
}
