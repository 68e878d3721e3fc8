package importbad

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

// seedFixture is seedtest.Demo with repositories of its own (so that
// fixtures do not meet in one agent), and the fixture the helpers check
// agents against.
func seedFixture(name, version string, docker bool, seed uint64) (*seedtest.Package, *fixture) {
	p := seedtest.Demo(name, version, docker, seed)
	for i, im := range p.Images {
		im.Name = fmt.Sprintf("docker.io/importbad/%s-seed%d", name, i)
		im.Tag = version
		im.Ref = im.Name + ":" + im.Tag
	}
	f := &fixture{name: name, version: version, platforms: strings.Join(p.Platforms, ","),
		images: map[string]string{}, tops: map[string]ocispec.Descriptor{}, repos: map[string]string{}, tags: map[string]string{}}
	seen := map[string]bool{}
	add := func(list *[]blob, b seedtest.Blob) {
		if !seen[string(b.Desc.Digest)] {
			seen[string(b.Desc.Digest)] = true
			*list = append(*list, blob{desc: b.Desc, data: b.Data})
		}
	}
	for _, im := range p.Images {
		f.addImage(im.Ref, im.Name, im.Tag, im.Top.Desc)
		add(&f.manifests, im.Top)
		for _, c := range im.Children {
			add(&f.manifests, c.Blob)
			add(&f.configs, c.Config)
			for _, l := range c.Layers {
				add(&f.layers, l)
			}
		}
	}
	return p, f
}

// seedLies are hostile versions of an archive of p: status.digests lying
// about a size, a type or a name, a blob announced nowhere, a blob listed
// that nothing references, a corrupt blob. Each maps to the archive.
func seedLies(l seedtest.Layout, p *seedtest.Package) map[string][]byte {
	big := func(ds []seedtest.DigestMeta) int {
		for i := range ds {
			if ds[i].Size > 4<<20 {
				return i
			}
		}
		panic("no big layer")
	}
	with := func(edit func(ds []seedtest.DigestMeta) []seedtest.DigestMeta) []byte {
		q := *p
		q.Digests = edit(seedtest.Digests(l, p))
		return seedtest.Write(l, &q)
	}
	extra := seedtest.NewBlob("", []byte("a blob of no image"))
	extraEntry := seedtest.Entry{Name: seedtest.BlobName(extra.Desc.Digest), Data: extra.Data}
	es := seedtest.Entries(l, p)
	corrupt := append([]seedtest.Entry(nil), es...)
	for i := range corrupt {
		if len(corrupt[i].Data) > 4<<20 {
			d := append([]byte(nil), corrupt[i].Data...)
			d[len(d)/3] ^= 0x20
			corrupt[i].Data = d
		}
	}
	listedQ := *p
	listedQ.Digests = append(seedtest.Digests(l, p), seedtest.DigestMeta{Digest: extra.Desc.Digest, Type: "blob", Name: p.Images[0].Name, Size: extra.Desc.Size})
	listed := seedtest.Entries(l, &listedQ)
	return map[string][]byte{
		"size": with(func(ds []seedtest.DigestMeta) []seedtest.DigestMeta { ds[big(ds)].Size--; return ds }),
		"type": with(func(ds []seedtest.DigestMeta) []seedtest.DigestMeta { ds[big(ds)].Type = "manifest"; return ds }),
		"name": with(func(ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[big(ds)].Name = "docker.io/importbad/elsewhere"
			return ds
		}),
		"announced-nowhere":   seedtest.Archive(l, append(es[:2:2], append([]seedtest.Entry{extraEntry}, es[2:]...)...)),
		"listed-unreferenced": seedtest.Archive(l, append(listed[:2:2], append([]seedtest.Entry{extraEntry}, listed[2:]...)...)),
		"corrupt-blob":        seedtest.Archive(l, corrupt),
	}
}

// TestSeedLayouts: the agent takes an archive of each layout of the seed's
// tools (the phone app's, kubepkg v0.1's gzip tar with index.json after the
// blobs, kubepkg's plain tar after 2023), by PUT /api/v1/kubepkgs, by
// `crpe import --to` (the delta leaves out the layers the agent holds), by
// `crpe import --data`, and `crpe inspect --verify` passes it; its hostile
// versions are refused with 400, naming the entry, publishing nothing.
func TestSeedLayouts(t *testing.T) {
	testenv.Crpe(t)
	for _, l := range seedtest.Layouts {
		t.Run(string(l), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := startAgent(t, filepath.Join(dir, "data"))
			before := newFixture(t, "before", "1.0.0", fixtureOptions{})
			mustImport(t, p, before.archive(t), putOptions{})
			sp, sf := seedFixture("seed", "1.0.0", l == seedtest.KubepkgV01, 11)

			for what, body := range seedLies(l, sp) {
				a := putBytes(t, p, body, putOptions{timeout: 60 * time.Second})
				e, ok := a.apiError()
				if a.err != nil || a.status != http.StatusBadRequest || !ok {
					t.Errorf("%s: %s, want 400 with an error", what, a)
					continue
				}
				if !strings.Contains(e.Message, "blobs/") && !strings.Contains(e.Message, "status.digests") {
					t.Errorf("%s: %q does not name the entry", what, e.Message)
				}
			}
			requirePublished(t, p, before)
			requireNothingOf(t, p, sf)

			file := filepath.Join(dir, "seed.kubepkg.tgz")
			writeFile(t, file, seedtest.Write(l, sp))
			if out, code := runCrpe(t, 60*time.Second, "inspect", file, "--verify"); code != 0 || !strings.Contains(out, sf.refs()[0]) {
				t.Errorf("crpe inspect --verify: exit %d\n%s", code, out)
			}
			r := mustImport(t, p, seedtest.Write(l, sp), putOptions{timeout: 60 * time.Second})
			// the refused imports may have kept verified blobs: received or
			// present, every blob is accounted for
			if r.BlobsReceived+r.BlobsPresent != len(sf.allBlobs()) {
				t.Errorf("received %d blobs and found %d present, want %d in all", r.BlobsReceived, r.BlobsPresent, len(sf.allBlobs()))
			}
			requirePublished(t, p, sf)
			requirePublished(t, p, before)

			// the next version through the CLI: the delta leaves out the
			// layers the agent holds (the shared ones)
			next, nf := seedFixture("seed", "1.1.0", l == seedtest.KubepkgV01, 11)
			file2 := filepath.Join(dir, "seed-1.1.0.kubepkg.tgz")
			writeFile(t, file2, seedtest.Write(l, next))
			out, code := runCrpe(t, 120*time.Second, "import", file2, "--to", p.URL, "--token", token, "--json")
			if code != 0 || !strings.Contains(out, `"blobsOmitted"`) {
				t.Fatalf("crpe import --to: exit %d\n%s", code, out)
			}
			if strings.Contains(out, `"blobsOmitted": 0`) || strings.Contains(out, `"blobsOmitted":0`) {
				t.Errorf("crpe import --to sent every layer again: %s", out)
			}
			t.Logf("crpe import --to: %s", out)
			requirePublished(t, p, nf)

			// and into a data folder, which fsck finds clean
			data2 := filepath.Join(dir, "data2")
			if out, code := runCrpe(t, 60*time.Second, "import", file, "--data", data2); code != 0 {
				t.Errorf("crpe import --data: exit %d\n%s", code, out)
			}
			requireFsckClean(t, "after crpe import --data", data2)
		})
	}
}

// TestKillDuringSeedImport kills the agent with SIGKILL in the middle of the
// import of an archive of each seed layout (in a big layer, before the
// manifests that name it have arrived in the children-first layouts):
// fsck is clean right away, after a restart the package imported before is
// intact and nothing of the killed import is published, and the same
// archive then imports.
func TestKillDuringSeedImport(t *testing.T) {
	testenv.Crpe(t)
	for _, l := range seedtest.Layouts {
		t.Run(string(l), func(t *testing.T) {
			t.Parallel()
			data := filepath.Join(t.TempDir(), "data")
			p := startAgent(t, data)
			before := newFixture(t, "before", "1.0.0", fixtureOptions{})
			mustImport(t, p, before.archive(t), putOptions{})
			sp, sf := seedFixture("killed", "1.0.0", false, 21)
			body := seedtest.Write(l, sp)
			at := int64(len(body)) / 2
			a := putBytes(t, p, body, putOptions{chunk: 256 << 10, pause: 2 * time.Millisecond, atBytes: at, timeout: 60 * time.Second,
				at: func() {
					_ = p.Cmd.Process.Kill()
					<-p.Stopped()
				}})
			<-p.Stopped()
			if a.err == nil && a.status == http.StatusCreated {
				t.Fatalf("the import was answered before the kill: %s", a)
			}
			requireFsckClean(t, "right after the kill", data)
			p = startAgent(t, data)
			requirePublished(t, p, before)
			requireNothingOf(t, p, sf)
			mustImport(t, p, body, putOptions{timeout: 60 * time.Second})
			requirePublished(t, p, sf)
			stopAgent(t, p)
			requireFsckClean(t, "after the re-import", data)
		})
	}
}
