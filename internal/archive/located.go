package archive

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/klauspost/compress/gzip"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/oci"
)

// ExtentHandler is a Handler that can take a blob from its place in the
// archive file rather than from the stream (ReadAt offers them): it can read
// several at once, at the speed of the file, while Read goes on.
type ExtentHandler interface {
	Handler
	// BlobAt offers a config or a layer whose bytes lie in the file at e,
	// before Blob would be called. Taking it (true) makes the handler
	// responsible for reading e and checking its bytes against desc.Digest
	// and desc.Size before it uses them (ReadExtent does): Read moves past
	// the bytes without reading them, and counts the blob as taken. false
	// gives it to Blob as usual.
	BlobAt(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, e *Extent) (bool, error)
}

// ErrExtentMismatch tells that bytes read through an Extent do not match the
// blob's digest or size: the file is corrupt, or changed while it was read.
var ErrExtentMismatch = errors.New("archive: the blob's bytes in the file do not match its digest")

// ReadAt is Read over an archive of size bytes read at offsets (a file).
//
// With an ExtentHandler, and an archive in crpe's own layout (a compressed
// gzip member, then one of stored deflate blocks: Write's) or a plain tar
// (octohelm/kubepkg's), the configs and layers whose bytes lie in the file
// as they are are offered to BlobAt with their place: those it takes are not
// read by Read, which seeks past them (archive/tar does when an entry is left
// unread). Everything else is read and checked as Read does, with one
// difference: the CRC-32 of the stored member is not checked (its blobs'
// SHA-256 digests are, by Read or by the handler; its length is). Any other
// gzip layout is read as a stream.
func ReadAt(ctx context.Context, ra io.ReaderAt, size int64, h Handler, lim Limits) (*Summary, error) {
	if _, ok := h.(ExtentHandler); !ok {
		return Read(ctx, io.NewSectionReader(ra, 0, size), h, lim)
	}
	rd := newReader(ctx, h, lim)
	if err := rd.runAt(ra, size); err != nil {
		if cerr := ctx.Err(); cerr != nil && !isViolation(err) {
			return nil, cerr
		}
		return nil, err
	}
	return rd.sum, nil
}

// runAt reads the archive in ra through a locStream.
func (rd *reader) runAt(ra io.ReaderAt, size int64) error {
	var magic [2]byte
	if n, _ := ra.ReadAt(magic[:], 0); n < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		// a plain tar is read in place (anything else is refused by run)
		var head [512]byte
		if n, _ := ra.ReadAt(head[:], 0); n == 512 && string(head[257:262]) == "ustar" {
			ls := &locStream{ctx: rd.ctx, ra: ra, size: size, plain: true, inStored: true, end: size, blk: storedBlock{n: size}}
			rd.loc = ls
			return rd.readTar(ls, func() io.Reader { return ls })
		}
		return rd.run(io.NewSectionReader(ra, 0, size))
	}
	cr := &countingByteReader{br: bufio.NewReaderSize(io.NewSectionReader(ra, 0, size), copyBufferSize)}
	gz, err := gzip.NewReader(cr)
	if err != nil {
		return entryErr("", err, "not a gzip stream")
	}
	gz.Multistream(false)
	rd.gzipped = true
	ls := &locStream{ctx: rd.ctx, ra: ra, size: size, gz: gz, cr: cr}
	rd.loc = ls
	return rd.readTar(ls, ls.rest)
}

// offerExtent offers blob k, whose size bytes are next in the tar stream, to
// an ExtentHandler when they lie in the file as they are; true when it took
// them.
func (rd *reader) offerExtent(entry string, k *knownBlob, kind oci.Kind) (bool, error) {
	eh, ok := rd.h.(ExtentHandler)
	if !ok || rd.loc == nil {
		return false, nil
	}
	e := rd.loc.extent(k.desc.Size)
	if e == nil {
		return false, nil
	}
	took, err := eh.BlobAt(rd.ctx, k.desc, kind, e)
	if err != nil {
		return false, entryErr(entry, err, "taking the blob from the file")
	}
	if took {
		rd.took(k.desc)
	}
	return took, nil
}

// Extent is where one blob's bytes are in the archive file: the pieces of
// its stored blocks (one piece in a plain tar), in order. It reads them
// unchecked; ReadExtent checks them.
type Extent struct {
	ra   io.ReaderAt
	size int64
	at   []int64 // blob offset of each piece (ascending, at[0] = 0)
	file []int64 // file offset of each piece
	n    []int64 // length of each piece
}

// Size is the blob's size.
func (e *Extent) Size() int64 { return e.size }

// Pieces is the number of file ranges the blob's bytes are in.
func (e *Extent) Pieces() int { return len(e.at) }

// ReadAt reads the blob's bytes from off, skipping the block headers.
func (e *Extent) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("archive: negative offset")
	}
	if off >= e.size {
		return 0, io.EOF
	}
	i := sort.Search(len(e.at), func(i int) bool { return e.at[i] > off }) - 1
	done := 0
	for done < len(p) && i < len(e.at) {
		skip := off - e.at[i]
		k := int(min(int64(len(p)-done), e.n[i]-skip))
		m, err := e.ra.ReadAt(p[done:done+k], e.file[i]+skip)
		done += m
		off += int64(m)
		if m < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
		i++
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// countingByteReader is a flate.Reader counting what the gzip reader
// consumed: with an io.ByteReader, it reads no further than the member's
// trailer, so n is the file offset of the next member.
type countingByteReader struct {
	br *bufio.Reader
	n  int64
}

func (c *countingByteReader) Read(p []byte) (int, error) {
	n, err := c.br.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingByteReader) ReadByte() (byte, error) {
	b, err := c.br.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// storedBlock is a block of the stored member: the offset of its content in
// the member's bytes, its content's file offset, its length, and whether it
// is the last.
type storedBlock struct {
	u, f, n int64
	final   bool
}

// maxTinyBlocks bounds the stored blocks of less than 512 bytes a stored
// member may have for ReadAt to follow it block by block (a system call
// each); past it, it is read as a stream. Write's blocks are full but at
// the ends of entries.
const maxTinyBlocks = 1 << 16

// locStream is the tar stream of ReadAt: the first gzip member decompressed,
// then, when the next member is one of stored blocks, its bytes read in
// place through their block headers and seekable (so that archive/tar moves
// past an entry left unread without reading it); when it is not, the rest
// decompressed member by member as Read does. A plain tar is read in place.
type locStream struct {
	ctx  context.Context
	ra   io.ReaderAt
	size int64
	gz   *gzip.Reader
	cr   *countingByteReader
	mem  *memberReader // the rest, when it is not a stored member
	// plain: the file is a plain tar, in place (blk is all of it)
	plain bool

	pos      int64 // offset in the tar stream
	head     int64 // decompressed size of the first member
	inStored bool
	blk      storedBlock // the stored block holding pos (or the last one before it)
	ahead    storedBlock // the last block extent reached (the cursor jumps there when it can)
	end      int64       // decompressed size of the stored member
	isize    uint32      // its trailer's length (modulo 2^32)
}

// Read reads the tar stream.
func (s *locStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.mem != nil {
		n, err := s.mem.Read(p)
		s.pos += int64(n)
		return n, err
	}
	if !s.inStored {
		n, err := s.gz.Read(p)
		s.pos += int64(n)
		if err != io.EOF {
			return n, err
		}
		// the first member ends, its CRC-32 checked by the gzip reader
		if !s.scan(s.cr.n) {
			s.mem = &memberReader{ctx: s.ctx, br: s.cr.br, gz: s.gz, atEnd: true}
		} else {
			s.inStored, s.head = true, s.pos
		}
		if n > 0 {
			return n, nil
		}
		return s.Read(p)
	}
	u := s.pos - s.head
	if u >= s.end {
		if !s.plain && uint32(s.end) != s.isize {
			return 0, gzip.ErrChecksum
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.seekBlock(u); err != nil {
		return 0, err
	}
	k := min(int64(len(p)), s.blk.u+s.blk.n-u)
	n, err := s.ra.ReadAt(p[:k], s.blk.f+u-s.blk.u)
	s.pos += int64(n)
	if n < int(k) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	return n, nil
}

// Seek moves forward within the stored member (or the plain tar); archive/tar
// uses it to skip an entry. Elsewhere it fails, and archive/tar reads
// instead. A seek past the end stops at the end (the read after it finds
// the stream truncated).
func (s *locStream) Seek(off int64, whence int) (int64, error) {
	if !s.inStored || s.mem != nil || whence != io.SeekCurrent || off < 0 {
		return 0, errors.New("archive: not seekable here")
	}
	s.pos = min(s.pos+off, s.head+s.end)
	return s.pos, nil
}

// rest is what follows the tar end marker in the member holding it.
func (s *locStream) rest() io.Reader {
	if s.mem != nil {
		s.mem.stop = true
	}
	return s
}

// scan checks that a gzip member of stored blocks (a header with no
// optional fields) starts at file offset off and ends within the file, and
// places the block cursor on its first block. false: anything else (the
// member is then read by a gzip reader, which says what is wrong).
func (s *locStream) scan(off int64) bool {
	var h [10]byte
	if _, err := s.ra.ReadAt(h[:], off); err != nil {
		return false
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3] != 0 {
		return false
	}
	off += 10
	first := off
	var u int64
	tiny := 0
	for {
		if err := s.ctx.Err(); err != nil {
			return false
		}
		b, ok := s.blockAt(off, u)
		if !ok {
			return false
		}
		if b.n < 512 && !b.final {
			if tiny++; tiny > maxTinyBlocks {
				return false
			}
		}
		u += b.n
		off = b.f + b.n
		if b.final {
			break
		}
	}
	var t [8]byte
	if _, err := s.ra.ReadAt(t[:], off); err != nil {
		return false
	}
	s.end, s.isize = u, binary.LittleEndian.Uint32(t[4:])
	s.blk, _ = s.blockAt(first, 0)
	return true
}

// blockAt reads the stored block header at file offset off, the block's
// content starting at member offset u.
func (s *locStream) blockAt(off, u int64) (storedBlock, bool) {
	var b [5]byte
	if _, err := s.ra.ReadAt(b[:], off); err != nil {
		return storedBlock{}, false
	}
	n := binary.LittleEndian.Uint16(b[1:])
	if b[0]&^1 != 0 || n != ^binary.LittleEndian.Uint16(b[3:]) || off+5+int64(n) > s.size {
		return storedBlock{}, false // not a stored block (or not byte-aligned as Write's are)
	}
	return storedBlock{u: u, f: off + 5, n: int64(n), final: b[0]&1 != 0}, true
}

// seekBlock moves the block cursor forward to the block holding member
// offset u (< end).
func (s *locStream) seekBlock(u int64) error {
	if u >= s.ahead.u && s.ahead.u > s.blk.u {
		s.blk = s.ahead
	}
	for u >= s.blk.u+s.blk.n {
		if s.blk.final {
			return io.ErrUnexpectedEOF
		}
		b, ok := s.blockAt(s.blk.f+s.blk.n, s.blk.u+s.blk.n)
		if !ok {
			return errors.New("archive: the stored member changed while it was read")
		}
		s.blk = b
	}
	return nil
}

// extent is where the next n bytes of the tar stream are in the file, when
// they are all in the stored member (or the plain tar); nil otherwise.
func (s *locStream) extent(n int64) *Extent {
	if !s.inStored || s.mem != nil || n <= 0 {
		return nil
	}
	u := s.pos - s.head
	if u+n > s.end {
		return nil
	}
	if err := s.seekBlock(u); err != nil {
		return nil
	}
	e := &Extent{ra: s.ra, size: n}
	b := s.blk
	for at := int64(0); at < n; {
		skip := u + at - b.u
		k := min(b.n-skip, n-at)
		if k > 0 {
			e.at = append(e.at, at)
			e.file = append(e.file, b.f+skip)
			e.n = append(e.n, k)
			at += k
		}
		if at < n {
			var ok bool
			if b, ok = s.blockAt(b.f+b.n, b.u+b.n); !ok {
				return nil
			}
		}
	}
	s.ahead = b
	return e
}

// ExtentVerifier reads a blob from its Extent in sections, in order, as many
// times as need be (an upload resumed from an earlier offset reads some
// again), hashing every byte once; Verify then tells whether they were the
// blob's.
type ExtentVerifier struct {
	e    *Extent
	desc ocispec.Descriptor

	mu     sync.Mutex
	h      hash.Hash
	hashed int64 // bytes hashed, from the start
	gen    int   // the live section; older ones fail
}

// NewExtentVerifier checks the bytes of e against desc.
func NewExtentVerifier(e *Extent, desc ocispec.Descriptor) (*ExtentVerifier, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, err
	}
	if e.size != desc.Size {
		return nil, fmt.Errorf("%w: %d bytes in the file, %d announced", ErrExtentMismatch, e.size, desc.Size)
	}
	return &ExtentVerifier{e: e, desc: desc, h: desc.Digest.Algorithm().Hash()}, nil
}

// Section reads the bytes [from, to). Making a section ends the ones made
// before (their reads fail): a transport still reading an abandoned request
// cannot disturb the hash.
func (v *ExtentVerifier) Section(from, to int64) io.Reader {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	return &extentSection{v: v, gen: v.gen, off: from, end: min(to, v.e.size)}
}

type extentSection struct {
	v        *ExtentVerifier
	gen      int
	off, end int64
}

func (s *extentSection) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	v := s.v
	v.mu.Lock()
	defer v.mu.Unlock()
	if s.gen != v.gen {
		return 0, errors.New("archive: a newer read of the blob replaced this one")
	}
	p = p[:min(int64(len(p)), s.end-s.off)]
	n, err := v.e.ReadAt(p, s.off)
	if n > 0 {
		if s.off <= v.hashed && s.off+int64(n) > v.hashed {
			v.h.Write(p[v.hashed-s.off : n])
			v.hashed = s.off + int64(n)
		}
		s.off += int64(n)
	}
	if err == io.EOF && s.off == s.end {
		err = nil
	}
	return n, err
}

// Verify hashes what no section read and compares the digest: nil, or an
// error wrapping ErrExtentMismatch.
func (v *ExtentVerifier) Verify() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	if v.hashed < v.e.size {
		if _, err := io.Copy(v.h, io.NewSectionReader(v.e, v.hashed, v.e.size-v.hashed)); err != nil {
			return fmt.Errorf("archive: reading blob %s from the file: %w", v.desc.Digest, err)
		}
		v.hashed = v.e.size
	}
	if got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h); got != v.desc.Digest {
		return fmt.Errorf("%w: blob %s hashes to %s", ErrExtentMismatch, v.desc.Digest, got)
	}
	return nil
}
