package importbad

import (
	"archive/tar"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// badCase is one archive (or request) the agent must refuse.
type badCase struct {
	name string
	// body makes the request body from a fresh fixture; esc is a file name
	// nothing may ever create
	body func(t *testing.T, f *fixture, esc string) []byte
	opts putOptions
	// status wanted (default 400) and code (default: any non-empty)
	status    int
	statusAny []int
	// noCLI: the body is not a file the CLI could be given
	noCLI bool
	code  string
	// want are substrings the error message (or detail.entry) must hold
	want []string
	// wantAny: at least one of them must be said
	wantAny []string
	// fast bounds the request's duration (gzip bombs)
	fast time.Duration
	// setup runs on the agent before the request (it may import
	// something that must stay intact)
	setup func(t *testing.T, p *testenv.Proc) *fixture
	// cli: arguments replacing the token flags of `crpe import --to`
	cliAuth []string
	// cliWant are substrings `crpe import` must print (default: want)
	cliWant []string
	// cliBug names a known bug of `crpe import --to` for this input: the
	// CLI subtest skips with it when the bug shows
	cliBug string
}

// insertAt returns es with e inserted before index i.
func insertAt(es []entry, i int, e ...entry) []entry {
	out := append([]entry{}, es[:i]...)
	out = append(out, e...)
	return append(out, es[i:]...)
}

// replace returns es with the entry named name replaced by e.
func replace(t *testing.T, es []entry, name string, e entry) []entry {
	t.Helper()
	for i := range es {
		if es[i].hdr.Name == name {
			out := append([]entry{}, es...)
			out[i] = e
			return out
		}
	}
	t.Fatalf("no entry %s", name)
	return nil
}

// without returns es without the entries named names.
func without(es []entry, names ...string) []entry {
	var out []entry
	for _, e := range es {
		drop := false
		for _, n := range names {
			if e.hdr.Name == n {
				drop = true
			}
		}
		if !drop {
			out = append(out, e)
		}
	}
	return out
}

func indexOf(t *testing.T, es []entry, name string) int {
	t.Helper()
	for i := range es {
		if es[i].hdr.Name == name {
			return i
		}
	}
	t.Fatalf("no entry %s", name)
	return -1
}

func special(name string, typ byte, link string) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: link, Mode: 0o644, ModTime: epoch, Devmajor: 1, Devminor: 3, Format: tar.FormatPAX}}
}

// retype writes es as a tar stream with the type flag of entry i changed
// to typ in the raw header (archive/tar cannot write such entries).
func retype(t *testing.T, es []entry, i int, typ byte) []byte {
	t.Helper()
	before := tarBytes(t, es[:i], false)
	b := tarBytes(t, es, true)
	h := b[len(before) : len(before)+512]
	if h[156] != tar.TypeReg {
		t.Fatalf("entry %d is not a plain USTAR regular file header", i)
	}
	h[156] = typ
	for j := 148; j < 156; j++ {
		h[j] = ' '
	}
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func flip(b []byte) []byte {
	c := append([]byte{}, b...)
	c[len(c)/2] ^= 0x5a
	return c
}

// appRef is the single-platform image of f, multiRef the index.
func appRef(f *fixture) string {
	for _, r := range f.refs() {
		if strings.Contains(r, "-app:") {
			return r
		}
	}
	panic("no app image")
}

func multiRef(f *fixture) string {
	for _, r := range f.refs() {
		if strings.Contains(r, "-multi:") {
			return r
		}
	}
	panic("no multi image")
}

// appManifest, appConfig, appLayer0 are blobs of the single-platform image.
func appManifest(f *fixture) blob {
	for _, b := range f.manifests {
		if string(b.desc.Digest) == f.images[appRef(f)] {
			return b
		}
	}
	panic("no app manifest")
}

func layerN(f *fixture, i int) blob { return f.layers[i] }

// multiChild is the exported child manifest of the index, with its config
// and layer.
func multiChild(f *fixture) (manifest, config, layer blob) {
	return f.manifests[len(f.manifests)-1], f.configs[len(f.configs)-1], f.layers[len(f.layers)-1]
}

// withNewAppManifest rebuilds f's archive entries with the app image's
// manifest replaced by body (index.json and kubepkg.json follow).
func withNewAppManifest(t *testing.T, f *fixture, body []byte) []entry {
	t.Helper()
	old := appManifest(f)
	ref := appRef(f)
	d := ocispec.Descriptor{MediaType: old.desc.MediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
	f.images[ref] = string(d.Digest)
	f.tops[ref] = d
	f.pkgJSON = f.packageJSON(nil)
	f.indexJSON = f.makeIndexJSON(nil)
	es := f.entries()
	return replace(t, es, blobName(old.desc.Digest), file(blobName(d.Digest), body))
}

func badCases() []badCase {
	const gib2 = int64(2) << 30
	nameCase := func(name string, mk func(f *fixture, esc string) string, want ...string) badCase {
		return badCase{name: name, want: want, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, insertAt(f.entries(), 1, file(mk(f, esc), []byte("escaped\n"))))
		}}
	}
	typeCase := func(name string, typ byte, link string, want ...string) badCase {
		return badCase{name: name, want: want, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			n := blobName(layerN(f, 0).desc.Digest)
			return tgz(t, replace(t, es, n, special(n, typ, link)))
		}}
	}
	return []badCase{
		// ------------------------------------------------ entry names
		nameCase("name/dotdot", func(f *fixture, esc string) string { return "../" + esc }, `".."`),
		nameCase("name/dotdot-deep", func(f *fixture, esc string) string { return "../../../../" + esc }, `".."`),
		nameCase("name/dotdot-inside-blobs", func(f *fixture, esc string) string { return "blobs/../../" + esc }, `".."`, "blobs/../../"),
		nameCase("name/dot-slash-dotdot", func(f *fixture, esc string) string { return "./../" + esc }, `".."`),
		nameCase("name/absolute", func(f *fixture, esc string) string { return "/tmp/" + esc }, "absolute", "/tmp/"),
		{name: "name/absolute-blob", want: []string{"absolute"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			n := blobName(layerN(f, 0).desc.Digest)
			i := indexOf(t, es, n)
			es[i].hdr.Name = "/" + n
			return tgz(t, es)
		}},
		nameCase("name/outside", func(f *fixture, esc string) string { return "etc/" + esc }, "unexpected entry", "etc/"),
		nameCase("name/docker-save-manifest", func(f *fixture, esc string) string { return "manifest.json" }, "unexpected entry", "manifest.json"),
		nameCase("name/blob-unknown-alg", func(f *fixture, esc string) string { return "blobs/md5/d41d8cd98f00b204e9800998ecf8427e" }, "blobs/md5/"),
		nameCase("name/blob-not-hex", func(f *fixture, esc string) string { return "blobs/sha256/" + strings.Repeat("z", 64) }, "blobs/sha256/zzz"),
		nameCase("name/blob-short-hex", func(f *fixture, esc string) string { return "blobs/sha256/abcdef" }, "blobs/sha256/abcdef"),
		nameCase("name/blob-nested", func(f *fixture, esc string) string {
			return blobName(layerN(f, 0).desc.Digest) + "/x"
		}, "/x"),
		nameCase("name/blobs-file", func(f *fixture, esc string) string { return "blobs/" + esc }, "unexpected entry"),
		{name: "name/dotdot-in-pax-path", want: []string{`".."`}, body: func(t *testing.T, f *fixture, esc string) []byte {
			e := file("../"+strings.Repeat("p", 120)+"/"+esc, []byte("escaped\n"))
			e.hdr.Format = tar.FormatPAX // a name this long only fits a PAX path record
			return tgz(t, insertAt(f.entries(), 1, e))
		}},
		{name: "name/dotdot-in-gnu-longname", want: []string{`".."`}, body: func(t *testing.T, f *fixture, esc string) []byte {
			e := file("../"+strings.Repeat("g", 120)+"/"+esc, []byte("escaped\n"))
			e.hdr.Format = tar.FormatGNU // a ././@LongLink entry
			return tgz(t, insertAt(f.entries(), 1, e))
		}},
		nameCase("name/blob-uppercase-hex", func(f *fixture, esc string) string {
			return "blobs/sha256/" + strings.ToUpper(layerN(f, 0).desc.Digest.Encoded())
		}, "blobs/sha256/"),
		nameCase("name/empty", func(f *fixture, esc string) string { return "" }, ""),
		{name: "name/directory-outside", want: []string{"directory"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, insertAt(f.entries(), 1, special(esc+"/", tar.TypeDir, "")))
		}, cliBug: cliHeals + "drops every directory entry"},
		{name: "name/many-directory-entries", want: []string{"directory"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			var dirs []entry
			for i := 0; i < 5000; i++ {
				dirs = append(dirs, special("blobs/sha256/", tar.TypeDir, ""))
			}
			return tgz(t, insertAt(f.entries(), 3, dirs...))
		}, cliBug: cliHeals + "drops every directory entry"},
		{name: "name/directory-unknown-alg", want: []string{"directory", "blobs/md5"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, insertAt(f.entries(), 1, special("blobs/md5/", tar.TypeDir, "")))
		}, cliBug: cliHeals + "drops every directory entry"},

		// ------------------------------------------------ entry types
		typeCase("type/symlink", tar.TypeSymlink, "/etc/passwd", "symbolic link"),
		typeCase("type/symlink-relative", tar.TypeSymlink, "../../../../etc/passwd", "symbolic link"),
		{name: "type/hardlink", want: []string{"hard link"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			n1 := blobName(layerN(f, 1).desc.Digest)
			return tgz(t, replace(t, es, n1, special(n1, tar.TypeLink, blobName(layerN(f, 0).desc.Digest))))
		}},
		typeCase("type/hardlink-outside", tar.TypeLink, "/etc/passwd", "hard link"),
		typeCase("type/char-device", tar.TypeChar, "", "device"),
		typeCase("type/block-device", tar.TypeBlock, "", "device"),
		typeCase("type/fifo", tar.TypeFifo, "", "FIFO"),
		{name: "type/pax-global-header", want: []string{"global"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			g := entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": esc}, Format: tar.FormatPAX}}
			return tgz(t, insertAt(f.entries(), 1, g))
		}},
		{name: "type/pax-global-header-with-path", want: []string{`".."`}, body: func(t *testing.T, f *fixture, esc string) []byte {
			g := entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"path": "../" + esc}, Format: tar.FormatPAX}}
			return tgz(t, insertAt(f.entries(), 1, g))
		}},
		{name: "type/gnu-sparse-raw", wantAny: []string{"type", "invalid tar header"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return gz(retype(t, f.entries(), 3, 'S'))
		}},
		{name: "type/unknown-typeflag-raw", want: []string{"type"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return gz(retype(t, f.entries(), 3, 'Z'))
		}},
		{name: "type/contiguous-file-raw", wantAny: []string{"type", "not allowed"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return gz(retype(t, f.entries(), 3, '7'))
		}},
		{name: "type/symlink-as-kubepkg", want: []string{"symbolic link", "kubepkg.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, replace(t, f.entries(), "kubepkg.json", special("kubepkg.json", tar.TypeSymlink, "/etc/passwd")))
		}},

		// ------------------------------------------------ content
		{name: "content/layer-mismatch", want: []string{"does not match"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			l := layerN(f, 0)
			return tgz(t, replace(t, f.entries(), blobName(l.desc.Digest), file(blobName(l.desc.Digest), flip(l.data))))
		}},
		{name: "content/last-layer-mismatch", want: []string{"does not match"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			l := f.layers[len(f.layers)-1]
			return tgz(t, replace(t, f.entries(), blobName(l.desc.Digest), file(blobName(l.desc.Digest), flip(l.data))))
		}},
		{name: "content/config-mismatch", want: []string{"does not match"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			c := f.configs[0]
			return tgz(t, replace(t, f.entries(), blobName(c.desc.Digest), file(blobName(c.desc.Digest), flip(c.data))))
		}},
		{name: "content/manifest-mismatch", want: []string{"does not match"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			m := appManifest(f)
			return tgz(t, replace(t, f.entries(), blobName(m.desc.Digest), file(blobName(m.desc.Digest), flip(m.data))))
		}},
		{name: "content/duplicate-layer-different-bytes", want: []string{"duplicate"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			l := layerN(f, 0)
			return tgz(t, append(f.entries(), file(blobName(l.desc.Digest), flip(l.data))))
		}, cliBug: cliHeals + "leaves out every entry of a layer the agent already has (here committed by the refused PUT before the duplicate was found), both copies of the duplicate included"},
		{name: "content/unreferenced-manifest", want: []string{"not referenced"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			other := newFixture(t, "other", "1.0.0", fixtureOptions{noMulti: true})
			m := appManifest(other)
			return tgz(t, insertAt(f.entries(), 3, blobEntry(m)))
		}},
		{name: "content/unreferenced-small-blob", want: []string{"not referenced"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := randBytes(300)
			return tgz(t, append(f.entries(), file(blobName(digest.FromBytes(b)), b)))
		}},
		{name: "content/unreferenced-large-blob", want: []string{"not referenced"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := randBytes(5 << 20)
			return tgz(t, append(f.entries(), file(blobName(digest.FromBytes(b)), b)))
		}},
		{name: "content/layer-size-differs-from-descriptor", want: []string{"tar header says"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			l := layerN(f, 0)
			b := append(append([]byte{}, l.data...), 0)
			return tgz(t, replace(t, f.entries(), blobName(l.desc.Digest), file(blobName(l.desc.Digest), b)))
		}},
		{name: "content/duplicate-kubepkg", want: []string{"duplicate", "kubepkg.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			other := f.packageJSON(func(m map[string]any) { m["spec"].(map[string]any)["version"] = "9.9.9" })
			return tgz(t, insertAt(f.entries(), 3, file("kubepkg.json", other)))
		}},
		{name: "content/duplicate-index", want: []string{"duplicate", "index.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, insertAt(f.entries(), 3, file("index.json", f.makeIndexJSON(func(ms []map[string]any) []map[string]any { return ms[:1] }))))
		}},

		// ------------------------------------------------ truncations
		{name: "stream/gzip-trailer-missing", want: []string{"truncated"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.archive(t)
			return b[:len(b)-8]
		}, cliBug: cliHeals + "stops at the tar end marker without reading the gzip trailer, so a truncated gzip stream is sent as a valid archive and imported"},
		{name: "stream/gzip-cut-in-the-middle", want: []string{"truncated"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.archive(t)
			return b[:len(b)*6/10]
		}},
		{name: "stream/gzip-corrupt-deflate-block", want: []string{"corrupt gzip"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.archive(t)
			b[10] |= 0x06 // the first deflate block's type: 11, reserved
			return b
		}, cliWant: []string{"kubepkg.tgz"}},
		{name: "stream/gzip-corrupt-mid-stream", wantAny: []string{"corrupt gzip", "does not match", "checksum", "truncated", "invalid"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := gzLevel(tarBytes(t, f.entries(), true), 1)
			b[len(b)/2] ^= 0xff
			b[len(b)/2+1] ^= 0xff
			return b
		}, cliWant: []string{}},
		{name: "stream/gzip-crc-mismatch", want: []string{"checksum"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.archive(t)
			c := append([]byte{}, b...)
			c[len(c)-8] ^= 0xff // CRC-32
			return c
		}, cliBug: cliHeals + "never checks the gzip trailer (CRC), so a corrupt archive is sent as a valid one and imported"},
		{name: "stream/tar-end-marker-missing", want: []string{"end marker"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return gz(tarBytes(t, f.entries(), false))
		}, cliBug: cliHeals + "takes a tar cut on an entry boundary (no end marker) as complete and writes a fresh end marker, so a truncated archive is imported"},
		{name: "stream/tar-half-end-marker", want: []string{"end marker"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := tarBytes(t, f.entries(), true)
			return gz(b[:len(b)-512*2+512]) // one zero block of the two
		}, cliBug: cliHeals + "takes a tar ending after a single zero block as complete and writes a fresh end marker, so a truncated archive is imported"},
		{name: "stream/tar-cut-in-layer", want: []string{"truncated"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := tarBytes(t, f.entries(), true)
			return gz(b[:len(b)-1024-3000])
		}},
		{name: "stream/header-claims-more-than-follows", want: []string{"truncated"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			l := layerN(f, 1)
			i := indexOf(t, es, blobName(l.desc.Digest))
			es[i].data = l.data[:len(l.data)/3] // the header says len(l.data)
			return tgz(t, es[:i+1])
		}},
		{name: "stream/kubepkg-header-claims-more", want: []string{"truncated", "kubepkg.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			e := file("kubepkg.json", f.pkgJSON)
			e.hdr.Size = int64(len(f.pkgJSON)) + 100000
			return tgz(t, []entry{e})
		}},

		// ------------------------------------------------ gzip bombs
		{name: "bomb/unreferenced-2GiB-layer", want: []string{"not referenced"}, fast: 5 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			i := indexOf(t, es, blobName(f.layers[0].desc.Digest))
			h := file(blobName(digest.FromBytes(randBytes(16))), nil)
			h.hdr.Size = gib2
			prefix := tarBytes(t, append(es[:i:i], h), false)
			return bomb(gz(prefix), gib2)
		}, cliWant: []string{"not referenced"}},
		{name: "bomb/layer-header-2GiB-descriptor-small", want: []string{"tar header says"}, fast: 5 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			n := blobName(f.layers[0].desc.Digest)
			i := indexOf(t, es, n)
			h := file(n, nil)
			h.hdr.Size = gib2
			prefix := tarBytes(t, append(es[:i:i], h), false)
			return bomb(gz(prefix), gib2)
		}, cliWant: []string{"tar header says"}},
		{name: "bomb/kubepkg-2GiB", want: []string{"kubepkg.json", "limit"}, fast: 5 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			h := file("kubepkg.json", nil)
			h.hdr.Size = gib2
			return bomb(gz(tarBytes(t, []entry{h}, false)), gib2)
		}},
		{name: "bomb/index-2GiB", want: []string{"index.json", "limit"}, fast: 5 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			h := file("index.json", nil)
			h.hdr.Size = gib2
			return bomb(gz(tarBytes(t, append(es[:2:2], h), false)), gib2)
		}},
		{name: "bomb/zeros-after-tar-end", want: []string{"after the end of the tar"}, fast: 5 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := tarBytes(t, f.entries(), true)
			return gzLevel(append(b, make([]byte, 8<<20)...), 9)
		}, cliBug: cliHeals + "stops at the tar end marker and drops what follows, so an archive the agent refuses is imported"},

		// ------------------------------------------------ kubepkg.json
		{name: "kubepkg/missing", want: []string{"kubepkg.json", "first"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, without(f.entries(), "kubepkg.json"))
		}},
		{name: "kubepkg/only-blobs", want: []string{"kubepkg.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, f.entries()[3:])
		}},
		{name: "kubepkg/empty-archive", want: []string{"kubepkg.json", "missing"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, nil)
		}, cliWant: []string{"kubepkg.json"}},
		{name: "kubepkg/invalid-json", want: []string{"kubepkg.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", []byte(`{"apiVersion": "octohelm.tech/v1alpha1", "kind": `))))
		}},
		{name: "kubepkg/not-a-package", want: []string{"kubepkg.json", "kind"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) { m["kind"] = "Deployment" })
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/bad-version", want: []string{"kubepkg.json", "spec.version"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) { m["spec"].(map[string]any)["version"] = "latest" })
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/over-8MiB", want: []string{"kubepkg.json", "limit"}, fast: 10 * time.Second, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) {
				m["metadata"].(map[string]any)["annotations"].(map[string]any)["pad"] = strings.Repeat("x", 8<<20)
			})
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/not-first", want: []string{"kubepkg.json", "first"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			es := f.entries()
			es[0], es[1] = es[1], es[0]
			return tgz(t, es)
		}},
		{name: "kubepkg/image-not-in-index", want: []string{"index.json", "spec.images"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) {
				m["spec"].(map[string]any)["images"].(map[string]any)["docker.io/importbad/ghost:1"] = string(digest.FromBytes([]byte("ghost")))
			})
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/index-image-not-in-package", want: []string{"index.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) {
				delete(m["spec"].(map[string]any)["images"].(map[string]any), multiRef(f))
			})
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/digest-differs-from-index", want: []string{"index.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) {
				m["spec"].(map[string]any)["images"].(map[string]any)[appRef(f)] = string(digest.FromBytes([]byte("other")))
			})
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},
		{name: "kubepkg/image-not-pinned", want: []string{"kubepkg.json", "digest"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.packageJSON(func(m map[string]any) {
				m["spec"].(map[string]any)["images"].(map[string]any)[appRef(f)] = ""
			})
			return tgz(t, replace(t, f.entries(), "kubepkg.json", file("kubepkg.json", b)))
		}},

		// ------------------------------------------------ manifests, index.json
		{name: "manifest/not-json", want: []string{"not a valid manifest"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, withNewAppManifest(t, f, []byte("this is not JSON {")))
		}},
		{name: "manifest/json-but-not-a-manifest", want: []string{"manifest"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, withNewAppManifest(t, f, []byte(`{"hello":"world"}`)))
		}},
		{name: "manifest/truncated-json", want: []string{"manifest"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			m := appManifest(f)
			return tgz(t, withNewAppManifest(t, f, m.data[:len(m.data)-10]))
		}},
		{name: "index/not-json", want: []string{"index.json"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, replace(t, f.entries(), "index.json", file("index.json", []byte("nope"))))
		}},
		{name: "index/no-image-name", want: []string{"index.json", "annotation"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := f.makeIndexJSON(func(ms []map[string]any) []map[string]any {
				ms[0]["annotations"] = map[string]string{}
				return ms
			})
			return tgz(t, replace(t, f.entries(), "index.json", file("index.json", b)))
		}},
		{name: "layout/missing", want: []string{"oci-layout"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, without(f.entries(), "oci-layout"))
		}},

		// ------------------------------------------------ incomplete images
		{name: "incomplete/manifest-missing", want: []string{blobPlaceholder, "missing"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			m := appManifest(f)
			return tgz(t, without(f.entries(), blobName(m.desc.Digest), blobName(f.configs[0].desc.Digest),
				blobName(f.layers[0].desc.Digest), blobName(f.layers[1].desc.Digest)))
		}},
		{name: "incomplete/config-missing", want: []string{blobPlaceholder, "missing"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, without(f.entries(), blobName(f.configs[0].desc.Digest)))
		}},
		{name: "incomplete/layer-missing", want: []string{blobPlaceholder, "missing"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return tgz(t, without(f.entries(), blobName(f.layers[1].desc.Digest)))
		}},
		{name: "incomplete/exported-platform-child-missing", want: []string{"linux/amd64", "incomplete"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			m, c, l := multiChild(f)
			return tgz(t, without(f.entries(), blobName(m.desc.Digest), blobName(c.desc.Digest), blobName(l.desc.Digest)))
		}},
		{name: "incomplete/second-platform-exported-but-absent", want: []string{"linux/arm64", "incomplete"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			f.platforms = "linux/amd64,linux/arm64"
			f.pkgJSON = f.packageJSON(nil)
			return tgz(t, f.entries())
		}},
		{name: "incomplete/partial-annotation-layer-not-in-store", want: []string{blobPlaceholder, "missing"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			f.pkgJSON = f.packageJSON(func(m map[string]any) {
				m["metadata"].(map[string]any)["annotations"].(map[string]any)["octohelm.tech/partial"] = "true"
			})
			return tgz(t, without(f.entries(), blobName(f.layers[0].desc.Digest)))
		}},
		{name: "incomplete/layer-missing-store-has-others", want: []string{blobPlaceholder, "missing"},
			setup: func(t *testing.T, p *testenv.Proc) *fixture {
				other := newFixture(t, "bystander", "1.0.0", fixtureOptions{})
				mustImport(t, p, other.archive(t), putOptions{})
				return other
			},
			body: func(t *testing.T, f *fixture, esc string) []byte {
				return tgz(t, without(f.entries(), blobName(f.layers[0].desc.Digest)))
			}},

		// ------------------------------------------------ not an archive
		{name: "body/empty", want: []string{"empty"}, body: func(t *testing.T, f *fixture, esc string) []byte { return nil },
			cliWant: []string{"gzip"}},
		{name: "body/random-bytes", want: []string{"not a gzip"}, body: func(t *testing.T, f *fixture, esc string) []byte { return randBytes(100 << 10) }},
		{name: "body/plain-tar-truncated", want: []string{"truncated"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			b := tarBytes(t, f.entries(), true)
			return b[:len(b)/2]
		}},
		{name: "body/gzipped-text", want: []string{"tar"}, body: func(t *testing.T, f *fixture, esc string) []byte {
			return gz([]byte(strings.Repeat("this is a text file, not a tar archive\n", 100)))
		}, cliWant: []string{"tar"}},
		// the client half-closes after half the body: Go's server then
		// cancels the request, so 499 CANCELED is as right as 400
		{name: "body/shorter-than-content-length", statusAny: []int{400, 499}, wantAny: []string{"truncated", "canceled"}, opts: putOptions{closeWrite: true},
			body: func(t *testing.T, f *fixture, esc string) []byte { return f.archive(t) }, noCLI: true},
		{name: "body/json-package", want: []string{"not a gzip"}, body: func(t *testing.T, f *fixture, esc string) []byte { return f.pkgJSON }},

		// ------------------------------------------------ tokens
		{name: "token/missing", status: 401, code: "UNAUTHORIZED", opts: putOptions{auth: "-"}, cliAuth: []string{},
			body: func(t *testing.T, f *fixture, esc string) []byte { return f.archive(t) }, cliWant: []string{"401"}},
		{name: "token/wrong-bearer", status: 401, code: "UNAUTHORIZED", opts: putOptions{auth: "Bearer not-the-token"}, cliAuth: []string{"--token", "not-the-token"},
			body: func(t *testing.T, f *fixture, esc string) []byte { return f.archive(t) }, cliWant: []string{"401"}},
		{name: "token/wrong-basic", status: 401, code: "UNAUTHORIZED", opts: putOptions{auth: "Basic dXNlcjpub3QtdGhlLXRva2Vu"}, cliAuth: []string{"--token", "test-token-but-longer"},
			body: func(t *testing.T, f *fixture, esc string) []byte { return f.archive(t) }, cliWant: []string{"401"}},
		{name: "token/empty-bearer", status: 401, code: "UNAUTHORIZED", opts: putOptions{auth: "Bearer "}, cliAuth: []string{"--token", ""},
			body: func(t *testing.T, f *fixture, esc string) []byte { return f.archive(t) }, cliWant: []string{"401"}},
	}
}

// cliHeals names the bug several inputs show through `crpe import --to`.
const cliHeals = "BUG-CLI-HEALS: crpe import --to never validates the archive it reads: agentclient.Send re-encodes it with archive.Filter, and what Filter writes is a valid archive the agent accepts, so the bad file is imported and the command exits 0. Here Filter "

// blobPlaceholder in want is replaced by "blobs/sha256/" (an entry name).
const blobPlaceholder = "blobs/sha256/"

// TestBadInput sends each bad archive to a fresh agent and checks the
// refusal, that nothing was published or written outside the data folder,
// that the agent still serves, that `crpe import --to` refuses it too, and
// that fsck finds the data folder clean once the agent is stopped.
func TestBadInput(t *testing.T) {
	testenv.Crpe(t) // build once before the parallel subtests
	zeros64M()
	cwd, _ := os.Getwd()
	for _, c := range badCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runBadCase(t, c, cwd)
		})
	}
}

func runBadCase(t *testing.T, c badCase, cwd string) {
	if c.status == 0 {
		c.status = http.StatusBadRequest
	}
	sandbox := t.TempDir()
	data := filepath.Join(sandbox, "data")
	p := startAgent(t, data)
	var bystander *fixture
	if c.setup != nil {
		bystander = c.setup(t, p)
	}
	f := newFixture(t, "bad", "1.0.0", fixtureOptions{})
	esc := "importbad-escape-" + randHex(6)
	body := c.body(t, f, esc)
	before := state(t, p, f)
	storeBefore := storedBlobs(t, data)

	a := putBytes(t, p, body, c.opts)
	if a.err != nil {
		t.Fatalf("no answer: %v", a.err)
	}
	if c.fast > 0 && a.elapsed > c.fast {
		t.Errorf("answered after %v, want within %v (the body inflates to GiBs)", a.elapsed.Round(time.Millisecond), c.fast)
	}
	if c.statusAny != nil {
		if !slices.Contains(c.statusAny, a.status) {
			t.Errorf("status %d, want one of %v: %s", a.status, c.statusAny, a)
		}
	} else if a.status != c.status {
		t.Errorf("status %d, want %d: %s", a.status, c.status, a)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e, ok := a.apiError()
	switch {
	case !ok:
		t.Errorf("the answer is not {\"errors\":[{\"code\",\"message\"}]}: %s", a)
	case e.Code == "" || e.Message == "":
		t.Errorf("error without code or message: %s", a)
	case c.code != "" && e.Code != c.code:
		t.Errorf("code %s, want %s: %s", e.Code, c.code, a)
	}
	said := e.Message + " " + e.Detail["entry"]
	for _, w := range c.want {
		if !strings.Contains(said, w) {
			t.Errorf("the error does not say %q: %s", w, a)
		}
	}
	if len(c.wantAny) > 0 {
		any := false
		for _, w := range c.wantAny {
			any = any || strings.Contains(said, w)
		}
		if !any {
			t.Errorf("the error says none of %q: %s", c.wantAny, a)
		}
	}
	t.Logf("%d %s: %s (entry %q) in %v", a.status, e.Code, e.Message, e.Detail["entry"], a.elapsed.Round(time.Millisecond))

	requireHealthy(t, p)
	requireNothingOf(t, p, f)
	if after := state(t, p, f); after != before {
		t.Errorf("published state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if bystander != nil {
		requirePublished(t, p, bystander)
	}
	if left := ingestFiles(t, data); len(left) > 0 {
		t.Errorf("temp files left in the ingest folder after the refusal: %v", left)
	}
	// blobs may have been committed (verified) before the error: only
	// blobs of the archive, each matching its name
	for d := range storedBlobs(t, data) {
		if storeBefore[d] {
			continue
		}
		known := false
		for _, b := range f.allBlobs() {
			if string(b.desc.Digest) == d {
				known = true
			}
		}
		if !known {
			t.Errorf("the refused import stored a blob %s that is not one of the archive's", d)
		}
	}
	if c.fast > 0 {
		if n := dirSize(data); n > 64<<20 {
			t.Errorf("the data folder holds %d bytes after a refused bomb", n)
		}
	}
	checkNoEscape(t, sandbox, data, cwd, esc)

	// the CLI refuses it too
	t.Run("cli", func(t *testing.T) {
		if c.noCLI {
			t.Skip("not a file for the CLI")
		}
		bad := filepath.Join(t.TempDir(), "bad.kubepkg.tgz")
		if err := os.WriteFile(bad, body, 0o644); err != nil {
			t.Fatal(err)
		}
		auth := []string{"--token", token}
		if c.cliAuth != nil {
			auth = c.cliAuth
		}
		out, code := runCrpe(t, 30*time.Second, append([]string{"import", bad, "--to", p.URL}, auth...)...)
		healed := code == 0
		if healed && c.cliBug != "" {
			t.Fatalf("%s (crpe import exited 0: %s)", c.cliBug, strings.TrimSpace(out))
		}
		if code == 0 {
			t.Errorf("crpe import of a bad archive exited 0:\n%s", out)
		}
		want := c.cliWant
		if want == nil {
			want = c.want
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("crpe import does not print %q:\n%s", w, out)
			}
		}
		requireNothingOf(t, p, f)
		if after := state(t, p, f); after != before {
			t.Errorf("published state changed after crpe import:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	requireHealthy(t, p)
	stopAgent(t, p)
	requireFsckClean(t, c.name, data)
	checkNoEscape(t, sandbox, data, cwd, esc)
}

var tmpTopLevel = regexp.MustCompile(`^(Test|crpe-bin-|go-build)`)

// checkNoEscape fails if anything was written next to the data folder, in
// TMPDIR (other than test folders), or where an escaping entry name points.
func checkNoEscape(t *testing.T, sandbox, data, cwd, esc string) {
	t.Helper()
	es, err := os.ReadDir(sandbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Name() != filepath.Base(data) {
			t.Errorf("written next to the data folder: %s", filepath.Join(sandbox, e.Name()))
		}
	}
	for _, path := range []string{
		filepath.Join(data, "..", esc), filepath.Join(data, "../..", esc), filepath.Join(data, "../../..", esc),
		filepath.Join(data, "../../../..", esc), filepath.Join(cwd, esc), filepath.Join(cwd, "..", esc),
		filepath.Join(cwd, "../../..", esc), "/tmp/" + esc, "/" + esc, filepath.Join(privateTmp, esc),
	} {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("an entry escaped: %s exists", path)
		}
	}
	top, _ := os.ReadDir(privateTmp)
	for _, e := range top {
		if !tmpTopLevel.MatchString(e.Name()) {
			t.Errorf("unexpected file in TMPDIR: %s", filepath.Join(privateTmp, e.Name()))
		}
	}
	_ = filepath.Walk(privateTmp, func(path string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(fi.Name(), esc) {
			t.Errorf("an entry escaped: %s exists", path)
		}
		return nil
	})
}
