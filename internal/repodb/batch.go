package repodb

import (
	"fmt"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// group is the group commit of Batch: the calls that arrive while a
// transaction commits wait, and the next transaction runs them all.
type group struct {
	mu         sync.Mutex
	pending    []*batchCall
	committing bool
	commits    atomic.Int64 // transactions Batch committed
}

type batchCall struct {
	fn   func(*Tx) error
	done chan error    // its result
	lead chan struct{} // closed when it is to commit the next batch
}

// Batch runs fn in a write transaction, like Update, shared with the Batch
// calls made while the transaction before it commits: their changes become
// durable with one commit (one pair of fdatasyncs) instead of one each, and
// Batch returns once fn's changes are durable, or with fn's error and
// nothing of fn written.
//
// Unlike bbolt's own Batch, a call never waits for a timer: with no commit
// under way, fn's transaction starts at once. The price is the same as
// bbolt's: fn may run more than once (when another call of its batch fails,
// the batch is run again without it), so fn must be idempotent and must not
// act outside the transaction. A failing fn is run again alone, so the error
// it returns is its own, not one caused by the others' changes.
func (d *DB) Batch(fn func(*Tx) error) error {
	c := &batchCall{fn: fn, done: make(chan error, 1), lead: make(chan struct{})}
	g := &d.group
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.committing {
		g.mu.Unlock()
		select {
		case err := <-c.done:
			return result(err)
		case <-c.lead:
			// the last leader handed over: c is pending[0]
		}
		g.mu.Lock()
	}
	g.committing = true
	calls := g.pending
	g.pending = nil
	g.mu.Unlock()

	d.commit(calls)

	g.mu.Lock()
	if len(g.pending) > 0 {
		close(g.pending[0].lead) // the next batch is its caller's to commit
	} else {
		g.committing = false
	}
	g.mu.Unlock()
	return result(<-c.done)
}

// panicked carries a panic of a call's fn, run by another goroutine, back
// to the call, where it is raised again: a panicking fn must not stop the
// group (the others would wait forever).
type panicked struct{ v any }

func (p panicked) Error() string { return fmt.Sprintf("panic: %v", p.v) }

func result(err error) error {
	if p, ok := err.(panicked); ok {
		panic(p.v)
	}
	return err
}

func safely(fn func(*Tx) error, t *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicked{r}
		}
	}()
	return fn(t)
}

// commit runs calls in one transaction and tells each its result; a call
// whose fn fails is run alone and the others again together.
func (d *DB) commit(calls []*batchCall) {
	for len(calls) > 0 {
		failed := -1
		err := d.db.Update(func(tx *bolt.Tx) error {
			t := &Tx{tx}
			for i, c := range calls {
				if err := safely(c.fn, t); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			if err == nil {
				d.group.commits.Add(1)
			}
			for _, c := range calls {
				c.done <- err // nil, or the commit's own failure
			}
			return
		}
		c := calls[failed]
		c.done <- d.Update(func(t *Tx) error { return safely(c.fn, t) })
		calls = append(calls[:failed:failed], calls[failed+1:]...)
	}
}
