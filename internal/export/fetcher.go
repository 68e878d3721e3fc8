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
// first).
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
	running int // workers taking from the queue
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
		progress: progress, started: map[digest.Digest]bool{}}
}

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
// parallel in all.
func (f *fetcher) start(repo, image string, blobs []archive.Blob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range blobs {
		d := b.Desc.Digest
		if f.started[d] || (f.skip != nil && f.skip(b)) {
			continue
		}
		f.started[d] = true
		heap.Push(&f.queue, queued{blob: b, repo: repo, image: image})
	}
	for f.running < f.parallel && f.running < f.queue.Len() {
		f.running++
		f.wg.Add(1)
		go f.work()
	}
}

// work fetches the most urgent blob queued until the queue is empty.
func (f *fetcher) work() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		if f.queue.Len() == 0 || f.ctx.Err() != nil {
			f.running--
			f.mu.Unlock()
			return
		}
		q := heap.Pop(&f.queue).(queued)
		f.mu.Unlock()
		d := q.blob.Desc.Digest
		if err := f.get(f.ctx, q.repo, d, q.blob.Desc.Size); err != nil {
			f.fail(fmt.Errorf("image %s: blob %s: %w", q.image, d, err))
			continue
		}
		if f.progress != nil {
			f.progress(q.image, q.blob.Desc.Size)
		}
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
