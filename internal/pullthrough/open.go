package pullthrough

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
)

// Open returns a reader of blob d of repository full: the stored blob when it
// is cached, else the shared upstream fetch (started if needed; its size is
// checked against expectedSize when >= 0), read as its bytes arrive, the last
// one held back until the whole blob is verified, so a failed fetch fails the
// read and never ends cleanly. An export reads blobs this way, writing each
// into the archive while it arrives instead of after its commit's fsync.
func (c *Cache) Open(ctx context.Context, full string, d digest.Digest, expectedSize int64) (io.ReadCloser, error) {
	for range 3 {
		c.mu.Lock()
		f := c.inflight[d]
		c.mu.Unlock()
		if f == nil {
			if rc, err := c.openStored(ctx, full, d); err == nil {
				return rc, nil
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
			if rc, err := c.openStored(ctx, full, d); err == nil {
				return rc, nil
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
		return &fetchReader{ctx: ctx, f: f, rd: rd}, nil
	}
	return nil, fmt.Errorf("%w: %s in %s", cas.ErrNotFound, d, full)
}

func (c *Cache) openStored(ctx context.Context, full string, d digest.Digest) (io.ReadCloser, error) {
	rc, info, err := c.store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := c.link(full, info); err != nil {
		rc.Close()
		return nil, err
	}
	return rc, nil
}

// fetchReader reads a fetch in progress from its ingest file; its reads
// stop waiting when ctx (Open's) is done.
type fetchReader struct {
	ctx context.Context
	f   *fetch
	rd  cas.ReaderAtCloser
	off int64
}

// ready blocks until bytes past off are ready and returns where they end:
// the blob's size once it is complete and verified. Until then the last
// byte written is held back: with sendfile the bytes reach a client at
// once, and a reader must never hold every byte of a blob that then fails.
func (r *fetchReader) ready(off int64) (int64, error) {
	f := r.f
	stop := context.AfterFunc(r.ctx, func() {
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
		case r.ctx.Err() != nil:
			return 0, r.ctx.Err()
		}
		f.cond.Wait()
	}
}

// Read reads the blob in order, waiting for its bytes.
func (r *fetchReader) Read(p []byte) (int, error) {
	end, err := r.ready(r.off)
	if err != nil {
		return 0, err
	}
	if r.off >= end {
		return 0, io.EOF
	}
	n, err := r.rd.ReadAt(p[:min(int64(len(p)), end-r.off)], r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Close releases the reader (the fetch goes on for the cache).
func (r *fetchReader) Close() error { return r.rd.Close() }
