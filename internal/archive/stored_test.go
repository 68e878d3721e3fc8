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
	"sync"
	"testing"
	"time"

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

// fileBlob is a FileBlob over a file that a writer goroutine fills slowly,
// in odd-sized pieces, like a fetch in progress.
type fileBlob struct {
	f       *os.File
	size    int64
	crc     uint32
	known   bool // the CRC is told
	failAt  int64
	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	err     error
	off     int64 // of Read
}

func newFileBlob(t testing.TB, data []byte, piece int, known bool, failAt int64) *fileBlob {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blob")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fileBlob{f: r, size: int64(len(data)), crc: crc32.ChecksumIEEE(data), known: known, failAt: failAt}
	fb.cond = sync.NewCond(&fb.mu)
	go func() {
		defer w.Close()
		for off := 0; off < len(data); off += piece {
			end := min(off+piece, len(data))
			if _, err := w.Write(data[off:end]); err != nil {
				panic(err)
			}
			fb.mu.Lock()
			fb.written = int64(end)
			if failAt > 0 && fb.written >= failAt {
				fb.err = errors.New("verification failed")
			}
			fb.cond.Broadcast()
			fb.mu.Unlock()
			if fb.err != nil {
				return
			}
			if off%(64<<10) == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	return fb
}

func (fb *fileBlob) Read(p []byte) (int, error) {
	if fb.off >= fb.size {
		return 0, io.EOF
	}
	end, err := fb.Ready(context.Background(), fb.off)
	if err != nil {
		return 0, err
	}
	n, err := fb.f.ReadAt(p[:min(int64(len(p)), end-fb.off)], fb.off)
	fb.off += int64(n)
	return n, err
}
func (fb *fileBlob) Close() error   { return fb.f.Close() }
func (fb *fileBlob) File() *os.File { return fb.f }
func (fb *fileBlob) CRC32() (uint32, bool) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.crc, fb.known && fb.written == fb.size
}
func (fb *fileBlob) Ready(ctx context.Context, off int64) (int64, error) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	for fb.written < fb.size && fb.written-1 <= off && fb.err == nil {
		fb.cond.Wait()
	}
	if fb.err != nil {
		return 0, fb.err
	}
	if fb.written < fb.size {
		return fb.written - 1, nil // the last byte is held back until the end
	}
	return fb.written, nil
}

// The kernel-copy path (a FileBlob into a regular file) writes the same
// bytes as the path through memory, however the blob's bytes arrive.
func TestFileBlobCopyIsIdentical(t *testing.T) {
	c := richContent(t)
	trusted := Options{Verified: func(digest.Digest) bool { return true }}
	want := c.write(t, trusted)
	for _, tc := range []struct {
		name  string
		piece int
		known bool
	}{{"whole blocks", 65535, true}, {"odd pieces", 1000, true}, {"small pieces, CRC unknown", 4001, false}} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := os.Create(filepath.Join(t.TempDir(), "out.tgz"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			var crcs []digest.Digest
			open := func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
				return newFileBlob(t, c.data[d], tc.piece, tc.known, 0), nil
			}
			o := trusted
			o.CRC32 = func(d digest.Digest, crc uint32) {
				if crc != crc32.ChecksumIEEE(c.data[d]) {
					t.Errorf("CRC32 of %s: %08x", d, crc)
				}
				crcs = append(crcs, d)
			}
			if err := Write(context.Background(), out, []byte(testPkg), c.images, c.blobs, open, o); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(out.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("the kernel-copy archive differs from the one written through memory (%d vs %d bytes)", len(got), len(want))
			}
			if len(crcs) != countLayers(c) {
				t.Errorf("CRC32 told for %d layers, want %d", len(crcs), countLayers(c))
			}
			if _, err := Read(context.Background(), bytes.NewReader(got), &collector{}, Limits{}); err != nil {
				t.Fatalf("reading back: %v", err)
			}
		})
	}
}

// A FileBlob that fails midway fails the write: no tar end, no trailer.
func TestFileBlobFailureStopsWrite(t *testing.T) {
	c := richContent(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "out.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	open := func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		if len(c.data[d]) > 1<<20 {
			return newFileBlob(t, c.data[d], 4096, true, 1<<19), nil
		}
		return newFileBlob(t, c.data[d], 4096, true, 0), nil
	}
	err = Write(context.Background(), out, []byte(testPkg), c.images, c.blobs, open, Options{Verified: func(digest.Digest) bool { return true }})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("verification failed")) {
		t.Fatalf("got %v, want the source's error", err)
	}
}
