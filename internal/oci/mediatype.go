package oci

import (
	"mime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of Docker's schema 2, which registries still serve beside the
// OCI ones (ocispec.MediaType*).
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// IsIndex reports whether mt is an index (OCI image index or Docker list).
func IsIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// IsImageManifest reports whether mt is an image manifest (OCI or Docker).
func IsImageManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// IsManifest reports whether mt is a manifest or an index: what a registry
// stores under /manifests/.
func IsManifest(mt string) bool { return IsIndex(mt) || IsImageManifest(mt) }

// BaseMediaType is mt without parameters ("application/json; charset=x" →
// "application/json"), or "" when mt does not parse.
func BaseMediaType(mt string) string {
	if mt == "" {
		return ""
	}
	base, _, err := mime.ParseMediaType(mt)
	if err != nil {
		return ""
	}
	return base
}
