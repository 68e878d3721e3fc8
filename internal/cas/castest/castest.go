// Package castest is the conformance suite every cas.IngestStore
// implementation runs: verification while streaming, nothing visible on
// failure, idempotent and concurrent puts, seekable reads, ingests.
package castest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

type failingReader struct {
	r     io.Reader
	after int
	n     int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n >= f.after {
		return 0, errors.New("connection reset")
	}
	if len(p) > f.after-f.n {
		p = p[:f.after-f.n]
	}
	n, err := f.r.Read(p)
	f.n += n
	return n, err
}

// Run runs the suite against stores made by newStore (a fresh, empty store
// each call).
func Run(t *testing.T, newStore func(t *testing.T) cas.IngestStore) {
	ctx := context.Background()

	t.Run("PutStatOpen", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 3<<20+17)
		d := digest.FromBytes(b)
		info, err := s.Put(ctx, cas.Info{Digest: d, Size: int64(len(b))}, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != d || info.Size != int64(len(b)) {
			t.Fatalf("info %+v", info)
		}
		st, err := s.Stat(ctx, d)
		if err != nil || st.Size != int64(len(b)) {
			t.Fatalf("stat %+v %v", st, err)
		}
		// garbage collection's grace period reads a blob's age from Stat
		// and Walk: a store that tells it tells it within the test's time
		if !st.Modified.IsZero() && (st.Modified.After(time.Now().Add(time.Minute)) || time.Since(st.Modified) > time.Hour) {
			t.Fatalf("stat of a blob just stored says it was modified at %v", st.Modified)
		}
		rc, oi, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if oi.Size != int64(len(b)) {
			t.Fatalf("open size %d", oi.Size)
		}
		if _, err := rc.Seek(1000, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		part := make([]byte, 100)
		if _, err := io.ReadFull(rc, part); err != nil || !bytes.Equal(part, b[1000:1100]) {
			t.Fatalf("seek read mismatch: %v", err)
		}
	})

	t.Run("SHA512", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 4096)
		d := digest.SHA512.FromBytes(b)
		if _, err := s.Put(ctx, cas.Info{Digest: d, Size: -1}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UnknownDigestComputed", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 100)
		info, err := s.Put(ctx, cas.Info{Size: -1}, bytes.NewReader(b))
		if err != nil || info.Digest != digest.FromBytes(b) {
			t.Fatalf("%+v %v", info, err)
		}
	})

	t.Run("DigestMismatchNothingVisible", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 1<<20)
		wrong := digest.FromBytes([]byte("other"))
		_, err := s.Put(ctx, cas.Info{Digest: wrong, Size: -1}, bytes.NewReader(b))
		if !errors.Is(err, cas.ErrDigestMismatch) {
			t.Fatalf("want digest mismatch, got %v", err)
		}
		assertEmpty(t, s)
	})

	t.Run("SizeMismatch", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 1000)
		d := digest.FromBytes(b)
		for _, size := range []int64{999, 1001} {
			_, err := s.Put(ctx, cas.Info{Digest: d, Size: size}, bytes.NewReader(b))
			if !errors.Is(err, cas.ErrSizeMismatch) {
				t.Fatalf("size %d: want size mismatch, got %v", size, err)
			}
		}
		assertEmpty(t, s)
	})

	t.Run("CutOffStream", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 2<<20)
		d := digest.FromBytes(b)
		_, err := s.Put(ctx, cas.Info{Digest: d, Size: int64(len(b))}, &failingReader{r: bytes.NewReader(b), after: 1 << 20})
		if err == nil {
			t.Fatal("cut-off stream accepted")
		}
		assertEmpty(t, s)
	})

	t.Run("InvalidDigest", func(t *testing.T) {
		s := newStore(t)
		for _, d := range []digest.Digest{"sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:../../../etc/passwd", digest.Digest("SHA256:" + digest.FromString("x").Encoded())} {
			if _, err := s.Put(ctx, cas.Info{Digest: d, Size: -1}, bytes.NewReader(nil)); !errors.Is(err, oci.ErrInvalidDigest) {
				t.Errorf("put %q: want invalid digest, got %v", d, err)
			}
			if _, err := s.Stat(ctx, d); !errors.Is(err, oci.ErrInvalidDigest) {
				t.Errorf("stat %q: want invalid digest, got %v", d, err)
			}
		}
	})

	t.Run("PresentNotRewritten", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 1000)
		d := digest.FromBytes(b)
		if _, err := s.Put(ctx, cas.Info{Digest: d, Size: 1000}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		// a reader that fails if read proves the second put does not read it
		if _, err := s.Put(ctx, cas.Info{Digest: d, Size: 1000}, &failingReader{r: bytes.NewReader(b), after: 0}); err != nil {
			t.Fatalf("second put of a present blob: %v", err)
		}
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 4<<20)
		d := digest.FromBytes(b)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Put(ctx, cas.Info{Digest: d, Size: int64(len(b))}, bytes.NewReader(b))
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		assertContent(t, s, d, b)
	})

	t.Run("NotFoundAndDelete", func(t *testing.T) {
		s := newStore(t)
		d := digest.FromString("absent")
		if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Fatalf("stat: %v", err)
		}
		if _, _, err := s.Open(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Fatalf("open: %v", err)
		}
		if err := s.Delete(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Fatalf("delete: %v", err)
		}
		b := []byte("hello")
		d = digest.FromBytes(b)
		if _, err := s.Put(ctx, cas.Info{Digest: d, Size: 5}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Fatal(err)
		}
		assertEmpty(t, s)
	})

	t.Run("IngestChunks", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 3<<20)
		d := digest.FromBytes(b)
		in, err := s.NewIngest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(b); off += 1 << 20 {
			if _, err := in.Append(bytes.NewReader(b[off : off+1<<20])); err != nil {
				t.Fatal(err)
			}
		}
		if in.Size() != int64(len(b)) {
			t.Fatalf("size %d", in.Size())
		}
		if _, err := in.Commit(ctx, cas.Info{Digest: d, Size: -1}); err != nil {
			t.Fatal(err)
		}
		assertContent(t, s, d, b)
	})

	t.Run("IngestWriteAndReader", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 1<<20)
		d := digest.FromBytes(b)
		in, err := s.NewIngest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := in.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		if _, err := in.Write(b[:1000]); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1000)
		if _, err := rd.ReadAt(got, 0); err != nil || !bytes.Equal(got, b[:1000]) {
			t.Fatalf("reader sees %v", err)
		}
		if _, err := in.Write(b[1000:]); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Commit(ctx, cas.Info{Digest: d, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		// still readable after commit
		got = make([]byte, 100)
		if _, err := rd.ReadAt(got, int64(len(b))-100); err != nil || !bytes.Equal(got, b[len(b)-100:]) {
			t.Fatalf("reader after commit: %v", err)
		}
		assertContent(t, s, d, b)
	})

	t.Run("IngestFailedAppendRollsBack", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 2<<20)
		d := digest.FromBytes(b)
		in, err := s.NewIngest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Append(bytes.NewReader(b[:1<<20])); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Append(&failingReader{r: bytes.NewReader(b[1<<20:]), after: 1000}); err == nil {
			t.Fatal("failing append succeeded")
		}
		if in.Size() != 1<<20 {
			t.Fatalf("size after failed append %d", in.Size())
		}
		if _, err := in.Append(bytes.NewReader(b[1<<20:])); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Commit(ctx, cas.Info{Digest: d, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		assertContent(t, s, d, b)
	})

	t.Run("IngestSHA512AndMismatch", func(t *testing.T) {
		s := newStore(t)
		b := randBytes(t, 5000)
		in, _ := s.NewIngest(ctx)
		_, _ = in.Append(bytes.NewReader(b))
		if _, err := in.Commit(ctx, cas.Info{Digest: digest.SHA512.FromBytes(b), Size: -1}); err != nil {
			t.Fatal(err)
		}
		in, _ = s.NewIngest(ctx)
		_, _ = in.Append(bytes.NewReader(b))
		if _, err := in.Commit(ctx, cas.Info{Digest: digest.FromString("nope"), Size: -1}); !errors.Is(err, cas.ErrDigestMismatch) {
			t.Fatalf("want mismatch, got %v", err)
		}
		if _, err := s.Stat(ctx, digest.FromString("nope")); !errors.Is(err, cas.ErrNotFound) {
			t.Fatal("mismatching ingest became visible")
		}
		in, _ = s.NewIngest(ctx)
		_, _ = in.Append(bytes.NewReader(b))
		if err := in.Cancel(); err != nil {
			t.Fatal(err)
		}
	})
}

func assertEmpty(t *testing.T, s cas.Store) {
	t.Helper()
	n := 0
	_ = s.Walk(context.Background(), func(cas.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("store holds %d blobs, want none", n)
	}
}

func assertContent(t *testing.T, s cas.Store, d digest.Digest, want []byte) {
	t.Helper()
	rc, _, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content of %s differs (%v)", d, err)
	}
}
