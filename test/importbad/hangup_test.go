package importbad

import (
	"path/filepath"
	"testing"
	"time"
)

// TestClientHangsUp: a client that goes away in the middle of an upload
// (connection closed) publishes nothing, leaves no temp file behind, and a
// retry completes with what was committed counted as present.
func TestClientHangsUp(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startAgent(t, data)
	f := newFixture(t, "hangup", "1.0.0", fixtureOptions{layerSizes: []int{4 << 20, 4 << 20, 4 << 20, 4 << 20}})
	archive := storedGzip(tarBytes(t, f.entries(), true))
	for _, chunked := range []bool{false, true} {
		a := putBytes(t, p, archive, putOptions{hangUpAt: int64(len(archive)) / 2, chunk: 256 << 10, pause: time.Millisecond, chunked: chunked})
		if a.err == nil {
			t.Errorf("chunked=%v: an answer to an upload cut in the middle: %s", chunked, a)
		}
		requireHealthy(t, p)
		requireNothingOf(t, p, f)
		// the agent notices the hang-up and removes its temp file
		deadline := time.Now().Add(5 * time.Second)
		for len(ingestFiles(t, data)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if left := ingestFiles(t, data); len(left) > 0 {
			t.Errorf("chunked=%v: temp files left 5 s after the client hung up: %v", chunked, left)
		}
	}
	committed := 0
	stored := storedBlobs(t, data)
	for _, b := range f.allBlobs() {
		if stored[string(b.desc.Digest)] {
			committed++
		}
	}
	r := mustImport(t, p, archive, putOptions{})
	if r.BlobsPresent != committed || r.BlobsReceived != len(f.allBlobs())-committed {
		t.Errorf("retry: present %d received %d, want %d and %d", r.BlobsPresent, r.BlobsReceived, committed, len(f.allBlobs())-committed)
	}
	requirePublished(t, p, f)
	stopAgent(t, p)
	requireFsckClean(t, "hang-up", data)
}
