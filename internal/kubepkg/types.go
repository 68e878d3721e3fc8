package kubepkg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

const (
	// APIVersion is the apiVersion of KubePkg and KubePkgList documents.
	APIVersion = "octohelm.tech/v1alpha1"
	// KindKubePkg is the kind of a single package.
	KindKubePkg = "KubePkg"
	// KindKubePkgList is the kind of a list of packages (its packages are in items).
	KindKubePkgList = "KubePkgList"

	// AnnotationPlatform lists the platforms a package carries images for, as a
	// comma-separated list of os/arch[/variant], e.g. "linux/amd64,linux/arm64".
	AnnotationPlatform = "octohelm.tech/platform"
	// AnnotationPlatforms is the same list as the crpe phone app writes it
	// (plural); read when AnnotationPlatform is absent.
	AnnotationPlatforms = "octohelm.tech/platforms"
	// AnnotationPartial marks a package whose archive does not carry every blob
	// (the receiving side is expected to have the rest).
	AnnotationPartial = "octohelm.tech/partial"
)

// KubePkg is a Kubernetes application: its manifests and the container images
// they need. Fields this type does not know are kept in Extra and written back
// by MarshalJSON.
type KubePkg struct {
	// APIVersion must be APIVersion.
	APIVersion string
	// Kind must be KindKubePkg.
	Kind string
	// Metadata names the package.
	Metadata ObjectMeta
	// Spec holds the version, images and manifests.
	Spec Spec
	// Status is kept as is; nil when absent.
	Status *Status

	// Extra holds the unknown top-level fields, decoded as by DecodeValue
	// (numbers are json.Number). Known fields take precedence when marshalling.
	Extra map[string]any
}

// ObjectMeta is the metadata of a KubePkg. Fields other than name, namespace,
// labels and annotations (uid, resourceVersion, ...) are kept in Extra.
type ObjectMeta struct {
	// Name of the package, a DNS-1123 subdomain.
	Name string
	// Namespace of the package; optional.
	Namespace string
	// Labels of the package.
	Labels map[string]string
	// Annotations of the package, see AnnotationPlatform and AnnotationPartial.
	Annotations map[string]string

	// Extra holds the unknown metadata fields.
	Extra map[string]any
}

// Spec is the content of a KubePkg. Unknown spec fields are kept in Extra.
type Spec struct {
	// Version is the semantic version of the package (a leading "v" is allowed).
	Version string
	// Images maps image references to "" (resolve the tag) or a digest (use
	// exactly that).
	Images map[string]string
	// Manifests maps "<name>.<namespace>.<lowercase kind>" to Kubernetes objects.
	Manifests map[string]Manifest

	// Extra holds the unknown spec fields.
	Extra map[string]any
}

// Manifest is any Kubernetes object, unstructured. Numbers decode as
// json.Number so that integers keep their exact value.
type Manifest map[string]any

// Status is the status of a KubePkg, kept as is. Numbers decode as
// json.Number.
type Status map[string]any

// List is a KubePkgList: apiVersion APIVersion, kind KindKubePkgList.
type List struct {
	// APIVersion of the list; APIVersion when written by Marshal.
	APIVersion string `json:"apiVersion"`
	// Kind of the list; KindKubePkgList when written by Marshal.
	Kind string `json:"kind"`
	// Items are the packages.
	Items []*KubePkg `json:"items"`
}

// FieldError is a problem located at a field path such as
// `spec.manifests["web.default.deployment"].metadata.name`. Parse and
// Validate return them (joined with errors.Join when there are several).
type FieldError struct {
	// Path of the field: dotted names, with ["key"] for map keys and [i] for
	// list indexes.
	Path string
	// Err is the problem.
	Err error
}

// Error returns "<path>: <problem>".
func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *FieldError) Unwrap() error { return e.Err }

// atField prefixes err with the field name, joining nested field errors into
// one path. A name starting with "[" is an index or map key.
func atField(name string, err error) error {
	switch e := err.(type) {
	case nil:
		return nil
	case *FieldError:
		sep := "."
		if strings.HasPrefix(e.Path, "[") {
			sep = ""
		}
		return &FieldError{Path: name + sep + e.Path, Err: e.Err}
	case interface{ Unwrap() []error }:
		var errs []error
		for _, x := range e.Unwrap() {
			errs = append(errs, atField(name, x))
		}
		return errors.Join(errs...)
	}
	return &FieldError{Path: name, Err: err}
}

// keyPath renders a map key as a path element: ["key"].
func keyPath(k string) string { return fmt.Sprintf("[%q]", k) }

func isNull(data []byte) bool { return bytes.Equal(bytes.TrimSpace(data), []byte("null")) }

// DecodeValue decodes one JSON value into plain Go values (map[string]any,
// []any, string, bool, nil), with numbers as json.Number so that they keep
// their exact text.
func DecodeValue(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

// decodeObject splits a JSON object into its fields, decoding the known ones
// into their targets (errors name the field) and returning the others.
func decodeObject(data []byte, known map[string]any) (map[string]any, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	var extra map[string]any
	var errs []error
	for k, v := range raw {
		if target, ok := known[k]; ok {
			if err := json.Unmarshal(v, target); err != nil {
				errs = append(errs, atField(k, err))
			}
			continue
		}
		dv, err := DecodeValue(v)
		if err != nil {
			errs = append(errs, atField(k, err))
			continue
		}
		if extra == nil {
			extra = map[string]any{}
		}
		extra[k] = dv
	}
	return extra, errors.Join(errs...)
}

// encodeJSON marshals v with sorted map keys and without HTML escaping.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// encodeObject writes the extra fields overlaid with the known ones.
func encodeObject(extra map[string]any, known map[string]any) ([]byte, error) {
	m := make(map[string]any, len(extra)+len(known))
	for k, v := range extra {
		m[k] = v
	}
	for k, v := range known {
		m[k] = v
	}
	return encodeJSON(m)
}

// UnmarshalJSON decodes a KubePkg, keeping unknown fields in Extra.
func (p *KubePkg) UnmarshalJSON(data []byte) error {
	*p = KubePkg{}
	if isNull(data) {
		return nil
	}
	var status *Status
	extra, err := decodeObject(data, map[string]any{
		"apiVersion": &p.APIVersion,
		"kind":       &p.Kind,
		"metadata":   &p.Metadata,
		"spec":       &p.Spec,
		"status":     &status,
	})
	p.Status = status
	p.Extra = extra
	return err
}

// MarshalJSON encodes a KubePkg with sorted keys, including its Extra fields.
func (p KubePkg) MarshalJSON() ([]byte, error) {
	known := map[string]any{
		"apiVersion": p.APIVersion,
		"kind":       p.Kind,
		"metadata":   p.Metadata,
		"spec":       p.Spec,
	}
	if p.Status != nil {
		known["status"] = p.Status
	}
	return encodeObject(p.Extra, known)
}

// UnmarshalJSON decodes metadata, keeping unknown fields in Extra.
func (m *ObjectMeta) UnmarshalJSON(data []byte) error {
	*m = ObjectMeta{}
	if isNull(data) {
		return nil
	}
	extra, err := decodeObject(data, map[string]any{
		"name":        &m.Name,
		"namespace":   &m.Namespace,
		"labels":      &m.Labels,
		"annotations": &m.Annotations,
	})
	m.Extra = extra
	return err
}

// MarshalJSON encodes metadata with sorted keys, including its Extra fields.
// name is always written; namespace, labels and annotations when not empty.
func (m ObjectMeta) MarshalJSON() ([]byte, error) {
	known := map[string]any{"name": m.Name}
	if m.Namespace != "" {
		known["namespace"] = m.Namespace
	}
	if len(m.Labels) > 0 {
		known["labels"] = m.Labels
	}
	if len(m.Annotations) > 0 {
		known["annotations"] = m.Annotations
	}
	return encodeObject(m.Extra, known)
}

// UnmarshalJSON decodes a spec, keeping unknown fields in Extra. Errors in
// images or manifests name the offending key.
func (s *Spec) UnmarshalJSON(data []byte) error {
	*s = Spec{}
	if isNull(data) {
		return nil
	}
	var images, manifests map[string]json.RawMessage
	extra, err := decodeObject(data, map[string]any{
		"version":   &s.Version,
		"images":    &images,
		"manifests": &manifests,
	})
	s.Extra = extra
	errs := []error{err}
	if images != nil {
		s.Images = make(map[string]string, len(images))
		for k, v := range images {
			var str string
			if err := json.Unmarshal(v, &str); err != nil {
				errs = append(errs, atField("images", atField(keyPath(k), err)))
				continue
			}
			s.Images[k] = str
		}
	}
	if manifests != nil {
		s.Manifests = make(map[string]Manifest, len(manifests))
		for k, v := range manifests {
			var m Manifest
			if err := json.Unmarshal(v, &m); err != nil {
				errs = append(errs, atField("manifests", atField(keyPath(k), err)))
				continue
			}
			s.Manifests[k] = m
		}
	}
	return errors.Join(errs...)
}

// MarshalJSON encodes a spec with sorted keys, including its Extra fields.
// version is always written; images and manifests when not nil.
func (s Spec) MarshalJSON() ([]byte, error) {
	known := map[string]any{"version": s.Version}
	if s.Images != nil {
		known["images"] = s.Images
	}
	if s.Manifests != nil {
		known["manifests"] = s.Manifests
	}
	return encodeObject(s.Extra, known)
}

// UnmarshalJSON decodes a Kubernetes object; it must be a JSON object (or null).
func (m *Manifest) UnmarshalJSON(data []byte) error {
	v, err := decodeMap(data)
	*m = v
	return err
}

// UnmarshalJSON decodes a status; it must be a JSON object (or null).
func (s *Status) UnmarshalJSON(data []byte) error {
	v, err := decodeMap(data)
	*s = v
	return err
}

func decodeMap(data []byte) (map[string]any, error) {
	if isNull(data) {
		return nil, nil
	}
	v, err := DecodeValue(data)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be an object, got %s", jsonType(v))
	}
	return m, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// Namespace returns metadata.namespace, or def when it is empty.
func (p *KubePkg) Namespace(def string) string {
	if p.Metadata.Namespace != "" {
		return p.Metadata.Namespace
	}
	return def
}

// ImageRefs returns the keys of spec.images, sorted.
func (p *KubePkg) ImageRefs() []string {
	return sortedKeys(p.Spec.Images)
}
