// Package casfs is the on-disk cas.Store: blobs live at
// <root>/blobs/<alg>/<hex>, in-progress writes at <root>/ingest/.
//
// Every write goes to a temp file in <root>/ingest (same file system), is
// hashed while streaming, made durable, and linked into place; the parent
// folder is fsynced after the link. A single write (Put, an upload) fsyncs
// its file; a batch (Stage then Publish: an import) is made durable with
// one sync of the file system. A blob is therefore never visible
// half-written, and a crash leaves at most a temp file behind, which Check
// reports as information and Clean removes.
package casfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

const copyBufSize = 1 << 20

// Store is a cas.IngestStore on a local folder.
type Store struct {
	root string
	// OnCommit, if set, is called after a blob was newly published;
	// OnDelete after one was deleted.
	OnCommit func(cas.Info)
	OnDelete func(cas.Info)
	seq      atomic.Uint64
}

var _ cas.IngestStore = (*Store)(nil)

// Open prepares root (creating its folders) and returns the store.
func Open(root string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "blobs/sha512", "ingest"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	return &Store{root: root}, nil
}

// Path is where the blob d lives (or would live). d must be validated.
func (s *Store) Path(d digest.Digest) string {
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), d.Encoded())
}

// IngestDir is the folder of in-progress writes.
func (s *Store) IngestDir() string { return filepath.Join(s.root, "ingest") }

func (s *Store) Stat(_ context.Context, d digest.Digest) (cas.Info, error) {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return cas.Info{}, err
	}
	fi, err := os.Stat(s.Path(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return cas.Info{}, fmt.Errorf("%w: %s", cas.ErrNotFound, d)
		}
		return cas.Info{}, err
	}
	return cas.Info{Digest: d, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

func (s *Store) Open(_ context.Context, d digest.Digest) (io.ReadSeekCloser, cas.Info, error) {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return nil, cas.Info{}, err
	}
	f, err := os.Open(s.Path(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, cas.Info{}, fmt.Errorf("%w: %s", cas.ErrNotFound, d)
		}
		return nil, cas.Info{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, cas.Info{}, err
	}
	return f, cas.Info{Digest: d, Size: fi.Size()}, nil
}

func (s *Store) Put(ctx context.Context, expected cas.Info, r io.Reader) (cas.Info, error) {
	f, info, err := s.write(ctx, expected, r)
	if err != nil || f == nil {
		return info, err
	}
	if err := s.publish(f, info); err != nil {
		os.Remove(f.Name())
		return cas.Info{}, err
	}
	return info, nil
}

// Staged is a verified blob in a closed temp file, not yet published:
// Store.Publish makes a batch of them durable and visible, Abort discards
// one. An importer stages blob after blob (the kernel starts writing each
// one out as soon as it is staged) and publishes them all at the end with
// one sync.
type Staged struct {
	s *Store
	// name is the temp file; "" for a blob that was already present, and
	// once published or aborted
	name string
	Info cas.Info
}

// Abort discards a blob not published.
func (st *Staged) Abort() {
	if st.name != "" {
		os.Remove(st.name)
		st.name = ""
	}
}

// Stage does what Put does short of publishing: the bytes are verified
// (or, from a *cas.VerifyingReader, whose clean end is the proof, not
// hashed again) and written to a temp file, whose write-out to the disk is
// started (not waited for) before it is closed.
func (s *Store) Stage(ctx context.Context, expected cas.Info, r io.Reader) (*Staged, error) {
	f, info, err := s.write(ctx, expected, r)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return &Staged{s: s, Info: info}, nil
	}
	startWritebackRange(f, 0, 0) // the whole file
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return &Staged{s: s, name: f.Name(), Info: info}, nil
}

// write verifies r's bytes into a temp file. It returns a nil file (and
// the stored blob's info) when the blob is already present.
func (s *Store) write(ctx context.Context, expected cas.Info, r io.Reader) (*os.File, cas.Info, error) {
	if expected.Digest != "" {
		if _, err := oci.ParseDigest(string(expected.Digest)); err != nil {
			return nil, cas.Info{}, err
		}
		if info, err := s.Stat(ctx, expected.Digest); err == nil {
			if expected.Size >= 0 && info.Size != expected.Size {
				return nil, cas.Info{}, fmt.Errorf("%w: %s is stored with %d bytes, expected %d", cas.ErrSizeMismatch, expected.Digest, info.Size, expected.Size)
			}
			return nil, info, nil
		}
	} else {
		expected.Size = -1
	}
	var v *cas.Verifier
	trusted := false
	if vr, ok := r.(*cas.VerifyingReader); ok && expected.Digest != "" && vr.Expected().Digest == expected.Digest &&
		(expected.Size < 0 || vr.Expected().Size == expected.Size) {
		trusted, expected = true, vr.Expected()
	} else {
		var err error
		if v, err = cas.NewVerifier(expected, digest.SHA256); err != nil {
			return nil, cas.Info{}, err
		}
	}
	f, err := s.tempFile("put")
	if err != nil {
		return nil, cas.Info{}, err
	}
	fail := func(err error) (*os.File, cas.Info, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, cas.Info{}, err
	}
	var w io.Writer = &flushWriter{f: f}
	if !trusted {
		w = io.MultiWriter(v, w)
	}
	buf, done := copyBuffer(expected.Size)
	n, err := fillCopy(w, ctxReader{ctx, r}, buf)
	done()
	if err != nil {
		return fail(err)
	}
	info := expected
	if trusted {
		if n != info.Size {
			return fail(fmt.Errorf("%w: got %d bytes, expected %d", cas.ErrSizeMismatch, n, info.Size))
		}
	} else if info, err = v.Verify(); err != nil {
		return fail(err)
	}
	return f, info, nil
}

// Publish makes staged blobs durable, then visible, as one batch: their
// bytes reach the disk with one sync of the store's file system (syncfs on
// Linux, which the kernel had already started for each file when it was
// staged; each file's fsync elsewhere), then each is linked into place and
// each blob folder is fsynced once. What a per-blob fsync guarantees holds
// for the batch: no blob is visible before its bytes are durable, and none
// is reported published before its name is. Every blob is tried; the first
// error is returned, and a blob that failed stays unpublished (its temp
// file is removed).
func (s *Store) Publish(staged []*Staged) error {
	var names []string
	for _, st := range staged {
		if st.name != "" {
			names = append(names, st.name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	if err := s.syncFiles(names); err != nil {
		for _, st := range staged {
			st.Abort()
		}
		return err
	}
	return s.place(staged)
}

// publish fsyncs and closes f, then links it into place: one blob, as Put
// and an upload's commit publish it.
func (s *Store) publish(f *os.File, info cas.Info) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return s.place([]*Staged{{s: s, name: f.Name(), Info: info}})
}

// place links the durable temp files of staged into place, fsyncs each
// blob folder that got a new name once and reports each new blob to
// OnCommit. Every blob is tried; the first error is returned, and a blob
// that failed stays unpublished (its temp file is removed).
func (s *Store) place(staged []*Staged) error {
	var first error
	dirs := map[string]bool{}
	var done []cas.Info
	for _, st := range staged {
		if st.name == "" {
			continue
		}
		name := st.name
		st.name = ""
		created, err := s.link(name, st.Info)
		if err != nil {
			os.Remove(name)
			if first == nil {
				first = err
			}
			continue
		}
		if created {
			dirs[filepath.Dir(s.Path(st.Info.Digest))] = true
			done = append(done, st.Info)
		}
	}
	for d := range dirs {
		syncDir(d)
	}
	if s.OnCommit != nil {
		for _, info := range done {
			s.OnCommit(info)
		}
	}
	return first
}

// link puts the durable temp file name in place as blob info.Digest and
// removes the temp name. created is false when the blob was there already
// (same bytes by definition).
func (s *Store) link(name string, info cas.Info) (created bool, err error) {
	dst := s.Path(info.Digest)
	// A hard link publishes without replacing: of concurrent writers of the
	// same blob exactly one creates it. File systems without hard links
	// (FAT on a phone's card) fall back to an atomic rename.
	err = os.Link(name, dst)
	switch {
	case err == nil:
		os.Remove(name)
		return true, nil
	case errors.Is(err, fs.ErrExist):
		os.Remove(name)
		return false, nil
	default:
		if _, serr := os.Stat(dst); serr == nil {
			os.Remove(name)
			return false, nil
		}
		if err := os.Rename(name, dst); err != nil {
			return false, err
		}
		return true, nil
	}
}

func (s *Store) Delete(_ context.Context, d digest.Digest) error {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return err
	}
	fi, _ := os.Stat(s.Path(d))
	if err := os.Remove(s.Path(d)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", cas.ErrNotFound, d)
		}
		return err
	}
	syncDir(filepath.Dir(s.Path(d)))
	if s.OnDelete != nil && fi != nil {
		s.OnDelete(cas.Info{Digest: d, Size: fi.Size()})
	}
	return nil
}

func (s *Store) Walk(ctx context.Context, fn func(cas.Info) error) error {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		dir := filepath.Join(s.root, "blobs", string(alg))
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if _, err := oci.ParseDigest(string(d)); err != nil || !e.Type().IsRegular() {
				continue // not a blob; Check reports it
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := fn(cas.Info{Digest: d, Size: fi.Size(), Modified: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) tempFile(kind string) (*os.File, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf("%s-%s-%d", kind, hex.EncodeToString(b[:]), s.seq.Add(1))
	return os.OpenFile(filepath.Join(s.IngestDir(), name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
}

// NewIngest starts an upload that may span several calls.
func (s *Store) NewIngest(ctx context.Context) (cas.Ingest, error) {
	f, err := s.tempFile("upload")
	if err != nil {
		return nil, err
	}
	return &ingest{s: s, f: f, fw: flushWriter{f: f}, h: digest.SHA256.Hash()}, nil
}

type ingest struct {
	s    *Store
	f    *os.File
	fw   flushWriter // f, with its write-out started as it grows
	size int64
	h    hash.Hash // sha256 of the bytes so far; nil once unknown
	// checked is what Verify found, while nothing was taken since
	checked cas.Info
}

func (in *ingest) ID() string  { return filepath.Base(in.f.Name()) }
func (in *ingest) Size() int64 { return in.size }

func (in *ingest) Append(r io.Reader) (int64, error) {
	start := in.size
	w := io.Writer(&in.fw)
	if in.h != nil {
		w = io.MultiWriter(&in.fw, in.h)
	}
	buf := make([]byte, copyBufSize)
	n, err := io.CopyBuffer(w, r, buf)
	if err != nil {
		// roll back to the size before this call; the running hash is lost
		in.rollback(start)
		return 0, err
	}
	in.size += n
	return n, nil
}

func (in *ingest) Write(p []byte) (int, error) {
	// a large write is hashed on another core while it goes to the file
	var hashed chan struct{}
	if in.h != nil && len(p) >= parallelHashMin {
		hashed = make(chan struct{})
		go func() { in.h.Write(p); close(hashed) }()
	}
	n, err := in.fw.Write(p)
	if hashed != nil {
		<-hashed
	} else if in.h != nil && err == nil {
		in.h.Write(p)
	}
	if err != nil {
		in.rollback(in.size)
		return 0, err
	}
	in.size += int64(n)
	return n, nil
}

// rollback cuts the ingest back to size bytes after a failed write; the
// running hash is lost.
func (in *ingest) rollback(size int64) {
	_ = in.f.Truncate(size)
	_, _ = in.f.Seek(size, io.SeekStart)
	in.fw.off, in.fw.pending = size, 0
	in.h = nil
}

// flushEvery is how many bytes of a file being written are left to the
// kernel before their write-out is started: the disk works while the
// bytes stream in, and the fsync (or the batch's syncfs) that makes the file
// durable has at most this much left to wait for.
const flushEvery = 8 << 20

// flushWriter writes to a temp file and starts the write-out of every
// flushEvery bytes (written from off on).
type flushWriter struct {
	f            *os.File
	off, pending int64
}

func (w *flushWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.pending += int64(n)
	if w.pending >= flushEvery {
		startWritebackRange(w.f, w.off, w.pending)
		w.off += w.pending
		w.pending = 0
	}
	return n, err
}

// parallelHashMin is the smallest write worth hashing on another goroutine.
const parallelHashMin = 64 << 10

func (in *ingest) Reader() (cas.ReaderAtCloser, error) { return os.Open(in.f.Name()) }

func (in *ingest) Commit(ctx context.Context, expected cas.Info) (cas.Info, error) {
	defer func() {
		in.f.Close()
		os.Remove(in.f.Name())
	}()
	got, err := in.Verify(ctx, expected)
	if err != nil {
		return got, err
	}
	if err := in.s.publish(in.f, got); err != nil {
		return cas.Info{}, err
	}
	return got, nil
}

// Verify checks the bytes taken so far against expected without publishing
// them (cas.VerifyingIngest): a pull-through cache releases a blob to its
// clients once verified, while the commit's fsync is still to come.
func (in *ingest) Verify(ctx context.Context, expected cas.Info) (cas.Info, error) {
	if _, err := oci.ParseDigest(string(expected.Digest)); err != nil {
		return cas.Info{}, err
	}
	if in.checked.Digest == expected.Digest && in.checked.Size == in.size {
		return in.checked, nil // verified before and nothing taken since
	}
	got := cas.Info{Size: in.size}
	if in.h != nil && expected.Digest.Algorithm() == digest.SHA256 {
		got.Digest = digest.NewDigest(digest.SHA256, in.h)
	} else {
		// the algorithm differs or the running hash was lost: hash the file
		h, _ := oci.NewHash(expected.Digest.Algorithm())
		if _, err := in.f.Seek(0, io.SeekStart); err != nil {
			return cas.Info{}, err
		}
		if _, err := io.CopyBuffer(h, ctxReader{ctx, in.f}, make([]byte, copyBufSize)); err != nil {
			return cas.Info{}, err
		}
		got.Digest = digest.NewDigest(expected.Digest.Algorithm(), h)
	}
	if expected.Size >= 0 && got.Size != expected.Size {
		return got, fmt.Errorf("%w: got %d bytes, expected %d", cas.ErrSizeMismatch, got.Size, expected.Size)
	}
	if got.Digest != expected.Digest {
		return got, fmt.Errorf("%w: got %s, expected %s", cas.ErrDigestMismatch, got.Digest, expected.Digest)
	}
	in.checked = got
	return got, nil
}

func (in *ingest) Cancel() error {
	in.f.Close()
	return os.Remove(in.f.Name())
}

// fillCopy copies r to w in writes of a full buffer: sources that return
// small reads (a tar in a gzip stream gives 32 KiB at a time) would
// otherwise cost a write system call each.
func fillCopy(w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// copyBufs recycles the copy buffers of Stage: an import of thousands of
// blobs allocated (and zeroed, and collected) a megabyte for each.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBuffer is a buffer to copy a blob of size bytes (-1: unknown) with:
// a small blob's own size, else a pooled megabyte; done returns it.
func copyBuffer(size int64) (buf []byte, done func()) {
	if size >= 0 && size < copyBufSize {
		return make([]byte, max(size, 1)), func() {}
	}
	bp := copyBufs.Get().(*[]byte)
	return *bp, func() { copyBufs.Put(bp) }
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) {
	if runtime.GOOS == "windows" {
		return
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
