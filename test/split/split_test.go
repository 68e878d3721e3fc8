package split

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const mediaType = "application/vnd.octohelm.crpe.kubepkg-parts.v1+json"

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// exportSummary is `crpe export --split --json`'s output.
type exportSummary struct {
	Output    string    `json:"output"`
	PartsFile string    `json:"partsFile"`
	Parts     partsFile `json:"parts"`
	Blobs     int       `json:"blobs"`
}

// TestExportSplit: the parts of `crpe export --split` concatenated are
// byte for byte the archive export writes without it, whatever the part
// size (aligned or not, one part or many, a cold export writing while it
// fetches); the parts file names each part with its size and digest, and
// the whole; --split is also CRPE_SPLIT; a split export to stdout, a bad
// size and a failed export are refused, leaving nothing behind.
func TestExportSplit(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	reg := testenv.StartDistribution(t)
	a := pushApp(t, reg, "app", 4, 300*KiB)
	data := t.TempDir()
	plain := filepath.Join(t.TempDir(), "app.kubepkg.tgz")
	if r := export(ctx, t, reg, a, plain, data); r.Err != nil {
		t.Fatalf("%s", r)
	}
	whole, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("archive: %d bytes", len(whole))

	for _, tc := range []struct {
		split string
		env   bool   // given as CRPE_SPLIT
		cold  bool   // a fresh cache: the archive is written as blobs arrive
		size  int64  // the part size it means
		parts int    // how many parts
		name  string // the output's name
	}{
		{split: "256KiB", size: 256 * KiB, name: "app.kubepkg.tgz"},
		{split: "262144", env: true, size: 256 * KiB, name: "app.kubepkg.tgz"},
		{split: "100000", cold: true, size: 100000, name: "usb.tgz"},
		{split: "1MiB", size: MiB, name: "app.kubepkg.tgz"},
		{split: "64MiB", size: 64 * MiB, parts: 1, name: "app.kubepkg.tgz"},
		{split: "fat32", size: 4<<30 - 1, parts: 1, name: "app.kubepkg.tgz"},
	} {
		t.Run(tc.split, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, tc.name)
			cache := data
			if tc.cold {
				cache = t.TempDir()
			}
			var r result
			if tc.env {
				r = crpe(ctx, t, []string{"CRPE_SPLIT=" + tc.split}, "export", "-f", a.src, "-o", out, "--data", cache,
					"--registry-endpoint", "docker.io="+reg.URL, "--json")
			} else {
				r = export(ctx, t, reg, a, out, cache, "--split", tc.split, "--json")
			}
			if r.Err != nil {
				t.Fatalf("%s", r)
			}
			var sum exportSummary
			if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil {
				t.Fatalf("--json: %v\n%s", err, r)
			}
			pf := readParts(t, out+".parts")
			want := int((int64(len(whole)) + tc.size - 1) / tc.size)
			if tc.parts != 0 && want != tc.parts {
				t.Fatalf("the test expects %d parts, the size gives %d", tc.parts, want)
			}
			if len(pf.Parts) != want {
				t.Fatalf("%d parts, want %d", len(pf.Parts), want)
			}
			if sum.Output != out || sum.PartsFile != out+".parts" || len(sum.Parts.Parts) != want || sum.Blobs == 0 {
				t.Errorf("--json: %+v", sum)
			}
			if pf.MediaType != mediaType || pf.Archive.Name != tc.name || pf.Archive.Size != int64(len(whole)) || pf.Archive.Digest != sha(whole) {
				t.Errorf("parts file: %+v, want the archive %s, %d bytes, %s", pf, tc.name, len(whole), sha(whole))
			}
			wantFiles := []string{tc.name + ".parts"}
			var cat []byte
			for i, p := range pf.Parts {
				b, err := os.ReadFile(filepath.Join(dir, p.Name))
				if err != nil {
					t.Fatal(err)
				}
				if p.Name != fmt.Sprintf("%s.%03d", tc.name, i) || p.Size != int64(len(b)) || p.Digest != sha(b) {
					t.Errorf("part %d: %+v; the file has %d bytes, %s", i, p, len(b), sha(b))
				}
				if i < len(pf.Parts)-1 && p.Size != tc.size {
					t.Errorf("part %s has %d bytes, want %d", p.Name, p.Size, tc.size)
				}
				cat = append(cat, b...)
				wantFiles = append(wantFiles, p.Name)
			}
			slices.Sort(wantFiles)
			if got := files(t, dir); !slices.Equal(got, wantFiles) {
				t.Errorf("the output folder holds %v, want %v", got, wantFiles)
			}
			if !bytes.Equal(cat, whole) {
				t.Fatalf("the parts concatenated (%d bytes, %s) are not the archive export writes without --split (%d bytes, %s)",
					len(cat), sha(cat), len(whole), sha(whole))
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		dir := t.TempDir()
		r := crpe(ctx, t, nil, "export", "-f", a.src, "-o", "-", "--data", data, "--registry-endpoint", "docker.io="+reg.URL, "--split", "1MiB")
		if r.Err == nil || !strings.Contains(r.Stderr, "--split") || !strings.Contains(r.Stderr, "stdout") || r.Stdout != "" {
			t.Errorf("a split export to stdout: %s", r)
		}
		r = export(ctx, t, reg, a, filepath.Join(dir, "a.tgz"), data, "--split", "4GB")
		if r.Err == nil || !strings.Contains(r.Stderr, "--split") || !strings.Contains(r.Stderr, "GiB") {
			t.Errorf("--split 4GB: %s", r)
		}
		// an export that fails (an image the registry lacks) leaves
		// nothing, not even the parts written before it failed
		missing := writeFile(t, t.TempDir(), "missing.yaml", appYAML("missing", "1.0.0", "docker.io/library/app:1.0",
			"sha256:0000000000000000000000000000000000000000000000000000000000000001"))
		r = crpe(ctx, t, nil, "export", "-f", missing, "-o", filepath.Join(dir, "m.tgz"), "--data", data,
			"--registry-endpoint", "docker.io="+reg.URL, "--split", "64KiB")
		if r.Err == nil {
			t.Errorf("an export of an image the registry lacks: %s", r)
		}
		if got := files(t, dir); len(got) != 0 {
			t.Errorf("refused exports left %v", got)
		}
	})
}

// fixture is an app exported split into parts of 256 KiB (5 parts), and the
// same archive whole.
type fixture struct {
	reg   *testenv.Distribution
	a     app
	whole []byte
	dir   string // the parts and the parts file
	name  string // app.kubepkg.tgz
	pf    partsFile
	// otherDir holds another package's export, split the same way
	otherDir string
}

func newFixture(t *testing.T, ctx context.Context) *fixture {
	t.Helper()
	f := &fixture{reg: testenv.StartDistribution(t), name: "app.kubepkg.tgz", dir: t.TempDir()}
	f.a = pushApp(t, f.reg, "app", 4, 300*KiB)
	data := t.TempDir()
	if r := export(ctx, t, f.reg, f.a, filepath.Join(f.dir, f.name), data, "--split", "256KiB"); r.Err != nil {
		t.Fatalf("%s", r)
	}
	plain := filepath.Join(t.TempDir(), f.name)
	if r := export(ctx, t, f.reg, f.a, plain, data); r.Err != nil {
		t.Fatalf("%s", r)
	}
	var err error
	if f.whole, err = os.ReadFile(plain); err != nil {
		t.Fatal(err)
	}
	f.pf = readParts(t, filepath.Join(f.dir, f.name+".parts"))
	if len(f.pf.Parts) != 5 {
		t.Fatalf("the fixture has %d parts, want 5", len(f.pf.Parts))
	}
	return f
}

func (f *fixture) part(i int) string { return f.pf.Parts[i].Name }

// TestSplitReadBack: inspect, import --data and import --to take a split
// archive by its parts file, its first part, the archive's name, or all its
// parts (in any order, from several folders), and read the same archive as
// the whole file.
func TestSplitReadBack(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	f := newFixture(t, ctx)
	plain := filepath.Join(t.TempDir(), f.name)
	if err := os.WriteFile(plain, f.whole, 0o644); err != nil {
		t.Fatal(err)
	}
	// the parts in two folders (two USB sticks), named in reverse order
	other := t.TempDir()
	var all []string
	for i := len(f.pf.Parts) - 1; i >= 0; i-- {
		p := filepath.Join(f.dir, f.part(i))
		if i%2 == 1 {
			b, _ := os.ReadFile(p)
			p = filepath.Join(other, f.part(i))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, p)
	}
	ways := map[string][]string{
		"parts file":        {filepath.Join(f.dir, f.name+".parts")},
		"first part":        {filepath.Join(f.dir, f.part(0))},
		"archive name":      {filepath.Join(f.dir, f.name)},
		"all parts, 2 dirs": all,
		"all and the list":  append([]string{filepath.Join(f.dir, f.name+".parts")}, all...),
	}
	want := mustCrpe(ctx, t, "inspect", plain, "--verify", "--json").Stdout
	for way, args := range ways {
		got := mustCrpe(ctx, t, append([]string{"inspect", "--verify", "--json"}, args...)...).Stdout
		if got != want {
			t.Errorf("inspect by the %s:\n%s\nwant (the whole archive):\n%s", way, got, want)
		}
	}
	// without the parts file: by their suffix
	noList := copyDir(t, f.dir)
	if err := os.Remove(filepath.Join(noList, f.name+".parts")); err != nil {
		t.Fatal(err)
	}
	if got := mustCrpe(ctx, t, "inspect", "--verify", "--json", filepath.Join(noList, f.part(0))).Stdout; got != want {
		t.Errorf("inspect by the first part, no parts file:\n%s", got)
	}

	wantPub := []string{"package default/app@1.0.0", "repository docker.io/library/app [1.0]"}
	for way, args := range map[string][]string{"first part": ways["first part"], "all parts, 2 dirs": all} {
		data := t.TempDir()
		mustCrpe(ctx, t, append(append([]string{"import"}, args...), "--data", data, "--json")...)
		ag := testenv.StartAgent(t, testenv.AgentOptions{Data: data})
		if got := published(t, ag); !slices.Equal(got, wantPub) {
			t.Errorf("import --data by the %s: the data folder publishes %v, want %v", way, got, wantPub)
		}
	}

	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	r := mustCrpe(ctx, t, "import", filepath.Join(f.dir, f.name+".parts"), "--to", ag.URL, "--token", ag.Token, "--json")
	var s struct {
		BytesSent int64 `json:"bytesSent"`
		Attempts  int   `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("import --json: %v\n%s", err, r)
	}
	if s.BytesSent != int64(len(f.whole)) || s.Attempts != 1 {
		t.Errorf("import --to an empty agent sent %d bytes in %d attempts, want the archive's %d in 1", s.BytesSent, s.Attempts, len(f.whole))
	}
	if got := published(t, ag); !slices.Equal(got, wantPub) {
		t.Errorf("import --to: the agent publishes %v, want %v", got, wantPub)
	}
}

// hostile is a damaged split archive: mutate breaks a copy of the fixture's
// folder and returns what to give crpe; want is what the refusal says.
type hostile struct {
	name   string
	mutate func(t *testing.T, f *fixture, dir string) []string
	want   func(f *fixture) []string // what the refusal says, all of it
}

func hostiles() []hostile {
	list := func(f *fixture, dir string) []string { return []string{filepath.Join(dir, f.name+".parts")} }
	flip := func(t *testing.T, p string, at int64) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[at] ^= 0x5a
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []hostile{
		{"missing", func(t *testing.T, f *fixture, dir string) []string {
			_ = os.Remove(filepath.Join(dir, f.part(2)))
			return []string{filepath.Join(dir, f.part(0))}
		}, func(f *fixture) []string { return []string{"part " + f.part(2) + ": missing"} }},
		{"missing, no parts file", func(t *testing.T, f *fixture, dir string) []string {
			_ = os.Remove(filepath.Join(dir, f.part(2)))
			_ = os.Remove(filepath.Join(dir, f.name+".parts"))
			return []string{filepath.Join(dir, f.part(0))}
		}, func(f *fixture) []string { return []string{"part " + f.part(2) + ": missing"} }},
		{"swapped", func(t *testing.T, f *fixture, dir string) []string {
			a, b := filepath.Join(dir, f.part(1)), filepath.Join(dir, f.part(2))
			_ = os.Rename(a, a+".x")
			_ = os.Rename(b, a)
			_ = os.Rename(a+".x", b)
			return list(f, dir)
		}, func(f *fixture) []string {
			return []string{"part " + f.part(1) + ": corrupt, or not this archive's part"}
		}},
		{"given in the wrong place", func(t *testing.T, f *fixture, dir string) []string {
			// part 3 given as part 1 (a copy under its name)
			b, _ := os.ReadFile(filepath.Join(dir, f.part(3)))
			_ = os.WriteFile(filepath.Join(dir, f.part(1)), b, 0o644)
			return []string{filepath.Join(dir, f.part(0))}
		}, func(f *fixture) []string {
			return []string{"part " + f.part(1) + ": corrupt, or not this archive's part"}
		}},
		{"truncated", func(t *testing.T, f *fixture, dir string) []string {
			_ = os.Truncate(filepath.Join(dir, f.part(1)), f.pf.Parts[1].Size-100)
			return list(f, dir)
		}, func(f *fixture) []string {
			return []string{"part " + f.part(1) + ": ", fmt.Sprintf("has %d bytes, the parts file says %d", f.pf.Parts[1].Size-100, f.pf.Parts[1].Size)}
		}},
		{"corrupt", func(t *testing.T, f *fixture, dir string) []string {
			flip(t, filepath.Join(dir, f.part(1)), f.pf.Parts[1].Size/2)
			return list(f, dir)
		}, func(f *fixture) []string { return []string{"part " + f.part(1) + ": corrupt"} }},
		{"corrupt last byte", func(t *testing.T, f *fixture, dir string) []string {
			last := len(f.pf.Parts) - 1
			flip(t, filepath.Join(dir, f.part(last)), f.pf.Parts[last].Size-1)
			return list(f, dir)
		}, func(f *fixture) []string { return []string{"part " + f.part(len(f.pf.Parts)-1) + ": corrupt"} }},
		{"another export's part", func(t *testing.T, f *fixture, dir string) []string {
			// the same part of an export of another package, as large
			b, _ := os.ReadFile(filepath.Join(f.otherDir, f.part(1)))
			_ = os.WriteFile(filepath.Join(dir, f.part(1)), b, 0o644)
			return list(f, dir)
		}, func(f *fixture) []string {
			return []string{"part " + f.part(1) + ": corrupt, or not this archive's part"}
		}},
		{"parts file lies about a size", func(t *testing.T, f *fixture, dir string) []string {
			pf := f.pf
			pf.Parts = slices.Clone(f.pf.Parts)
			pf.Parts[2].Size += 10
			pf.Parts[4].Size -= 10
			writeParts(t, filepath.Join(dir, f.name+".parts"), pf)
			return list(f, dir)
		}, func(f *fixture) []string {
			return []string{"part " + f.part(2) + ": ", fmt.Sprintf("has %d bytes, the parts file says %d", f.pf.Parts[2].Size, f.pf.Parts[2].Size+10)}
		}},
		{"parts file lies about a digest", func(t *testing.T, f *fixture, dir string) []string {
			pf := f.pf
			pf.Parts = slices.Clone(f.pf.Parts)
			pf.Parts[3].Digest = sha([]byte("another part"))
			writeParts(t, filepath.Join(dir, f.name+".parts"), pf)
			return list(f, dir)
		}, func(f *fixture) []string { return []string{"part " + f.part(3) + ": corrupt"} }},
		{"parts file names ../x", func(t *testing.T, f *fixture, dir string) []string {
			pf := f.pf
			pf.Parts = slices.Clone(f.pf.Parts)
			pf.Parts[1].Name = "../x"
			writeParts(t, filepath.Join(dir, f.name+".parts"), pf)
			// a file where ../x points, that must not be read
			_ = os.WriteFile(filepath.Join(filepath.Dir(dir), "x"), []byte("outside"), 0o644)
			return list(f, dir)
		}, func(f *fixture) []string { return []string{"part ../x: refused in the parts file"} }},
	}
}

// TestSplitHostile: a part missing, swapped, given in the wrong place,
// truncated, corrupt (in its middle or its last byte), from another export,
// or a parts file lying about a size or a digest or naming ../x: inspect,
// import --data and import --to refuse each with an error naming the part,
// and nothing is published, neither in the data folder nor on the agent.
func TestSplitHostile(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	f := newFixture(t, ctx)
	// another package's export, split the same way
	other := pushApp(t, f.reg, "other", 4, 300*KiB)
	f.otherDir = t.TempDir()
	if r := export(ctx, t, f.reg, other, filepath.Join(f.otherDir, f.name), t.TempDir(), "--split", "256KiB"); r.Err != nil {
		t.Fatalf("%s", r)
	}
	data := t.TempDir()
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	for _, h := range hostiles() {
		t.Run(h.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			args := h.mutate(t, f, dir)
			want := h.want(f)
			check := func(what string, r result) {
				t.Helper()
				ok := r.Err != nil
				for _, w := range want {
					ok = ok && strings.Contains(r.Stderr, w)
				}
				if !ok {
					t.Errorf("%s: want a refusal saying %q:\n%s", what, want, r)
				}
				t.Logf("%s: %s", what, strings.TrimSpace(r.Stderr))
			}
			check("inspect --verify", crpe(ctx, t, nil, append([]string{"inspect", "--verify"}, args...)...))
			check("import --data", crpe(ctx, t, nil, append(append([]string{"import"}, args...), "--data", data)...))
			before := strings.Count(ag.Logs(), "route=import ")
			check("import --to", crpe(ctx, t, nil, append(append([]string{"import"}, args...), "--to", ag.URL, "--token", ag.Token)...))
			// a damaged archive is not sent again and again
			if n := strings.Count(ag.Logs(), "route=import ") - before; n > 1 {
				t.Errorf("import --to sent the damaged archive %d times, want at most once", n)
			}
		})
	}
	if got := published(t, ag); len(got) != 0 {
		t.Errorf("after refused imports the agent publishes %v", got)
	}
	local := testenv.StartAgent(t, testenv.AgentOptions{Data: data})
	if got := published(t, local); len(got) != 0 {
		t.Errorf("after refused imports the data folder publishes %v", got)
	}
}

// TestSplitResumeCutUpload: a proxy cuts the first upload of a split
// archive (parts of 5 MiB) after 60% of it; crpe import --to retries by
// itself with a fresh delta, and the retry sends only what the agent lacks:
// the layers committed before the cut are not sent again. The bytes are
// counted on the wire.
func TestSplitResumeCutUpload(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	reg := testenv.StartDistribution(t)
	const layerSize = 4 * MiB
	a := pushApp(t, reg, "big", 6, layerSize)
	dir := t.TempDir()
	if r := export(ctx, t, reg, a, filepath.Join(dir, "big.kubepkg.tgz"), t.TempDir(), "--split", "5MiB"); r.Err != nil {
		t.Fatalf("%s", r)
	}
	pf := readParts(t, filepath.Join(dir, "big.kubepkg.tgz.parts"))
	size := pf.Archive.Size

	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	cutAt := size * 6 / 10
	px := testenv.StartProxy(t, ag.Addr, cutAt, 0)
	r := mustCrpe(ctx, t, "import", filepath.Join(dir, "big.kubepkg.tgz.000"), "--to", px.URL, "--token", ag.Token, "--json")
	var s struct {
		BytesSent    int64 `json:"bytesSent"`
		BlobsOmitted int   `json:"blobsOmitted"`
		BytesOmitted int64 `json:"bytesOmitted"`
		Attempts     int   `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("import --json: %v\n%s", err, r)
	}
	total := px.Up.Load()
	lacked := size - s.BytesOmitted
	t.Logf("archive %d bytes (%s) in %d parts; cut after %d bytes; the retry sent %d bytes (%s), left out %d layers (%s) the agent committed before the cut; "+
		"it lacked %d bytes of the archive; all attempts put %d bytes on the wire = %.3f× the archive, %d bytes more than cut + retry; %d connections",
		size, mib(size), len(pf.Parts), cutAt, s.BytesSent, mib(s.BytesSent), s.BlobsOmitted, mib(s.BytesOmitted), lacked, total,
		float64(total)/float64(size), total-cutAt-s.BytesSent, px.Conns.Load())
	if !px.Cut.Load() {
		t.Fatal("the proxy never cut the upload")
	}
	if s.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (one cut, one resumed)", s.Attempts)
	}
	// the layers the agent took before the cut (all but the one cut
	// through, less a megabyte of buffers) are left out of the retry
	if s.BytesOmitted < cutAt-layerSize-MiB {
		t.Errorf("the retry left out %d bytes of layers, want at least what arrived before the cut (%d) less one layer", s.BytesOmitted, cutAt)
	}
	// and the retry sends the rest of the archive, nothing more (the
	// re-encoded archive may differ by a few framing bytes)
	if s.BytesSent > lacked+64*KiB {
		t.Errorf("the retry sent %d bytes, want at most what the agent lacked (%d) + 64 KiB", s.BytesSent, lacked)
	}
	if float64(total) > 1.2*float64(size) {
		t.Errorf("all attempts put %d bytes on the wire, want ≤ 1.2 × %d", total, size)
	}
	if got, want := published(t, ag), []string{"package default/big@1.0.0", "repository docker.io/library/big [1.0]"}; !slices.Equal(got, want) {
		t.Errorf("the agent publishes %v, want %v", got, want)
	}
	for _, l := range a.image.Layers {
		req, _ := http.NewRequest(http.MethodHead, ag.URL+"/v2/docker.io/library/big/blobs/"+string(l.Desc.Digest), nil)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("layer %s after the resumed import: %v %v", l.Desc.Digest, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// upload PUTs a multipart body to the agent as its web page does: the parts
// file (when list is not empty) as "parts", then each part as "part".
func upload(t *testing.T, ag *testenv.Proc, dir, list string, names ...string) (int, apiError) {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			add := func(field, name string) error {
				w, err := mw.CreateFormFile(field, name)
				if err != nil {
					return err
				}
				fh, err := os.Open(filepath.Join(dir, name))
				if err != nil {
					return err
				}
				defer fh.Close()
				_, err = io.Copy(w, fh)
				return err
			}
			if list != "" {
				if err := add("parts", list); err != nil {
					return err
				}
			}
			for _, n := range names {
				if err := add("part", n); err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest(http.MethodPut, ag.URL+"/api/v1/kubepkgs", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+ag.Token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("PUT /api/v1/kubepkgs: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Errors []apiError `json:"errors"`
	}
	_ = json.Unmarshal(b, &e)
	if len(e.Errors) > 0 {
		return resp.StatusCode, e.Errors[0]
	}
	return resp.StatusCode, apiError{Message: string(b)}
}

type apiError struct {
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Detail  map[string]string `json:"detail"`
}

// TestAgentSplitUpload: the agent takes the parts of a split archive as one
// multipart upload (what its web page sends when several files are
// chosen): checked against the parts file when it comes first (each part
// under its name, in order, with its size and digest), else ordered by
// suffix. A part missing, out of order, corrupt, from another export, or a
// parts file naming ../x is refused with 400 PART_INVALID naming the part,
// and nothing is published.
func TestAgentSplitUpload(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	f := newFixture(t, ctx)
	other := pushApp(t, f.reg, "other", 4, 300*KiB)
	f.otherDir = t.TempDir()
	if r := export(ctx, t, f.reg, other, filepath.Join(f.otherDir, f.name), t.TempDir(), "--split", "256KiB"); r.Err != nil {
		t.Fatalf("%s", r)
	}
	var names []string
	for _, p := range f.pf.Parts {
		names = append(names, p.Name)
	}
	list := f.name + ".parts"
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	swapped := slices.Clone(names)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	badList := copyDir(t, f.dir)
	pf := f.pf
	pf.Parts = slices.Clone(f.pf.Parts)
	pf.Parts[1].Name = "../x"
	writeParts(t, filepath.Join(badList, list), pf)
	foreign := copyDir(t, f.dir)
	b, _ := os.ReadFile(filepath.Join(f.otherDir, names[3]))
	_ = os.WriteFile(filepath.Join(foreign, names[3]), b, 0o644)
	corrupt := copyDir(t, f.dir)
	b, _ = os.ReadFile(filepath.Join(corrupt, names[2]))
	b[len(b)/3] ^= 1
	_ = os.WriteFile(filepath.Join(corrupt, names[2]), b, 0o644)

	for _, tc := range []struct {
		name, dir, list string
		parts           []string
		part, want      string
	}{
		{"missing", f.dir, list, slices.Delete(slices.Clone(names), 2, 3), names[3], "given where " + names[2] + " belongs"},
		{"missing last", f.dir, list, names[:4], names[4], "missing"},
		{"swapped", f.dir, list, swapped, names[2], "given where " + names[1] + " belongs"},
		{"swapped, no parts file", f.dir, "", swapped, names[2], "given where " + names[1] + " belongs"},
		{"corrupt", corrupt, list, names, names[2], "corrupt"},
		// without the parts file the archive's own digests find it, in
		// this part or the next (a layer spans them)
		{"corrupt, no parts file", corrupt, "", names, "", ""},
		{"another export's part", foreign, list, names, names[3], "not this archive's part"},
		{"parts file names ../x", badList, list, names, "../x", "refused in the parts file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, e := upload(t, ag, tc.dir, tc.list, tc.parts...)
			if code != http.StatusBadRequest || !strings.Contains(e.Message, "part "+tc.part) || !strings.Contains(e.Message, tc.want) {
				t.Errorf("want 400 naming part %s (%q), got %d %+v", tc.part, tc.want, code, e)
			}
			if tc.list != "" && (e.Code != "PART_INVALID" || e.Detail["part"] != tc.part) {
				t.Errorf("want PART_INVALID with detail part=%s, got %+v", tc.part, e)
			}
		})
	}
	if got := published(t, ag); len(got) != 0 {
		t.Fatalf("after refused uploads the agent publishes %v", got)
	}
	want := []string{"package default/app@1.0.0", "repository docker.io/library/app [1.0]"}
	if code, e := upload(t, ag, f.dir, "", names...); code != http.StatusCreated {
		t.Fatalf("the parts without the parts file: %d %+v", code, e)
	}
	if got := published(t, ag); !slices.Equal(got, want) {
		t.Errorf("the agent publishes %v, want %v", got, want)
	}
	ag2 := testenv.StartAgent(t, testenv.AgentOptions{})
	if code, e := upload(t, ag2, f.dir, list, names...); code != http.StatusCreated {
		t.Fatalf("the parts with the parts file: %d %+v", code, e)
	}
	if got := published(t, ag2); !slices.Equal(got, want) {
		t.Errorf("the agent publishes %v, want %v", got, want)
	}
}
