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
	"os"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

// Blob is a blob to put in the archive: its descriptor (digest and size are
// what matter) and its kind, which decides its place.
type Blob struct {
	Desc ocispec.Descriptor
	Kind oci.Kind
}

// Image is an image listed in index.json: its full reference (for example
// "docker.io/library/nginx:alpine") and its top descriptor (a manifest or an
// index, which must be among the blobs). Desc.Platform, if set, is kept.
type Image struct {
	Ref  string
	Desc ocispec.Descriptor
	// Subject, when set, makes the entry an artifact carried with an image
	// of the archive (a signature, an attestation, an SBOM): the digest of
	// the manifest it is about. Ref is then its tag in that image's
	// repository (cosign's sha256-<hex>.sig) or, for an untagged OCI
	// referrer, REPOSITORY@DIGEST (ReferrerRef). See AnnotationSubject.
	Subject digest.Digest
}

// Options tune Write.
type Options struct {
	// ModTime is the mtime of every entry; the caller passes
	// SOURCE_DATE_EPOCH or the Unix epoch. The zero time means the Unix
	// epoch. It is rounded to the second.
	ModTime time.Time
	// PackageSignature, when set, is written as kubepkg.json.sig right
	// after kubepkg.json: the base64 signature of pkgJSON's bytes
	// (PackageSignatureEntry).
	PackageSignature []byte
	// Progress, if set, is called as blob d streams with the number of its
	// bytes written so far.
	Progress func(d digest.Digest, n int64)
	// Absent lists blobs left out on purpose (a partial archive: the
	// receiver already holds them); a manifest may need them anyway.
	Absent map[digest.Digest]bool
	// Verified, if set, tells which blobs need no hashing: verified by this
	// process on their way into the store, or read from a content-addressed
	// store that verified them when they came in. Their size is still
	// checked, their digest not computed a second time.
	Verified func(digest.Digest) bool
}

// OpenFunc opens the content of blob d.
type OpenFunc func(ctx context.Context, d digest.Digest) (io.ReadCloser, error)

// Write writes a kubepkg.tgz of the package pkgJSON, whose index.json lists
// images, holding every blob of blobs (de-duplicated by digest), whose content
// open gives.
//
// Before writing anything, Write reads and parses the manifests and indexes
// (each at most DefaultMaxManifest bytes) and checks that the archive will be
// accepted by Read with default limits: every image's top descriptor is among
// the blobs as a manifest, every blob is reachable from an image through the
// manifests in the archive with the size and kind it is given, every image
// manifest's config and layers are present. It then streams each config and
// layer, checking while copying that it has exactly Desc.Size bytes hashing to
// Desc.Digest. On any error Write returns it, naming the digest, and stops: the
// output is then incomplete (no tar end, no gzip trailer) and must be
// discarded, never mistaken for an archive.
func Write(ctx context.Context, w io.Writer, pkgJSON []byte, images []Image, blobs []Blob, open OpenFunc, o Options) error {
	if len(pkgJSON) > DefaultMaxPackage {
		return fmt.Errorf("archive: %s has %d bytes, more than the %d a reader takes", PackageEntry, len(pkgJSON), DefaultMaxPackage)
	}
	p, err := plan(images, blobs)
	if err != nil {
		return err
	}
	buf := make([]byte, copyBufferSize)
	if err := p.loadManifests(ctx, open, buf); err != nil {
		return err
	}
	if err := p.check(o.Absent); err != nil {
		return err
	}
	indexJSON, err := p.indexJSON()
	if err != nil {
		return err
	}

	mt := o.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	mt = mt.Round(time.Second).UTC()

	bw := bufio.NewWriterSize(w, copyBufferSize)
	mw, err := newMemberWriter(bw, regularFile(w))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(mw)
	small := func(name string, data []byte) error {
		if err := tw.WriteHeader(fileHeader(name, int64(len(data)), mt)); err != nil {
			return fmt.Errorf("archive: writing %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("archive: writing %s: %w", name, err)
		}
		return nil
	}
	if err := small(PackageEntry, pkgJSON); err != nil {
		return err
	}
	if o.PackageSignature != nil {
		if err := small(PackageSignatureEntry, o.PackageSignature); err != nil {
			return err
		}
	}
	if err := small(LayoutEntry, []byte(layoutJSON)); err != nil {
		return err
	}
	if err := small(IndexEntry, indexJSON); err != nil {
		return err
	}
	for _, b := range p.byKind[oci.KindManifest] {
		if err := ctx.Err(); err != nil {
			return err
		}
		body := p.manifests[b.Desc.Digest].body
		if err := small(BlobEntry(b.Desc.Digest), body); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(b.Desc.Digest, int64(len(body)))
		}
	}
	for _, b := range p.byKind[oci.KindConfig] {
		if err := writeBlob(ctx, tarSink{tw}, b.Desc, mt, open, buf, o); err != nil {
			return err
		}
	}
	if len(p.byKind[oci.KindLayer]) == 0 {
		if err := tw.Close(); err != nil {
			return fmt.Errorf("archive: closing the tar stream: %w", err)
		}
	} else {
		// end the compressed member on an entry boundary (padding included),
		// then store the already compressed layers without compressing them
		// again, framing the tar entries here
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if err := mw.stored(); err != nil {
			return err
		}
		for _, b := range p.byKind[oci.KindLayer] {
			if err := writeBlob(ctx, storedSink{mw.st}, b.Desc, mt, open, buf, o); err != nil {
				return err
			}
		}
		if _, err := mw.st.Write(make([]byte, 2*blockSize)); err != nil { // the tar end
			return fmt.Errorf("archive: closing the tar stream: %w", err)
		}
	}
	if err := mw.close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// blockSize is tar's block.
const blockSize = 512

// writeBlob writes the entry of blob desc into sink, streaming its content
// from open and checking its size (and, unless o.Verified says it was
// verified already, its digest) as it goes.
func writeBlob(ctx context.Context, sink entrySink, desc ocispec.Descriptor, mt time.Time, open OpenFunc, buf []byte, o Options) error {
	d := desc.Digest
	if err := ctx.Err(); err != nil {
		return err
	}
	rc, err := open(ctx, d)
	if err != nil {
		return fmt.Errorf("archive: opening blob %s: %w", d, err)
	}
	defer rc.Close()
	var v *cas.Verifier
	var h io.Writer
	if o.Verified == nil || !o.Verified(d) {
		if v, err = cas.NewVerifier(cas.Info{Digest: d, Size: desc.Size}, ""); err != nil {
			return fmt.Errorf("archive: blob %s: %w", d, err)
		}
		h = v
	}
	if err := sink.header(fileHeader(BlobEntry(d), desc.Size, mt)); err != nil {
		return fmt.Errorf("archive: writing blob %s: %w", d, err)
	}
	var progress func(int64)
	if o.Progress != nil {
		progress = func(n int64) { o.Progress(d, n) }
	}
	err = sink.copy(ctx, d, rc, desc.Size, h, buf, progress)
	if errors.Is(err, errShort) {
		return fmt.Errorf("%w (%w)", err, cas.ErrSizeMismatch)
	}
	if err != nil {
		return err
	}
	if m, err := io.ReadFull(rc, buf[:1]); m > 0 {
		return fmt.Errorf("archive: blob %s: %w: more than the expected %d bytes", d, cas.ErrSizeMismatch, desc.Size)
	} else if err != nil && err != io.EOF {
		return fmt.Errorf("archive: reading blob %s: %w", d, err)
	}
	if v != nil {
		if _, err := v.Verify(); err != nil {
			return fmt.Errorf("archive: blob %s: %w", d, err)
		}
	}
	if err := sink.end(desc.Size); err != nil {
		return fmt.Errorf("archive: writing blob %s: %w", d, err)
	}
	return nil
}

// entrySink is where writeBlob puts an entry: the compressed member through
// archive/tar (configs), or the stored member framed here (layers).
type entrySink interface {
	header(h *tar.Header) error
	copy(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) error
	end(size int64) error
}

// tarSink writes entries with archive/tar, which pads them itself.
type tarSink struct{ tw *tar.Writer }

func (s tarSink) header(h *tar.Header) error { return s.tw.WriteHeader(h) }
func (s tarSink) end(int64) error            { return nil }
func (s tarSink) copy(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) error {
	return copyChunks(ctx, d, rc, size, h, buf, progress, func(chunk []byte) error {
		_, err := s.tw.Write(chunk)
		return err
	})
}

// storedSink writes entries into the stored member: the header made by
// archive/tar, the bytes framed by storedWriter, the padding.
type storedSink struct{ st *storedWriter }

func (s storedSink) header(h *tar.Header) error {
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(h); err != nil {
		return err
	}
	_, err := s.st.Write(hdr.Bytes())
	return err
}

func (s storedSink) copy(ctx context.Context, d digest.Digest, rc io.Reader, size int64, h io.Writer, buf []byte, progress func(int64)) error {
	return s.st.copyFrom(ctx, d, rc, size, h, buf, progress)
}

func (s storedSink) end(size int64) error {
	if pad := (blockSize - size%blockSize) % blockSize; pad > 0 {
		_, err := s.st.Write(make([]byte, pad))
		return err
	}
	return nil
}

// fileHeader is the header of every entry: a regular file, mode 0644, owned by
// 0:0 without names, with the fixed mtime. The tar writer picks USTAR and
// falls back to PAX when the name does not fit (sha512 blobs) or the size
// needs it.
func fileHeader(name string, size int64, mt time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  mt,
	}
}

// memberWriter writes a gzip stream as consecutive members: a compressed
// one first, then (after stored) one of stored blocks. The gzip headers carry
// no name and no mtime.
type memberWriter struct {
	out  *bufio.Writer
	file *os.File // the output under out when it is a regular file
	gz   *gzip.Writer
	st   *storedWriter
}

func newMemberWriter(out *bufio.Writer, file *os.File) (*memberWriter, error) {
	gz, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return &memberWriter{out: out, file: file, gz: gz}, nil
}

// Write writes p into the current member.
func (m *memberWriter) Write(p []byte) (int, error) {
	if m.st != nil {
		return m.st.Write(p)
	}
	return m.gz.Write(p)
}

// stored ends the compressed member and starts the stored one.
func (m *memberWriter) stored() error {
	if err := m.gz.Close(); err != nil {
		return fmt.Errorf("archive: ending a gzip member: %w", err)
	}
	st, err := newStoredWriter(m.out, m.file)
	if err != nil {
		return err
	}
	m.st = st
	return nil
}

// close ends the last member.
func (m *memberWriter) close() error {
	if m.st != nil {
		return m.st.Close()
	}
	if err := m.gz.Close(); err != nil {
		return fmt.Errorf("archive: ending the gzip stream: %w", err)
	}
	return nil
}

// writePlan is what Write checked and decided before writing.
type writePlan struct {
	images    []Image
	blobs     map[digest.Digest]Blob
	byKind    [3][]Blob
	manifests map[digest.Digest]*loadedManifest
}

// loadedManifest is a manifest or index read before writing.
type loadedManifest struct {
	body []byte
	pm   *oci.Manifest
}

// plan de-duplicates and sorts the blobs and the images.
func plan(images []Image, blobs []Blob) (*writePlan, error) {
	p := &writePlan{blobs: map[digest.Digest]Blob{}, manifests: map[digest.Digest]*loadedManifest{}}
	for _, b := range blobs {
		d := b.Desc.Digest
		if _, err := oci.ParseDigest(string(d)); err != nil {
			return nil, fmt.Errorf("archive: blob %q: %w", d, err)
		}
		if b.Desc.Size < 0 {
			return nil, fmt.Errorf("archive: blob %s: negative size %d", d, b.Desc.Size)
		}
		if b.Kind < oci.KindManifest || b.Kind > oci.KindLayer {
			return nil, fmt.Errorf("archive: blob %s: unknown kind %d", d, int(b.Kind))
		}
		prev, ok := p.blobs[d]
		if !ok {
			p.blobs[d] = b
			continue
		}
		if prev.Desc.Size != b.Desc.Size {
			return nil, fmt.Errorf("archive: blob %s is given with sizes %d and %d", d, prev.Desc.Size, b.Desc.Size)
		}
		if b.Kind < prev.Kind {
			p.blobs[d] = b
		}
	}
	for _, b := range p.blobs {
		p.byKind[b.Kind] = append(p.byKind[b.Kind], b)
	}
	for _, list := range p.byKind {
		sort.Slice(list, func(i, j int) bool { return list[i].Desc.Digest < list[j].Desc.Digest })
	}

	byRef := map[string]Image{}
	for _, img := range images {
		if img.Ref == "" {
			return nil, fmt.Errorf("archive: image %s has no reference", img.Desc.Digest)
		}
		b, ok := p.blobs[img.Desc.Digest]
		if !ok {
			return nil, fmt.Errorf("archive: image %s: its manifest %s is not among the blobs", img.Ref, img.Desc.Digest)
		}
		if b.Kind != oci.KindManifest {
			return nil, fmt.Errorf("archive: image %s: %s is given as a %s, not a manifest", img.Ref, img.Desc.Digest, b.Kind)
		}
		if b.Desc.Size != img.Desc.Size {
			return nil, fmt.Errorf("archive: image %s: %s has %d bytes, the image says %d", img.Ref, img.Desc.Digest, b.Desc.Size, img.Desc.Size)
		}
		if prev, ok := byRef[img.Ref]; ok {
			if prev.Desc.Digest != img.Desc.Digest {
				return nil, fmt.Errorf("archive: image %s is given as both %s and %s", img.Ref, prev.Desc.Digest, img.Desc.Digest)
			}
			continue
		}
		byRef[img.Ref] = img
	}
	for _, img := range byRef {
		p.images = append(p.images, img)
	}
	sort.Slice(p.images, func(i, j int) bool { return p.images[i].Ref < p.images[j].Ref })
	return p, nil
}

// loadManifests reads, verifies and parses every manifest and index.
func (p *writePlan) loadManifests(ctx context.Context, open OpenFunc, buf []byte) error {
	for _, b := range p.byKind[oci.KindManifest] {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := b.Desc.Digest
		if b.Desc.Size > DefaultMaxManifest {
			return fmt.Errorf("archive: manifest %s has %d bytes, more than the %d a reader takes", d, b.Desc.Size, DefaultMaxManifest)
		}
		body, err := readBlob(ctx, open, b.Desc)
		if err != nil {
			return err
		}
		pm, err := oci.ParseManifest("", body)
		if err != nil {
			return fmt.Errorf("archive: manifest %s: %w", d, err)
		}
		p.manifests[d] = &loadedManifest{body: body, pm: pm}
	}
	return nil
}

// readBlob reads a small blob whole, checking its size and digest.
func readBlob(ctx context.Context, open OpenFunc, desc ocispec.Descriptor) ([]byte, error) {
	d := desc.Digest
	rc, err := open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("archive: opening blob %s: %w", d, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("archive: reading blob %s: %w", d, err)
	}
	v, err := cas.NewVerifier(cas.Info{Digest: d, Size: -1}, "")
	if err != nil {
		return nil, fmt.Errorf("archive: blob %s: %w", d, err)
	}
	_, _ = v.Write(body)
	if int64(len(body)) != desc.Size {
		if int64(len(body)) > desc.Size {
			return nil, fmt.Errorf("archive: blob %s: %w: more than the expected %d bytes", d, cas.ErrSizeMismatch, desc.Size)
		}
		return nil, fmt.Errorf("archive: blob %s: %w: got %d bytes, expected %d", d, cas.ErrSizeMismatch, len(body), desc.Size)
	}
	if got := v.Digest(); got != d {
		return nil, fmt.Errorf("archive: blob %s: %w: got %s", d, cas.ErrDigestMismatch, got)
	}
	return body, nil
}

// check walks the images through the manifests in the archive and makes sure
// Read will take the archive: every blob is reachable with its size and
// kind, and every image manifest's config and layers are present.
func (p *writePlan) check(absent map[digest.Digest]bool) error {
	refs := map[digest.Digest]kindSet{}
	queued := map[digest.Digest]bool{}
	var queue []digest.Digest
	visit := func(from string, desc ocispec.Descriptor, k oci.Kind) error {
		d := desc.Digest
		if b, ok := p.blobs[d]; ok && b.Desc.Size != desc.Size {
			return fmt.Errorf("archive: %s references %s with size %d, the blob has %d bytes", from, d, desc.Size, b.Desc.Size)
		}
		refs[d] |= 1 << k
		if _, ok := p.manifests[d]; ok && k == oci.KindManifest && !queued[d] {
			queued[d] = true
			queue = append(queue, d)
		}
		return nil
	}
	for _, img := range p.images {
		if err := visit("image "+img.Ref, img.Desc, oci.KindManifest); err != nil {
			return err
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		pm := p.manifests[d].pm
		from := "manifest " + string(d)
		for _, c := range pm.Children() {
			if err := visit(from, c.Descriptor, c.Kind); err != nil {
				return err
			}
		}
		for _, r := range pm.Required() {
			if _, ok := p.blobs[r.Digest]; !ok && !absent[r.Digest] {
				return fmt.Errorf("archive: %s needs blob %s, which is not among the blobs", from, r.Digest)
			}
		}
	}
	for _, list := range p.byKind {
		for _, b := range list {
			ks := refs[b.Desc.Digest]
			if ks == 0 {
				return fmt.Errorf("archive: blob %s is not referenced by any image or by any manifest in the archive", b.Desc.Digest)
			}
			if k := ks.primary(); k != b.Kind {
				return fmt.Errorf("archive: blob %s is given as a %s but referenced as a %s", b.Desc.Digest, b.Kind, k)
			}
		}
	}
	return nil
}

// indexJSON is the content of index.json: the images sorted by reference,
// each with its top descriptor and both name annotations.
func (p *writePlan) indexJSON() ([]byte, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	for _, img := range p.images {
		mt := img.Desc.MediaType
		if mt == "" {
			mt = p.manifests[img.Desc.Digest].pm.MediaType
		}
		ann := map[string]string{AnnotationRefName: img.Ref, AnnotationImageName: img.Ref}
		if img.Subject != "" {
			// an artifact: no image for containerd to name
			ann = map[string]string{AnnotationRefName: img.Ref, AnnotationSubject: string(img.Subject)}
		}
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType:    mt,
			ArtifactType: img.Desc.ArtifactType,
			Digest:       img.Desc.Digest,
			Size:         img.Desc.Size,
			Platform:     img.Desc.Platform,
			Annotations:  ann,
		})
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	if len(data) > DefaultMaxIndex {
		return nil, errors.New("archive: index.json would be larger than a reader takes")
	}
	return data, nil
}
