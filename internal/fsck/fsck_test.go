package fsck_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/fsck"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
)

const repo = "docker.io/library/app"

// folder is a data folder holding one image, tagged 1.0 in repo: its
// manifest, config and two layers, all linked.
type folder struct {
	dir      string
	store    *casfs.Store
	manifest digest.Digest
	config   digest.Digest
	layers   []digest.Digest
}

func put(ctx context.Context, t *testing.T, store *casfs.Store, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	if _, err := store.Put(ctx, cas.Info{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func newFolder(ctx context.Context, t *testing.T) *folder {
	t.Helper()
	f := &folder{dir: t.TempDir()}
	var err error
	if f.store, err = casfs.Open(f.dir); err != nil {
		t.Fatal(err)
	}
	cfg := put(ctx, t, f.store, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	cfg.MediaType = ocispec.MediaTypeImageConfig
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg}
	m.SchemaVersion = 2
	for range 2 {
		l := put(ctx, t, f.store, random(4096))
		l.MediaType = ocispec.MediaTypeImageLayerGzip
		m.Layers = append(m.Layers, l)
		f.layers = append(f.layers, l.Digest)
	}
	body, _ := json.Marshal(m)
	md := put(ctx, t, f.store, body)
	f.manifest, f.config = md.Digest, cfg.Digest
	f.update(t, func(tx *repodb.Tx) error {
		for _, d := range append([]ocispec.Descriptor{cfg}, m.Layers...) {
			if err := tx.LinkBlob(repo, d.Digest, d.Size); err != nil {
				return err
			}
		}
		if err := tx.PutManifest(repo, md.Digest, repodb.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: md.Size}); err != nil {
			return err
		}
		return tx.SetTag(repo, "1.0", md.Digest)
	})
	return f
}

// update changes the folder's index (closed again before fsck runs: it
// waits for the lock of a process holding it).
func (f *folder) update(t *testing.T, fn func(tx *repodb.Tx) error) {
	t.Helper()
	db, err := repodb.Open(storage.IndexPath(f.dir), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func (f *folder) fsck(ctx context.Context, t *testing.T, repair bool) (fsck.Summary, []fsck.Finding) {
	t.Helper()
	var problems []fsck.Finding
	sum, err := fsck.Run(ctx, f.dir, storage.IndexPath(f.dir), repair, func(fd fsck.Finding) {
		if fd.Problem {
			problems = append(problems, fd)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Problems != len(problems) {
		t.Errorf("Summary.Problems = %d, %d reported", sum.Problems, len(problems))
	}
	return sum, problems
}

// found tells whether a problem names d (by its digest or its path) and
// says what.
func found(problems []fsck.Finding, d digest.Digest, what string) bool {
	for _, p := range problems {
		if (strings.Contains(p.Where, d.Encoded()) || strings.Contains(p.Message, d.Encoded())) && strings.Contains(p.Message, what) {
			return true
		}
	}
	return false
}

func context30s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCleanFolderIsClean(t *testing.T) {
	ctx := context30s(t)
	f := newFolder(ctx, t)
	sum, problems := f.fsck(ctx, t, false)
	if len(problems) > 0 {
		t.Fatalf("problems in a clean folder: %+v", problems)
	}
	if sum.Blobs != 4 || sum.Repos != 1 || sum.Manifests != 1 || sum.Tags != 1 {
		t.Errorf("Summary = %+v, want 4 blobs, 1 repository, 1 manifest, 1 tag", sum)
	}
}

// TestCorruptBlobIsFound: a layer whose bytes changed on disk is found;
// repaired, it is removed, and the next check finds the manifest and the
// link that need it.
func TestCorruptBlobIsFound(t *testing.T) {
	ctx := context30s(t)
	f := newFolder(ctx, t)
	bad := f.layers[1]
	p := f.store.Path(bad)
	_ = os.Chmod(p, 0o644)
	if err := os.WriteFile(p, random(4096), 0o644); err != nil {
		t.Fatal(err)
	}
	_, problems := f.fsck(ctx, t, false)
	if !found(problems, bad, "corrupt") || len(problems) != 1 {
		t.Fatalf("want one problem, the corrupt layer %s; got %+v", bad, problems)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal("a check without repair removed the blob")
	}

	_, problems = f.fsck(ctx, t, true)
	if len(problems) == 0 || !found(problems[:1], bad, "corrupt") || !problems[0].Repaired {
		t.Fatalf("repair: %+v", problems)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("the repaired blob is still there: %v", err)
	}
	// the blob gone, the manifest and the link that need it are problems
	// (the same run, and the next)
	for _, run := range [][]fsck.Finding{problems, nil} {
		if run == nil {
			_, run = f.fsck(ctx, t, false)
		}
		if !found(run, bad, "references missing blob") || !found(run, bad, "linked blob is missing") {
			t.Fatalf("the manifest and the link lack %s; got %+v", bad, run)
		}
	}
}

// TestDanglingTagIsFound: a tag whose manifest's bytes are gone, and a tag
// pointing at a manifest the index does not record, are each found.
func TestDanglingTagIsFound(t *testing.T) {
	t.Run("manifest bytes gone", func(t *testing.T) {
		ctx := context30s(t)
		f := newFolder(ctx, t)
		if err := f.store.Delete(ctx, f.manifest); err != nil {
			t.Fatal(err)
		}
		_, problems := f.fsck(ctx, t, false)
		if !found(problems, f.manifest, "manifest content unreadable") {
			t.Fatalf("the tagged manifest %s has no content; got %+v", f.manifest, problems)
		}
	})
	t.Run("manifest not recorded", func(t *testing.T) {
		ctx := context30s(t)
		f := newFolder(ctx, t)
		// damage the index API cannot make (SetTag wants a recorded
		// manifest): written with bbolt into repodb's layout,
		// repos/<name>/t/<tag> = digest
		ghost := digest.FromString("ghost")
		db, err := bolt.Open(storage.IndexPath(f.dir), 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("repos")).Bucket([]byte(repo)).Bucket([]byte("t")).Put([]byte("2.0"), []byte(ghost))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		sum, problems := f.fsck(ctx, t, false)
		if sum.Tags != 2 || !found(problems, ghost, "tag points at unrecorded manifest") || len(problems) != 1 {
			t.Fatalf("want one problem, tag 2.0 pointing at %s; got %+v (%+v)", ghost, problems, sum)
		}
		if !strings.Contains(problems[0].Where, repo+":2.0") {
			t.Errorf("the problem does not name the tag: %+v", problems[0])
		}
	})
}
