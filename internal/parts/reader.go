package parts

import (
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Next gives the reader the parts one after the other: the name the part
// came under and its bytes; io.EOF after the last.
type Next func() (name string, r io.Reader, err error)

// Reader streams parts as one archive. With a parts file, each part must
// come under its name, in order, with its size; its digest is checked when
// its last byte is read, and that byte (with the ones read with it) is only
// handed on when the digest matches, so a consumer that reaches the
// archive's end has read only verified parts. Without one (parts ordered by
// their .NNN suffix), only the names and the order are checked: the
// archive's own digests are what verify the bytes.
//
// A refusal is an *Error naming the part. Read, Close, Part and Fault may
// be called from different goroutines (an HTTP client reads a request body
// in its own).
type Reader struct {
	mu     sync.Mutex
	m      *Manifest // nil: no parts file
	next   Next
	reopen func(i int) (io.ReadCloser, error) // parts that can be read again (files), else nil
	size   int64                              // the whole, when known, else -1

	i     int    // the current part, -1 before the first
	name  string // its name
	cur   io.Reader
	n     int64 // bytes of the current part read
	h     hash.Hash
	base  string // without a parts file: the archive's name, from the first part's
	err   error
	close func() error
}

// NewReader streams the parts next gives. m, when not nil, is the parts file
// (Parse's result) the parts must match.
func NewReader(m *Manifest, next Next) *Reader {
	r := &Reader{m: m, next: next, i: -1, size: -1}
	if m != nil {
		r.size = m.Archive.Size
	}
	return r
}

// Size is the whole archive's size, or -1 when no parts file gives it.
func (r *Reader) Size() int64 { return r.size }

// Part is the name of the part being read ("" before the first).
func (r *Reader) Part() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.name
}

// Read reads the archive's bytes.
func (r *Reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur == nil {
			if err := r.start(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		want := int64(len(p))
		if r.m != nil {
			want = min(want, r.m.Parts[r.i].Size-r.n)
		}
		n, err := r.cur.Read(p[:want])
		r.n += int64(n)
		r.h.Write(p[:n])
		if r.m != nil && r.n == r.m.Parts[r.i].Size {
			// the part's last bytes: handed on only when the part is whole
			if err := r.end(true); err != nil {
				r.err = err
				return 0, err
			}
			return n, nil
		}
		switch {
		case err == io.EOF:
			if eerr := r.end(false); eerr != nil {
				r.err = eerr
				return 0, eerr
			}
			if n > 0 {
				return n, nil
			}
		case err != nil:
			r.err = &Error{Part: r.name, Reason: "reading it", Err: err}
			return n, r.err
		case n > 0:
			return n, nil
		}
	}
}

// start opens the next part, or ends the stream.
func (r *Reader) start() error {
	name, src, err := r.next()
	i := r.i + 1
	if errors.Is(err, io.EOF) {
		if r.m != nil && i < len(r.m.Parts) {
			return partErr(r.m.Parts[i].Name, "missing: the stream ended after %d of %d parts", i, len(r.m.Parts))
		}
		if i == 0 {
			return errors.New("parts: no part given")
		}
		return io.EOF
	}
	if err != nil {
		if name == "" && r.m != nil && i < len(r.m.Parts) {
			name = r.m.Parts[i].Name
		}
		return &Error{Part: name, Reason: "opening it", Err: err}
	}
	want := ""
	switch {
	case i >= MaxParts:
		return partErr(name, "more than %d parts", MaxParts)
	case r.m != nil && i >= len(r.m.Parts):
		return partErr(name, "not in the parts file, which lists %d parts", len(r.m.Parts))
	case r.m != nil:
		want = r.m.Parts[i].Name
	case i == 0:
		base, n, ok := SplitName(name)
		if !ok || n != 0 {
			return partErr(name, "not the first part of an archive (NAME.000)")
		}
		if err := checkName(name); err != nil {
			return &Error{Part: name, Err: err}
		}
		r.base, want = base, name
	default:
		want = PartName(r.base, i)
	}
	if name != want {
		return partErr(name, "given where %s belongs", want)
	}
	r.i, r.name, r.cur, r.n, r.h = i, name, src, 0, sha256.New()
	if c, ok := src.(io.Closer); ok {
		r.close = c.Close
	}
	return nil
}

// end checks the part just read: with a parts file, its size (after
// atSize, no byte must follow) and digest.
func (r *Reader) end(atSize bool) error {
	if r.m != nil {
		p := r.m.Parts[r.i]
		if atSize {
			var one [1]byte
			if n, _ := io.ReadFull(r.cur, one[:]); n > 0 {
				return partErr(p.Name, "longer than the %d bytes the parts file says", p.Size)
			}
		} else if r.n != p.Size {
			return partErr(p.Name, "truncated: %d bytes, the parts file says %d", r.n, p.Size)
		}
		if got := digest.NewDigest(digest.SHA256, r.h); got != p.Digest {
			return partErr(p.Name, "corrupt, or not this archive's part: its digest is %s, the parts file says %s", got, p.Digest)
		}
	}
	r.cur = nil
	if r.close != nil {
		err := r.close()
		r.close = nil
		if err != nil {
			return &Error{Part: r.name, Reason: "closing it", Err: err}
		}
	}
	return nil
}

// Close closes the part being read.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = errors.New("parts: reader closed")
	}
	if r.close != nil {
		err := r.close()
		r.close = nil
		return err
	}
	return nil
}

// Fault tells which part is at fault for err, an error of the archive's
// consumer: a part refused as it was read (an *Error in err's chain), or
// the part being read when err arose, if checking it whole against the
// parts file shows it corrupt (parts before it were checked already). The
// part is checked by reading it again when it is a file, else by reading
// the rest of it from its stream. Fault returns nil when no part is at
// fault: the archive itself is damaged, or no parts file says what a part
// should hold.
func (r *Reader) Fault(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	if r.reopen != nil {
		return r.verifyAgain()
	}
	return r.verifyRest()
}

// verifyAgain reads the part being read again, whole, and checks it.
func (r *Reader) verifyAgain() *Error {
	r.mu.Lock()
	i := r.i
	r.mu.Unlock()
	if i < 0 || r.m == nil {
		return nil
	}
	p := r.m.Parts[i]
	f, err := r.reopen(i)
	if err != nil {
		return &Error{Part: p.Name, Reason: "opening it", Err: err}
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, p.Size+1))
	switch {
	case err != nil:
		return &Error{Part: p.Name, Reason: "reading it", Err: err}
	case n != p.Size:
		return partErr(p.Name, "%d bytes, the parts file says %d", n, p.Size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != p.Digest {
		return partErr(p.Name, "corrupt, or not this archive's part: its digest is %s, the parts file says %s", got, p.Digest)
	}
	return nil
}

// verifyRest reads the rest of the part being read from its stream (at
// most what the parts file says is left) and checks the part.
func (r *Reader) verifyRest() *Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || r.cur == nil || r.err != nil {
		return nil
	}
	size := r.m.Parts[r.i].Size
	buf := make([]byte, 64<<10)
	for r.n < size {
		n, err := r.cur.Read(buf[:min(int64(len(buf)), size-r.n)])
		r.n += int64(n)
		r.h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil // cannot tell
		}
	}
	var pe *Error
	if err := r.end(r.n == size); errors.As(err, &pe) {
		r.err = pe
		return pe
	}
	return nil
}
