package casfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/cas/castest"
)

func TestConformance(t *testing.T) {
	castest.Run(t, func(t *testing.T) cas.IngestStore {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFailedWritesLeaveNoTempFiles(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root)
	_, err := s.Put(context.Background(), cas.Info{Digest: digest.FromString("x"), Size: -1}, bytes.NewReader([]byte("y")))
	if err == nil {
		t.Fatal("mismatch accepted")
	}
	ents, _ := os.ReadDir(filepath.Join(root, "ingest"))
	if len(ents) != 0 {
		t.Fatalf("ingest holds %d files after a failed put", len(ents))
	}
}

func TestCheckFindsCorruptionAndRepairs(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root)
	ctx := context.Background()
	good := []byte("good blob")
	bad := []byte("bad blob")
	_, _ = s.Put(ctx, cas.Info{Digest: digest.FromBytes(good), Size: -1}, bytes.NewReader(good))
	dBad := digest.FromBytes(bad)
	_, _ = s.Put(ctx, cas.Info{Digest: dBad, Size: -1}, bytes.NewReader(bad))
	if err := os.WriteFile(s.Path(dBad), []byte("flipped!"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(root, "ingest", "upload-leftover"), []byte("partial"), 0o644)
	_ = os.WriteFile(filepath.Join(root, "blobs", "sha256", "not-a-digest"), []byte("?"), 0o644)

	var problems, info int
	n, err := s.Check(ctx, false, func(f Finding) {
		if f.Problem {
			problems++
		} else {
			info++
		}
	})
	if err != nil || n != 2 || problems != 2 || info != 1 {
		t.Fatalf("check: n=%d problems=%d info=%d err=%v", n, problems, info, err)
	}
	_, _ = s.Check(ctx, true, func(Finding) {})
	problems, info = 0, 0
	_, _ = s.Check(ctx, false, func(f Finding) {
		if f.Problem {
			problems++
		} else {
			info++
		}
	})
	if problems != 0 || info != 0 {
		t.Fatalf("after repair: problems=%d info=%d", problems, info)
	}
	if _, err := s.Stat(ctx, digest.FromBytes(good)); err != nil {
		t.Fatal("repair removed a good blob")
	}
}

// claimsVerified is a reader that says it checks its own bytes: the
// store must not take its word for it.
type claimsVerified struct {
	io.Reader
	info cas.Info
}

func (c claimsVerified) Expected() cas.Info { return c.info }

func TestPutTrustsOnlyVerifyingReaders(t *testing.T) {
	s, _ := Open(t.TempDir())
	ctx := context.Background()
	b := []byte("verified elsewhere")
	info := cas.Info{Digest: digest.FromBytes(b), Size: int64(len(b))}
	vr, err := cas.NewVerifyingReader(bytes.NewReader(b), info)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, info, vr); err != nil {
		t.Fatal(err)
	}
	// wrong bytes through a verifying reader: refused, nothing visible
	bad := []byte("wrong bytes")
	binfo := cas.Info{Digest: digest.FromString("other"), Size: int64(len(bad))}
	vr, _ = cas.NewVerifyingReader(bytes.NewReader(bad), binfo)
	if _, err := s.Put(ctx, binfo, vr); !errors.Is(err, cas.ErrDigestMismatch) {
		t.Fatalf("wrong bytes through a verifying reader: %v", err)
	}
	if _, err := s.Stat(ctx, binfo.Digest); err == nil {
		t.Fatal("blob of a failing reader became visible")
	}
	// any other reader claiming its bytes are verified is hashed as usual
	if _, err := s.Put(ctx, binfo, claimsVerified{Reader: bytes.NewReader(bad), info: binfo}); !errors.Is(err, cas.ErrDigestMismatch) {
		t.Fatalf("a reader's claim was taken for proof: %v", err)
	}
	if _, err := s.Stat(ctx, binfo.Digest); err == nil {
		t.Fatal("blob of a lying reader became visible")
	}
	// a verifying reader that expects something else is hashed as usual
	vr, _ = cas.NewVerifyingReader(bytes.NewReader(b), info)
	if _, err := s.Put(ctx, cas.Info{Digest: digest.FromString("x"), Size: -1}, vr); err == nil {
		t.Fatal("mismatching expectation accepted")
	}
}

// TestPublishBatch stages blobs (nothing is visible), publishes them as one
// batch (all visible, the temp files gone, OnCommit once per new blob) and
// aborts one that is never published.
func TestPublishBatch(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := Open(root)
	var committed []digest.Digest
	s.OnCommit = func(i cas.Info) { committed = append(committed, i.Digest) }
	if _, err := s.Put(ctx, cas.Info{Digest: digest.FromString("old"), Size: 3}, bytes.NewReader([]byte("old"))); err != nil {
		t.Fatal(err)
	}
	committed = nil
	var batch []*Staged
	var want []digest.Digest
	for i := range 20 {
		b := bytes.Repeat([]byte{byte(i)}, 1000*i+1)
		d := digest.FromBytes(b)
		st, err := s.Stage(ctx, cas.Info{Digest: d, Size: int64(len(b))}, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); err == nil {
			t.Fatalf("blob %d visible before Publish", i)
		}
		batch = append(batch, st)
		want = append(want, d)
	}
	// the same blob twice in a batch, and one already stored
	dup, err := s.Stage(ctx, cas.Info{Digest: want[3], Size: 3001}, bytes.NewReader(bytes.Repeat([]byte{3}, 3001)))
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.Stage(ctx, cas.Info{Digest: digest.FromString("old"), Size: 3}, bytes.NewReader([]byte("old")))
	if err != nil {
		t.Fatal(err)
	}
	batch = append(batch, dup, old)
	aborted, err := s.Stage(ctx, cas.Info{Digest: digest.FromString("never"), Size: 5}, bytes.NewReader([]byte("never")))
	if err != nil {
		t.Fatal(err)
	}
	aborted.Abort()
	if err := s.Publish(batch); err != nil {
		t.Fatal(err)
	}
	for i, d := range want {
		if info, err := s.Stat(ctx, d); err != nil || info.Size != int64(1000*i+1) {
			t.Fatalf("blob %d after Publish: %+v, %v", i, info, err)
		}
	}
	if _, err := s.Stat(ctx, digest.FromString("never")); err == nil {
		t.Fatal("an aborted blob was published")
	}
	if len(committed) != len(want) {
		t.Fatalf("OnCommit called %d times, want %d (once per new blob)", len(committed), len(want))
	}
	ents, _ := os.ReadDir(filepath.Join(root, "ingest"))
	if len(ents) != 0 {
		t.Fatalf("ingest holds %d files after the batch", len(ents))
	}
	// publishing again is a no-op
	if err := s.Publish(batch); err != nil {
		t.Fatal(err)
	}
}
