package pullthrough

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/repodb"
)

// BlobReader reads a blob as its bytes become ready: from the store when it
// is cached, else from the shared upstream fetch as the bytes arrive, the
// last one held back until the whole blob is verified (a failed fetch fails
// the read, never a clean end). It is an archive.FileBlob: an export copies
// its bytes file to file and takes its CRC-32 from the fetch or the index.
type BlobReader struct {
	file *os.File
	f    *fetch // nil when the blob is stored
	size int64  // of a stored blob
	crc  uint32 // of a stored blob, when crcOK
	ok   bool
	off  int64
}

// Open returns a reader of blob d of repository full (fetched through full's
// upstream when not cached, shared with every concurrent caller; its size is
// checked against expectedSize when >= 0). The caller closes it.
func (c *Cache) Open(ctx context.Context, full string, d digest.Digest, expectedSize int64) (*BlobReader, error) {
	for range 3 {
		c.mu.Lock()
		f := c.inflight[d]
		c.mu.Unlock()
		if f == nil {
			if br, err := c.openStored(ctx, full, d); err == nil {
				return br, nil
			} else if !errors.Is(err, cas.ErrNotFound) {
				return nil, err
			}
			var err error
			if f, err = c.startFetch(full, d, expectedSize); errors.Is(err, errCached) {
				continue // committed meanwhile
			} else if err != nil {
				return nil, err
			}
		}
		rd, err := f.ing.Reader()
		if errors.Is(err, fs.ErrNotExist) {
			// committed meanwhile: the ingest file is gone, the blob is
			// stored (or about to be, once the fetch is over)
			if br, err := c.openStored(ctx, full, d); err == nil {
				return br, nil
			}
			select {
			case <-f.finished:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.err != nil {
				return nil, f.err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		file, ok := rd.(*os.File)
		if !ok {
			rd.Close()
			return nil, fmt.Errorf("pullthrough: the store's ingest reader is not a file")
		}
		return &BlobReader{file: file, f: f}, nil
	}
	return nil, fmt.Errorf("%w: %s in %s", cas.ErrNotFound, d, full)
}

func (c *Cache) openStored(ctx context.Context, full string, d digest.Digest) (*BlobReader, error) {
	rc, info, err := c.store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	file, ok := rc.(*os.File)
	if !ok {
		rc.Close()
		return nil, fmt.Errorf("pullthrough: the store's reader is not a file")
	}
	br := &BlobReader{file: file, size: info.Size}
	_ = c.db.View(func(tx *repodb.Tx) error {
		br.crc, br.ok = tx.CRC32(d)
		return nil
	})
	if err := c.link(full, info); err != nil {
		file.Close()
		return nil, err
	}
	return br, nil
}

// RecordCRC32 keeps CRC-32s computed by a reader of the cache (an export of
// blobs cached before CRC-32s were kept).
func (c *Cache) RecordCRC32(crcs map[digest.Digest]uint32) error {
	missing := map[digest.Digest]uint32{}
	_ = c.db.View(func(tx *repodb.Tx) error {
		for d, crc := range crcs {
			if _, ok := tx.CRC32(d); !ok {
				missing[d] = crc
			}
		}
		return nil
	})
	if len(missing) == 0 {
		return nil
	}
	return c.db.Update(func(tx *repodb.Tx) error {
		for d, crc := range missing {
			if err := tx.SetCRC32(d, crc); err != nil {
				return err
			}
		}
		return nil
	})
}

// File is the file holding the blob from offset 0.
func (r *BlobReader) File() *os.File { return r.file }

// Ready blocks until bytes past off are ready and returns where they end:
// the blob's size once it is complete and verified.
func (r *BlobReader) Ready(ctx context.Context, off int64) (int64, error) {
	f := r.f
	if f == nil {
		return r.size, nil
	}
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		switch {
		case f.err != nil:
			return 0, f.err
		case f.complete():
			return f.written, nil
		case f.written-1 > off:
			return f.written - 1, nil // the last byte waits for the verification
		case f.done:
			return 0, fmt.Errorf("fetching %s: ended early", f.d)
		case ctx.Err() != nil:
			return 0, ctx.Err()
		}
		f.cond.Wait()
	}
}

// CRC32 is the blob's IEEE CRC-32 once the blob is complete.
func (r *BlobReader) CRC32() (uint32, bool) {
	f := r.f
	if f == nil {
		return r.crc, r.ok
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.crc, f.complete()
}

// Read reads the blob in order, waiting for its bytes.
func (r *BlobReader) Read(p []byte) (int, error) {
	if r.f == nil {
		return r.file.Read(p)
	}
	end, err := r.Ready(context.Background(), r.off)
	if err != nil {
		return 0, err
	}
	if r.off >= end {
		return 0, io.EOF
	}
	n, err := r.file.ReadAt(p[:min(int64(len(p)), end-r.off)], r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Close releases the reader (the fetch goes on for the cache).
func (r *BlobReader) Close() error { return r.file.Close() }
