package export

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/oci"
)

func fakeBlob(kind oci.Kind, name string, size int64) archive.Blob {
	return archive.Blob{Kind: kind, Desc: ocispec.Descriptor{Digest: digest.FromString(name), Size: size}}
}

// TestFetcherOrder: a free slot takes the most urgent blob queued across
// every image walked so far: configs first, then the largest layer; a blob
// is fetched once however many images name it, and never more than parallel
// at a time.
func TestFetcherOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := map[digest.Digest]string{}
	blob := func(kind oci.Kind, name string, size int64) archive.Blob {
		b := fakeBlob(kind, name, size)
		names[b.Desc.Digest] = name
		return b
	}
	var (
		mu      sync.Mutex
		order   []string
		running int
		most    int
	)
	first := make(chan struct{})
	release := make(chan struct{})
	get := func(ctx context.Context, repo string, d digest.Digest, size int64) error {
		mu.Lock()
		order = append(order, repo+"/"+names[d])
		running++
		most = max(most, running)
		n := len(order)
		mu.Unlock()
		if n == 1 { // hold the first until every image is queued
			close(first)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	}
	f := newFetcherFunc(ctx, get, 1, nil, nil)
	f.start("a", "a:1", []archive.Blob{blob(oci.KindLayer, "a-small", 10), blob(oci.KindConfig, "a-config", 1), blob(oci.KindLayer, "a-big", 100)})
	<-first // a-config, the only config queued, is being fetched
	f.start("b", "b:1", []archive.Blob{blob(oci.KindLayer, "b-mid", 50), blob(oci.KindConfig, "b-config", 2), blob(oci.KindLayer, "huge", 1000)})
	// a layer b shares with a is fetched once, from the first image that named it
	f.start("c", "c:1", []archive.Blob{blob(oci.KindLayer, "a-big", 100)})
	close(release)
	if err := f.wait(); err != nil {
		t.Fatal(err)
	}
	want := []string{"a/a-config", "b/b-config", "b/huge", "a/a-big", "b/b-mid", "a/a-small"}
	if !slices.Equal(order, want) {
		t.Errorf("fetched %v, want %v", order, want)
	}
	if most != 1 {
		t.Errorf("%d fetches at once, want at most 1", most)
	}
}

// TestFetcherParallel: up to parallel blobs are fetched at once, a failure
// is reported with its image and stops what was queued behind it.
func TestFetcherParallel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		running int
		most    int
		fetched int
	)
	arrived := make(chan struct{}, 16)
	gate := make(chan struct{})
	get := func(ctx context.Context, repo string, d digest.Digest, size int64) error {
		mu.Lock()
		running++
		most = max(most, running)
		fetched++
		mu.Unlock()
		arrived <- struct{}{}
		<-gate
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	}
	f := newFetcherFunc(ctx, get, 3, nil, nil)
	var blobs []archive.Blob
	for i := range 8 {
		blobs = append(blobs, fakeBlob(oci.KindLayer, fmt.Sprint("l", i), int64(i+1)))
	}
	f.start("r", "r:1", blobs)
	for range 3 {
		<-arrived
	}
	select {
	case <-arrived:
		t.Fatal("a fourth fetch started with 3 slots busy")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	if err := f.wait(); err != nil {
		t.Fatal(err)
	}
	if most != 3 || fetched != 8 {
		t.Errorf("%d at once (want 3), %d fetched (want 8)", most, fetched)
	}

	boom := errors.New("boom")
	calls := 0
	g := newFetcherFunc(ctx, func(ctx context.Context, repo string, d digest.Digest, size int64) error {
		calls++
		return boom
	}, 1, nil, nil)
	g.start("r", "r:2", blobs)
	err := g.wait()
	if !errors.Is(err, boom) || calls != 1 {
		t.Errorf("wait: %v after %d calls, want boom after 1", err, calls)
	}
}

// TestFetcherBigLayerDoesNotWait: a layer of at least bigLayer bytes, larger
// than every fetch in flight, starts at once in one fetch beyond parallel;
// a layer no larger than one in flight waits for a slot.
func TestFetcherBigLayerDoesNotWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := map[digest.Digest]string{}
	blob := func(name string, size int64) archive.Blob {
		b := fakeBlob(oci.KindLayer, name, size)
		names[b.Desc.Digest] = name
		return b
	}
	var (
		mu      sync.Mutex
		running int
		most    int
		order   []string
	)
	started := make(chan string, 8)
	release := map[string]chan struct{}{"small": make(chan struct{}), "big": make(chan struct{})}
	get := func(ctx context.Context, repo string, d digest.Digest, size int64) error {
		name := names[d]
		mu.Lock()
		running++
		most = max(most, running)
		order = append(order, name)
		mu.Unlock()
		started <- name
		if ch := release[name]; ch != nil {
			<-ch
		}
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	}
	f := newFetcherFunc(ctx, get, 1, nil, nil)
	f.start("a", "a:1", []archive.Blob{blob("small", 1<<20)})
	if n := <-started; n != "small" {
		t.Fatalf("first fetch %s", n)
	}
	// with a config of its own, which goes first in the queue
	f.start("b", "b:1", []archive.Blob{fakeBlob(oci.KindConfig, "b-config", 100), blob("big", bigLayer), blob("other", 2<<20)})
	select {
	case n := <-started:
		if n != "big" {
			t.Fatalf("fetch started beside the held one: %s, want big", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the big layer waited for the slot")
	}
	// as large as the big one in flight: no extra fetch for it
	f.start("c", "c:1", []archive.Blob{blob("big2", bigLayer)})
	select {
	case n := <-started:
		t.Fatalf("%s started with the slot and the extra fetch busy", n)
	case <-time.After(50 * time.Millisecond):
	}
	close(release["small"])
	close(release["big"])
	if err := f.wait(); err != nil {
		t.Fatal(err)
	}
	if most != 2 {
		t.Errorf("%d fetches at once, want 2 (the slot and the big layer's)", most)
	}
	if len(order) != 5 {
		t.Errorf("fetched %v, want 5 blobs", order)
	}
}
