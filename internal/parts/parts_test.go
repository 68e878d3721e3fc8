package parts

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// split writes data as a split archive dir/a.kubepkg.tgz with parts of size
// bytes, in writes of the given chunk size, and returns the archive's path
// and the parts file.
func split(t *testing.T, dir string, data []byte, size int64, chunk int) (string, *Manifest) {
	t.Helper()
	path := filepath.Join(dir, "a.kubepkg.tgz")
	w, err := Create(path, size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for p := data; len(p) > 0; {
		c := min(chunk, len(p))
		if n, err := w.Write(p[:c]); err != nil || n != c {
			t.Fatalf("write: %d, %v", n, err)
		}
		p = p[c:]
	}
	m, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return path, m
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// readAll opens paths and reads the archive whole.
func readAll(paths ...string) ([]byte, error) {
	r, err := Open(paths...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// wantPartErr checks err is an *Error naming part whose message holds want.
func wantPartErr(t *testing.T, err error, part, want string) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("want an error naming part %s (%s), got %v", part, want, err)
	}
	if pe.Part != part || !strings.Contains(err.Error(), want) {
		t.Fatalf("want an error naming part %s with %q, got %q", part, want, err)
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{
		"1": 1, "4294967296": 4 << 30, "64MiB": 64 << 20, "1GiB": 1 << 30, "4GiB": 4 << 30, "512kib": 512 << 10,
		"1TiB": 1 << 40, "100B": 100, " 2 MiB ": 2 << 20, "fat32": 4<<30 - 1, "FAT32": FAT32,
	} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1", "1.5GiB", "4GB", "4G", "GiB", "x", "99999999999TiB"} {
		if got, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, got)
		}
	}
}

func TestPartNames(t *testing.T) {
	for name, want := range map[string]int{"a.tgz.000": 0, "a.tgz.001": 1, "a.tgz.999": 999, "a.tgz.1000": 1000} {
		archive, i, ok := SplitName(name)
		if !ok || archive != "a.tgz" || i != want || PartName(archive, i) != name {
			t.Errorf("SplitName(%q) = %q %d %v", name, archive, i, ok)
		}
	}
	for _, name := range []string{"a.tgz", "a.tgz.00", "a.tgz.0001", "a.tgz.x01", ".000", "a.tgz.parts", "a.tgz.10000"} {
		if _, _, ok := SplitName(name); ok {
			t.Errorf("SplitName(%q): want not a part", name)
		}
	}
}

// TestWriteRead: the parts concatenated are exactly what was written,
// whatever the writes' sizes; each part but the last has the part size;
// the parts file describes them and reads back.
func TestWriteRead(t *testing.T) {
	data := randBytes(t, 10000)
	for _, tc := range []struct {
		size  int64
		chunk int
		parts int
	}{{1000, 333, 10}, {1000, 1000, 10}, {1000, 4096, 10}, {3000, 7, 4}, {10000, 10000, 1}, {20000, 100, 1}, {999, 1, 11}} {
		dir := t.TempDir()
		path, m := split(t, dir, data, tc.size, tc.chunk)
		if len(m.Parts) != tc.parts {
			t.Fatalf("size %d: %d parts, want %d", tc.size, len(m.Parts), tc.parts)
		}
		var cat []byte
		for i, p := range m.Parts {
			b, err := os.ReadFile(filepath.Join(dir, p.Name))
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != PartName("a.kubepkg.tgz", i) || int64(len(b)) != p.Size || digest.FromBytes(b) != p.Digest {
				t.Fatalf("part %d: %+v, file has %d bytes", i, p, len(b))
			}
			if i < len(m.Parts)-1 && p.Size != tc.size {
				t.Fatalf("part %d has %d bytes, want %d", i, p.Size, tc.size)
			}
			cat = append(cat, b...)
		}
		if !bytes.Equal(cat, data) {
			t.Fatalf("size %d: the parts concatenated are not the data", tc.size)
		}
		if m.Archive.Name != "a.kubepkg.tgz" || m.Archive.Size != int64(len(data)) || m.Archive.Digest != digest.FromBytes(data) {
			t.Fatalf("archive: %+v", m.Archive)
		}
		b, err := os.ReadFile(path + FileSuffix)
		if err != nil {
			t.Fatal(err)
		}
		if pm, err := Parse(b); err != nil || len(pm.Parts) != len(m.Parts) {
			t.Fatalf("parts file: %v", err)
		}
		// every way of naming it reads the same bytes
		names := []string{path + FileSuffix}
		for _, p := range m.Parts {
			names = append(names, filepath.Join(dir, p.Name))
		}
		reversed := append([]string(nil), names[1:]...)
		sort.Sort(sort.Reverse(sort.StringSlice(reversed)))
		for _, given := range [][]string{{path}, {path + FileSuffix}, {names[1]}, names, names[1:], reversed} {
			got, err := readAll(given...)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d, given %v: %d bytes, %v", tc.size, given, len(got), err)
			}
		}
		// and without the parts file, by their suffix
		if err := os.Remove(path + FileSuffix); err != nil {
			t.Fatal(err)
		}
		for _, given := range [][]string{{names[1]}, names[1:], reversed} {
			got, err := readAll(given...)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d, no parts file, given %v: %d bytes, %v", tc.size, given, len(got), err)
			}
		}
	}
}

// TestWriterLeavesNothing: an aborted split leaves no file; a commit
// replaces an earlier archive's parts and removes those beyond the new
// last; too many parts is refused.
func TestWriterLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.kubepkg.tgz")
	w, err := Create(path, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randBytes(t, 450)); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if got := files(t, dir); len(got) != 0 {
		t.Fatalf("an aborted split left %v", got)
	}

	split(t, dir, randBytes(t, 450), 100, 64) // 5 parts
	data := randBytes(t, 250)
	_, m := split(t, dir, data, 100, 64) // 3 parts
	want := []string{"a.kubepkg.tgz.000", "a.kubepkg.tgz.001", "a.kubepkg.tgz.002", "a.kubepkg.tgz.parts"}
	if got := files(t, dir); strings.Join(got, " ") != strings.Join(want, " ") || len(m.Parts) != 3 {
		t.Fatalf("after a second export: %v", got)
	}
	if got, err := readAll(path + ".000"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}

	w, _ = Create(filepath.Join(t.TempDir(), "b.tgz"), 1, false)
	defer w.Abort()
	if _, err := w.Write(make([]byte, MaxParts+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("%d parts: %v", MaxParts+1, err)
	}
	if _, err := w.Commit(); err == nil {
		t.Fatal("commit after a failed write")
	}
	if _, err := Create(filepath.Join(dir, "a..tgz"), 1, false); err == nil {
		t.Fatal(`an archive name with ".." was taken`)
	}
}

// fixture is a split archive of 4 parts of 1000 bytes (the last 500) in a
// folder of its own.
type fixture struct {
	dir, path string
	data      []byte
	m         *Manifest
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), data: randBytes(t, 3500)}
	f.path, f.m = split(t, f.dir, f.data, 1000, 512)
	return f
}

func (f *fixture) part(i int) string { return filepath.Join(f.dir, f.m.Parts[i].Name) }

func (f *fixture) writeList(t *testing.T, m *Manifest) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(f.path+FileSuffix, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHostileParts: what is wrong with a part is refused naming it; what
// Resolve can tell from the files present (missing, wrong size) before a
// byte is read; a corrupt or misplaced part when its digest is checked, at
// its end, before its last bytes are handed on.
func TestHostileParts(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		f := newFixture(t)
		os.Remove(f.part(2))
		for _, given := range [][]string{{f.path}, {f.part(0)}, {f.path + FileSuffix}, {f.part(0), f.part(1), f.part(3)}} {
			_, err := Resolve(given...)
			wantPartErr(t, err, f.m.Parts[2].Name, "missing")
		}
		// without the parts file, a gap is seen; a missing last part is
		// not (the archive's end will say it is truncated)
		os.Remove(f.path + FileSuffix)
		_, err := Resolve(f.part(0))
		wantPartErr(t, err, f.m.Parts[2].Name, "missing")
	})
	t.Run("truncated", func(t *testing.T) {
		f := newFixture(t)
		if err := os.Truncate(f.part(1), 999); err != nil {
			t.Fatal(err)
		}
		_, err := Resolve(f.part(0))
		wantPartErr(t, err, f.m.Parts[1].Name, "has 999 bytes, the parts file says 1000")
	})
	t.Run("truncated-after-resolve", func(t *testing.T) {
		f := newFixture(t)
		r, err := Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.part(1), 999); err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(r)
		wantPartErr(t, err, f.m.Parts[1].Name, "truncated: 999 bytes")
	})
	t.Run("corrupt", func(t *testing.T) {
		for i := range 4 {
			f := newFixture(t)
			b, _ := os.ReadFile(f.part(i))
			b[len(b)/2] ^= 0x55
			if err := os.WriteFile(f.part(i), b, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Open(f.path)
			if err != nil {
				t.Fatal(err) // same size: only the digest tells
			}
			got, err := io.ReadAll(r)
			wantPartErr(t, err, f.m.Parts[i].Name, "corrupt")
			// the corrupt part's last bytes were not handed on
			if len(got) >= 1000*(i+1) || len(got) < 1000*i {
				t.Fatalf("part %d corrupt: %d bytes handed on", i, len(got))
			}
		}
	})
	t.Run("swapped", func(t *testing.T) {
		f := newFixture(t)
		a, b := f.part(0), f.part(1)
		tmp := a + ".x"
		_ = os.Rename(a, tmp)
		_ = os.Rename(b, a)
		_ = os.Rename(tmp, b)
		_, err := readAll(f.part(0))
		wantPartErr(t, err, f.m.Parts[0].Name, "not this archive's part")
	})
	t.Run("another-export", func(t *testing.T) {
		f, g := newFixture(t), newFixture(t)
		_, err := readAll(f.path+FileSuffix, f.part(0), g.part(1), f.part(2), f.part(3))
		wantPartErr(t, err, f.m.Parts[1].Name, "not this archive's part")
	})
	t.Run("part-not-listed", func(t *testing.T) {
		f := newFixture(t)
		other := filepath.Join(t.TempDir(), "a.kubepkg.tgz.007")
		_ = os.WriteFile(other, []byte("x"), 0o644)
		_, err := Resolve(f.path+FileSuffix, other)
		wantPartErr(t, err, "a.kubepkg.tgz.007", "does not list it")
		_, err = Resolve(f.part(0), filepath.Join(t.TempDir(), "b.kubepkg.tgz.001"))
		if err == nil || !strings.Contains(err.Error(), "not a part of a.kubepkg.tgz") {
			t.Fatalf("a part of another archive: %v", err)
		}
	})
	t.Run("list-lies-about-size", func(t *testing.T) {
		f := newFixture(t)
		m := *f.m
		m.Parts = append([]Part(nil), f.m.Parts...)
		m.Parts[1].Size++
		m.Parts[3].Size--
		f.writeList(t, &m)
		_, err := Resolve(f.path)
		wantPartErr(t, err, f.m.Parts[1].Name, "the parts file says 1001")
	})
	t.Run("list-lies-about-digest", func(t *testing.T) {
		f := newFixture(t)
		m := *f.m
		m.Parts = append([]Part(nil), f.m.Parts...)
		m.Parts[2].Digest = digest.FromString("something else")
		f.writeList(t, &m)
		_, err := readAll(f.path)
		wantPartErr(t, err, f.m.Parts[2].Name, "corrupt")
	})
	t.Run("list-names-a-path", func(t *testing.T) {
		for _, name := range []string{"../x", "/etc/passwd", "sub/a.kubepkg.tgz.001", `..\x`, "..", ""} {
			f := newFixture(t)
			m := *f.m
			m.Parts = append([]Part(nil), f.m.Parts...)
			m.Parts[1].Name = name
			f.writeList(t, &m)
			_, err := Resolve(f.path)
			wantPartErr(t, err, name, "")
		}
		f := newFixture(t)
		m := *f.m
		m.Archive.Name = "../a.kubepkg.tgz"
		f.writeList(t, &m)
		if _, err := Resolve(f.path); err == nil || !strings.Contains(err.Error(), "not a plain file name") {
			t.Fatalf("archive name ../: %v", err)
		}
	})
}

func TestParseRefuses(t *testing.T) {
	good := func() *Manifest {
		return &Manifest{MediaType: MediaType, Archive: Part{Name: "a.tgz", Size: 3, Digest: digest.FromString("abc")},
			Parts: []Part{{Name: "a.tgz.000", Size: 2, Digest: digest.FromString("ab")}, {Name: "a.tgz.001", Size: 1, Digest: digest.FromString("c")}}}
	}
	if _, err := Parse(good().Marshal()); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(m *Manifest){
		"media type":      func(m *Manifest) { m.MediaType = "application/json" },
		"no parts":        func(m *Manifest) { m.Parts = nil },
		"order":           func(m *Manifest) { m.Parts[0], m.Parts[1] = m.Parts[1], m.Parts[0] },
		"other archive":   func(m *Manifest) { m.Parts[1].Name = "b.tgz.001" },
		"zero size":       func(m *Manifest) { m.Parts[1].Size = 0; m.Archive.Size = 2 },
		"negative size":   func(m *Manifest) { m.Parts[1].Size = -1; m.Archive.Size = 1 },
		"sum":             func(m *Manifest) { m.Archive.Size = 4 },
		"sha512":          func(m *Manifest) { m.Parts[0].Digest = digest.Digest("sha512:" + strings.Repeat("ab", 64)) },
		"bad digest":      func(m *Manifest) { m.Parts[0].Digest = "sha256:xyz" },
		"archive digest":  func(m *Manifest) { m.Archive.Digest = "" },
		"archive name":    func(m *Manifest) { m.Archive.Name = "x/a.tgz" },
		"too many parts":  func(m *Manifest) { m.Parts = make([]Part, MaxParts+1) },
		"control in name": func(m *Manifest) { m.Archive.Name = "a\n.tgz" },
	} {
		m := good()
		mutate(m)
		if _, err := Parse(m.Marshal()); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if _, err := Parse(append(good().Marshal(), "{}"...)); err == nil {
		t.Error("two values taken")
	}
	if _, err := Parse(bytes.Repeat([]byte(" "), MaxFileSize+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a huge parts file: %v", err)
	}
}

// stream gives parts from memory, as a web upload does.
func stream(parts ...[2]string) Next {
	i := 0
	return func() (string, io.Reader, error) {
		if i >= len(parts) {
			return "", nil, io.EOF
		}
		p := parts[i]
		i++
		return p[0], strings.NewReader(p[1]), nil
	}
}

func TestStreamReader(t *testing.T) {
	m := &Manifest{MediaType: MediaType, Archive: Part{Name: "a.tgz", Size: 5, Digest: digest.FromString("abcde")},
		Parts: []Part{{Name: "a.tgz.000", Size: 3, Digest: digest.FromString("abc")}, {Name: "a.tgz.001", Size: 2, Digest: digest.FromString("de")}}}
	read := func(m *Manifest, next Next) (string, error) {
		b, err := io.ReadAll(NewReader(m, next))
		return string(b), err
	}
	if got, err := read(m, stream([2]string{"a.tgz.000", "abc"}, [2]string{"a.tgz.001", "de"})); err != nil || got != "abcde" {
		t.Fatalf("%q %v", got, err)
	}
	if got, err := read(nil, stream([2]string{"a.tgz.000", "abc"}, [2]string{"a.tgz.001", "de"})); err != nil || got != "abcde" {
		t.Fatalf("no parts file: %q %v", got, err)
	}
	// without a parts file, the parts are bounded all the same
	n := 0
	_, err := io.Copy(io.Discard, NewReader(nil, func() (string, io.Reader, error) {
		n++
		return PartName("a.tgz", n-1), strings.NewReader("x"), nil
	}))
	wantPartErr(t, err, PartName("a.tgz", MaxParts), "more than")
	for _, tc := range []struct {
		name      string
		m         *Manifest
		parts     [][2]string
		part, msg string
	}{
		{"missing", m, [][2]string{{"a.tgz.000", "abc"}}, "a.tgz.001", "missing"},
		{"swapped", m, [][2]string{{"a.tgz.001", "de"}, {"a.tgz.000", "abc"}}, "a.tgz.001", "given where a.tgz.000 belongs"},
		{"extra", m, [][2]string{{"a.tgz.000", "abc"}, {"a.tgz.001", "de"}, {"a.tgz.002", "f"}}, "a.tgz.002", "not in the parts file"},
		{"longer", m, [][2]string{{"a.tgz.000", "abcX"}, {"a.tgz.001", "de"}}, "a.tgz.000", "longer"},
		{"shorter", m, [][2]string{{"a.tgz.000", "ab"}, {"a.tgz.001", "de"}}, "a.tgz.000", "truncated"},
		{"corrupt", m, [][2]string{{"a.tgz.000", "abc"}, {"a.tgz.001", "dX"}}, "a.tgz.001", "corrupt"},
		{"no list, not first", nil, [][2]string{{"a.tgz.001", "de"}}, "a.tgz.001", "not the first part"},
		{"no list, gap", nil, [][2]string{{"a.tgz.000", "abc"}, {"a.tgz.002", "de"}}, "a.tgz.002", "given where a.tgz.001 belongs"},
		{"no list, path", nil, [][2]string{{"../a.tgz.000", "abc"}}, "../a.tgz.000", "not a plain file name"},
	} {
		_, err := read(tc.m, stream(tc.parts...))
		t.Run(tc.name, func(t *testing.T) { wantPartErr(t, err, tc.part, tc.msg) })
	}
}

// TestFault: a consumer's error is put on a part when the part is at
// fault: its own refusal, or the part being read when reading it whole
// (again from its file, or the rest of it from its stream) shows it
// corrupt; else on none.
func TestFault(t *testing.T) {
	f := newFixture(t)
	r, err := Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	pr := r.(*Reader)
	buf := make([]byte, 1500)
	if _, err := io.ReadFull(pr, buf); err != nil {
		t.Fatal(err)
	}
	consumer := errors.New("blob X: content does not match its name")
	if pe := pr.Fault(consumer); pe != nil || pr.Part() != f.m.Parts[1].Name {
		t.Fatalf("a sound part at fault: %v (reading %s)", pe, pr.Part())
	}
	// the part changes under the reader: reading it again shows it corrupt
	b, _ := os.ReadFile(f.part(1))
	b[900] ^= 1
	_ = os.WriteFile(f.part(1), b, 0o644)
	wantPartErr(t, pr.Fault(consumer), f.m.Parts[1].Name, "corrupt")
	pr.Close()
	// an error naming a part already is that part's
	pe := &Error{Part: "a.kubepkg.tgz.003", Reason: "x"}
	if got := pr.Fault(errors.Join(errors.New("wrapped"), pe)); got != pe {
		t.Fatalf("Fault of a part's error: %v", got)
	}

	// from a stream, the rest of the part is read and checked
	f = newFixture(t)
	var m Manifest
	b, _ = os.ReadFile(f.path + FileSuffix)
	_ = json.Unmarshal(b, &m)
	next := func(corrupt bool) Next {
		i := 0
		return func() (string, io.Reader, error) {
			if i >= len(m.Parts) {
				return "", nil, io.EOF
			}
			b, _ := os.ReadFile(f.part(i))
			if corrupt && i == 1 {
				b[900] ^= 1
			}
			i++
			return m.Parts[i-1].Name, bytes.NewReader(b), nil
		}
	}
	for _, corrupt := range []bool{false, true} {
		sr := NewReader(&m, next(corrupt))
		if _, err := io.ReadFull(sr, buf); err != nil {
			t.Fatal(err)
		}
		got := sr.Fault(consumer)
		if !corrupt && got != nil {
			t.Fatalf("a sound streamed part at fault: %v", got)
		}
		if corrupt {
			wantPartErr(t, got, m.Parts[1].Name, "corrupt")
		}
	}
}
