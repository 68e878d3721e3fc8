package archive

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// maxStored is the most a stored deflate block holds.
const maxStored = 65535

// gzipHeader starts a member: no name, no mtime, no extra flags, OS
// "unknown", as klauspost/compress's writer makes it.
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// storedWriter writes one gzip member of stored deflate blocks: the bytes go
// out as they are, 5 bytes of framing every 64 KiB, with the CRC-32 and size
// in the trailer. Layers are already compressed; this is the part of the
// archive that holds them.
type storedWriter struct {
	w    *bufio.Writer
	file *os.File // the output under w when it is a regular file (for writev), else nil
	crc  uint32
	size int64
	hdr  [5]byte
}

func newStoredWriter(w *bufio.Writer, file *os.File) (*storedWriter, error) {
	if _, err := w.Write(gzipHeader[:]); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return &storedWriter{w: w, file: file}, nil
}

// regularFile returns w as a file when it is a regular file, else nil.
func regularFile(w io.Writer) *os.File {
	f, ok := w.(*os.File)
	if u, isWrapper := w.(interface{ OSFile() *os.File }); !ok && isWrapper {
		f, ok = u.OSFile(), true // atomicfile.File: export's temp file
	}
	if !ok || f == nil {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return f
}

func (s *storedWriter) blockHeader(n int) []byte {
	s.hdr[0] = 0 // not final, stored; the rest of the byte pads to a byte boundary
	binary.LittleEndian.PutUint16(s.hdr[1:], uint16(n))
	binary.LittleEndian.PutUint16(s.hdr[3:], ^uint16(n))
	return s.hdr[:]
}

// Write frames p in stored blocks.
func (s *storedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), maxStored)
		if _, err := s.w.Write(s.blockHeader(c)); err != nil {
			return n, err
		}
		if _, err := s.w.Write(p[:c]); err != nil {
			return n, err
		}
		s.crc = crc32.Update(s.crc, crc32.IEEETable, p[:c])
		s.size += int64(c)
		n += c
		p = p[c:]
	}
	return n, nil
}

// copyFrom copies size bytes of blob d from rc, framed in stored blocks.
// h, if set, is given the bytes too (to hash
// them). The bytes are read a megabyte at a time and, into a file, written
// with their block headers in one writev: a block is at most 64 KiB, and a
// system call per block would cost more than reading the bytes through
// memory. Every block but the last is full, however the bytes arrive, so
// the framing (and the archive) does not depend on how fast they came.
func (s *storedWriter) copyFrom(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	buf = buf[:len(buf)/maxStored*maxStored]
	hdrs := make([]byte, 5*(len(buf)/maxStored))
	iov := make([][]byte, 0, 2*(len(buf)/maxStored))
	var crc uint32
	err := copyChunks(ctx, d, rc, size, h, buf, progress, func(chunk []byte) error {
		crc = crc32.Update(crc, crc32.IEEETable, chunk)
		iov = iov[:0]
		for k := 0; len(chunk) > 0; k++ {
			c := min(len(chunk), maxStored)
			hdr := hdrs[5*k : 5*k+5]
			copy(hdr, s.blockHeader(c))
			iov = append(iov, hdr, chunk[:c])
			chunk = chunk[c:]
		}
		return s.writeBlocks(iov)
	})
	if err != nil {
		return err
	}
	s.crc = crc32Combine(s.crc, crc, size)
	s.size += size
	return nil
}

// copyChunks reads size bytes of blob d from rc, a whole buffer at a time
// (a shorter one only at the end), gives each chunk to h (if set) and to
// write, and reports the bytes done to progress.
func copyChunks(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64), write func([]byte) error) error {
	var n int64
	for n < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := io.ReadFull(rc, buf[:min(int64(len(buf)), size-n)])
		if m > 0 {
			if h != nil {
				_, _ = h.Write(buf[:m])
			}
			if werr := write(buf[:m]); werr != nil {
				return fmt.Errorf("archive: writing blob %s: %w", d, werr)
			}
			n += int64(m)
			if progress != nil {
				progress(n)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("archive: reading blob %s: %w", d, err)
		}
	}
	if n < size {
		return fmt.Errorf("archive: blob %s: got %d bytes, expected %d: %w", d, n, size, errShort)
	}
	return nil
}

var errShort = errors.New("short blob")

// writeBlocks writes iov in order: to the file in vectored writes when the
// output is one, else through the buffer.
func (s *storedWriter) writeBlocks(iov [][]byte) error {
	if s.file != nil {
		return writev(s.file, iov)
	}
	for _, b := range iov {
		if _, err := s.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// Close ends the deflate stream with an empty final block and writes the
// trailer.
func (s *storedWriter) Close() error {
	var t [13]byte
	t[0] = 1 // final, stored
	binary.LittleEndian.PutUint16(t[1:], 0)
	binary.LittleEndian.PutUint16(t[3:], 0xffff)
	binary.LittleEndian.PutUint32(t[5:], s.crc)
	binary.LittleEndian.PutUint32(t[9:], uint32(s.size))
	if _, err := s.w.Write(t[:]); err != nil {
		return fmt.Errorf("archive: ending the gzip stream: %w", err)
	}
	return nil
}

// crc32Combine returns the IEEE CRC-32 of A followed by B from the CRC-32 of
// each and the length of B (zlib's crc32_combine: multiply crc1 by x^(8·len2)
// modulo the polynomial, then add crc2).
func crc32Combine(crc1, crc2 uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crc1
	}
	return multModP(x2nModP(len2, 3), crc1) ^ crc2
}

const crcPoly = 0xedb88320 // reflected IEEE polynomial

// multModP multiplies a and b modulo the CRC polynomial (reflected bit
// order); a must not be 0.
func multModP(a, b uint32) uint32 {
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ crcPoly
		} else {
			b >>= 1
		}
	}
}

// x2nTable[k] is x^(2^k) modulo the polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// x2nModP is x^(n·2^k) modulo the polynomial.
func x2nModP(n int64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
		n >>= 1
		k++
	}
	return p
}
