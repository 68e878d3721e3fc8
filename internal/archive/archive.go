// Package archive is kubepkg.tgz: the reproducible writer and the single-pass
// verifying reader.
//
// A kubepkg.tgz is a gzip-compressed tar whose entries are, in this order:
//
//	kubepkg.json        the package (given to Write as bytes)
//	oci-layout          {"imageLayoutVersion":"1.0.0"}
//	index.json          an OCI image index listing exactly the exported images
//	blobs/<alg>/<hex>   every index and manifest (sorted by digest), then every
//	                    config (sorted by digest), then every layer (sorted by
//	                    digest), each exactly once
//
// so the archive is also an OCI Image Layout that containerd, k3s and skopeo
// can read, and a reader knows every digest (and its size) before the first
// layer arrives.
//
// Write is reproducible: the same inputs give byte-identical output (fixed
// mtime, uid/gid 0, no user or group names, mode 0644, no directory entries,
// a gzip header without name or mtime). Layers are already compressed, so the
// gzip stream is written as two members: the metadata, manifests and configs
// compressed at the default level, then the layers (and the tar end marker)
// in stored, uncompressed deflate blocks. A multi-member gzip is a valid gzip
// stream for tar, Go, containerd and skopeo.
//
// Read takes an untrusted stream in a single pass with every read bounded: a
// blob is only accepted when a descriptor already read (index.json, or a
// manifest or index in the archive) announces it with its size, its bytes are
// hashed as they stream, and any violation is reported as an *EntryError
// naming the tar entry.
package archive

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/oci"
)

// Names of the fixed entries of a kubepkg.tgz.
const (
	// PackageEntry is the first entry: the package JSON.
	PackageEntry = "kubepkg.json"
	// PackageSignatureEntry, right after kubepkg.json when the package is
	// signed (crpe export --sign-key), is the base64 signature of
	// kubepkg.json's bytes, as cosign sign-blob writes it: cosign
	// verify-blob --key K --signature kubepkg.json.sig kubepkg.json checks
	// it. kubepkg.json pins every image's digest, and every blob is checked
	// against its digest: the signature covers the whole archive.
	PackageSignatureEntry = "kubepkg.json.sig"
	// MaxPackageSignature bounds it.
	MaxPackageSignature = 16 << 10
	// LayoutEntry is the OCI Image Layout marker.
	LayoutEntry = "oci-layout"
	// IndexEntry is the OCI image index listing the images of the package.
	IndexEntry = "index.json"
	// BlobsDir is the directory holding the blobs, as blobs/<alg>/<hex>.
	BlobsDir = "blobs"
)

// Annotations index.json sets on each image, both to the full reference
// (for example "docker.io/library/nginx:alpine").
const (
	// AnnotationRefName is the OCI annotation naming an image of a layout.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the annotation containerd (and k3s) read when
	// importing an archive.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationSubject marks an index.json entry as an artifact carried
	// with an image of the archive rather than an image of spec.images: a
	// cosign signature, attestation or SBOM, or an OCI 1.1 referrer. Its
	// value is the digest of the manifest the artifact is about (an
	// image's top manifest or one of its children); its ref.name is the
	// artifact's tag in that image's repository (cosign's
	// sha256-<hex>.sig), or REPOSITORY@DIGEST for a referrer found by its
	// subject, which has no tag.
	AnnotationSubject = "octohelm.tech/subject"
)

// ArtifactOf tells whether an index.json entry is an artifact carried with
// an image (AnnotationSubject), and the digest it is about.
func ArtifactOf(m ocispec.Descriptor) (digest.Digest, bool) {
	s, ok := m.Annotations[AnnotationSubject]
	if !ok {
		return "", false
	}
	return digest.Digest(s), true
}

// layoutJSON is the exact content of the oci-layout entry.
const layoutJSON = `{"imageLayoutVersion":"1.0.0"}`

// Default limits of Read, also honoured by Write so that it never produces an
// archive the default reader refuses.
const (
	DefaultMaxPackage       = oci.MaxPackageSize
	DefaultMaxIndex         = oci.MaxIndexSize
	DefaultMaxManifest      = oci.MaxManifestSize
	DefaultMaxManifestBytes = 64 << 20
	DefaultMaxBlobs         = 1 << 18
)

// heldOverhead is what Read counts against Limits.MaxManifestBytes for each
// held manifest besides its content (its parsed form and bookkeeping).
const heldOverhead = 1 << 10

// maxDirs bounds the directory entries Read skips: only blobs/ and
// blobs/<alg>/ are allowed, so a real archive has a handful.
const maxDirs = 64

// maxLayout bounds the oci-layout entry.
const maxLayout = 4 << 10

// maxTrailing bounds the decompressed bytes read after the tar end marker to
// reach the gzip trailer of the member holding it.
const maxTrailing = 1 << 20

// copyBufferSize is the buffer used to stream blobs.
const copyBufferSize = 1 << 20

// kindSet is a set of BlobKinds: how a blob is referenced.
type kindSet uint8

func (s kindSet) has(k oci.Kind) bool { return s&(1<<k) != 0 }

// primary is the kind a blob referenced in all the ways of s is treated as: a
// manifest if anything references it as one (it is parsed and its children
// followed), else a config, else a layer.
func (s kindSet) primary() oci.Kind {
	switch {
	case s.has(oci.KindManifest):
		return oci.KindManifest
	case s.has(oci.KindConfig):
		return oci.KindConfig
	}
	return oci.KindLayer
}

// BlobEntry is the name of the tar entry holding the blob d: blobs/<alg>/<hex>.
func BlobEntry(d digest.Digest) string {
	return BlobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// EntryError is a violation of the kubepkg.tgz format found by Read, or a
// blob Write refused: Entry names the tar entry (empty when the stream is not
// even a gzip stream) and Reason says what is wrong. Err is the underlying
// error, if any, for errors.Is and errors.As.
type EntryError struct {
	Entry  string
	Reason string
	Err    error
}

// Error formats the entry and the reason.
func (e *EntryError) Error() string {
	var b strings.Builder
	b.WriteString("kubepkg.tgz: ")
	if e.Entry != "" {
		fmt.Fprintf(&b, "%s: ", e.Entry)
	}
	b.WriteString(e.Reason)
	if e.Err != nil && !strings.Contains(e.Reason, e.Err.Error()) {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *EntryError) Unwrap() error { return e.Err }

// entryErr builds an *EntryError.
func entryErr(entry string, err error, format string, args ...any) *EntryError {
	return &EntryError{Entry: entry, Reason: fmt.Sprintf(format, args...), Err: err}
}
