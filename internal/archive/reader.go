package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// Limits bound what Read holds in memory. A zero (or negative) field means its
// default.
type Limits struct {
	// MaxPackage bounds kubepkg.json (default DefaultMaxPackage, 8 MiB).
	MaxPackage int64
	// MaxIndex bounds index.json (default DefaultMaxIndex, 4 MiB).
	MaxIndex int64
	// MaxManifest bounds each manifest or index blob (default
	// DefaultMaxManifest, 4 MiB).
	MaxManifest int64
	// MaxManifestBytes bounds the total of the manifest and index blobs held
	// because they arrived before anything referenced them (default
	// DefaultMaxManifestBytes, 64 MiB). Each held manifest also counts
	// heldOverhead (1 KiB) for what holding it costs besides its content.
	MaxManifestBytes int64
	// MaxBlobs bounds the number of distinct blobs index.json and the
	// manifests may announce (default DefaultMaxBlobs, 262144), which bounds
	// the memory of the bookkeeping whatever the manifests say.
	MaxBlobs int64
	// Have, when set, tells which blobs the receiver already holds: a
	// partial archive (octohelm.tech/partial) may leave those out. Without
	// it every referenced config and layer must be in the archive.
	Have func(digest.Digest) bool
	// Unverified, when set, names configs and layers whose bytes need not
	// be hashed: the caller will not use them (a delta's sender, whose
	// receiver holds them). Their length and framing are still checked;
	// the handler is not given them.
	Unverified func(digest.Digest) bool
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxPackage, DefaultMaxPackage)
	def(&l.MaxIndex, DefaultMaxIndex)
	def(&l.MaxManifest, DefaultMaxManifest)
	def(&l.MaxManifestBytes, DefaultMaxManifestBytes)
	def(&l.MaxBlobs, DefaultMaxBlobs)
	return l
}

// Handler takes what Read finds, in archive order.
type Handler interface {
	// Package is called with kubepkg.json's bytes (the first entry), before
	// anything else. Whether they are a valid package is the handler's
	// business.
	Package(data []byte) error
	// Index is called with the parsed index.json, before any blob.
	Index(idx ocispec.Index) error
	// Blob is called once per blob with a reader of exactly desc.Size bytes;
	// the reader hashes as it is read and returns an error at EOF if the
	// bytes do not match desc.Digest. The handler reads it to EOF (for
	// example with cas.Store.Put) or returns an error; whatever it leaves
	// unread, Read reads and verifies after it returns. kind tells what the
	// blob is. A manifest may be delivered after its children when it arrived
	// before its parent (manifests are sorted by digest); its reader is a
	// *ManifestBlob, with the bytes and what Read parsed of them.
	Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error
}

// ManifestBlob is the reader Handler.Blob gets for a manifest or an index
// (and for a held manifest referenced as another kind): its verified bytes,
// and what they parse to, so that a handler need not read them back or
// parse them again.
type ManifestBlob struct {
	*bytes.Reader
	Body     []byte
	Manifest *oci.Manifest
}

// Summary is what Read took from a valid archive.
type Summary struct {
	// Package is kubepkg.json's content (as a seed layout's status.digests
	// completes it); PackageRaw its bytes as they are in the archive.
	Package    []byte
	PackageRaw []byte
	// PackageSignature is kubepkg.json.sig's content, if any.
	PackageSignature []byte
	// Index is the parsed index.json.
	Index ocispec.Index
	// Blobs are the blobs given to the handler, in the order they were.
	Blobs []ocispec.Descriptor
	// Bytes is the total size of Blobs.
	Bytes int64
}

// Read reads a kubepkg.tgz from r in a single pass, giving its package, index
// and blobs to h, and returns what it took once the whole stream (tar end
// marker and gzip trailer included) is read and valid.
//
// r is untrusted: every read is bounded by lim or by a size announced by a
// descriptor read before, a blob is only taken when something already read
// references it (manifests, which are small, may arrive before their parent
// and are held until it comes), and every blob is hashed as it streams. Any
// violation of the format is returned as an *EntryError naming the entry; an
// error of h is returned wrapped with the entry's name; when ctx is done its
// error is returned.
//
// Entry names are exactly kubepkg.json, oci-layout, index.json and
// blobs/<alg>/<hex> (sha256 or sha512, lowercase hex), optionally prefixed
// with "./" as hand-made archives have them; directory entries are skipped
// for blobs/ and blobs/<alg>/ only; links, devices, FIFOs, sparse files and
// PAX global headers are refused. kubepkg.json comes first, oci-layout and
// index.json before any blob; blobs come in any order, each once.
//
// When Read fails, h may already have taken blobs (each of them verified):
// the caller decides what to do with them.
func Read(ctx context.Context, r io.Reader, h Handler, lim Limits) (*Summary, error) {
	rd := newReader(ctx, h, lim)
	if err := rd.run(r); err != nil {
		if cerr := ctx.Err(); cerr != nil && !isViolation(err) {
			return nil, cerr
		}
		return nil, err
	}
	return rd.sum, nil
}

func newReader(ctx context.Context, h Handler, lim Limits) *reader {
	return &reader{
		ctx:      ctx,
		h:        h,
		lim:      lim.withDefaults(),
		known:    map[digest.Digest]*knownBlob{},
		held:     map[digest.Digest]*heldManifest{},
		seen:     map[digest.Digest]bool{},
		required: map[digest.Digest]string{},
		sum:      &Summary{},
	}
}

func isViolation(err error) bool {
	var e *EntryError
	return errors.As(err, &e)
}

// knownBlob is a blob announced by index.json, by status.digests or by a
// manifest read.
type knownBlob struct {
	desc  ocispec.Descriptor
	kinds kindSet // how index.json and the manifests reference it (none yet when only status.digests lists it)
	from  string  // the entry that first announced it
	// status is its first entry in status.digests, if any
	status *statusRef
	// repos are the repositories of the images that hold it, and children
	// what it references once delivered as a manifest (kept only when
	// status.digests is there to check)
	repos    []string
	children []digest.Digest
}

// heldManifest is a manifest that arrived before anything referenced it.
type heldManifest struct {
	entry string
	body  []byte
	pm    *oci.Manifest
}

// reader is the state of one Read.
type reader struct {
	ctx context.Context
	h   Handler
	lim Limits

	cnt *countingReader
	mem *memberReader
	loc *locStream // ReadAt's stream, which knows where the bytes are in the file
	tr  *tar.Reader
	buf []byte

	entry     string // the entry being read, for errors
	gzipped   bool   // the stream is gzip (else a plain tar)
	dirs      int    // directory entries seen
	sawFile   bool   // a non-directory entry was read
	sawLayout bool
	sawIndex  bool
	sawBlob   bool

	known     map[digest.Digest]*knownBlob
	held      map[digest.Digest]*heldManifest
	heldBytes int64
	seen      map[digest.Digest]bool
	required  map[digest.Digest]string // blobs manifests need present, to the first entry needing each

	// pkgs are the packages of kubepkg.json (when they parse), statusList
	// the entries of their status.digests announced (first per digest), and
	// seed tells that blobs came before index.json: a seed layout, typed
	// by status.digests (see seed.go)
	pkgs       []*kubepkg.KubePkg
	statusList []*statusRef
	seed       bool

	sum *Summary
}

func (rd *reader) run(r io.Reader) error {
	br := bufio.NewReaderSize(r, copyBufferSize)
	// gzip or a plain tar (octohelm/kubepkg after 2023), told by their magic
	head, err := br.Peek(512)
	switch {
	case len(head) == 0 && (err == io.EOF || err == nil):
		return entryErr("", io.EOF, "empty stream, not a gzip stream or a tar archive")
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		rd.gzipped = true
	case len(head) == 512 && bytes.HasPrefix(head[257:], []byte("ustar")):
	case err != nil && err != io.EOF:
		return rd.streamErr("", "reading the stream", err)
	default:
		return entryErr("", nil, "not a gzip stream or a tar archive")
	}
	var src io.Reader = br
	rest := func() io.Reader { return br }
	if rd.gzipped {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return entryErr("", err, "not a gzip stream")
		}
		gz.Multistream(false)
		rd.mem = &memberReader{ctx: rd.ctx, br: br, gz: gz}
		src = rd.mem
		rest = func() io.Reader {
			rd.mem.stop = true
			return rd.mem
		}
	}
	return rd.readTar(src, rest)
}

// readTar reads the tar stream src; rest is what follows its end marker in
// the gzip member holding it (or the plain tar's padding).
func (rd *reader) readTar(src io.Reader, rest func() io.Reader) error {
	rd.cnt = &countingReader{r: src}
	rd.tr = tar.NewReader(rd.cnt)
	rd.buf = make([]byte, copyBufferSize)

	var end int64 // stream offset at the end of the last entry (padding included)
	for {
		if err := rd.ctx.Err(); err != nil {
			return err
		}
		hdr, err := rd.tr.Next()
		if err == nil && hdr.Typeflag == tar.TypeDir {
			if rd.dirs++; rd.dirs > maxDirs {
				return entryErr(hdr.Name, nil, "more than %d directory entries", maxDirs)
			}
		}
		if err == tar.ErrInsecurePath && hdr != nil {
			err = nil // the name checks below refuse it with a reason
		}
		if err == io.EOF {
			// archive/tar also reports EOF when the stream ends on an entry
			// boundary or after a single zero block: require the end marker
			if rd.cnt.n-end < 2*512 {
				return entryErr(rd.entry, io.ErrUnexpectedEOF, "truncated archive: the tar end marker is missing after this entry")
			}
			break
		}
		if err != nil {
			return rd.streamErr(rd.entry, "reading the tar header after this entry", err)
		}
		rd.entry = hdr.Name
		size := hdr.Size
		if hdr.Typeflag == tar.TypeDir {
			size = 0 // archive/tar reads no data for directories
		}
		end = rd.cnt.n + (size+511)/512*512
		if err := rd.entryHeader(hdr); err != nil {
			return err
		}
	}
	if !rd.sawFile {
		return entryErr(PackageEntry, nil, "missing: the archive has no entries")
	}
	if !rd.sawLayout && !rd.sawIndex && len(rd.statusList) > 0 {
		// a seed layout whose blobs the receiver all holds
		if err := rd.startSeed(PackageEntry); err != nil {
			return err
		}
	}
	if !rd.sawLayout && !rd.seed {
		return entryErr(LayoutEntry, nil, "missing")
	}
	if !rd.sawIndex {
		return entryErr(IndexEntry, nil, "missing")
	}
	if len(rd.held) > 0 {
		var first digest.Digest
		for d, m := range rd.held {
			if first == "" || m.entry < rd.held[first].entry {
				first = d
			}
		}
		if s := rd.known[first]; s != nil && s.status != nil {
			return entryErr(rd.held[first].entry, nil, "%s lists it, but no manifest of the archive references it", s.status.label)
		}
		return entryErr(rd.held[first].entry, nil, "not referenced by any manifest")
	}
	for _, m := range rd.sum.Index.Manifests {
		if !rd.seen[m.Digest] && !(rd.lim.Have != nil && rd.lim.Have(m.Digest)) {
			ref := refName(m)
			from := IndexEntry
			if rd.seed {
				from = SeedPackageFrom
			}
			return entryErr(BlobEntry(m.Digest), nil, "missing: %s lists it as %s", from, ref)
		}
	}
	var missing []string
	for d := range rd.required {
		if !rd.seen[d] && !(rd.lim.Have != nil && rd.lim.Have(d)) {
			missing = append(missing, string(d))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		d := digest.Digest(missing[0])
		return entryErr(BlobEntry(d), nil, "missing: %s needs it", rd.required[d])
	}
	if err := rd.checkStatus(); err != nil {
		return err
	}

	// reach the gzip trailer of the member holding the tar end; what
	// follows (padding, more members) is ignored. A plain tar is read to
	// its end (the padding of its last record).
	rd.entry = ""
	n, err := io.CopyBuffer(io.Discard, io.LimitReader(rest(), maxTrailing+1), rd.buf)
	if err != nil {
		return rd.streamErr("", "reading to the end of the gzip stream", err)
	}
	if n > maxTrailing {
		return entryErr("", nil, "more than %d bytes after the end of the tar archive", maxTrailing)
	}
	return nil
}

// streamErr turns an error of the gzip or tar stream, or of a blob's
// verification, into an *EntryError.
func (rd *reader) streamErr(entry, doing string, err error) error {
	var ee *EntryError
	switch {
	case errors.As(err, &ee):
		return err
	case rd.ctx.Err() != nil:
		return rd.ctx.Err()
	case errors.Is(err, cas.ErrDigestMismatch), errors.Is(err, cas.ErrSizeMismatch):
		return entryErr(entry, err, "content does not match its name")
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return entryErr(entry, err, "truncated archive (%s)", doing)
	case errors.Is(err, gzip.ErrChecksum):
		return entryErr(entry, err, "gzip checksum mismatch")
	case errors.Is(err, gzip.ErrHeader):
		return entryErr(entry, err, "invalid gzip member header")
	case errors.Is(err, tar.ErrHeader):
		return entryErr(entry, err, "invalid tar header")
	}
	var ce flate.CorruptInputError
	if errors.As(err, &ce) {
		return entryErr(entry, err, "corrupt gzip data")
	}
	return entryErr(entry, err, "%s", doing)
}

// entryHeader checks the header of an entry and reads the entry.
func (rd *reader) entryHeader(hdr *tar.Header) error {
	raw := hdr.Name
	if strings.HasPrefix(raw, "/") {
		return entryErr(raw, nil, "absolute paths are not allowed")
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return entryErr(raw, nil, `paths with ".." are not allowed`)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		return entryErr(raw, nil, "symbolic links are not allowed")
	case tar.TypeLink:
		return entryErr(raw, nil, "hard links are not allowed")
	case tar.TypeChar, tar.TypeBlock:
		return entryErr(raw, nil, "device files are not allowed")
	case tar.TypeFifo:
		return entryErr(raw, nil, "FIFOs are not allowed")
	case tar.TypeXGlobalHeader:
		return entryErr(raw, nil, "PAX global headers are not allowed")
	default:
		return entryErr(raw, nil, "entries of type %q are not allowed, only regular files", hdr.Typeflag)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return entryErr(raw, nil, "sparse files are not allowed")
		}
	}
	name := strings.TrimPrefix(raw, "./")

	if hdr.Typeflag == tar.TypeDir {
		dir := strings.TrimSuffix(name, "/")
		alg, ok := strings.CutPrefix(dir, BlobsDir+"/")
		if dir == BlobsDir || ok && oci.Supported(digest.Algorithm(alg)) {
			return nil // ignored
		}
		return entryErr(raw, nil, "directory entries are only allowed for blobs/ and blobs/<alg>/")
	}

	var d digest.Digest
	switch name {
	case PackageEntry, LayoutEntry, IndexEntry:
	case PackageSignatureEntry:
		if rd.sum.Package == nil || rd.sawLayout || rd.sawIndex || rd.sawBlob || rd.sum.PackageSignature != nil {
			return entryErr(raw, nil, "unexpected entry: %s is only allowed once, right after %s", PackageSignatureEntry, PackageEntry)
		}
	case DockerManifestEntry:
		if !rd.seed {
			return entryErr(raw, nil, "unexpected entry: %s is only allowed after the blobs of an archive typed by status.digests", DockerManifestEntry)
		}
	default:
		rest, ok := strings.CutPrefix(name, BlobsDir+"/")
		alg, enc, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 {
			return entryErr(raw, nil, "unexpected entry: only %s, %s, %s and blobs/<alg>/<hex> are allowed", PackageEntry, LayoutEntry, IndexEntry)
		}
		var err error
		if d, err = oci.ParseDigest(alg + ":" + enc); err != nil {
			return entryErr(raw, err, "unexpected entry: not blobs/<alg>/<hex> with a valid digest")
		}
	}
	if !rd.sawFile && name != PackageEntry {
		return entryErr(raw, nil, "%s must be the first entry", PackageEntry)
	}
	rd.sawFile = true
	switch name {
	case PackageEntry:
		return rd.readPackage(raw, hdr.Size)
	case PackageSignatureEntry:
		b, err := rd.readSmall(raw, hdr.Size, MaxPackageSignature)
		if err != nil {
			return err
		}
		rd.sum.PackageSignature = b
		return nil
	case LayoutEntry:
		return rd.readLayout(raw, hdr.Size)
	case IndexEntry:
		return rd.readIndex(raw, hdr.Size)
	case DockerManifestEntry:
		return rd.readDockerManifest(raw, hdr.Size)
	}
	return rd.readBlob(raw, d, hdr.Size)
}

// readSmall reads a whole small entry of size bytes, at most max.
func (rd *reader) readSmall(entry string, size, max int64) ([]byte, error) {
	if size > max {
		return nil, entryErr(entry, nil, "%d bytes, more than the limit of %d", size, max)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(rd.tr, data); err != nil {
		return nil, rd.streamErr(entry, "reading the entry", err)
	}
	return data, nil
}

func (rd *reader) readPackage(entry string, size int64) error {
	if rd.sum.Package != nil {
		return entryErr(entry, nil, "duplicate entry")
	}
	data, err := rd.readSmall(entry, size, rd.lim.MaxPackage)
	if err != nil {
		return err
	}
	rd.sum.PackageRaw = data
	if data, err = rd.readStatus(entry, data); err != nil {
		return err
	}
	rd.sum.Package = data
	if err := rd.h.Package(data); err != nil {
		return fmt.Errorf("kubepkg.tgz: %s: %w", entry, err)
	}
	return nil
}

func (rd *reader) readLayout(entry string, size int64) error {
	// in a seed layout it follows the blobs, once per package
	// (octohelm/kubepkg): then it is only checked
	switch {
	case rd.seed:
	case rd.sawLayout:
		return entryErr(entry, nil, "duplicate entry")
	case rd.sawBlob:
		return entryErr(entry, nil, "must come before any blob")
	}
	data, err := rd.readSmall(entry, size, maxLayout)
	if err != nil {
		return err
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil {
		return entryErr(entry, err, "not valid JSON")
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return entryErr(entry, nil, "unsupported imageLayoutVersion %q", l.Version)
	}
	rd.sawLayout = true
	return nil
}

func (rd *reader) readIndex(entry string, size int64) error {
	if rd.seed {
		return rd.readTrailingIndex(entry, size)
	}
	if rd.sawIndex {
		return entryErr(entry, nil, "duplicate entry")
	}
	if rd.sawBlob {
		return entryErr(entry, nil, "must come before any blob")
	}
	data, err := rd.readSmall(entry, size, rd.lim.MaxIndex)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		return entryErr(entry, err, "not a valid OCI image index")
	}
	if dec.More() {
		return entryErr(entry, nil, "data after the JSON object")
	}
	if idx.SchemaVersion != 2 {
		return entryErr(entry, nil, "schemaVersion must be 2")
	}
	if idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex {
		return entryErr(entry, nil, "unexpected mediaType %q", idx.MediaType)
	}
	for i, m := range idx.Manifests {
		if _, err := oci.ParseDigest(string(m.Digest)); err != nil {
			return entryErr(entry, err, "manifests[%d]: invalid digest", i)
		}
		if m.Size < 0 {
			return entryErr(entry, nil, "manifests[%d]: negative size", i)
		}
		if m.Annotations[AnnotationImageName] == "" && m.Annotations[AnnotationRefName] == "" {
			return entryErr(entry, nil, "manifests[%d]: the annotation %s or %s is required", i, AnnotationImageName, AnnotationRefName)
		}
		if s, ok := ArtifactOf(m); ok {
			if _, err := oci.ParseDigest(string(s)); err != nil {
				return entryErr(entry, err, "manifests[%d]: %s is not a digest", i, AnnotationSubject)
			}
		}
		if err := rd.announce(entry, m, oci.KindManifest); err != nil {
			return err
		}
		if r, err := oci.ParseReference(refName(m)); err == nil {
			rd.addRepo(m.Digest, r.Repository)
		}
	}
	rd.sawIndex = true
	rd.sum.Index = idx
	if err := rd.h.Index(idx); err != nil {
		return fmt.Errorf("kubepkg.tgz: %s: %w", entry, err)
	}
	return nil
}

// refName is the reference index.json gives an image.
func refName(m ocispec.Descriptor) string {
	if ref := m.Annotations[AnnotationImageName]; ref != "" {
		return ref
	}
	return m.Annotations[AnnotationRefName]
}

// announce records that from references desc as a kind blob.
func (rd *reader) announce(from string, desc ocispec.Descriptor, kind oci.Kind) error {
	if k, ok := rd.known[desc.Digest]; ok {
		if k.desc.Size != desc.Size {
			verb := "references"
			if k.status != nil && k.from == k.status.label {
				verb = "lists"
			}
			return entryErr(from, nil, "references %s with size %d, but %s %s it with size %d", desc.Digest, desc.Size, k.from, verb, k.desc.Size)
		}
		if k.status != nil && k.status.meta.Type == kubepkg.DigestTypeManifest && kind != oci.KindManifest {
			return entryErr(from, nil, "references %s as a %s, but %s types it as a manifest", desc.Digest, kind, k.status.label)
		}
		if k.desc.MediaType == "" {
			k.desc.MediaType = desc.MediaType
		}
		k.kinds |= 1 << kind
		return nil
	}
	if int64(len(rd.known)) >= rd.lim.MaxBlobs {
		return entryErr(from, nil, "announces more than %d blobs in all", rd.lim.MaxBlobs)
	}
	rd.known[desc.Digest] = &knownBlob{
		desc:  ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size},
		kinds: 1 << kind,
		from:  from,
	}
	return nil
}

// readBlob reads the blob entry d of size bytes.
func (rd *reader) readBlob(entry string, d digest.Digest, size int64) error {
	if !rd.seed && (!rd.sawLayout || !rd.sawIndex) {
		// no index.json first: a seed layout, typed by status.digests
		if err := rd.startSeed(entry); err != nil {
			return err
		}
	}
	rd.sawBlob = true
	k, ok := rd.known[d]
	if _, held := rd.held[d]; held || rd.seen[d] {
		if !rd.seed || k == nil || size != k.desc.Size {
			return entryErr(entry, nil, "duplicate entry")
		}
		// octohelm/kubepkg writes a blob two packages of a list share
		// once per package: verified again, taken once
		return rd.skipBlob(entry, d, size)
	}
	if !ok {
		if len(rd.statusList) > 0 {
			return entryErr(entry, nil, "announced nowhere: %s's status.digests does not list it and no manifest read before references it", PackageEntry)
		}
		return rd.holdManifest(entry, d, size)
	}
	if size != k.desc.Size {
		return entryErr(entry, nil, "the tar header says %d bytes, %s says %d", size, k.from, k.desc.Size)
	}
	if len(rd.statusList) > 0 && k.status == nil {
		return entryErr(entry, nil, "not listed in %s's status.digests, which lists the archive's other blobs", PackageEntry)
	}
	if k.kinds == 0 {
		return rd.readUntyped(entry, k, size)
	}
	if k.kinds.has(oci.KindManifest) {
		if size > rd.lim.MaxManifest {
			return entryErr(entry, nil, "manifest of %d bytes, more than the limit of %d", size, rd.lim.MaxManifest)
		}
		body, err := rd.readVerified(entry, d, size)
		if err != nil {
			return err
		}
		pm, err := oci.ParseManifest("", body)
		if err != nil {
			return entryErr(entry, err, "not a valid manifest or index")
		}
		return rd.deliverManifest(entry, k, body, pm)
	}

	return rd.streamBlob(entry, k, k.kinds.primary(), &blobReader{rd: rd, entry: entry, left: size})
}

// streamBlob gives the handler blob k, a config or a layer, whose bytes r
// reads from the tar stream.
func (rd *reader) streamBlob(entry string, k *knownBlob, kind oci.Kind, r io.Reader) error {
	if rd.lim.Unverified != nil && kind != oci.KindManifest && rd.lim.Unverified(k.desc.Digest) {
		if err := rd.drain(entry, r); err != nil {
			return err
		}
		rd.took(k.desc)
		return nil
	}
	if br, ok := r.(*blobReader); ok && br.left == k.desc.Size && rd.loc != nil {
		// its bytes are next, in a file: an ExtentHandler may take them
		// from there (archive/tar then skips the entry)
		if took, err := rd.offerExtent(entry, k, kind); took || err != nil {
			return err
		}
	}
	// the handler gets a cas.VerifyingReader (a store takes its clean end as
	// proof of the digest) over exactly the entry's bytes
	vr, err := cas.NewVerifyingReader(r, cas.Info{Digest: k.desc.Digest, Size: k.desc.Size})
	if err != nil {
		return entryErr(entry, err, "cannot verify the blob")
	}
	herr := rd.h.Blob(rd.ctx, k.desc, kind, vr)
	if err := vr.Err(); err != nil && err != io.EOF {
		// the stream or the content is wrong (or ctx is done): that is the
		// error, whatever the handler made of it
		return rd.streamErr(entry, "reading the blob", err)
	}
	if herr != nil {
		return fmt.Errorf("kubepkg.tgz: %s: %w", entry, herr)
	}
	// read and verify what the handler left unread
	if err := rd.drain(entry, vr); err != nil {
		return err
	}
	rd.took(k.desc)
	return nil
}

// took records a blob given to the handler.
func (rd *reader) took(desc ocispec.Descriptor) {
	rd.seen[desc.Digest] = true
	rd.sum.Blobs = append(rd.sum.Blobs, desc)
	rd.sum.Bytes += desc.Size
}

// readVerified reads a whole (small) blob entry and checks its digest.
func (rd *reader) readVerified(entry string, d digest.Digest, size int64) ([]byte, error) {
	body := make([]byte, size)
	if _, err := io.ReadFull(rd.tr, body); err != nil {
		return nil, rd.streamErr(entry, "reading the blob", err)
	}
	v, _ := cas.NewVerifier(cas.Info{Digest: d, Size: size}, "")
	_, _ = v.Write(body)
	if _, err := v.Verify(); err != nil {
		return nil, entryErr(entry, err, "content does not match its name")
	}
	return body, nil
}

// holdManifest takes a blob nothing references yet: only a manifest or index,
// which may arrive before its parent, is held until something references it.
func (rd *reader) holdManifest(entry string, d digest.Digest, size int64) error {
	if size > rd.lim.MaxManifest {
		return entryErr(entry, nil, "not referenced by any manifest")
	}
	return rd.holdParsed(entry, d, size, "not referenced by any manifest (and not a manifest)")
}

// holdParsed reads a manifest that nothing references yet (checking there
// is room to hold it), verified and parsed, and holds it; notManifest is
// the reason given when it does not parse.
func (rd *reader) holdParsed(entry string, d digest.Digest, size int64, notManifest string) error {
	if err := rd.holdRoom(entry, size); err != nil {
		return err
	}
	body, err := rd.readVerified(entry, d, size)
	if err != nil {
		return err
	}
	pm, err := oci.ParseManifest("", body)
	if err != nil {
		return entryErr(entry, err, "%s", notManifest)
	}
	rd.keepHeld(entry, d, body, pm)
	return nil
}

// holdRoom refuses to hold size more bytes past Limits.MaxManifestBytes.
func (rd *reader) holdRoom(entry string, size int64) error {
	if rd.heldBytes+size+heldOverhead > rd.lim.MaxManifestBytes {
		return entryErr(entry, nil, "not referenced by any manifest yet, and more than %d bytes of manifests are already waiting for a reference", rd.lim.MaxManifestBytes)
	}
	return nil
}

// keepHeld holds a verified blob until a manifest references it; pm is what
// it parses to, nil for a blob that is not a manifest (a config arriving
// before its manifest).
func (rd *reader) keepHeld(entry string, d digest.Digest, body []byte, pm *oci.Manifest) {
	rd.held[d] = &heldManifest{entry: entry, body: body, pm: pm}
	rd.heldBytes += int64(len(body)) + heldOverhead
}

// readUntyped reads a blob that only status.digests announces so far (the
// seed's layouts write children before their parents): a manifest is held
// until its parent arrives, as a manifest of crpe's layout arriving before
// its parent is; a "blob" that is JSON (a config, or an OCI manifest
// octohelm/kubepkg v0.1 typed "blob") is held the same way, so that it is
// delivered as what its manifest says it is; any other blob is a layer,
// streamed now.
func (rd *reader) readUntyped(entry string, k *knownBlob, size int64) error {
	d := k.desc.Digest
	if k.status.meta.Type == kubepkg.DigestTypeManifest {
		if size > rd.lim.MaxManifest {
			return entryErr(entry, nil, "%s types it as a manifest, but it has %d bytes, more than the manifest limit of %d", k.status.label, size, rd.lim.MaxManifest)
		}
		return rd.holdParsed(entry, d, size, k.status.label+" types it as a manifest, but it is not a valid manifest or index")
	}
	br := &blobReader{rd: rd, entry: entry, left: size}
	if size > rd.lim.MaxManifest {
		return rd.streamBlob(entry, k, oci.KindLayer, br)
	}
	head := make([]byte, min(size, 512))
	if _, err := io.ReadFull(br, head); err != nil && !(err == io.EOF && br.left == 0) {
		return rd.streamErr(entry, "reading the blob", err)
	}
	if t := bytes.TrimLeft(head, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return rd.streamBlob(entry, k, oci.KindLayer, io.MultiReader(bytes.NewReader(head), br))
	}
	if err := rd.holdRoom(entry, size); err != nil {
		return err
	}
	body := make([]byte, size)
	copy(body, head)
	if _, err := io.ReadFull(br, body[len(head):]); err != nil && !(err == io.EOF && br.left == 0) {
		return rd.streamErr(entry, "reading the blob", err)
	}
	v, _ := cas.NewVerifier(cas.Info{Digest: d, Size: size}, "")
	_, _ = v.Write(body)
	if _, err := v.Verify(); err != nil {
		return entryErr(entry, err, "content does not match its name")
	}
	pm, _ := oci.ParseManifest("", body) // nil for a config
	rd.keepHeld(entry, d, body, pm)
	return nil
}

// skipBlob reads and verifies a blob taken already.
func (rd *reader) skipBlob(entry string, d digest.Digest, size int64) error {
	vr, err := cas.NewVerifyingReader(&blobReader{rd: rd, entry: entry, left: size}, cas.Info{Digest: d, Size: size})
	if err != nil {
		return entryErr(entry, err, "cannot verify the blob")
	}
	return rd.drain(entry, vr)
}

// drain reads the rest of a blob entry's bytes through r (a plain writer,
// so that the copy uses rd.buf rather than io.Discard's small buffers).
func (rd *reader) drain(entry string, r io.Reader) error {
	if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, rd.buf); err != nil {
		return rd.streamErr(entry, "reading the blob", err)
	}
	return nil
}

// deliverManifest gives a verified manifest to the handler, announces its
// children and delivers the held manifests that become referenced.
func (rd *reader) deliverManifest(entry string, k *knownBlob, body []byte, pm *oci.Manifest) error {
	type pending struct {
		entry  string
		k      *knownBlob
		body   []byte
		pm     *oci.Manifest
		parent string
	}
	queue := []pending{{entry, k, body, pm, ""}}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kind := p.k.kinds.primary()
		if kind == oci.KindManifest {
			if err := rd.checkManifest(p.entry, p.k, p.pm, p.parent); err != nil {
				return err
			}
		}
		if err := rd.h.Blob(rd.ctx, p.k.desc, kind, &ManifestBlob{Reader: bytes.NewReader(p.body), Body: p.body, Manifest: p.pm}); err != nil {
			return fmt.Errorf("kubepkg.tgz: %s: %w", p.entry, err)
		}
		rd.took(p.k.desc)
		if kind != oci.KindManifest {
			continue // a held manifest (or config) referenced as a config or a layer
		}
		checking := len(rd.statusList) > 0
		for _, c := range p.pm.Children() {
			if err := rd.announce(p.entry, c.Descriptor, c.Kind); err != nil {
				return err
			}
			if checking {
				p.k.children = append(p.k.children, c.Digest)
				for _, r := range p.k.repos {
					rd.addRepo(c.Digest, r)
				}
			}
		}
		for _, r := range p.pm.Required() {
			if _, ok := rd.required[r.Digest]; !ok {
				rd.required[r.Digest] = p.entry
			}
		}
		for _, c := range p.pm.Children() {
			hm, ok := rd.held[c.Digest]
			if !ok {
				continue
			}
			delete(rd.held, c.Digest)
			rd.heldBytes -= int64(len(hm.body)) + heldOverhead
			ck := rd.known[c.Digest]
			if int64(len(hm.body)) != ck.desc.Size {
				return entryErr(hm.entry, nil, "has %d bytes, %s says %d", len(hm.body), p.entry, ck.desc.Size)
			}
			queue = append(queue, pending{hm.entry, ck, hm.body, hm.pm, p.entry})
		}
	}
	return nil
}

// checkManifest checks a manifest about to be delivered against
// status.digests, and gives the image index made for a seed layout its
// media type. parent is the entry whose manifest referenced it ("" for one
// index.json or spec.images announced).
func (rd *reader) checkManifest(entry string, k *knownBlob, pm *oci.Manifest, parent string) error {
	if pm == nil {
		return entryErr(entry, nil, "%s references it as a manifest, but it is not a valid manifest or index", parent)
	}
	if s := k.status; s != nil && s.meta.Type == kubepkg.DigestTypeBlob && strings.HasPrefix(pm.MediaType, "application/vnd.docker.") {
		return entryErr(entry, nil, "%s types it as a blob, but it is a %s (the seed's tools type Docker manifests and lists \"manifest\")", s.label, pm.MediaType)
	}
	if rd.seed {
		for i, m := range rd.sum.Index.Manifests {
			if m.Digest == k.desc.Digest && m.MediaType == "" {
				rd.sum.Index.Manifests[i].MediaType = pm.MediaType
			}
		}
	}
	return nil
}

// blobReader reads exactly the entry's bytes from the tar stream (the
// cas.VerifyingReader around it hashes them), turning stream errors into
// errors naming the entry.
type blobReader struct {
	rd    *reader
	entry string
	left  int64
}

// Read reads the blob.
func (b *blobReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if err := b.rd.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rd.tr.Read(p)
	b.left -= int64(n)
	if err != nil && (err != io.EOF || b.left > 0) {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, b.rd.streamErr(b.entry, "reading the blob", err)
	}
	if b.left == 0 {
		return n, io.EOF
	}
	return n, nil
}

// memberReader reads the decompressed gzip stream member by member, so that
// it can stop at the end of the member holding the tar end marker.
type memberReader struct {
	ctx   context.Context
	br    *bufio.Reader
	gz    *gzip.Reader
	atEnd bool // the current member's trailer was read and verified
	stop  bool // report EOF at the end of the current member
}

// Read reads decompressed bytes, moving on to the next member when one ends.
func (m *memberReader) Read(p []byte) (int, error) {
	for {
		if err := m.ctx.Err(); err != nil {
			return 0, err
		}
		if m.atEnd {
			if m.stop {
				return 0, io.EOF
			}
			if _, err := m.br.Peek(1); err != nil {
				return 0, err // io.EOF: the end of the stream
			}
			if err := m.gz.Reset(m.br); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
			m.gz.Multistream(false)
			m.atEnd = false
		}
		if len(p) == 0 {
			return 0, nil
		}
		n, err := m.gz.Read(p)
		if err == io.EOF {
			m.atEnd = true
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// countingReader counts the bytes read through it: archive/tar reads exactly
// what it needs, so this is the offset in the tar stream.
type countingReader struct {
	r io.Reader
	n int64
}

// Read reads and counts.
func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Seek moves forward from the current offset when the stream under it can
// (ReadAt's, in place): archive/tar then skips an entry left unread without
// reading it. Elsewhere it fails, and archive/tar reads instead.
func (c *countingReader) Seek(off int64, whence int) (int64, error) {
	s, ok := c.r.(io.Seeker)
	if !ok || whence != io.SeekCurrent {
		return 0, errors.New("archive: not seekable")
	}
	before := c.n
	pos, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	to, err := s.Seek(off, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	c.n = before + (to - pos)
	return c.n, nil
}
