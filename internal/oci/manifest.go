package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Errors of ParseManifest. Each error it returns wraps exactly one of them;
// the registry maps them to OCI error codes in its one mapper.
var (
	// ErrManifestInvalid: the bytes are not a valid manifest or index.
	ErrManifestInvalid = errors.New("invalid manifest")
	// ErrManifestUnsupported: a valid document of a kind crpe does not take
	// (Docker schema 1, an unknown media type).
	ErrManifestUnsupported = errors.New("unsupported manifest")
	// ErrManifestTooLarge: over MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrManifestInvalid, fmt.Sprintf(format, a...))
}

// Manifest is what crpe reads of an image manifest or an index.
type Manifest struct {
	MediaType    string
	ArtifactType string
	Config       *ocispec.Descriptor
	Layers       []ocispec.Descriptor
	Manifests    []ocispec.Descriptor
	Subject      *ocispec.Descriptor
	Annotations  map[string]string
}

// IsIndex reports whether the manifest is an index (or Docker list).
func (m *Manifest) IsIndex() bool { return IsIndex(m.MediaType) }

// Required lists the blobs a registry must hold before taking the manifest:
// config and layers, except non-distributable layers (with urls). An index's
// children and a subject may be absent.
func (m *Manifest) Required() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) > 0 {
			continue
		}
		out = append(out, l)
	}
	return out
}

// Platforms lists the platforms an index's children name, formatted
// (os/arch[/variant]), in order; "no platforms" when none does.
func (m *Manifest) Platforms() []string {
	var out []string
	for _, c := range m.Manifests {
		if c.Platform != nil {
			out = append(out, FormatPlatform(*c.Platform))
		}
	}
	if len(out) == 0 {
		out = []string{"no platforms"}
	}
	return out
}

type rawManifest struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
	FSLayers      json.RawMessage      `json:"fsLayers"`
}

// ParseManifest validates body as a manifest of contentType (which may be
// empty: the body's mediaType or its shape decides). Errors wrap
// ErrManifestInvalid, ErrManifestUnsupported or ErrManifestTooLarge.
func ParseManifest(contentType string, body []byte) (*Manifest, error) {
	if len(body) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrManifestTooLarge, len(body), MaxManifestSize)
	}
	var raw rawManifest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("manifest is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, invalid("manifest has data after its JSON object")
	}
	if raw.FSLayers != nil || strings.Contains(contentType, "distribution.manifest.v1") {
		return nil, fmt.Errorf("%w: Docker schema 1 manifests are not supported", ErrManifestUnsupported)
	}
	if raw.SchemaVersion == nil || *raw.SchemaVersion != 2 {
		return nil, invalid("schemaVersion must be 2")
	}
	ct := BaseMediaType(contentType)
	mt := raw.MediaType
	switch {
	case mt != "" && IsManifest(ct) && mt != ct:
		return nil, invalid("Content-Type %q does not match the manifest's mediaType %q", ct, mt)
	case mt == "" && IsManifest(ct):
		mt = ct
	case mt == "" && raw.Manifests != nil:
		mt = ocispec.MediaTypeImageIndex
	case mt == "" && raw.Config != nil:
		mt = ocispec.MediaTypeImageManifest
	}
	m := &Manifest{MediaType: mt, ArtifactType: raw.ArtifactType, Subject: raw.Subject, Annotations: raw.Annotations}
	switch {
	case IsImageManifest(mt):
		if raw.Config == nil {
			return nil, invalid("image manifest has no config")
		}
		if raw.Manifests != nil {
			return nil, invalid("image manifest must not have manifests")
		}
		if err := checkDescriptor("config", *raw.Config); err != nil {
			return nil, err
		}
		for i, l := range raw.Layers {
			if err := checkDescriptor(fmt.Sprintf("layers[%d]", i), l); err != nil {
				return nil, err
			}
		}
		m.Config, m.Layers = raw.Config, raw.Layers
		if m.ArtifactType == "" && mt == ocispec.MediaTypeImageManifest {
			m.ArtifactType = raw.Config.MediaType
		}
	case IsIndex(mt):
		if raw.Config != nil || raw.Layers != nil {
			return nil, invalid("index must not have config or layers")
		}
		for i, c := range raw.Manifests {
			if err := checkDescriptor(fmt.Sprintf("manifests[%d]", i), c); err != nil {
				return nil, err
			}
		}
		m.Manifests = raw.Manifests
	default:
		return nil, fmt.Errorf("%w: media type %q", ErrManifestUnsupported, mt)
	}
	if raw.Subject != nil {
		if err := checkDescriptor("subject", *raw.Subject); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// CheckDescriptor checks what a descriptor must hold: a valid digest, a
// non-negative size and a media type. Errors wrap ErrManifestInvalid.
func checkDescriptor(field string, d ocispec.Descriptor) error {
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return invalid("%s: %v", field, err)
	}
	if d.Size < 0 {
		return invalid("%s: negative size", field)
	}
	if d.MediaType == "" {
		return invalid("%s: mediaType is required", field)
	}
	return nil
}
