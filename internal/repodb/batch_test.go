package repodb

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func pendingCalls(d *DB) int {
	d.group.mu.Lock()
	defer d.group.mu.Unlock()
	return len(d.group.pending)
}

// TestBatch: the calls made while a commit is under way share the next
// transaction (one commit for all of them); a failing call gets its own
// error and leaves nothing, the others of its batch are still committed;
// a call with no commit under way does not wait.
func TestBatch(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "index.db"), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	link := func(repo string) func(*Tx) error {
		return func(tx *Tx) error { return tx.LinkBlob(repo, digest.FromString(repo), 1) }
	}

	// alone: committed at once
	start := time.Now()
	if err := d.Batch(link("alone")); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("a lone Batch took %s", el)
	}

	held := make(chan struct{})
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- d.Batch(func(tx *Tx) error {
			select {
			case <-held:
			default:
				close(held)
			}
			<-release
			return link("first")(tx)
		})
	}()
	<-held
	boom := errors.New("boom")
	const n = 10
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprint("r", i)
			if i == 3 {
				results[i] = d.Batch(func(tx *Tx) error {
					if err := link(repo)(tx); err != nil {
						return err
					}
					return boom
				})
				return
			}
			results[i] = d.Batch(link(repo))
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); pendingCalls(d) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls pending, want %d", pendingCalls(d), n)
		}
		time.Sleep(time.Millisecond)
	}
	before := d.group.commits.Load()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range results {
		if i == 3 {
			if !errors.Is(err, boom) {
				t.Errorf("call 3: %v, want boom", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if c := d.group.commits.Load() - before; c != 2 {
		t.Errorf("%d commits for the held call and the %d behind it, want 2", c, n)
	}
	_ = d.View(func(tx *Tx) error {
		for i := range n {
			repo := fmt.Sprint("r", i)
			_, err := tx.Blob(repo, digest.FromString(repo))
			if i == 3 && err == nil {
				t.Error("the failed call's link was written")
			}
			if i != 3 && err != nil {
				t.Errorf("%s: %v", repo, err)
			}
		}
		if _, err := tx.Blob("first", digest.FromString("first")); err != nil {
			t.Error(err)
		}
		return nil
	})
}

// TestBatchConcurrent: many concurrent callers all get their changes
// committed, in fewer transactions than calls.
func TestBatchConcurrent(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "index.db"), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprint("c", i)
			errs <- d.Batch(func(tx *Tx) error { return tx.LinkBlob(repo, digest.FromString(repo), int64(i)) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = d.View(func(tx *Tx) error {
		for i := range n {
			repo := fmt.Sprint("c", i)
			if size, err := tx.Blob(repo, digest.FromString(repo)); err != nil || size != int64(i) {
				t.Errorf("%s: %d, %v", repo, size, err)
			}
		}
		return nil
	})
	t.Logf("%d calls in %d commits", n, d.group.commits.Load())
	if d.group.commits.Load() >= n {
		t.Errorf("%d commits for %d concurrent calls: none shared", d.group.commits.Load(), n)
	}
}

// TestBatchPanic: a fn that panics raises its panic in its own caller,
// writes nothing, and the group goes on committing the others.
func TestBatchPanic(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "index.db"), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	func() {
		defer func() {
			if r := recover(); r != "oops" {
				t.Errorf("recovered %v, want the fn's panic", r)
			}
		}()
		_ = d.Batch(func(tx *Tx) error {
			if err := tx.LinkBlob("p", digest.FromString("p"), 1); err != nil {
				return err
			}
			panic("oops")
		})
		t.Error("Batch returned after its fn panicked")
	}()
	if err := d.Batch(func(tx *Tx) error { return tx.LinkBlob("q", digest.FromString("q"), 1) }); err != nil {
		t.Fatal(err)
	}
	_ = d.View(func(tx *Tx) error {
		if _, err := tx.Blob("p", digest.FromString("p")); err == nil {
			t.Error("the panicking fn's link was written")
		}
		if _, err := tx.Blob("q", digest.FromString("q")); err != nil {
			t.Error(err)
		}
		return nil
	})
}
