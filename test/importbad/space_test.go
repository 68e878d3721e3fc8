package importbad

import (
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// freeBytes is what statfs says an unprivileged writer may use at path.
func freeBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// requireInsufficientStorage checks a 507 INSUFFICIENT_STORAGE answer.
func requireInsufficientStorage(t *testing.T, a answer) {
	t.Helper()
	if a.err != nil {
		t.Fatalf("no answer: %v", a.err)
	}
	e, _ := a.apiError()
	if a.status != http.StatusInsufficientStorage || e.Code != "INSUFFICIENT_STORAGE" {
		t.Fatalf("got %s, want 507 INSUFFICIENT_STORAGE", a)
	}
	if e.Message == "" {
		t.Errorf("507 without a message: %s", a)
	}
}

// TestInsufficientStorage: an upload announcing more bytes than the data
// folder's file system has free is refused with 507 before its body is
// read; on a small tmpfs (when mounting one is permitted) also an upload
// without Content-Length that fills the disk midway is refused, cleaned up,
// and the agent goes on working.
func TestInsufficientStorage(t *testing.T) {
	testenv.Crpe(t)
	t.Run("huge-content-length", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		p := startAgent(t, data)
		f := newFixture(t, "huge", "1.0.0", fixtureOptions{})
		for _, cl := range []int64{1 << 60, math.MaxInt64, freeBytes(t, data) + 1<<30} {
			a := putBytes(t, p, []byte("tiny"), putOptions{contentLength: cl, timeout: 10 * time.Second})
			requireInsufficientStorage(t, a)
			if a.elapsed > 5*time.Second {
				t.Errorf("Content-Length %d: answered after %v", cl, a.elapsed)
			}
			t.Logf("Content-Length %d: %s", cl, a)
		}
		// a real archive announcing a size it cannot have
		a := putBytes(t, p, f.archive(t), putOptions{contentLength: 1 << 60})
		requireInsufficientStorage(t, a)
		requireHealthy(t, p)
		requireNothingOf(t, p, f)
		if n := len(storedBlobs(t, data)); n != 0 {
			t.Errorf("%d blobs stored by refused uploads", n)
		}
		// the agent still imports what fits
		mustImport(t, p, f.archive(t), putOptions{})
		requirePublished(t, p, f)
		stopAgent(t, p)
		requireFsckClean(t, "huge-content-length", data)
	})

	t.Run("tmpfs-64MiB", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs (not root, or not permitted here): %v: %s", err, strings.TrimSpace(string(out)))
		}
		t.Cleanup(func() { // runs after the agent is gone (cleanups run last-in first-out)
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
			}
		})
		data := filepath.Join(mnt, "data")
		p := startAgent(t, data)
		before := newFixture(t, "small", "1.0.0", fixtureOptions{})
		mustImport(t, p, before.archive(t), putOptions{})

		big := newFixture(t, "toobig", "1.0.0", fixtureOptions{layerSizes: []int{8 << 20, 8 << 20, 8 << 20, 8 << 20}, extraImages: 2})
		archive := storedGzip(tarBytes(t, big.entries(), true))
		t.Logf("archive of %d MiB, %d MiB free on the tmpfs", len(archive)>>20, freeBytes(t, data)>>20)

		// with its Content-Length: refused before the body is read
		a := putBytes(t, p, archive, putOptions{})
		requireInsufficientStorage(t, a)
		t.Logf("with Content-Length: %s (in %v)", a, a.elapsed.Round(time.Millisecond))
		requireNothingOf(t, p, big)
		if n := dirSize(data); n > 8<<20 {
			t.Errorf("the refused upload left %d bytes in the data folder", n)
		}

		// without Content-Length: the disk fills midway
		t.Run("chunked-fills-the-disk", func(t *testing.T) {
			a := putBytes(t, p, archive, putOptions{chunked: true})
			t.Logf("chunked: %s (in %v)", a, a.elapsed.Round(time.Millisecond))
			if a.err != nil {
				t.Fatalf("no answer to a chunked upload that fills the disk: %v", a.err)
			}
			if a.status < 400 {
				t.Fatalf("chunked upload bigger than the disk: %s", a)
			}
			requireAfterFull(t, p, data, before, big)
			if e, _ := a.apiError(); a.status != http.StatusInsufficientStorage || e.Code != "INSUFFICIENT_STORAGE" {
				t.Fatalf("an import without Content-Length that runs out of disk space midway is answered %d %s (%q) instead of 507 INSUFFICIENT_STORAGE: importer.AsError maps every error that is not an *archive.EntryError to 400 IMPORT_INVALID, so the agent blames the client's archive for its own full disk (and the message shows the agent's data path)", a.status, e.Code, e.Message)
			}
		})

		// crpe import --to streams through a pipe, without Content-Length
		t.Run("cli-fills-the-disk", func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "toobig.kubepkg.tgz")
			writeFile(t, file, archive)
			out, code := runCrpe(t, 60*time.Second, "import", file, "--to", p.URL, "--token", token)
			t.Logf("crpe import --to: exit %d: %s", code, strings.TrimSpace(out))
			if code == 0 {
				t.Fatalf("crpe import of an archive bigger than the agent's disk exited 0:\n%s", out)
			}
			requireAfterFull(t, p, data, before, big)
			if !strings.Contains(out, "507") || !strings.Contains(out, "INSUFFICIENT_STORAGE") {
				t.Fatalf("crpe import --to sends the archive through an io.Pipe without Content-Length, so the agent's free-space check never runs for it; the upload fills the agent's disk and the CLI reports the resulting 400 IMPORT_INVALID instead of 507 INSUFFICIENT_STORAGE: %s", strings.TrimSpace(out))
			}
		})

		// what was committed is verified content; what fits still imports
		other := newFixture(t, "after", "1.0.0", fixtureOptions{})
		mustImport(t, p, other.archive(t), putOptions{})
		requirePublished(t, p, other)
		requirePublished(t, p, before)
		stopAgent(t, p)
		requireFsckClean(t, "tmpfs", data)
	})
}

// requireAfterFull checks the agent after an import ran out of disk space.
func requireAfterFull(t *testing.T, p *testenv.Proc, data string, before, big *fixture) {
	t.Helper()
	requireHealthy(t, p)
	requireNothingOf(t, p, big)
	requirePublished(t, p, before)
	if left := ingestFiles(t, data); len(left) > 0 {
		t.Errorf("temp files left after the disk filled: %v", left)
	}
}
