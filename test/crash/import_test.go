package crash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

// manyBlobsPackage is a package of 6 single-platform images of 40 random
// layers each (1 B – 96 KiB, one of 3 MiB per image): 252 blobs, so that an
// import spends most of its time staging blobs one after another, the
// window in which the agent publishes nothing until its one batched sync.
func manyBlobsPackage(rng *rand.Rand) *seedtest.Package {
	layer := func(n int) seedtest.Blob {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return seedtest.NewBlob(ocispec.MediaTypeImageLayerGzip, b)
	}
	p := &seedtest.Package{Name: "crashimport", Version: "1.0.0", Platforms: []string{"linux/amd64"}}
	for i := range 6 {
		var layers []seedtest.Blob
		for j := range 40 {
			n := 1 + rng.IntN(96<<10)
			if j == 20 {
				n = 3 << 20
			}
			layers = append(layers, layer(n))
		}
		cfg := seedtest.NewConfig(false, "linux/amd64", fmt.Sprintf("crash-%d-%x", i, rng.Uint64()))
		m := seedtest.NewManifest(false, "linux/amd64", cfg, layers...)
		name := fmt.Sprintf("docker.io/crash/app%d", i)
		p.Images = append(p.Images, seedtest.SingleImage(name+":v1", name, "v1", m))
	}
	return p
}

// TestKillDuringImport kills the agent with SIGKILL while `crpe import
// --to` streams a 252-blob archive into it: at random moments within the
// time an import takes (measured first), and while staged blobs wait in the
// ingest folder for the import's one batched sync and publish. Every cycle
// starts from a data folder that lacks the package (an agent that holds it
// already would finish a new import at once, and the kill would cut
// nothing). After every kill:
//   - fsck finds the folder clean (leftover temp files in ingest/ only);
//   - restarted, the agent serves either all of the package's images or
//     none (no tag is published before every blob is durable and linked);
//
// and at the end an import runs to completion on the last cycle's folder,
// and fsck --repair leaves a folder that fsck re-hashes clean, with every
// image served.
func TestKillDuringImport(t *testing.T) {
	testenv.Crpe(t)
	seed := seedFromEnv(t)
	rng := rand.New(rand.NewPCG(seed, 11))
	pkg := manyBlobsPackage(rng)
	archive := filepath.Join(t.TempDir(), "many.kubepkg.tgz")
	if err := os.WriteFile(archive, testenv.CrpeArchive(t, pkg), 0o644); err != nil {
		t.Fatal(err)
	}
	var data string // the cycle's
	// served reports how many of the package's tags the agent serves
	served := func(p *testenv.Proc) int {
		c := newClient(p, false)
		defer c.close()
		n := 0
		for _, im := range pkg.Images {
			r, err := c.do(http.MethodHead, "/v2/"+im.Name+"/manifests/"+im.Tag, map[string]string{"Accept": ociManifest}, nil, -1)
			if err != nil {
				t.Fatalf("HEAD %s: %v", im.Ref, err)
			}
			if r.status == http.StatusOK {
				n++
			}
		}
		return n
	}
	importTo := func(ctx context.Context, p *testenv.Proc) *exec.Cmd {
		cmd := exec.CommandContext(ctx, testenv.Crpe(t), "import", archive, "--to", p.URL, "--token", token, "--full", "--json")
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// how long an import into an agent lacking the package takes here
	var took time.Duration
	{
		data = filepath.Join(t.TempDir(), "data")
		p := testenv.StartAgent(t, testenv.AgentOptions{Data: data, Token: token})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		begin := time.Now()
		err := importTo(ctx, p).Wait()
		took = time.Since(begin)
		cancel()
		kill(t, p)
		if err != nil {
			t.Fatalf("the import that measures: %v", err)
		}
	}
	states := map[string]int{}
	for cycle := range 8 {
		data = filepath.Join(t.TempDir(), "data")
		p := testenv.StartAgent(t, testenv.AgentOptions{Data: data, Token: token})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		done := make(chan error, 1)
		cmd := importTo(ctx, p)
		go func() { done <- cmd.Wait() }()
		when := "at a random moment"
		if cycle%2 == 0 {
			// while staged blobs wait for the batch's sync and publish
			// (or, when the import ends before that many are staged, after it)
			when = "while blobs are staged"
			want := 10 + rng.IntN(150)
			ended := false
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !ended; {
				if es, err := os.ReadDir(filepath.Join(data, "ingest")); err == nil && len(es) >= want {
					break
				}
				select {
				case err := <-done:
					done <- err // for the wait below
					ended = true
				default:
					time.Sleep(200 * time.Microsecond)
				}
			}
		} else {
			time.Sleep(time.Duration(rng.Int64N(int64(took) + 1)))
		}
		staged := len(ingestEntries(t, data))
		kill(t, p)
		err := <-done
		cancel()
		state := fmt.Sprintf("%s, %d files in ingest", when, staged)
		if err == nil {
			state = "import had finished"
		}
		states[state]++
		rep, code := runFsck(t, data)
		requireClean(t, fmt.Sprintf("cycle %d (%s)", cycle, state), data, rep, code)
		if t.Failed() {
			return
		}
		p = testenv.StartAgent(t, testenv.AgentOptions{Data: data, Token: token})
		if n := served(p); n != 0 && n != len(pkg.Images) {
			t.Fatalf("cycle %d (%s): after the restart the agent serves %d of %d images: an import was published in part", cycle, state, n, len(pkg.Images))
		}
		kill(t, p)
	}
	t.Logf("what the kills cut (seed %d, an import takes %s): %v", seed, took.Round(time.Millisecond), states)

	p := testenv.StartAgent(t, testenv.AgentOptions{Data: data, Token: token})
	if n := served(p); n != 0 && n != len(pkg.Images) {
		t.Fatalf("after the last kill the agent serves %d of %d images", n, len(pkg.Images))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := importTo(ctx, p).Wait(); err != nil {
		t.Fatalf("the import after the kills: %v", err)
	}
	if n := served(p); n != len(pkg.Images) {
		t.Fatalf("after a complete import the agent serves %d of %d images", n, len(pkg.Images))
	}
	kill(t, p)
	rep, code := runFsck(t, data, "--repair")
	requireClean(t, "fsck --repair", data, rep, code)
	if es := ingestEntries(t, data); len(es) != 0 {
		t.Errorf("fsck --repair left %d files in ingest", len(es))
	}
	rep, code = runFsck(t, data)
	if code != 0 || rep.Summary.Problems != 0 || rep.Summary.Info != 0 {
		t.Errorf("fsck after --repair: exit %d, %+v", code, rep.Summary)
	}
	if rep.Summary.Blobs < 6*42 {
		t.Errorf("fsck re-hashed %d blobs, want at least %d", rep.Summary.Blobs, 6*42)
	}
}
