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

type selfVerifying struct {
	r    *bytes.Reader
	info cas.Info
	fail bool
}

func (s *selfVerifying) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF && s.fail {
		return n, errors.New("content does not match its name")
	}
	return n, err
}
func (s *selfVerifying) Expected() cas.Info { return s.info }

func TestPutTrustsSelfVerifyingReaders(t *testing.T) {
	s, _ := Open(t.TempDir())
	ctx := context.Background()
	b := []byte("verified elsewhere")
	info := cas.Info{Digest: digest.FromBytes(b), Size: int64(len(b))}
	if _, err := s.Put(ctx, info, &selfVerifying{r: bytes.NewReader(b), info: info}); err != nil {
		t.Fatal(err)
	}
	// a failing end publishes nothing
	bad := []byte("wrong bytes")
	binfo := cas.Info{Digest: digest.FromString("other"), Size: int64(len(bad))}
	if _, err := s.Put(ctx, binfo, &selfVerifying{r: bytes.NewReader(bad), info: binfo, fail: true}); err == nil {
		t.Fatal("failing self-verifying reader accepted")
	}
	if _, err := s.Stat(ctx, binfo.Digest); err == nil {
		t.Fatal("blob of a failing reader became visible")
	}
	// a self-verifying reader that expects something else is hashed as usual
	if _, err := s.Put(ctx, cas.Info{Digest: digest.FromString("x"), Size: -1}, &selfVerifying{r: bytes.NewReader(b), info: info}); err == nil {
		t.Fatal("mismatching expectation accepted")
	}
}
