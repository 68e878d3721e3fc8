package importbad

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestKillDuringImport kills the agent with SIGKILL at several moments of the
// import of a ~150 MiB archive (random layers across several images) into a
// data folder that already holds a package, and each time checks:
//
//   - `crpe fsck --data` is clean right away, before any restart (leftover
//     temp files in ingest/ are information, not problems);
//   - after a restart the package imported before is intact and served (the
//     manifest by tag has the same digest, every blob is served with its
//     bytes) and the big package is published entirely or not at all;
//   - a new import of the same archive completes, and the blobs committed
//     before the kill are counted as already present (a raw PUT) or left
//     out by the delta (`crpe import --to`).
func TestKillDuringImport(t *testing.T) {
	if testing.Short() {
		t.Skip("a 150 MiB import, killed 4 times")
	}
	testenv.Crpe(t)
	start := time.Now()
	big := newFixture(t, "big", "1.0.0", fixtureOptions{layerSizes: []int{10 << 20, 10 << 20, 10 << 20}, extraImages: 4})
	archive := storedGzip(tarBytes(t, big.entries(), true))
	file := filepath.Join(t.TempDir(), "big.kubepkg.tgz")
	writeFile(t, file, archive)
	t.Logf("archive: %d MiB, %d blobs (%d layers), made in %v", len(archive)>>20, len(big.allBlobs()), len(big.layers), time.Since(start).Round(time.Millisecond))
	if len(archive) < 140<<20 {
		t.Fatalf("archive of %d bytes, want about 150 MiB", len(archive))
	}
	isLayer := map[string]bool{}
	for _, l := range big.layers {
		isLayer[string(l.desc.Digest)] = true
	}
	inArchive := map[string]bool{}
	for _, b := range big.allBlobs() {
		inArchive[string(b.desc.Digest)] = true
	}

	points := []struct {
		name     string
		fraction float64 // of the body sent when the agent is killed
		viaCLI   bool    // re-import with crpe import --to (delta)
	}{
		{"at-10%", 0.10, false},
		{"at-50%", 0.50, true},
		{"at-90%", 0.90, false},
		{"after-the-last-byte", 1.0, true},
	}
	midBlob := 0 // kills that left a blob half written
	defer func() {
		if !t.Failed() && midBlob == 0 {
			t.Errorf("no kill landed in the middle of a blob (no temp file was ever left): the test does not test what it should")
		}
	}()
	for _, pt := range points {
		t.Run(pt.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			p := startAgent(t, data)
			before := newFixture(t, "before", "1.0.0", fixtureOptions{})
			mustImport(t, p, before.archive(t), putOptions{})

			// stream the archive, throttled, and kill the agent when the
			// fraction of it was written
			at := int64(float64(len(archive)) * pt.fraction)
			var killedAt time.Duration
			t0 := time.Now()
			a := putBytes(t, p, archive, putOptions{chunk: 1 << 20, pause: 2 * time.Millisecond, atBytes: at, timeout: 60 * time.Second,
				at: func() {
					_ = p.Cmd.Process.Kill() // SIGKILL
					<-p.Stopped()
					killedAt = time.Since(t0)
				}})
			<-p.Stopped()
			answered := a.err == nil && a.status == http.StatusCreated
			t.Logf("killed after %d of %d bytes (%v into the upload); answer: %s", at, len(archive), killedAt.Round(time.Millisecond), a)
			if a.err == nil && a.status != http.StatusCreated {
				t.Errorf("the agent answered %s before it was killed", a)
			}

			// fsck right away, no restart
			rep := requireFsckClean(t, pt.name+" (right after the kill)", data)
			committed := map[string]bool{}
			for d := range storedBlobs(t, data) {
				if inArchive[d] {
					committed[d] = true
				}
			}
			layersCommitted := 0
			for d := range committed {
				if isLayer[d] {
					layersCommitted++
				}
			}
			temps := len(ingestFiles(t, data))
			if temps > 0 {
				midBlob++
			}
			t.Logf("fsck: %+v; %d of the archive's %d blobs committed (%d layers), %d temp files left",
				rep.Summary, len(committed), len(inArchive), layersCommitted, temps)
			if pt.fraction < 1 && len(committed) == len(inArchive) {
				t.Errorf("every blob is committed although the agent was killed at %.0f%% of the upload", pt.fraction*100)
			}

			// restart: the earlier package intact, big all or nothing
			p = startAgent(t, data)
			if ingest := ingestFiles(t, data); len(ingest) > 0 {
				t.Errorf("temp files left after the restart: %v", ingest)
			}
			requirePublished(t, p, before)
			published := 0
			for _, r := range big.refs() {
				if g := get(t, p, "/v2/"+big.repos[r]+"/manifests/"+big.tags[r], manifestTypes...); g.status == http.StatusOK {
					published++
				}
			}
			listed := false
			for _, it := range listPackages(t, p) {
				listed = listed || it.Name == big.name
			}
			switch {
			case answered && (published != len(big.refs()) || !listed):
				t.Errorf("the import was answered 201, but after the restart %d of %d tags are published and listed=%v", published, len(big.refs()), listed)
			case pt.fraction < 1 && (published > 0 || listed):
				t.Errorf("killed mid-upload, yet %d tags are published and listed=%v", published, listed)
			case published != 0 && published != len(big.refs()):
				t.Errorf("half published: %d of %d tags", published, len(big.refs()))
			case (published != 0) != listed:
				t.Errorf("tags published: %d, package listed: %v: want both or neither", published, listed)
			case published == 0:
				requireNothingOf(t, p, big)
			}

			// import the same archive again
			if pt.viaCLI {
				out, code := runCrpe(t, 60*time.Second, "import", file, "--to", p.URL, "--token", token, "--json")
				if code != 0 {
					t.Fatalf("crpe import --to after the kill: exit %d:\n%s", code, out)
				}
				var res struct {
					Import       importResult `json:"import"`
					BytesSent    int64        `json:"bytesSent"`
					BlobsOmitted int          `json:"blobsOmitted"`
					BytesOmitted int64        `json:"bytesOmitted"`
				}
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("crpe import --json: %v\n%s", err, out)
				}
				t.Logf("re-import via crpe import --to: sent %d bytes, left out %d layers (%d bytes), present %d, received %d",
					res.BytesSent, res.BlobsOmitted, res.BytesOmitted, res.Import.BlobsPresent, res.Import.BlobsReceived)
				if res.BlobsOmitted != layersCommitted {
					t.Errorf("the delta left out %d layers, want the %d committed before the kill", res.BlobsOmitted, layersCommitted)
				}
				if res.Import.BlobsPresent+res.BlobsOmitted != len(committed) {
					t.Errorf("present %d + left out %d != %d blobs committed before the kill", res.Import.BlobsPresent, res.BlobsOmitted, len(committed))
				}
				if res.Import.BlobsReceived != len(inArchive)-len(committed) {
					t.Errorf("received %d blobs, want %d (those not committed before the kill)", res.Import.BlobsReceived, len(inArchive)-len(committed))
				}
				if max := int64(len(archive)) - res.BytesOmitted + 1<<20; res.BytesSent > max {
					t.Errorf("sent %d bytes, want at most %d", res.BytesSent, max)
				}
			} else {
				r := mustImport(t, p, archive, putOptions{timeout: 60 * time.Second})
				t.Logf("re-import via PUT: present %d, received %d", r.BlobsPresent, r.BlobsReceived)
				if r.BlobsPresent != len(committed) || r.BlobsReceived != len(inArchive)-len(committed) {
					t.Errorf("re-import: blobsPresent %d, blobsReceived %d; want %d and %d (committed before the kill, and the rest)",
						r.BlobsPresent, r.BlobsReceived, len(committed), len(inArchive)-len(committed))
				}
			}
			requirePublished(t, p, big)
			requirePublished(t, p, before)
			stopAgent(t, p)
			requireFsckClean(t, pt.name+" (at the end)", data)
		})
	}
}
