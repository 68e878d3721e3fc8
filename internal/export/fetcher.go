package export

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/pullthrough"
)

// fetcher fetches blobs into the cache, each once, at most parallel at a
// time. An image's blobs are started as soon as its walk knows them (the
// largest first), not after every image is walked: the longest fetch is the
// tail the archive waits for.
type fetcher struct {
	cache    *pullthrough.Cache
	ctx      context.Context
	cancel   context.CancelFunc
	sem      chan struct{}
	skip     func(archive.Blob) bool
	progress func(image string, n int64)

	mu      sync.Mutex
	started map[digest.Digest]bool
	wg      sync.WaitGroup
	err     error
}

func newFetcher(ctx context.Context, cache *pullthrough.Cache, parallel int, skip func(archive.Blob) bool, progress func(string, int64)) *fetcher {
	ctx, cancel := context.WithCancel(ctx)
	return &fetcher{cache: cache, ctx: ctx, cancel: cancel, sem: make(chan struct{}, parallel), skip: skip,
		progress: progress, started: map[digest.Digest]bool{}}
}

// start fetches the blobs not started yet, the largest first.
func (f *fetcher) start(repo, image string, blobs []archive.Blob) {
	blobs = append([]archive.Blob(nil), blobs...)
	sort.SliceStable(blobs, func(i, j int) bool {
		if blobs[i].Desc.Size != blobs[j].Desc.Size {
			return blobs[i].Desc.Size > blobs[j].Desc.Size
		}
		return blobs[i].Desc.Digest < blobs[j].Desc.Digest
	})
	for _, b := range blobs {
		d := b.Desc.Digest
		f.mu.Lock()
		if f.started[d] || (f.skip != nil && f.skip(b)) {
			f.mu.Unlock()
			continue
		}
		f.started[d] = true
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			select {
			case f.sem <- struct{}{}:
			case <-f.ctx.Done():
				return
			}
			defer func() { <-f.sem }()
			if _, err := f.cache.Blob(f.ctx, repo, d, b.Desc.Size); err != nil {
				f.fail(fmt.Errorf("image %s: blob %s: %w", image, d, err))
				return
			}
			if f.progress != nil {
				f.progress(image, b.Desc.Size)
			}
		}()
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
