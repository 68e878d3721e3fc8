package registrypush_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/testenv"
)

// archiveFile writes arc to a file and opens it.
func archiveFile(t *testing.T, arc []byte) (*os.File, int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "demo.kubepkg.tgz")
	if err := os.WriteFile(path, arc, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, int64(len(arc))
}

// bigLayer is p's largest blob and the offset in arc of a byte in its
// middle (its bytes are in the archive as they are: crpe's stored member).
func bigLayer(t *testing.T, p *seedtest.Package, arc []byte) (seedtest.Blob, int) {
	t.Helper()
	var big seedtest.Blob
	for _, b := range p.Blobs() {
		if b.Desc.Size > big.Desc.Size {
			big = b
		}
	}
	mid := len(big.Data) / 2
	i := bytes.Index(arc, big.Data[mid:mid+4096])
	if i < 0 {
		t.Fatal("the big layer's bytes are not in the archive as they are")
	}
	return big, i
}

func checkTags(t *testing.T, tg registrypush.Target, p *seedtest.Package) {
	t.Helper()
	for _, im := range p.Images {
		repo, _ := tg.Repository(im.Name, registrypush.Nested)
		if got := manifestDigest(t, "http://"+tg.Host, repo, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("%s:%s is %q, want %s", repo, im.Tag, got, im.Top.Desc.Digest)
		}
	}
}

// TestPushAt: from a file, the big layers go up from their places in it
// (one PATCH each, no buffer) and the registry ends up as with Push; a
// second push sends nothing.
func TestPushAt(t *testing.T) {
	for name, arc := range map[string]func(t testing.TB, p *seedtest.Package) []byte{
		"crpe layout": testenv.CrpeArchive,
		"plain tar (octohelm/kubepkg)": func(_ testing.TB, p *seedtest.Package) []byte {
			return seedtest.Write(seedtest.Kubepkg2023, p)
		},
	} {
		t.Run(name, func(t *testing.T) {
			reg, tg := start(t)
			p := fullDemo("demo", 5)
			f, size := archiveFile(t, arc(t, p))
			o := registrypush.Options{Target: tg, ChunkSize: 1 << 20, Backoff: 1}
			res, err := registrypush.PushAt(context.Background(), f, size, o)
			if err != nil {
				t.Fatal(err)
			}
			checkTags(t, tg, p)
			// the one layer bigger than a chunk goes in one PATCH from the
			// file; the small blobs in one PUT each
			if n := reg.count("PATCH", "/blobs/uploads/"); n != 1 || res.BlobsPushed != 7 || len(res.TagsSet) != 2 {
				t.Errorf("%d PATCH requests, result %+v", n, res)
			}
			reg.reset()
			res, err = registrypush.PushAt(context.Background(), f, size, o)
			if err != nil || res.BlobsPushed != 0 || reg.count("PATCH", "") != 0 {
				t.Fatalf("second push: %v, %+v", err, res)
			}
		})
	}
}

// TestPushAtCorrupt: a byte of a big layer changed in the file fails the
// push: the layer's session is cancelled, never completed, and nothing is
// tagged.
func TestPushAtCorrupt(t *testing.T) {
	reg, tg := start(t)
	p := fullDemo("demo", 6)
	arc := testenv.CrpeArchive(t, p)
	big, off := bigLayer(t, p, arc)
	bad := bytes.Clone(arc)
	bad[off] ^= 0x40
	f, size := archiveFile(t, bad)
	_, err := registrypush.PushAt(context.Background(), f, size, registrypush.Options{Target: tg, ChunkSize: 1 << 20, Backoff: 1})
	if !errors.Is(err, archive.ErrExtentMismatch) {
		t.Fatalf("err = %v, want archive.ErrExtentMismatch", err)
	}
	if n := reg.count("PUT", "/manifests/"); n != 0 {
		t.Errorf("%d manifests put", n)
	}
	base := "http://" + tg.Host
	for _, im := range p.Images {
		repo, _ := tg.Repository(im.Name, registrypush.Nested)
		if got := manifestDigest(t, base, repo, im.Tag); got != "" {
			t.Errorf("%s:%s was tagged (%s)", repo, im.Tag, got)
		}
		if has(t, base, repo, string(big.Desc.Digest)) {
			t.Errorf("%s holds the corrupt layer", repo)
		}
	}
}

// TestPushAtResumes: PATCHes of a big layer answered 503 are sent again
// (here in a new session: go-containerregistry's registry answers no
// upload status; test/toregistry resumes in mid-layer against
// distribution), reading the file again; the layer is complete and right,
// hashed once.
func TestPushAtResumes(t *testing.T) {
	reg, tg := start(t)
	var mu sync.Mutex
	failed := 0
	reg.answer = func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPatch && failed < 3 && strings.HasPrefix(r.Header.Get("Content-Range"), "0-") {
			failed++
			return http.StatusServiceUnavailable
		}
		return 0
	}
	p := fullDemo("demo", 7)
	f, size := archiveFile(t, testenv.CrpeArchive(t, p))
	res, err := registrypush.PushAt(context.Background(), f, size, registrypush.Options{Target: tg, ChunkSize: 1 << 20, MaxPatch: 1 << 20, Backoff: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkTags(t, tg, p)
	if n := reg.count("PATCH", "/blobs/uploads/"); n < 5+3 {
		t.Errorf("%d PATCH requests, want the layer's 5 or more, and the 3 failed", n)
	}
	if failed != 3 || res.RequestsRetried < 3 {
		t.Errorf("%d PATCHes failed, result %+v", failed, res)
	}
}

func has(t *testing.T, base, repo, d string) bool {
	t.Helper()
	resp, err := http.Head(base + "/v2/" + repo + "/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
