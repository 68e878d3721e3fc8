package importbad

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// TestConcurrentImports imports 4 different packages and 2 copies of one
// archive at the same time (every body is held at its middle until all six
// reached it, so the imports overlap) and checks every one is answered 201,
// every package is listed and served, and fsck finds the data folder clean.
func TestConcurrentImports(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startAgent(t, data)
	opt := fixtureOptions{layerSizes: []int{1 << 20, 2 << 20, 512 << 10}}
	var fxs []*fixture
	for i := 0; i < 4; i++ {
		fxs = append(fxs, newFixture(t, fmt.Sprintf("conc%d", i), "1.0.0", opt))
	}
	twin := newFixture(t, "twin", "2.0.0", opt)
	bodies := [][]byte{}
	for _, f := range fxs {
		bodies = append(bodies, f.archive(t))
	}
	tb := twin.archive(t)
	bodies = append(bodies, tb, tb)

	var barrier sync.WaitGroup
	barrier.Add(len(bodies))
	released := make(chan struct{})
	go func() { barrier.Wait(); close(released) }()
	answers := make([]answer, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := putOptions{chunk: 64 << 10, atBytes: int64(len(b) / 2), timeout: 40 * time.Second, at: func() {
				barrier.Done()
				select {
				case <-released:
				case <-time.After(20 * time.Second):
				}
			}}
			if i%2 == 1 {
				o.chunked = true
			}
			answers[i] = putBytes(t, p, b, o)
		}()
	}
	wg.Wait()
	select {
	case <-released:
	default:
		t.Fatal("the six uploads never were all in flight at once")
	}
	unchanged := 0
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusCreated {
			t.Errorf("import %d: %s", i, a)
			continue
		}
		r := a.result(t)
		if len(r.Packages) != 1 {
			t.Errorf("import %d: packages %+v", i, r.Packages)
			continue
		}
		if r.Packages[0].Unchanged {
			unchanged++
		}
	}
	if unchanged > 1 {
		t.Errorf("%d imports say unchanged, want at most 1 (the second copy of the twin archive)", unchanged)
	}
	var names []string
	for _, it := range listPackages(t, p) {
		names = append(names, it.Name+"@"+it.Version)
	}
	sort.Strings(names)
	want := []string{"conc0@1.0.0", "conc1@1.0.0", "conc2@1.0.0", "conc3@1.0.0", "twin@2.0.0"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("packages %v, want %v", names, want)
	}
	for _, f := range append(fxs, twin) {
		requirePublished(t, p, f)
	}
	stopAgent(t, p)
	requireFsckClean(t, "concurrent", data)
}
