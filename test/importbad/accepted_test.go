package importbad

import (
	"archive/tar"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestAcceptedVariants checks what the agent must not refuse: directory
// entries for blobs/ and blobs/<alg>/, "./" prefixes, several gzip members,
// chunked uploads, blobs already in the store left out of the archive, and
// gzip members after the end of the archive (ignored, without reading them).
func TestAcceptedVariants(t *testing.T) {
	testenv.Crpe(t)
	cases := []struct {
		name  string
		body  func(t *testing.T, f *fixture) []byte
		opts  putOptions
		fast  time.Duration
		noCLI bool
	}{
		{name: "directory-entries-for-blobs", body: func(t *testing.T, f *fixture) []byte {
			return tgz(t, insertAt(f.entries(), 3, special("blobs/", tar.TypeDir, ""), special("blobs/sha256/", tar.TypeDir, "")))
		}},
		{name: "directory-entries-without-slash", body: func(t *testing.T, f *fixture) []byte {
			return tgz(t, insertAt(f.entries(), 3, special("blobs", tar.TypeDir, ""), special("blobs/sha256", tar.TypeDir, "")))
		}},
		{name: "directory-entries-first", body: func(t *testing.T, f *fixture) []byte {
			return tgz(t, insertAt(f.entries(), 0, special("blobs/", tar.TypeDir, ""), special("blobs/sha256/", tar.TypeDir, "")))
		}},
		{name: "dot-slash-names", body: func(t *testing.T, f *fixture) []byte {
			es := f.entries()
			for i := range es {
				es[i].hdr.Name = "./" + es[i].hdr.Name
			}
			return tgz(t, es)
		}},
		{name: "gzip-members-split-mid-entry", body: func(t *testing.T, f *fixture) []byte {
			b := tarBytes(t, f.entries(), true)
			var out []byte
			for i := 0; i < len(b); i += 3000 {
				end := min(i+3000, len(b))
				out = append(out, gz(b[i:end])...)
			}
			return out
		}},
		// octohelm/kubepkg writes plain tars since 2023: told from gzip by
		// the magic bytes
		{name: "plain-tar", body: func(t *testing.T, f *fixture) []byte { return tarBytes(t, f.entries(), true) }},
		{name: "chunked-upload", opts: putOptions{chunked: true, chunk: 4096}, body: func(t *testing.T, f *fixture) []byte { return f.archive(t) }},
		{name: "basic-auth-token-as-password", opts: putOptions{auth: "Basic " + basicValue("anyone", token)}, body: func(t *testing.T, f *fixture) []byte { return f.archive(t) }},
		{name: "2GiB-of-gzip-members-after-the-end", fast: 5 * time.Second, noCLI: true, body: func(t *testing.T, f *fixture) []byte {
			return bomb(f.archive(t), 2<<30)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			data := filepath.Join(t.TempDir(), "data")
			p := startAgent(t, data)
			f := newFixture(t, "ok", "1.0.0", fixtureOptions{})
			a := putBytes(t, p, c.body(t, f), c.opts)
			if a.err != nil || a.status != http.StatusCreated {
				t.Fatalf("import: %s", a)
			}
			if c.fast > 0 && a.elapsed > c.fast {
				t.Errorf("answered after %v, want within %v", a.elapsed, c.fast)
			}
			r := a.result(t)
			if r.BlobsReceived != len(f.allBlobs()) {
				t.Errorf("blobsReceived %d, want %d", r.BlobsReceived, len(f.allBlobs()))
			}
			requirePublished(t, p, f)
			if !c.noCLI {
				// the same archive through the CLI into a second agent
				p2 := startAgent(t, "")
				file := filepath.Join(t.TempDir(), "ok.kubepkg.tgz")
				writeFile(t, file, c.body(t, f))
				out, code := runCrpe(t, 30*time.Second, "import", file, "--to", p2.URL, "--token", token)
				if code != 0 {
					t.Errorf("crpe import exited %d:\n%s", code, out)
				}
				requirePublished(t, p2, f)
				stopAgent(t, p2)
				requireFsckClean(t, c.name+" (cli)", p2.Data)
			}
			stopAgent(t, p)
			requireFsckClean(t, c.name, data)
		})
	}

	// blobs the store holds may be left out (another package's layers)
	t.Run("blobs-in-store-left-out", func(t *testing.T) {
		t.Parallel()
		data := filepath.Join(t.TempDir(), "data")
		p := startAgent(t, data)
		a := newFixture(t, "first", "1.0.0", fixtureOptions{noMulti: true})
		mustImport(t, p, a.archive(t), putOptions{})

		// second reuses first's layers in a new image
		b := newFixture(t, "second", "1.0.0", fixtureOptions{noMulti: true})
		var ls []testenv.Blob
		for _, l := range a.layers {
			ls = append(ls, testenv.Blob{Desc: l.desc, Data: l.data})
		}
		im := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, ls, false)
		ref := appRef(b)
		b.addImage(ref, b.repos[ref], b.version, im.Manifest.Desc)
		b.manifests = []blob{toBlob(im.Manifest)}
		b.configs = []blob{toBlob(im.Config)}
		b.layers = a.layers
		b.pkgJSON = b.packageJSON(nil)
		b.indexJSON = b.makeIndexJSON(nil)
		var names []string
		for _, l := range a.layers {
			names = append(names, blobName(l.desc.Digest))
		}
		r := mustImport(t, p, tgz(t, without(b.entries(), names...)), putOptions{})
		if r.BlobsReceived != 2 || r.BlobsPresent != 0 {
			t.Errorf("blobsReceived %d blobsPresent %d, want 2 (manifest, config) and 0", r.BlobsReceived, r.BlobsPresent)
		}
		requirePublished(t, p, a)
		requirePublished(t, p, b)
		stopAgent(t, p)
		requireFsckClean(t, "blobs-in-store-left-out", data)
	})
}

func basicValue(user, pw string) string {
	return strings.TrimPrefix(basicHeader(user, pw), "Basic ")
}

func basicHeader(user, pw string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}
