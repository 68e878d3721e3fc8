package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

func clone(es []entry) []entry { return append([]entry(nil), es...) }

func insert(es []entry, i int, e ...entry) []entry {
	out := append([]entry(nil), es[:i]...)
	out = append(out, e...)
	return append(out, es[i:]...)
}

func remove(es []entry, i int) []entry {
	out := append([]entry(nil), es[:i]...)
	return append(out, es[i+1:]...)
}

func renamed(e entry, name string) entry {
	e.hdr.Name = name
	return e
}

func special(typ byte, name, link string) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: link, Mode: 0o644, Devmajor: 1, Devminor: 3, ModTime: time.Unix(0, 0)}}
}

func readArchive(archive []byte, lim Limits) (*collector, *Summary, error) {
	h := &collector{}
	sum, err := Read(context.Background(), bytes.NewReader(archive), h, lim)
	return h, sum, err
}

// wantEntryError checks err is an *EntryError on an entry containing entry
// whose reason contains reason.
func wantEntryError(t *testing.T, err error, entry, reason string) {
	t.Helper()
	var ee *EntryError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v (%T), want an *EntryError", err, err)
	}
	if !strings.Contains(ee.Entry, entry) || !strings.Contains(ee.Reason, reason) {
		t.Fatalf("err = %v (entry %q, reason %q), want entry %q, reason containing %q", err, ee.Entry, ee.Reason, entry, reason)
	}
}

func TestReadSmallFixture(t *testing.T) {
	s := newSmall(t)
	h, sum, err := readArchive(build(t, s.es), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Blobs) != 4 || len(h.blobs) != 4 {
		t.Fatalf("%d blobs", len(sum.Blobs))
	}
	if h.kinds[s.manifest.Digest] != oci.KindManifest || h.kinds[s.config.Digest] != oci.KindConfig || h.kinds[s.layers[0].Digest] != oci.KindLayer {
		t.Fatalf("kinds %v", h.kinds)
	}
}

func TestReadRefuses(t *testing.T) {
	s := newSmall(t)
	es := s.es
	iPkg, iLayout, iIndex, iManifest := 0, 1, 2, 3
	iConfig := indexOf(es, BlobEntry(s.config.Digest))
	iLast := len(es) - 1
	lastName := es[iLast].hdr.Name
	layerHex := s.layers[0].Digest.Encoded()
	valid := build(t, es)

	flip := func(e entry) entry {
		e.body = append([]byte(nil), e.body...)
		e.body[len(e.body)/2] ^= 0x20
		return e
	}
	notJSON := []byte("this is not JSON {")
	notJSONDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(notJSON), Size: int64(len(notJSON))}
	halfTar := rawTar(t, es, true)
	oneZero := append(rawTar(t, es, true), make([]byte, 512)...)

	// a tar whose last header claims more bytes than follow
	var short bytes.Buffer
	{
		tw := tar.NewWriter(&short)
		for _, e := range es[:iLast] {
			h := e.hdr
			_ = tw.WriteHeader(&h)
			_, _ = tw.Write(e.body)
		}
		h := es[iLast].hdr
		_ = tw.WriteHeader(&h)
		_, _ = tw.Write(es[iLast].body[:len(es[iLast].body)/2])
	}

	corrupt := append([]byte(nil), valid...)
	corrupt[len(corrupt)/2] ^= 0xff

	twoIndex := insert(clone(es), iIndex+1)
	twoIndex[iIndex] = file(IndexEntry, indexJSONFor(s.manifest, notJSONDesc))

	cases := []struct {
		name    string
		archive []byte
		lim     Limits
		entry   string
		reason  string
	}{
		{"dotdot", build(t, insert(es, iIndex+1, file("blobs/../kubepkg.json", nil))), Limits{}, "blobs/../kubepkg.json", `".."`},
		{"dotdot first", build(t, insert(es, 0, file("../kubepkg.json", nil))), Limits{}, "../kubepkg.json", `".."`},
		{"absolute", build(t, insert(remove(es, iPkg), 0, renamed(es[iPkg], "/kubepkg.json"))), Limits{}, "/kubepkg.json", "absolute"},
		{"unknown name", build(t, insert(es, iIndex+1, file("README.md", []byte("hi")))), Limits{}, "README.md", "unexpected entry"},
		{"unknown top name", build(t, insert(es, 1, file("manifest.json", []byte("[]")))), Limits{}, "manifest.json", "unexpected entry"},
		{"uppercase hex", build(t, insert(remove(es, iLast), iLast, renamed(es[iLast], "blobs/sha256/"+strings.ToUpper(layerHex)))), Limits{}, "blobs/sha256/", "valid digest"},
		{"unsupported algorithm", build(t, insert(es, iIndex+1, file("blobs/md5/d41d8cd98f00b204e9800998ecf8427e", nil))), Limits{}, "blobs/md5", "valid digest"},
		{"short hex", build(t, insert(es, iIndex+1, file("blobs/sha256/abc", nil))), Limits{}, "blobs/sha256/abc", "valid digest"},
		{"nested blob", build(t, insert(es, iIndex+1, file("blobs/sha256/"+layerHex+"/x", nil))), Limits{}, "blobs/sha256/", "valid digest"},
		{"symlink", build(t, insert(es, iIndex+1, special(tar.TypeSymlink, "blobs/sha256/"+layerHex, "/etc/passwd"))), Limits{}, layerHex, "symbolic link"},
		{"hardlink", build(t, insert(es, iIndex+1, special(tar.TypeLink, "blobs/sha256/"+layerHex, "kubepkg.json"))), Limits{}, layerHex, "hard link"},
		{"char device", build(t, insert(es, iIndex+1, special(tar.TypeChar, "blobs/sha256/"+layerHex, ""))), Limits{}, layerHex, "device"},
		{"block device", build(t, insert(es, iIndex+1, special(tar.TypeBlock, "blobs/sha256/"+layerHex, ""))), Limits{}, layerHex, "device"},
		{"fifo", build(t, insert(es, iIndex+1, special(tar.TypeFifo, "blobs/sha256/"+layerHex, ""))), Limits{}, layerHex, "FIFO"},
		{"pax global header", build(t, insert(es, 1, entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "x"}}})), Limits{}, "global", "global"},
		{"other directory", build(t, insert(es, 1, dir("etc/"))), Limits{}, "etc/", "directory"},
		{"directory for an unsupported algorithm", build(t, insert(es, iIndex+1, dir("blobs/md5/"))), Limits{}, "blobs/md5/", "directory"},
		{"directory named like a blob", build(t, insert(es, iIndex+1, dir("blobs/sha256/"+layerHex+"/"))), Limits{}, layerHex, "directory"},
		{"root directory", build(t, insert(es, 0, dir("./"))), Limits{}, "./", "directory"},
		{"layer bytes do not match", build(t, append(clone(es[:iLast]), flip(es[iLast]))), Limits{}, lastName, "does not match"},
		{"config bytes do not match", build(t, insert(remove(es, iConfig), iConfig, flip(es[iConfig]))), Limits{}, BlobEntry(s.config.Digest), "does not match"},
		{"manifest bytes do not match", build(t, insert(remove(es, iManifest), iManifest, flip(es[iManifest]))), Limits{}, BlobEntry(s.manifest.Digest), "does not match"},
		{"same name twice", build(t, append(clone(es), es[iLast])), Limits{}, lastName, "duplicate"},
		{"same manifest twice", build(t, insert(es, iManifest+1, es[iManifest])), Limits{}, BlobEntry(s.manifest.Digest), "duplicate"},
		{"kubepkg.json twice", build(t, insert(es, 1, es[iPkg])), Limits{}, PackageEntry, "duplicate"},
		{"index.json twice", build(t, insert(es, iIndex+1, es[iIndex])), Limits{}, IndexEntry, "duplicate"},
		{"truncated gzip trailer", valid[:len(valid)-4], Limits{}, "", "truncated"},
		{"truncated gzip", valid[:len(valid)/2], Limits{}, "", "truncated"},
		{"corrupt gzip", corrupt, Limits{}, "", ""},
		{"truncated tar: no end marker", gzipBytes(halfTar), Limits{}, lastName, "end marker"},
		{"truncated tar: one zero block", gzipBytes(oneZero), Limits{}, lastName, "end marker"},
		{"truncated tar: mid header", gzipBytes(halfTar[:len(halfTar)-len(es[iLast].body)-(512-len(es[iLast].body)%512)%512-100]), Limits{}, "", "truncated"},
		{"header claims more bytes than follow", gzipBytes(short.Bytes()), Limits{}, lastName, "truncated"},
		{"kubepkg.json missing", build(t, es[1:]), Limits{}, LayoutEntry, "kubepkg.json must be the first entry"},
		{"kubepkg.json not first", build(t, insert(remove(es, iPkg), 1, es[iPkg])), Limits{}, LayoutEntry, "first entry"},
		{"kubepkg.json over the cap", build(t, es), Limits{MaxPackage: 10}, PackageEntry, "limit"},
		{"empty archive", gzipBytes(make([]byte, 1024)), Limits{}, PackageEntry, "missing"},
		{"oci-layout missing", build(t, remove(es, iLayout)), Limits{}, BlobEntry(s.manifest.Digest), "before"},
		{"index.json missing, no blobs at all", build(t, []entry{es[iPkg], es[iLayout]}), Limits{}, IndexEntry, "missing"},
		{"oci-layout missing, no blobs at all", build(t, []entry{es[iPkg], es[iIndex]}), Limits{}, LayoutEntry, "missing"},
		{"oci-layout wrong", build(t, insert(remove(es, iLayout), iLayout, file(LayoutEntry, []byte(`{"imageLayoutVersion":"2.0.0"}`)))), Limits{}, LayoutEntry, "imageLayoutVersion"},
		{"oci-layout after a blob", build(t, insert(remove(es, iLayout), iManifest, es[iLayout])), Limits{}, BlobEntry(s.manifest.Digest), "before"},
		{"index.json missing", build(t, remove(es, iIndex)), Limits{}, BlobEntry(s.manifest.Digest), "before"},
		{"index.json after a blob", build(t, insert(remove(es, iIndex), iManifest, es[iIndex])), Limits{}, BlobEntry(s.manifest.Digest), "before"},
		{"index.json not JSON", build(t, insert(remove(es, iIndex), iIndex, file(IndexEntry, []byte("{")))), Limits{}, IndexEntry, "not a valid OCI image index"},
		{"index.json over the cap", build(t, es), Limits{MaxIndex: 10}, IndexEntry, "limit"},
		{"index.json without names", build(t, insert(remove(es, iIndex), iIndex, file(IndexEntry, []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+string(s.manifest.Digest)+`","size":1}]}`)))), Limits{}, IndexEntry, "annotation"},
		{"index.json lists an absent manifest", build(t, twoIndex), Limits{}, BlobEntry(notJSONDesc.Digest), "missing"},
		{"manifest entry not JSON", build(t, []entry{es[iPkg], es[iLayout], file(IndexEntry, indexJSONFor(notJSONDesc)), file(BlobEntry(notJSONDesc.Digest), notJSON)}), Limits{}, BlobEntry(notJSONDesc.Digest), "not a valid manifest"},
		{"header size disagrees with descriptor", build(t, insert(remove(es, iIndex), iIndex, file(IndexEntry, indexJSONFor(ocispec.Descriptor{MediaType: s.manifest.MediaType, Digest: s.manifest.Digest, Size: s.manifest.Size + 1})))), Limits{}, BlobEntry(s.manifest.Digest), "tar header says"},
		{"unreferenced layer", build(t, insert(es, iLast, file(BlobEntry(digest.FromString("stray")), []byte("stray")))), Limits{}, BlobEntry(digest.FromString("stray")), "not referenced by any manifest"},
		{"unreferenced large blob", build(t, insert(es, iLast, file(BlobEntry(digest.FromBytes(make([]byte, 5<<20))), make([]byte, 5<<20)))), Limits{}, BlobEntry(digest.FromBytes(make([]byte, 5<<20))), "not referenced by any manifest"},
		{"layer missing", build(t, remove(es, iLast)), Limits{}, lastName, "missing"},
		{"manifest over the cap", build(t, es), Limits{MaxManifest: 10}, BlobEntry(s.manifest.Digest), "limit"},
		{"too many directories", build(t, insert(es, iIndex+1, func() []entry {
			var ds []entry
			for i := 0; i <= maxDirs; i++ {
				ds = append(ds, dir("blobs/"))
			}
			return ds
		}()...)), Limits{}, "blobs/", "directory entries"},
		{"too many blobs announced", build(t, es), Limits{MaxBlobs: 2}, BlobEntry(s.manifest.Digest), "more than 2 blobs"},
		{"not gzip: text", []byte("hello, this is not an archive"), Limits{}, "", "not a gzip stream"},
		{"not gzip: empty", nil, Limits{}, "", "not a gzip stream"},
		{"plain tar: too much after the tar end", append(rawTar(t, es, false), bytes.Repeat([]byte{1}, maxTrailing+1)...), Limits{}, "", "after the end"},
		{"plain tar: truncated", rawTar(t, es, false)[:len(rawTar(t, es, false))/2], Limits{}, "", "truncated"},
		{"too much after the tar end", gzipBytes(append(rawTar(t, es, false), bytes.Repeat([]byte{1}, maxTrailing+1)...)), Limits{}, "", "after the end"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readArchive(tc.archive, tc.lim)
			wantEntryError(t, err, tc.entry, tc.reason)
		})
	}
}

func TestReadAccepts(t *testing.T) {
	s := newSmall(t)
	es := s.es
	iIndex := 2
	notJSON := []byte("not JSON at all")

	dotSlash := clone(es)
	for i := range dotSlash {
		dotSlash[i].hdr.Name = "./" + dotSlash[i].hdr.Name
	}
	cases := []struct {
		name    string
		archive []byte
	}{
		{"directory entries for blobs/", build(t, insert(insert(es, iIndex+1, dir("blobs/"), dir("blobs/sha256/"), dir("blobs/sha512"), dir("./blobs"), dir("./blobs/sha256/")), 0, dir("blobs/")))},
		{"./ prefixes", build(t, insert(dotSlash, iIndex+1, dir("./blobs/"), dir("./blobs/sha256/")))},
		{"kubepkg.json not JSON", build(t, insert(es[1:], 0, file(PackageEntry, notJSON)))},
		{"trailing garbage after the gzip stream", append(build(t, es), []byte("garbage after the end")...)},
		{"zero padding after the tar end", gzipBytes(append(rawTar(t, es, false), make([]byte, 10240)...))},
		{"data after the tar end", gzipBytes(append(rawTar(t, es, false), []byte("junk")...))},
		{"index.json before oci-layout", build(t, insert(remove(es, 1), iIndex, es[1]))},
		{"one gzip member per entry", func() []byte {
			var out []byte
			raw := rawTar(t, es, false)
			for i := 0; i < len(raw); i += 700 {
				out = append(out, gzipBytes(raw[i:min(i+700, len(raw))])...)
			}
			return out
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, sum, err := readArchive(tc.archive, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(sum.Blobs) != 4 || len(h.blobs) != 4 {
				t.Fatalf("%d blobs", len(sum.Blobs))
			}
		})
	}
	h, _, err := readArchive(build(t, insert(es[1:], 0, file(PackageEntry, notJSON))), Limits{})
	if err != nil || string(h.pkg) != string(notJSON) {
		t.Fatalf("package %q, %v", h.pkg, err)
	}
}

// TestReadChildBeforeParent: manifests are sorted by digest, so a child can
// come before its parent; it is held and delivered once the parent arrives.
func TestReadChildBeforeParent(t *testing.T) {
	c := newContent(3)
	layer := c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 1000)
	cfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	m := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg, layer)
	idx := c.index(digest.SHA256, ocispec.MediaTypeImageIndex, withPlatform(m, "amd64"))
	top := c.index(digest.SHA512, ocispec.MediaTypeImageIndex, idx)
	head := []entry{file(PackageEntry, []byte(testPkg)), file(LayoutEntry, []byte(layoutJSON)), file(IndexEntry, indexJSONFor(top))}

	es := append(clone(head), c.blobEntries(m, idx, top, cfg, layer)...)
	h, sum, err := readArchive(build(t, es), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Blobs) != 5 {
		t.Fatalf("%d blobs", len(sum.Blobs))
	}
	want := []digest.Digest{top.Digest, idx.Digest, m.Digest, cfg.Digest, layer.Digest}
	for i, d := range sum.Blobs {
		if d.Digest != want[i] || h.kinds[d.Digest] != [...]oci.Kind{0, 0, 0, 1, 2}[i] {
			t.Fatalf("blob %d: %s (%s), want %s", i, d.Digest, h.kinds[d.Digest], want[i])
		}
	}
	if sum.Blobs[1].MediaType != ocispec.MediaTypeImageIndex || sum.Blobs[2].MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("media types %v", sum.Blobs)
	}

	// the held manifests count against MaxManifestBytes
	_, _, err = readArchive(build(t, es), Limits{MaxManifestBytes: m.Size + idx.Size + 2*heldOverhead - 1})
	wantEntryError(t, err, BlobEntry(idx.Digest), "waiting")

	// a manifest nobody references is refused at the end
	stray := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg)
	es2 := insert(es, 3, c.blobEntries(stray)...)
	_, _, err = readArchive(build(t, es2), Limits{})
	wantEntryError(t, err, BlobEntry(stray.Digest), "not referenced by any manifest")

	// a held manifest whose parent gives another size
	bad := c.index(digest.SHA256, ocispec.MediaTypeImageIndex, ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size + 1})
	es3 := append(clone(head[:2]), file(IndexEntry, indexJSONFor(bad)))
	es3 = append(es3, c.blobEntries(m, bad)...)
	_, _, err = readArchive(build(t, es3), Limits{})
	wantEntryError(t, err, BlobEntry(m.Digest), "bytes")
}

// bombStream is a gzip stream of es followed by an entry header of size
// bytes and an endless run of zeros, produced lazily.
type bombStream struct {
	pr   *io.PipeReader
	read atomic.Int64
}

func newBomb(t *testing.T, es []entry, name string, size int64) *bombStream {
	pr, pw := io.Pipe()
	b := &bombStream{pr: pr}
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		tw := tar.NewWriter(zw)
		for _, e := range es {
			h := e.hdr
			_ = tw.WriteHeader(&h)
			_, _ = tw.Write(e.body)
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644})
		zero := make([]byte, 1<<20)
		for {
			if _, err := tw.Write(zero); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	t.Cleanup(func() { pr.Close() })
	return b
}

func (b *bombStream) Read(p []byte) (int, error) {
	n, err := b.pr.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func TestReadGzipBomb(t *testing.T) {
	s := newSmall(t)
	es := s.es
	iLast := len(es) - 1
	const huge = 1 << 40
	cases := []struct {
		name   string
		es     []entry
		entry  string
		reason string
	}{
		{"unreferenced", es, BlobEntry(digest.FromString("bomb")), "not referenced by any manifest"},
		{"header size disagrees", es[:iLast], es[iLast].hdr.Name, "tar header says"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.entry
			b := newBomb(t, tc.es, name, huge)
			start := time.Now()
			_, err := Read(context.Background(), b, &collector{}, Limits{})
			wantEntryError(t, err, tc.entry, tc.reason)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			if n := b.read.Load(); n > 8<<20 {
				t.Errorf("read %d compressed bytes", n)
			}
		})
	}
}

// blockingHandler fails its blobs in a chosen way.
type failingHandler struct {
	collector
	err    error
	cancel context.CancelFunc
}

func (f *failingHandler) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if kind != oci.KindLayer {
		return f.collector.Blob(ctx, desc, kind, r)
	}
	if f.cancel != nil {
		f.cancel()
		_, err := io.Copy(io.Discard, r)
		return err
	}
	return f.err
}

func TestReadHandler(t *testing.T) {
	s := newSmall(t)
	es := s.es
	iLast := len(es) - 1
	valid := build(t, es)

	// a handler reading only part of the layers: the rest is read and verified
	h := &collector{readN: 10}
	if _, err := Read(context.Background(), bytes.NewReader(valid), h, Limits{}); err != nil {
		t.Fatal(err)
	}
	bad := clone(es)
	bad[iLast].body = append([]byte(nil), bad[iLast].body...)
	bad[iLast].body[len(bad[iLast].body)-1] ^= 1
	h = &collector{readN: 10}
	_, err := Read(context.Background(), bytes.NewReader(build(t, bad)), h, Limits{})
	wantEntryError(t, err, es[iLast].hdr.Name, "does not match")
	if !errors.Is(err, cas.ErrDigestMismatch) {
		t.Fatalf("err = %v, want it to wrap cas.ErrDigestMismatch", err)
	}

	// a handler reading to EOF sees the mismatch as an error instead of EOF
	var seen error
	fh := &funcHandler{blob: func(r io.Reader) error {
		_, seen = io.Copy(io.Discard, r)
		return seen
	}}
	_, err = Read(context.Background(), bytes.NewReader(build(t, bad)), fh, Limits{})
	wantEntryError(t, err, es[iLast].hdr.Name, "does not match")
	if seen == nil {
		t.Fatal("the handler read a mismatching blob without an error")
	}

	// a handler error is returned as is, naming the entry
	boom := errors.New("disk full")
	_, err = Read(context.Background(), bytes.NewReader(valid), &failingHandler{err: boom}, Limits{})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "blobs/sha256/") {
		t.Fatalf("err = %v", err)
	}
	var ee *EntryError
	if errors.As(err, &ee) {
		t.Fatalf("a handler error is not an archive violation: %v", err)
	}

	// cancellation
	ctx, cancel := context.WithCancel(context.Background())
	_, err = Read(ctx, bytes.NewReader(valid), &failingHandler{cancel: cancel}, Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Read(ctx, bytes.NewReader(valid), &collector{}, Limits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// funcHandler is a Handler whose Blob calls blob.
type funcHandler struct{ blob func(io.Reader) error }

func (f *funcHandler) Package([]byte) error      { return nil }
func (f *funcHandler) Index(ocispec.Index) error { return nil }
func (f *funcHandler) Blob(_ context.Context, _ ocispec.Descriptor, _ oci.Kind, r io.Reader) error {
	return f.blob(r)
}

func TestEntryErrorMessage(t *testing.T) {
	e := &EntryError{Entry: "blobs/sha256/x", Reason: "bad", Err: io.ErrUnexpectedEOF}
	if got := e.Error(); got != "kubepkg.tgz: blobs/sha256/x: bad: unexpected EOF" {
		t.Fatal(got)
	}
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Fatal("Unwrap")
	}
}

// TestReadUnverified: a layer named by Limits.Unverified is read past
// without hashing and not given to the handler, so its damaged bytes pass;
// its framing is still checked (truncated), and every other blob is still
// verified.
func TestReadUnverified(t *testing.T) {
	s := newSmall(t)
	es := s.es
	iLast := len(es) - 1
	last := digest.Digest("sha256:" + strings.TrimPrefix(es[iLast].hdr.Name, "blobs/sha256/"))
	bad := clone(es)
	bad[iLast].body = append([]byte(nil), bad[iLast].body...)
	bad[iLast].body[len(bad[iLast].body)/2] ^= 1
	skip := func(d digest.Digest) bool { return d == last }

	h := &collector{}
	if _, err := Read(context.Background(), bytes.NewReader(build(t, bad)), h, Limits{Unverified: skip}); err != nil {
		t.Fatalf("a damaged layer named unverified: %v", err)
	}
	if _, given := h.blobs[last]; given {
		t.Fatal("the handler was given a layer named unverified")
	}
	if len(h.blobs) == 0 {
		t.Fatal("the handler was given no blob at all")
	}
	// another layer's damage is still found
	other := func(d digest.Digest) bool { return d == s.config.Digest }
	_, err := Read(context.Background(), bytes.NewReader(build(t, bad)), &collector{}, Limits{Unverified: other})
	wantEntryError(t, err, es[iLast].hdr.Name, "does not match")
	// and an unverified layer cut short is still refused
	halfTar := rawTar(t, es, true)
	cut := gzipBytes(halfTar[:len(halfTar)-1024-len(es[iLast].body)/2])
	_, err = Read(context.Background(), bytes.NewReader(cut), &collector{}, Limits{Unverified: skip})
	if err == nil {
		t.Fatal("a truncated unverified layer was accepted")
	}
}
