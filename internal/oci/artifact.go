package oci

import (
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// What is carried with an image besides its own graph: its signatures,
// attestations and SBOMs, found two ways. OCI 1.1 referrers are manifests
// whose subject is the image (listed by the referrers API, or by the
// fallback tag ReferrersTag on registries without it); cosign's older tag
// scheme puts them under tags named after the image's digest
// (CosignTag). Both are kept as they came.

// Cosign's tag suffixes.
const (
	CosignSignatureSuffix   = ".sig"
	CosignAttestationSuffix = ".att"
	CosignSBOMSuffix        = ".sbom"
)

// CosignSuffixes are the suffixes of cosign's tag scheme, in the order an
// export looks for them.
var CosignSuffixes = []string{CosignSignatureSuffix, CosignAttestationSuffix, CosignSBOMSuffix}

// Media types of the signatures and attestations crpe knows by name.
const (
	// MediaTypeCosignSimpleSigning is a cosign signature layer: the
	// signed payload (a simple signing JSON naming the image's digest),
	// the signature in its annotation AnnotationCosignSignature.
	MediaTypeCosignSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// MediaTypeDSSE is an attestation layer (an in-toto statement in a
	// DSSE envelope).
	MediaTypeDSSE = "application/vnd.dsse.envelope.v1+json"
	// MediaTypeSigstoreBundle is a sigstore bundle (cosign 3's signatures
	// and attestations, as OCI 1.1 referrers).
	MediaTypeSigstoreBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// AnnotationCosignSignature is the base64 signature of a cosign
	// signature layer's payload.
	AnnotationCosignSignature = "dev.cosignproject.cosign/signature"
	// AnnotationCosignCertificate, AnnotationCosignChain and
	// AnnotationCosignBundle carry a keyless signature's certificate, its
	// chain and its transparency-log bundle.
	AnnotationCosignCertificate = "dev.sigstore.cosign/certificate"
	AnnotationCosignChain       = "dev.sigstore.cosign/chain"
	AnnotationCosignBundle      = "dev.sigstore.cosign/bundle"
)

// Artifact types crpe gives the artifacts of cosign's tag scheme, which
// have none of their own (cosign's own names for them as referrers).
const (
	ArtifactTypeCosignSignature   = "application/vnd.dev.cosign.artifact.sig.v1+json"
	ArtifactTypeCosignAttestation = "application/vnd.dev.cosign.artifact.att.v1+json"
	ArtifactTypeCosignSBOM        = "application/vnd.dev.cosign.artifact.sbom.v1+json"
)

// CosignTag is the tag cosign gives the artifact of d with suffix (one of
// CosignSuffixes): sha256-<hex>.sig, say.
func CosignTag(d digest.Digest, suffix string) string {
	return ReferrersTag(d) + suffix
}

// ReferrersTag is the fallback tag that lists the referrers of d on a
// registry without the referrers API (OCI 1.1): <alg>-<hex>.
func ReferrersTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded()
}

// CosignTagOf tells whether tag is of cosign's tag scheme, and the digest
// and suffix it names.
func CosignTagOf(tag string) (digest.Digest, string, bool) {
	for _, s := range CosignSuffixes {
		if rest, ok := strings.CutSuffix(tag, s); ok {
			alg, hex, ok := strings.Cut(rest, "-")
			if !ok {
				return "", "", false
			}
			d, err := ParseDigest(alg + ":" + hex)
			if err != nil {
				return "", "", false
			}
			return d, s, true
		}
	}
	return "", "", false
}

// ArtifactType is what an artifact is, as the referrers API types it: the
// manifest's artifactType, else its config's media type; for an artifact
// of cosign's tag scheme (tag names it), cosign's type for its suffix.
func ArtifactType(tag string, m *Manifest) string {
	if _, suffix, ok := CosignTagOf(tag); ok {
		switch suffix {
		case CosignSignatureSuffix:
			return ArtifactTypeCosignSignature
		case CosignAttestationSuffix:
			return ArtifactTypeCosignAttestation
		default:
			return ArtifactTypeCosignSBOM
		}
	}
	if m == nil {
		return ""
	}
	if m.ArtifactType == MediaTypeSigstoreBundle && m.Annotations["dev.sigstore.bundle.content"] == "dsse-envelope" {
		// a bundle of an attestation (cosign attest --new-bundle-format)
		return m.ArtifactType + "; content=dsse-envelope"
	}
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if m.Config != nil {
		return m.Config.MediaType
	}
	return ""
}

// ArtifactKind names an artifact type for people: signature, attestation,
// sbom, or the type itself.
func ArtifactKind(artifactType string) string {
	switch {
	case artifactType == ArtifactTypeCosignAttestation, strings.Contains(artifactType, "in-toto"), strings.Contains(artifactType, "dsse"):
		return "attestation"
	case artifactType == ArtifactTypeCosignSignature, artifactType == MediaTypeSigstoreBundle,
		strings.Contains(artifactType, "signature"):
		return "signature"
	case artifactType == ArtifactTypeCosignSBOM, strings.Contains(artifactType, "spdx"), strings.Contains(artifactType, "cyclonedx"),
		strings.Contains(artifactType, "sbom"):
		return "sbom"
	}
	return artifactType
}

// MatchArtifactType tells whether an artifact of type t is among want:
// full types, or the kinds "signature" (or "sig"), "attestation" ("att")
// and "sbom". An empty want matches everything.
func MatchArtifactType(t string, want []string) bool {
	if len(want) == 0 {
		return true
	}
	kind := ArtifactKind(t)
	for _, w := range want {
		switch w {
		case "sig":
			w = "signature"
		case "att":
			w = "attestation"
		}
		if w == t || w == kind {
			return true
		}
	}
	return false
}

// ReferrerDescriptor is a referrer as the referrers API lists it: its
// manifest's descriptor with its artifact type and annotations.
func ReferrerDescriptor(d digest.Digest, body []byte, m *Manifest) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(body)), ArtifactType: ArtifactType("", m), Annotations: m.Annotations}
}
