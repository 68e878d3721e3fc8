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

// FileBlob is what an OpenFunc may return for a blob whose bytes are in a
// file, complete or still arriving (a fetch in progress). When the archive
// goes to a regular file, Write then copies the bytes inside the kernel
// (copy_file_range) instead of through memory, and takes the blob's CRC-32
// from the source instead of reading the bytes to compute it.
type FileBlob interface {
	io.ReadCloser
	// File is the file holding the blob from offset 0. Write moves its
	// offset.
	File() *os.File
	// Ready blocks until bytes past off are ready to be read and returns
	// where they end. It returns the blob's size only once every byte is
	// there and verified, and an error if the blob turns out bad.
	Ready(ctx context.Context, off int64) (int64, error)
	// CRC32 is the IEEE CRC-32 of the whole blob, known once Ready reached
	// its size (ok is false when the source does not know it).
	CRC32() (crc uint32, ok bool)
}

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
	file *os.File // the output under w when it is a regular file, else nil
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

// regularFile returns w as a file when it is a regular file (where
// copy_file_range works), else nil.
func regularFile(w io.Writer) *os.File {
	f, ok := w.(*os.File)
	if !ok {
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

// copyFrom copies size bytes of blob d from rc and returns the blob's CRC-32.
// The bytes go through memory (hashed when verify is set, which the caller
// checks) unless rc is a FileBlob and the output a file: then they are
// copied in the kernel as they become ready.
func (s *storedWriter) copyFrom(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) (uint32, error) {
	if fb, ok := rc.(FileBlob); ok && s.file != nil && h == nil && size > 0 {
		end, err := fb.Ready(ctx, 0)
		if err != nil {
			return 0, err
		}
		_, known := fb.CRC32()
		if end < size || known {
			return s.copyFile(ctx, d, fb, size, buf, progress)
		}
		// complete, but its CRC is unknown: the bytes must be read anyway
	}
	return s.copyRead(ctx, d, rc, size, h, buf, progress)
}

// copyRead copies through memory: each block read into buf behind its
// header and written out with it.
func (s *storedWriter) copyRead(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) (uint32, error) {
	if err := s.w.Flush(); err != nil {
		return 0, err
	}
	out := io.Writer(s.w)
	if s.file != nil {
		out = s.file // whole blocks: no need to copy them into the buffer
	}
	var crc uint32
	var n int64
	for n < size {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		c := int(min(size-n, maxStored))
		m, err := io.ReadFull(rc, buf[5:5+c])
		if m > 0 {
			block := buf[5 : 5+m]
			if h != nil {
				_, _ = h.Write(block)
			}
			crc = crc32.Update(crc, crc32.IEEETable, block)
			copy(buf, s.blockHeader(m))
			if _, werr := out.Write(buf[:5+m]); werr != nil {
				return 0, fmt.Errorf("archive: writing blob %s: %w", d, werr)
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
			return 0, fmt.Errorf("archive: reading blob %s: %w", d, err)
		}
	}
	if n < size {
		return 0, fmt.Errorf("archive: blob %s: got %d bytes, expected %d: %w", d, n, size, errShort)
	}
	s.crc = crc32Combine(s.crc, crc, n)
	s.size += n
	return crc, nil
}

var errShort = errors.New("short blob")

// copyFile copies a FileBlob's bytes in the kernel, block by block, as they
// become ready.
func (s *storedWriter) copyFile(ctx context.Context, d digest.Digest, fb FileBlob, size int64, buf []byte, progress func(int64)) (uint32, error) {
	if err := s.w.Flush(); err != nil {
		return 0, err
	}
	f := fb.File()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("archive: reading blob %s: %w", d, err)
	}
	var n int64
	for n < size {
		// wait for a whole block (or the end): the framing must not depend
		// on how the bytes arrived, or the archive would not be reproducible
		end, err := fb.Ready(ctx, min(n+maxStored, size)-1)
		if err != nil {
			return 0, fmt.Errorf("archive: blob %s: %w", d, err)
		}
		if end > size {
			return 0, fmt.Errorf("archive: blob %s has more than the expected %d bytes: %w", d, size, errShort)
		}
		if end < min(n+maxStored, size) {
			return 0, fmt.Errorf("archive: blob %s: got %d bytes, expected %d: %w", d, end, size, errShort)
		}
		for n+maxStored <= end || (n < end && end == size) {
			c := min(end-n, maxStored)
			if _, err := s.file.Write(s.blockHeader(int(c))); err != nil {
				return 0, fmt.Errorf("archive: writing blob %s: %w", d, err)
			}
			m, err := io.Copy(s.file, &io.LimitedReader{R: f, N: c})
			if err == nil && m < c {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return 0, fmt.Errorf("archive: copying blob %s: %w", d, err)
			}
			n += c
		}
		if progress != nil {
			progress(n)
		}
	}
	crc, ok := fb.CRC32()
	if !ok {
		// the source could not tell: read the bytes once more
		h := crc32.NewIEEE()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), buf); err != nil {
			return 0, fmt.Errorf("archive: reading blob %s: %w", d, err)
		}
		crc = h.Sum32()
	}
	s.crc = crc32Combine(s.crc, crc, size)
	s.size += size
	return crc, nil
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
