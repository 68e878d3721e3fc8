package export

import (
	"container/heap"
	"context"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
)

// fetcher fetches blobs into the cache, each once, at most parallel at a
// time. An image's blobs are queued as soon as its walk knows them, not after
// every image is walked, and each free slot takes the most urgent blob queued
// across all images: configs first (the archive writes them before any layer,
// so a config waiting behind layers stalls the writer), then the largest
// layer (the longest fetch is the tail the archive waits for, so it starts
// first). A layer of at least bigLayer bytes, larger than every fetch in
// flight, does not wait for a slot: one more fetch is started for it, so
// the longest fetch never waits behind shorter ones that happened to be
// walked first.
type fetcher struct {
	get      func(ctx context.Context, repo string, d digest.Digest, size int64) error
	ctx      context.Context
	cancel   context.CancelFunc
	parallel int
	skip     func(archive.Blob) bool
	progress func(image string, n int64)

	mu      sync.Mutex
	started map[digest.Digest]bool
	queue   fetchQueue
	running int                     // workers taking from the queue
	sizes   map[digest.Digest]int64 // the fetches in flight
	wg      sync.WaitGroup
	err     error
}

func newFetcher(ctx context.Context, cache *pullthrough.Cache, parallel int, skip func(archive.Blob) bool, progress func(string, int64)) *fetcher {
	get := func(ctx context.Context, repo string, d digest.Digest, size int64) error {
		_, err := cache.Blob(ctx, repo, d, size)
		return err
	}
	return newFetcherFunc(ctx, get, parallel, skip, progress)
}

func newFetcherFunc(ctx context.Context, get func(context.Context, string, digest.Digest, int64) error, parallel int, skip func(archive.Blob) bool, progress func(string, int64)) *fetcher {
	if parallel < 1 {
		parallel = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	return &fetcher{get: get, ctx: ctx, cancel: cancel, parallel: parallel, skip: skip,
		progress: progress, started: map[digest.Digest]bool{}, sizes: map[digest.Digest]int64{}}
}

// bigLayer is the smallest layer worth a fetch beyond the parallel ones
// when everything in flight is smaller.
const bigLayer = 16 << 20

// queued is a blob waiting for a slot.
type queued struct {
	blob        archive.Blob
	repo, image string
}

// fetchQueue is a heap of blobs, the most urgent first.
type fetchQueue []queued

func (q fetchQueue) Len() int { return len(q) }
func (q fetchQueue) Less(i, j int) bool {
	a, b := q[i].blob, q[j].blob
	if ac, bc := a.Kind == oci.KindConfig, b.Kind == oci.KindConfig; ac != bc {
		return ac
	}
	if a.Desc.Size != b.Desc.Size {
		return a.Desc.Size > b.Desc.Size
	}
	return a.Desc.Digest < b.Desc.Digest
}
func (q fetchQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *fetchQueue) Push(x any)   { *q = append(*q, x.(queued)) }
func (q *fetchQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// start queues the blobs not started yet and starts workers for them, up to
// parallel in all, and one more for the largest of them when it is a big
// layer larger than everything in flight.
func (f *fetcher) start(repo, image string, blobs []archive.Blob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var big *archive.Blob
	for i, b := range blobs {
		d := b.Desc.Digest
		if f.started[d] || (f.skip != nil && f.skip(b)) {
			continue
		}
		f.started[d] = true
		heap.Push(&f.queue, queued{blob: b, repo: repo, image: image})
		if b.Kind == oci.KindLayer && b.Desc.Size >= bigLayer && (big == nil || b.Desc.Size > big.Desc.Size) {
			big = &blobs[i]
		}
	}
	for f.running < f.parallel && f.queue.Len() > 0 {
		f.spawn(heap.Pop(&f.queue).(queued))
	}
	if big == nil || f.running >= 2*f.parallel || !f.largerThanInFlight(big.Desc.Size) {
		return
	}
	for i, q := range f.queue {
		if q.blob.Desc.Digest == big.Desc.Digest {
			f.spawn(heap.Remove(&f.queue, i).(queued)) // it leaves once over the limit
			return
		}
	}
}

// spawn starts a worker with q (f.mu held).
func (f *fetcher) spawn(q queued) {
	f.sizes[q.blob.Desc.Digest] = q.blob.Desc.Size
	f.running++
	f.wg.Add(1)
	go f.work(q)
}

func (f *fetcher) largerThanInFlight(size int64) bool {
	for _, s := range f.sizes {
		if s >= size {
			return false
		}
	}
	return true
}

// work fetches q, then the most urgent blob queued, until the queue is
// empty or more workers run than parallel.
func (f *fetcher) work(q queued) {
	defer f.wg.Done()
	for {
		d := q.blob.Desc.Digest
		err := f.get(f.ctx, q.repo, d, q.blob.Desc.Size)
		if err != nil {
			f.fail(fmt.Errorf("image %s: blob %s: %w", q.image, d, err))
		} else if f.progress != nil {
			f.progress(q.image, q.blob.Desc.Size)
		}
		f.mu.Lock()
		delete(f.sizes, d)
		if f.queue.Len() == 0 || f.ctx.Err() != nil || f.running > f.parallel {
			f.running--
			f.mu.Unlock()
			return
		}
		q = heap.Pop(&f.queue).(queued)
		f.sizes[q.blob.Desc.Digest] = q.blob.Desc.Size
		f.mu.Unlock()
	}
}

func (f *fetcher) fail(err error) {
	f.mu.Lock()
	if f.err == nil && f.ctx.Err() == nil {
		f.err = err
	}
	f.mu.Unlock()
	f.cancel()
}

// wait waits for every fetch started (each committed to the cache) and
// returns the first failure.
func (f *fetcher) wait() error {
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
