package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tgz(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range hdrs {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(make([]byte, h.Size)); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = tw.Close()
	_ = zw.Close()
	return buf.Bytes()
}

// TestCheckArchive: a chart archive with a link, a device, a path outside
// its folder, or more than MaxChartSize expanded is refused before Helm's
// loader reads it; a plain one passes.
func TestCheckArchive(t *testing.T) {
	ok := tar.Header{Name: "app/Chart.yaml", Typeflag: tar.TypeReg, Size: 10, Mode: 0o644}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"plain", tgz(t, ok), ""},
		{"symlink", tgz(t, ok, tar.Header{Name: "app/x", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}), "links"},
		{"hard link", tgz(t, ok, tar.Header{Name: "app/x", Typeflag: tar.TypeLink, Linkname: "app/Chart.yaml"}), "links"},
		{"device", tgz(t, ok, tar.Header{Name: "app/x", Typeflag: tar.TypeChar}), "not allowed"},
		{"outside", tgz(t, ok, tar.Header{Name: "../x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), "outside"},
		{"absolute", tgz(t, ok, tar.Header{Name: "/x", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), "outside"},
		{"too big expanded", tgz(t, ok, tar.Header{Name: "app/big", Typeflag: tar.TypeReg, Size: MaxChartSize, Mode: 0o644}), "expanded"},
		{"not gzip", []byte("Chart.yaml"), "gzip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkArchive(c.b)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

// TestParseDocuments: documents split at "---", comments and empty
// documents skipped, integers kept exact, a non-object refused.
func TestParseDocuments(t *testing.T) {
	objs, err := parseDocuments([]byte("# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {n: \"1\"}\nx: 9007199254740993\n--- \n\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"), "f.yaml")
	if err != nil || len(objs) != 2 {
		t.Fatalf("%d objects, %v", len(objs), err)
	}
	if got := objs[0].obj["x"]; got == nil || got.(interface{ String() string }).String() != "9007199254740993" {
		t.Errorf("a big integer became %v", got)
	}
	if _, err := parseDocuments([]byte("- a\n- b\n"), "list.yaml"); err == nil {
		t.Error("a YAML list was taken as an object")
	}
}

// TestHelmImages: the annotation as a list of references or of objects.
func TestHelmImages(t *testing.T) {
	got, err := helmImages("- name: a\n  image: ghcr.io/x/a:1\n- docker.io/library/b:2\n")
	if err != nil || strings.Join(got, ",") != "ghcr.io/x/a:1,docker.io/library/b:2" {
		t.Errorf("%v %v", got, err)
	}
	if _, err := helmImages("- name: a\n"); err == nil {
		t.Error("an entry without an image was taken")
	}
}

// TestYAMLFolderCaps: a folder's links are refused, and a file over the cap.
func TestYAMLFolderCaps(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := yamlFolder(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "l.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := yamlFolder(dir); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Errorf("a link: %v", err)
	}
	os.Remove(filepath.Join(dir, "l.yaml"))
	f, _ := os.Create(filepath.Join(dir, "big.yaml"))
	_ = f.Truncate(MaxChartSize + 1)
	f.Close()
	if _, err := yamlFolder(dir); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a file over the cap: %v", err)
	}
}
