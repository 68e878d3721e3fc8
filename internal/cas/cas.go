// Package cas owns the content-addressed blob store contract that every part of
// crpe shares: the Store interface, its errors, and the verifying writer and
// reader used to check bytes while they stream (digests are validated by
// oci.ParseDigest).
//
// Implementations live in their own packages (casfs for disk) and must all pass
// the conformance suite in cas/castest.
package cas

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/oci"
)

// Info describes a stored blob.
type Info struct {
	Digest digest.Digest
	Size   int64
	// Modified is when the blob was stored, as Stat and Walk report it
	// (zero elsewhere, and when the store cannot tell).
	Modified time.Time
}

// Store is the blob store every part of crpe shares.
//
// Blobs are immutable and identified by digest. A blob is never visible
// half-written: Put verifies the size and digest while streaming and only
// then publishes the blob.
type Store interface {
	// Stat returns the blob's info or an error wrapping ErrNotFound.
	Stat(ctx context.Context, d digest.Digest) (Info, error)
	// Open returns a seekable reader of the blob. Disk stores return an
	// *os.File so that net/http can use sendfile.
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, Info, error)
	// Put stores the bytes of r as the blob described by expected. Size -1
	// means the size is not known in advance. A blob already present is not
	// written again (r is not read). On a digest or size mismatch nothing is
	// stored and the error wraps ErrDigestMismatch or ErrSizeMismatch.
	Put(ctx context.Context, expected Info, r io.Reader) (Info, error)
	// Delete removes the blob; deleting an absent blob wraps ErrNotFound.
	Delete(ctx context.Context, d digest.Digest) error
	// Walk calls fn for every stored blob, in no particular order.
	Walk(ctx context.Context, fn func(Info) error) error
}

// Errors shared by every Store implementation.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
)

// Verifier checks that the bytes written to it match an expected digest and
// size. It is an io.Writer so it can sit on an io.MultiWriter or TeeReader.
type Verifier struct {
	alg      digest.Algorithm
	h        hash.Hash
	n        int64
	expected Info
}

// NewVerifier returns a Verifier for expected; an empty expected.Digest means
// "compute with alg" and expected.Size -1 means the size is not checked.
func NewVerifier(expected Info, alg digest.Algorithm) (*Verifier, error) {
	if expected.Digest != "" {
		alg = expected.Digest.Algorithm()
	}
	h, err := oci.NewHash(alg)
	if err != nil {
		return nil, err
	}
	return &Verifier{alg: alg, h: h, expected: expected}, nil
}

func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	if v.expected.Size >= 0 && v.n > v.expected.Size {
		return 0, fmt.Errorf("%w: more than the expected %d bytes", ErrSizeMismatch, v.expected.Size)
	}
	return v.h.Write(p)
}

// Expected is what the bytes must be.
func (v *Verifier) Expected() Info { return v.expected }

// Size is the number of bytes written so far.
func (v *Verifier) Size() int64 { return v.n }

// Digest is the digest of the bytes written so far.
func (v *Verifier) Digest() digest.Digest { return digest.NewDigest(v.alg, v.h) }

// Verify checks the bytes written against the expectation and returns the
// info of what was written.
func (v *Verifier) Verify() (Info, error) {
	got := Info{Digest: v.Digest(), Size: v.n}
	if v.expected.Size >= 0 && v.n != v.expected.Size {
		return got, fmt.Errorf("%w: got %d bytes, expected %d", ErrSizeMismatch, v.n, v.expected.Size)
	}
	if v.expected.Digest != "" && got.Digest != v.expected.Digest {
		return got, fmt.Errorf("%w: got %s, expected %s", ErrDigestMismatch, got.Digest, v.expected.Digest)
	}
	return got, nil
}

// Ingester is implemented by stores that can take a blob in several calls, as
// the OCI chunked upload needs.
type Ingester interface {
	// NewIngest starts an empty ingest.
	NewIngest(ctx context.Context) (Ingest, error)
}

// IngestStore is a Store that also takes blobs in several calls.
type IngestStore interface {
	Store
	Ingester
}

// Ingest is a blob being written over several calls. It is not safe for
// concurrent use; callers serialize.
type Ingest interface {
	ID() string
	// Size is the number of bytes taken so far.
	Size() int64
	// Append writes all of r at the end of the ingest and returns how many
	// bytes it took. On error the ingest is truncated back to its size
	// before the call.
	Append(r io.Reader) (int64, error)
	// Write appends all of p (io.Writer); on error nothing of p is kept.
	Write(p []byte) (int, error)
	// Reader opens an independent reader of the bytes taken so far (and
	// those still to come). It stays readable after Commit or Cancel, until
	// closed, so a blob can be streamed to clients while it arrives.
	Reader() (ReaderAtCloser, error)
	// Commit verifies the bytes against expected (its Digest is required) and
	// publishes the blob. The ingest is gone afterwards, whatever the result.
	Commit(ctx context.Context, expected Info) (Info, error)
	// Cancel discards the ingest.
	Cancel() error
}

// VerifyingIngest is an Ingest that can check its bytes against expected
// before Commit publishes them (and pays for the fsync).
type VerifyingIngest interface {
	Ingest
	Verify(ctx context.Context, expected Info) (Info, error)
}

// ReaderAtCloser reads at offsets and is closed after use.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// VerifyingReader reads a blob through a Verifier: Read returns io.EOF only
// after exactly Expected().Size bytes hashing to Expected().Digest were
// read, and an error wrapping ErrSizeMismatch or ErrDigestMismatch
// otherwise. Only this package makes one (NewVerifyingReader), and its
// fields are its own: a store may take its clean EOF as proof and not hash
// the bytes a second time (casfs does), which it must never do on the word
// of any other reader.
type VerifyingReader struct {
	r   io.Reader
	v   *Verifier
	err error // sticky; io.EOF once verified
}

// NewVerifyingReader reads r, checking it against expected, whose digest and
// size are both required.
func NewVerifyingReader(r io.Reader, expected Info) (*VerifyingReader, error) {
	if expected.Digest == "" || expected.Size < 0 {
		return nil, fmt.Errorf("verifying reader: the digest and size are required, got %q and %d", expected.Digest, expected.Size)
	}
	v, err := NewVerifier(expected, "")
	if err != nil {
		return nil, err
	}
	return &VerifyingReader{r: r, v: v}, nil
}

// Read reads and hashes; see VerifyingReader.
func (vr *VerifyingReader) Read(p []byte) (int, error) {
	if vr.err != nil {
		return 0, vr.err
	}
	n, err := vr.r.Read(p)
	if n > 0 {
		if _, werr := vr.v.Write(p[:n]); werr != nil {
			vr.err = werr
			return 0, werr
		}
	}
	switch {
	case err == io.EOF:
		if _, verr := vr.v.Verify(); verr != nil {
			err = verr
		}
		vr.err = err
	case err != nil:
		vr.err = err
	}
	return n, err
}

// Expected is what the bytes must be.
func (vr *VerifyingReader) Expected() Info { return vr.v.Expected() }

// Err is the reader's error so far: nil while reading, io.EOF once every
// byte was read and verified.
func (vr *VerifyingReader) Err() error { return vr.err }

// ErrTooLarge is returned by ReadAll for a blob over its cap.
var ErrTooLarge = errors.New("blob too large")

// ReadAll reads a whole small blob (a manifest, a config) from s, refusing
// one of more than max bytes before reading it.
func ReadAll(ctx context.Context, s Store, d digest.Digest, max int64) ([]byte, error) {
	f, info, err := s.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size > max {
		return nil, fmt.Errorf("%w: %s has %d bytes, over %d", ErrTooLarge, d, info.Size, max)
	}
	b := make([]byte, info.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}
