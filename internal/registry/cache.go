package registry

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

// manifestCache keeps recently served manifest bytes. Content-addressed
// bytes never change, so entries never go stale; the cache is bounded by
// total size.
type manifestCache struct {
	mu    sync.Mutex
	max   int
	size  int
	order *list.List
	items map[digest.Digest]*list.Element
}

type cacheEntry struct {
	d digest.Digest
	b []byte
}

func newManifestCache(max int) *manifestCache {
	return &manifestCache{max: max, order: list.New(), items: map[digest.Digest]*list.Element{}}
}

func (c *manifestCache) get(d digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[d]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry).b, true
	}
	return nil, false
}

func (c *manifestCache) put(d digest.Digest, b []byte) {
	if len(b) > c.max/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[d]; ok {
		return
	}
	c.items[d] = c.order.PushFront(&cacheEntry{d, b})
	c.size += len(b)
	for c.size > c.max {
		e := c.order.Back()
		ce := e.Value.(*cacheEntry)
		c.order.Remove(e)
		delete(c.items, ce.d)
		c.size -= len(ce.b)
	}
}
