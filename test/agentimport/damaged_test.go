package agentimport

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

// TestDeltaDamaged: a delta import (the agent holds some layers, so the
// client re-encodes the archive without them) of an archive with one byte
// flipped, in a layer that is sent or in one left out, fails, and nothing of
// it is published; the undamaged archive then imports, leaving out the
// layer the agent has.
func TestDeltaDamaged(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	layer := func(n int) seedtest.Blob { return seedtest.NewBlob(ocispec.MediaTypeImageLayerGzip, randBytes(n)) }
	shared, fresh := layer(6<<20), layer(6<<20)
	pkg := func(version, tag string, layers ...seedtest.Blob) *seedtest.Package {
		m := seedtest.NewManifest(false, "linux/amd64", seedtest.NewConfig(false, "linux/amd64", "dmg-"+tag), layers...)
		return &seedtest.Package{Name: "dmg", Version: version, Platforms: []string{"linux/amd64"},
			Images: []*seedtest.Image{seedtest.SingleImage("docker.io/library/dmg:"+tag, "docker.io/library/dmg", tag, m)}}
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1 := write("v1.kubepkg.tgz", testenv.CrpeArchive(t, pkg("1.0.0", "v1", shared)))
	v2bytes := testenv.CrpeArchive(t, pkg("2.0.0", "v2", shared, fresh))
	v2 := write("v2.kubepkg.tgz", v2bytes)
	flipIn := func(b []byte, l seedtest.Blob) []byte {
		i := bytes.Index(b, l.Data[3<<20:3<<20+64])
		if i < 0 {
			t.Fatal("the layer's bytes are not stored verbatim in the archive")
		}
		c := append([]byte(nil), b...)
		c[i+10] ^= 0x40
		return c
	}

	a := testenv.StartAgent(t, testenv.AgentOptions{})
	importTo(ctx, t, v1, a.URL, a.Token)
	served := func(tag string) int {
		code, _, _ := get(t, a.URL+"/v2/docker.io/library/dmg/manifests/"+tag)
		return code
	}
	for _, c := range []struct {
		name string
		file string
	}{
		{"a sent layer damaged", write("v2-sent.kubepkg.tgz", flipIn(v2bytes, fresh))},
		{"a left-out layer damaged", write("v2-left-out.kubepkg.tgz", flipIn(v2bytes, shared))},
	} {
		r := crpe(ctx, t, "import", c.file, "--to", a.URL, "--token", a.Token)
		if r.Code == 0 {
			t.Errorf("%s: crpe import exited 0:\n%s", c.name, r)
		}
		t.Logf("%s: %s", c.name, strings.TrimSpace(r.Stderr))
		if !strings.Contains(r.Stderr+r.Stdout, "kubepkg.tgz") && !strings.Contains(r.Stderr+r.Stdout, "does not match") {
			t.Errorf("%s: the error names neither the archive nor the mismatch:\n%s", c.name, r)
		}
		if code := served("v2"); code != http.StatusNotFound {
			t.Errorf("%s: dmg:v2 answers %d after the refused import, want 404", c.name, code)
		}
		if code := served("v1"); code != http.StatusOK {
			t.Errorf("%s: dmg:v1 answers %d, want 200", c.name, code)
		}
	}
	s := importTo(ctx, t, v2, a.URL, a.Token)
	if s.BlobsOmitted != 1 || s.BytesOmitted != shared.Desc.Size {
		t.Errorf("the clean v2 import left out %d blobs (%d bytes), want the shared layer (%d bytes)", s.BlobsOmitted, s.BytesOmitted, shared.Desc.Size)
	}
	if code := served("v2"); code != http.StatusOK {
		t.Errorf("dmg:v2 answers %d after the clean import", code)
	}
}
