// Package pullthrough owns the pocket's cache policy, in one place: digests
// are served local-first; tags are resolved upstream first and fall back to
// the cache when the upstream cannot be reached (never asked when offline);
// a missing blob is fetched once however many clients want it, every client
// is streamed the bytes as they arrive, the cache copy is verified before it
// is committed, and the fetch completes even if every client hangs up. A
// client that was streamed bytes which then fail verification sees its
// transfer fail, never a clean end.
//
// The same Cache serves HTTP clients (Handler, in front of the registry)
// and Go callers such as export (Manifest, Blob). It lives as long as its
// server: a change of registry settings swaps its upstream client
// (SetUpstream) rather than building another cache, so a blob or manifest
// is never fetched twice at once, whatever the settings were when each
// client asked.
package pullthrough

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/upstream"
)

// Options tune a Cache.
type Options struct {
	// Offline never asks an upstream: only cached content is served.
	Offline bool
	// FetchTimeout bounds one blob fetch (default 2h); ResumeAttempts
	// bounds Range resumptions of a broken transfer (default 5).
	FetchTimeout   time.Duration
	ResumeAttempts int
	// OnFallback, when set, is told each time a tag is served from the
	// cache because the upstream could not be reached (the library logs
	// nothing; `crpe serve` and `crpe export` log it).
	OnFallback func(Fallback)
}

// Fallback is a tag served from the cache because the upstream could not be
// reached.
type Fallback struct {
	Repo   string        // full repository name
	Tag    string        // the tag asked for
	Digest digest.Digest // what the cache holds for it
	Cached time.Time     // when the cache stored that manifest (zero when unknown)
	Err    error         // why the upstream was not asked
}

// LogFallback is an OnFallback that logs each fallback as a warning to log
// (nil: none).
func LogFallback(log *slog.Logger) func(Fallback) {
	if log == nil {
		return nil
	}
	return func(f Fallback) {
		cached := "unknown"
		if !f.Cached.IsZero() {
			cached = f.Cached.UTC().Format(time.RFC3339)
		}
		log.Warn("the upstream cannot be reached: using the cached manifest of the tag", "image", f.Repo+":"+f.Tag,
			"digest", f.Digest, "cached", cached, "error", f.Err)
	}
}

// fallback counts a fallback to the cache and tells OnFallback.
func (c *Cache) fallback(ctx context.Context, full, tag string, d digest.Digest, err error) {
	c.Stats.Fallbacks.Add(1)
	if c.o.OnFallback == nil {
		return
	}
	f := Fallback{Repo: full, Tag: tag, Digest: d, Err: err}
	if info, serr := c.store.Stat(ctx, d); serr == nil {
		f.Cached = info.Modified
	}
	c.o.OnFallback(f)
}

// Stats counts upstream traffic (for metrics and tests).
type Stats struct {
	BlobFetches     atomic.Int64 // upstream blob fetches started
	BlobResumes     atomic.Int64 // Range resumptions
	BlobFailures    atomic.Int64 // fetches that failed (network or verification)
	ManifestFetches atomic.Int64
	Fallbacks       atomic.Int64 // tags served from the cache because the upstream was unreachable
	BytesFetched    atomic.Int64
}

// Cache is the pull-through cache over a store and an index.
type Cache struct {
	store cas.IngestStore
	db    *repodb.DB
	up    atomic.Pointer[upstream.Client]
	o     Options
	Stats Stats

	mu       sync.Mutex
	inflight map[digest.Digest]*fetch
	sf       singleflight.Group
}

// New returns a cache.
func New(store cas.IngestStore, db *repodb.DB, up *upstream.Client, o Options) *Cache {
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 2 * time.Hour
	}
	if o.ResumeAttempts <= 0 {
		o.ResumeAttempts = 5
	}
	c := &Cache{store: store, db: db, o: o, inflight: map[digest.Digest]*fetch{}}
	c.up.Store(up)
	return c
}

// SetUpstream replaces the client through which upstream registries are
// reached (where each registry's traffic goes, over what, with which
// credentials), for the requests that start from now on. Transfers in
// flight finish with the client they started with, and a miss of a blob or
// manifest being fetched joins that fetch: in-flight de-duplication spans
// the change.
func (c *Cache) SetUpstream(up *upstream.Client) { c.up.Store(up) }

// Offline tells whether the cache never asks an upstream.
func (c *Cache) Offline() bool { return c.o.Offline }

// client is the client a request that starts now goes through.
func (c *Cache) client() *upstream.Client { return c.up.Load() }

// ErrNotCached is returned offline for content the cache lacks.
var ErrNotCached = errors.New("not in the cache and offline")

// ErrUpstreamInvalid is returned when an upstream served content that is
// not what was asked for: bytes that do not match their digest or size, or
// a manifest that does not parse. Nothing of it is cached.
var ErrUpstreamInvalid = errors.New("the upstream served invalid content")

// errCached tells a caller of startFetch that the blob is stored after all.
var errCached = errors.New("blob is cached")

// IsUpstream reports whether a full repository name names an upstream
// registry (its first component is a host).
func IsUpstream(full string) bool {
	_, ok := upstream.SplitRepo(full)
	return ok
}

// Manifest is a manifest in the cache.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Manifest makes sure manifest ref (tag or digest) of repository full is in
// the cache, and returns it: a digest local-first, a tag upstream-first with
// a fallback to the cache when the upstream is unreachable.
func (c *Cache) Manifest(ctx context.Context, full, ref string) (*Manifest, error) {
	d, err := c.resolve(ctx, full, ref)
	if err != nil {
		return nil, err
	}
	var rec repodb.Manifest
	if err := c.db.View(func(tx *repodb.Tx) error {
		rec, err = tx.Manifest(full, d)
		return err
	}); err != nil {
		return nil, err
	}
	body, err := c.readAll(ctx, d)
	if err != nil {
		return nil, err
	}
	return &Manifest{Digest: d, MediaType: rec.MediaType, Body: body}, nil
}

func (c *Cache) readAll(ctx context.Context, d digest.Digest) ([]byte, error) {
	return c.ReadBlob(ctx, d, oci.MaxManifestSize)
}

// ReadBlob reads a small cached blob whole (at most max bytes).
func (c *Cache) ReadBlob(ctx context.Context, d digest.Digest, max int64) ([]byte, error) {
	return cas.ReadAll(ctx, c.store, d, max)
}

// resolve returns the digest of ref in full, fetching and recording the
// manifest (and moving the tag) as needed.
func (c *Cache) resolve(ctx context.Context, full, ref string) (digest.Digest, error) {
	repo, ok := upstream.SplitRepo(full)
	isDigest := oci.IsDigestRef(ref)
	local := func() (digest.Digest, error) {
		var d digest.Digest
		err := c.db.View(func(tx *repodb.Tx) error {
			var err error
			if isDigest {
				d = digest.Digest(ref)
				_, err = tx.Manifest(full, d)
				return err
			}
			d, err = tx.Tag(full, ref)
			return err
		})
		return d, err
	}
	if isDigest {
		if _, err := oci.ParseDigest(ref); err != nil {
			return "", err
		}
		if d, err := local(); err == nil {
			return d, nil
		}
		// present under another repository: record it here too
		if body, err := c.readAll(ctx, digest.Digest(ref)); err == nil {
			return digest.Digest(ref), c.record(full, digest.Digest(ref), "", body, "")
		}
	}
	if !ok {
		return local()
	}
	if c.o.Offline {
		d, err := local()
		if err != nil {
			return "", fmt.Errorf("%w: %s:%s", ErrNotCached, full, ref)
		}
		return d, nil
	}
	v, err, _ := c.sf.Do("m\x00"+full+"\x00"+ref, func() (any, error) {
		// detached: the cache update completes even if this client leaves
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		return c.fetchManifest(fctx, full, repo, ref, isDigest)
	})
	if err != nil {
		if !isDigest && upstream.IsTemporary(err) {
			if d, lerr := local(); lerr == nil {
				c.fallback(ctx, full, ref, d, err)
				return d, nil
			}
		}
		return "", err
	}
	return v.(digest.Digest), nil
}

func (c *Cache) fetchManifest(ctx context.Context, full string, repo upstream.Repo, ref string, isDigest bool) (digest.Digest, error) {
	up := c.client()
	tag := ""
	known := false
	if !isDigest {
		_ = c.db.View(func(tx *repodb.Tx) error {
			_, err := tx.Tag(full, ref)
			known = err == nil
			return nil
		})
	}
	if !isDigest {
		tag = ref
	}
	if known {
		// a HEAD (free of Docker Hub's pull limits) is enough when we
		// already hold what the tag points at; for a tag never cached it
		// would only cost a round trip before the GET
		if desc, err := up.HeadManifest(ctx, repo, ref); err == nil && desc.Digest != "" {
			if _, err := c.store.Stat(ctx, desc.Digest); err == nil {
				if body, err := c.readAll(ctx, desc.Digest); err == nil {
					return desc.Digest, c.record(full, desc.Digest, desc.MediaType, body, tag)
				}
			}
		} else if err != nil && upstream.IsTemporary(err) {
			return "", err
		}
	}
	c.Stats.ManifestFetches.Add(1)
	m, err := up.GetManifest(ctx, repo, ref)
	if errors.Is(err, cas.ErrDigestMismatch) {
		return "", fmt.Errorf("%w: %w", ErrUpstreamInvalid, err)
	}
	if err != nil {
		return "", err
	}
	if _, err := oci.ParseManifest(m.MediaType, m.Body); err != nil {
		return "", fmt.Errorf("%w: %s:%s is not a valid manifest: %w", ErrUpstreamInvalid, repo, ref, err)
	}
	if _, err := c.store.Put(ctx, cas.Info{Digest: m.Digest, Size: int64(len(m.Body))}, strings.NewReader(string(m.Body))); err != nil {
		return "", err
	}
	return m.Digest, c.record(full, m.Digest, m.MediaType, m.Body, tag)
}

// record notes manifest d (whose bytes are stored) in repository full and
// points tag at it.
func (c *Cache) record(full string, d digest.Digest, mediaType string, body []byte, tag string) error {
	pm, err := oci.ParseManifest(mediaType, body)
	if err != nil {
		return err
	}
	rec := repodb.ManifestRecord(pm, body)
	rec.Partial = true
	return c.db.Batch(func(tx *repodb.Tx) error {
		if old, err := tx.Manifest(full, d); err != nil || old.MediaType != rec.MediaType {
			if err := tx.PutManifest(full, d, rec); err != nil {
				return err
			}
		}
		if tag != "" {
			if cur, err := tx.Tag(full, tag); err != nil || cur != d {
				return tx.SetTag(full, tag, d)
			}
		}
		return nil
	})
}

// Blob makes sure blob d is in the cache (fetching it through full's
// upstream if needed, shared with concurrent callers) and linked in full.
// expectedSize is checked when >= 0.
func (c *Cache) Blob(ctx context.Context, full string, d digest.Digest, expectedSize int64) (cas.Info, error) {
	if info, err := c.store.Stat(ctx, d); err == nil {
		return info, c.link(full, info)
	}
	f, err := c.startFetch(full, d, expectedSize)
	if errors.Is(err, errCached) {
		return c.Blob(ctx, full, d, expectedSize)
	}
	if err != nil {
		return cas.Info{}, err
	}
	select {
	case <-f.finished:
	case <-ctx.Done():
		return cas.Info{}, ctx.Err()
	}
	if f.err != nil {
		return cas.Info{}, f.err
	}
	return f.info, c.link(full, f.info)
}

func (c *Cache) link(full string, info cas.Info) error {
	linked := false
	_ = c.db.View(func(tx *repodb.Tx) error {
		_, err := tx.Blob(full, info.Digest)
		linked = err == nil
		return nil
	})
	if linked {
		return nil // a read transaction: no write, no fsync
	}
	return c.db.Batch(func(tx *repodb.Tx) error {
		if _, err := tx.Blob(full, info.Digest); err == nil {
			return nil
		}
		return tx.LinkBlob(full, info.Digest, info.Size)
	})
}

// fetch is one upstream blob transfer that any number of readers follow.
type fetch struct {
	d     digest.Digest
	ready chan struct{} // closed once size is known or the fetch failed early
	// finished is closed when the fetch is over; info/err are set then.
	finished chan struct{}
	info     cas.Info
	err      error

	mu       sync.Mutex
	cond     *sync.Cond
	size     int64 // -1 until known
	written  int64
	verified bool // every byte is there and matches the digest
	done     bool
	ing      cas.Ingest
	repos    []string
	cancel   context.CancelFunc
}

// complete reports whether readers may have every byte: verified, or
// committed (f.mu held).
func (f *fetch) complete() bool { return f.verified || (f.done && f.err == nil) }

func (c *Cache) startFetch(full string, d digest.Digest, expectedSize int64) (*fetch, error) {
	repo, ok := upstream.SplitRepo(full)
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s", cas.ErrNotFound, d, full)
	}
	if c.o.Offline {
		return nil, fmt.Errorf("%w: blob %s of %s", ErrNotCached, d, full)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.inflight[d]; ok {
		f.mu.Lock()
		f.repos = append(f.repos, full)
		f.mu.Unlock()
		return f, nil
	}
	// a fetch that ended since the caller looked has committed the blob
	if _, err := c.store.Stat(context.Background(), d); err == nil {
		return nil, errCached
	}
	ing, err := c.store.NewIngest(context.Background())
	if err != nil {
		return nil, err
	}
	// detached from the caller: the fetch completes for the cache even if
	// every client hangs up; Close cancels it
	ctx, cancel := context.WithTimeout(context.Background(), c.o.FetchTimeout)
	f := &fetch{d: d, ready: make(chan struct{}), finished: make(chan struct{}), size: -1, ing: ing, repos: []string{full}, cancel: cancel}
	f.cond = sync.NewCond(&f.mu)
	c.inflight[d] = f
	c.Stats.BlobFetches.Add(1)
	// the client of the settings in force now serves the whole transfer,
	// resumptions included
	go c.run(ctx, f, c.client(), repo, expectedSize)
	return f, nil
}

// Close is for a server that stops: the fetches whose bytes are all in and
// verified finish their commit (a client may already hold every byte, and
// the cache must keep what it handed out), the others are cancelled, and
// Close waits for all of them until ctx is done.
func (c *Cache) Close(ctx context.Context) error {
	c.mu.Lock()
	var fs []*fetch
	for _, f := range c.inflight {
		fs = append(fs, f)
	}
	c.mu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		verified := f.verified
		f.mu.Unlock()
		if !verified {
			f.cancel()
		}
	}
	for _, f := range fs {
		select {
		case <-f.finished:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *Cache) run(ctx context.Context, f *fetch, up *upstream.Client, repo upstream.Repo, expectedSize int64) {
	defer f.cancel()
	var readyOnce sync.Once
	markReady := func() { readyOnce.Do(func() { close(f.ready) }) }
	err := c.transfer(ctx, f, up, repo, expectedSize, markReady)
	if vi, ok := f.ing.(cas.VerifyingIngest); ok && err == nil {
		// release the bytes to the readers now; the fsync comes next
		if _, err = vi.Verify(ctx, cas.Info{Digest: f.d, Size: f.sizeOr(-1)}); err == nil {
			f.mu.Lock()
			f.verified = true
			f.cond.Broadcast()
			f.mu.Unlock()
		}
	}
	var info cas.Info
	if err == nil {
		info, err = f.ing.Commit(ctx, cas.Info{Digest: f.d, Size: f.sizeOr(-1)})
	} else {
		_ = f.ing.Cancel()
	}
	if err == nil {
		f.mu.Lock()
		repos := append([]string(nil), f.repos...)
		f.mu.Unlock()
		err = c.db.Batch(func(tx *repodb.Tx) error {
			for _, r := range repos {
				if err := tx.LinkBlob(r, info.Digest, info.Size); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		c.Stats.BlobFailures.Add(1)
		if errors.Is(err, cas.ErrDigestMismatch) || errors.Is(err, cas.ErrSizeMismatch) {
			err = fmt.Errorf("%w: %w", ErrUpstreamInvalid, err)
		}
		err = fmt.Errorf("fetching %s from %s: %w", f.d, repo, err)
	}
	c.mu.Lock()
	delete(c.inflight, f.d)
	c.mu.Unlock()
	f.mu.Lock()
	f.done, f.err, f.info = true, err, info
	f.cond.Broadcast()
	f.mu.Unlock()
	markReady()
	close(f.finished)
}

func (f *fetch) sizeOr(def int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.size >= 0 {
		return f.size
	}
	return def
}

// transfer copies the blob into the ingest, resuming with Range requests
// when the upstream transfer breaks.
func (c *Cache) transfer(ctx context.Context, f *fetch, up *upstream.Client, repo upstream.Repo, expectedSize int64, markReady func()) error {
	buf := make([]byte, 256<<10)
	resumes := 0
	for {
		body, size, err := up.OpenBlob(ctx, repo, f.d, f.written)
		if err != nil {
			if f.written > 0 && upstream.IsTemporary(err) && resumes < c.o.ResumeAttempts {
				resumes++
				c.Stats.BlobResumes.Add(1)
				continue
			}
			return err
		}
		if expectedSize >= 0 && size >= 0 && size != expectedSize {
			body.Close()
			return fmt.Errorf("%w: upstream says %d bytes, expected %d", cas.ErrSizeMismatch, size, expectedSize)
		}
		if size < 0 {
			size = expectedSize
		}
		f.mu.Lock()
		if f.size < 0 {
			f.size = size
		} else if size >= 0 && size != f.size {
			f.mu.Unlock()
			body.Close()
			return fmt.Errorf("%w: upstream changed the size from %d to %d", cas.ErrSizeMismatch, f.size, size)
		}
		f.mu.Unlock()
		markReady()
		rerr := c.copyBody(f, body, buf)
		body.Close()
		if rerr == nil {
			return nil
		}
		if errors.Is(rerr, cas.ErrSizeMismatch) || ctx.Err() != nil || resumes >= c.o.ResumeAttempts {
			return rerr
		}
		resumes++
		c.Stats.BlobResumes.Add(1)
	}
}

func (c *Cache) copyBody(f *fetch, body io.Reader, buf []byte) error {
	// Receiving overlaps storing: a goroutine fills buffers from the
	// network while the previous one is written (and hashed) into the
	// ingest. Whole buffers also make fewer, larger writes.
	type chunk struct {
		b   []byte
		err error
	}
	const depth = 3
	free := make(chan []byte, depth)
	free <- buf
	for range depth - 1 {
		free <- make([]byte, len(buf))
	}
	filled := make(chan chunk, depth)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := fill(body, b)
			select {
			case filled <- chunk{b[:n], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range filled {
		if n := len(ch.b); n > 0 {
			if f.size >= 0 && f.written+int64(n) > f.size {
				return fmt.Errorf("%w: upstream sent more than %d bytes", cas.ErrSizeMismatch, f.size)
			}
			if _, werr := f.ing.Write(ch.b); werr != nil {
				return werr
			}
			c.Stats.BytesFetched.Add(int64(n))
			f.mu.Lock()
			f.written += int64(n)
			f.cond.Broadcast()
			f.mu.Unlock()
		}
		if ch.err == io.EOF {
			if f.size >= 0 && f.written < f.size {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if ch.err != nil {
			return ch.err
		}
		free <- ch.b[:cap(ch.b)]
	}
	return nil
}

// fill reads into b until it is full or r fails, and returns r's own error
// (io.EOF for a clean end), unlike io.ReadFull.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ServeBlob answers GET/HEAD of blob d in repository full from the cache
// or, on a miss, from the shared upstream fetch as the bytes arrive. It
// returns handled=false when the blob is already local (the registry serves
// it, with ranges and sendfile).
func (c *Cache) ServeBlob(w http.ResponseWriter, r *http.Request, full string, d digest.Digest) (handled bool, err error) {
	ctx := r.Context()
	if info, err := c.store.Stat(ctx, d); err == nil {
		return false, c.link(full, info)
	}
	repo, ok := upstream.SplitRepo(full)
	if !ok {
		return false, nil
	}
	if c.o.Offline {
		return false, nil
	}
	if r.Method == http.MethodHead {
		size, err := c.client().HeadBlob(ctx, repo, d)
		if err != nil {
			return true, err
		}
		blobHeaders(w, d, size)
		return true, nil
	}
	f, err := c.startFetch(full, d, -1)
	if errors.Is(err, errCached) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if r.Header.Get("Range") != "" {
		// ranges are served from the committed blob
		select {
		case <-f.finished:
		case <-ctx.Done():
			return true, ctx.Err()
		}
		if f.err != nil {
			return true, f.err
		}
		return false, c.link(full, f.info)
	}
	rd, err := f.ing.Reader()
	if errors.Is(err, fs.ErrNotExist) {
		// committed meanwhile: the ingest file is gone, the blob is stored
		if _, serr := c.store.Stat(ctx, d); serr == nil {
			return false, nil
		}
	}
	if err != nil {
		return true, err
	}
	defer rd.Close()
	select {
	case <-f.ready:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	f.mu.Lock()
	size, ferr, early := f.size, f.err, f.done && f.written == 0
	f.mu.Unlock()
	if early && ferr != nil {
		return true, ferr
	}
	blobHeaders(w, d, size)
	if err := f.stream(ctx, w, rd); err != nil {
		// never let a client see a clean end of bytes that failed
		panic(http.ErrAbortHandler)
	}
	return true, nil
}

// stream copies the fetch's bytes to w as they arrive, with sendfile when
// it can; the last byte waits for the verification (fetchReader.ready).
func (f *fetch) stream(ctx context.Context, w io.Writer, rd cas.ReaderAtCloser) error {
	r := &fetchReader{ctx: ctx, f: f, rd: rd}
	var off int64
	for {
		end, err := r.ready(off)
		if err != nil {
			return err
		}
		if end <= off {
			return nil // complete, and all of it sent
		}
		var n int64
		var werr error
		if f, ok := rd.(*os.File); ok {
			// a file the server can send with sendfile
			if _, werr = f.Seek(off, io.SeekStart); werr == nil {
				n, werr = io.CopyN(w, f, end-off)
			}
		} else {
			n, werr = io.Copy(w, io.NewSectionReader(rd, off, end-off))
		}
		off += n
		if werr != nil {
			return werr
		}
	}
}

// blobHeaders answers 200 for blob d of size bytes (-1: unknown).
func blobHeaders(w http.ResponseWriter, d digest.Digest, size int64) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", string(d))
	if size >= 0 {
		h.Set("Content-Length", fmt.Sprint(size))
	}
	w.WriteHeader(http.StatusOK)
}

// Referrers lists the manifests of repository full whose subject is d (OCI
// 1.1 referrers): as the upstream lists them (its referrers API, or where
// it has none its fallback tag, oci.ReferrersTag), or as the cache holds
// them offline, for a repository of no upstream, or when the upstream
// cannot be reached. The referrers' manifests are not fetched: Manifest
// fetches each by digest.
func (c *Cache) Referrers(ctx context.Context, full string, d digest.Digest) ([]ocispec.Descriptor, error) {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return nil, err
	}
	local := func() ([]ocispec.Descriptor, error) {
		var out []ocispec.Descriptor
		err := c.db.View(func(tx *repodb.Tx) error {
			refs, err := tx.Referrers(full, d)
			for _, r := range refs {
				out = append(out, ocispec.Descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size, ArtifactType: r.ArtifactType, Annotations: r.Annotations})
			}
			return err
		})
		return out, err
	}
	repo, ok := upstream.SplitRepo(full)
	if !ok || c.o.Offline {
		return local()
	}
	idx, err := c.client().Referrers(ctx, repo, d)
	switch {
	case err == nil:
		return idx.Manifests, nil
	case errors.Is(err, upstream.ErrNoReferrersAPI):
		// the fallback tag: an index of the referrers, kept up by the
		// clients that push them
		m, err := c.Manifest(ctx, full, oci.ReferrersTag(d))
		if errors.Is(err, upstream.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		pm, err := oci.ParseManifest(m.MediaType, m.Body)
		if err != nil || !pm.IsIndex() {
			return nil, fmt.Errorf("%w: %s:%s is not an index of referrers", ErrUpstreamInvalid, full, oci.ReferrersTag(d))
		}
		return pm.Manifests, nil
	case upstream.IsTemporary(err):
		refs, lerr := local()
		if lerr != nil {
			return nil, err
		}
		c.fallback(ctx, full, "referrers", d, err)
		return refs, nil
	default:
		return nil, err
	}
}

// IsNotFound tells whether err says the content does not exist: the
// upstream lacks it, or the cache does offline.
func IsNotFound(err error) bool {
	return errors.Is(err, upstream.ErrNotFound) || errors.Is(err, ErrNotCached) || errors.Is(err, cas.ErrNotFound) ||
		errors.Is(err, repodb.ErrRepoNotFound) || errors.Is(err, repodb.ErrTagNotFound) || errors.Is(err, repodb.ErrManifestNotFound)
}

// IsUnreachable tells whether err says the upstream could not be reached
// (nothing authoritative was answered).
func IsUnreachable(err error) bool { return upstream.IsTemporary(err) }
