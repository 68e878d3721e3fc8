package kubepkg

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/octohelm/crpe/internal/oci"
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Validate checks the package and returns every problem found, joined with
// errors.Join; each names the field path and the problem, e.g.
// `spec.version: "latest" is not a semantic version`. It checks apiVersion and
// kind, metadata.name (a DNS-1123 subdomain) and metadata.namespace (a
// DNS-1123 label, when set), spec.version (X.Y.Z semver, a leading "v"
// allowed), each spec.images key (an image reference) and value ("" or a
// sha256/sha512 digest), each spec.manifests object (apiVersion, kind,
// metadata.name, and its key, see ManifestKey), the AnnotationPlatform and
// AnnotationPlatforms annotations (see Platforms) and status.digests (see
// StatusDigests).
func (p *KubePkg) Validate() error {
	var errs []error
	add := func(path string, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
	}

	if p.APIVersion != APIVersion {
		add("apiVersion", "must be %q, got %q", APIVersion, p.APIVersion)
	}
	if p.Kind != KindKubePkg {
		add("kind", "must be %q, got %q", KindKubePkg, p.Kind)
	}

	switch n := p.Metadata.Name; {
	case n == "":
		add("metadata.name", "required")
	case !IsDNS1123Subdomain(n):
		add("metadata.name", "%q is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)", n)
	}
	if ns := p.Metadata.Namespace; ns != "" && !IsDNS1123Label(ns) {
		add("metadata.namespace", "%q is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)", ns)
	}
	for _, a := range []string{AnnotationPlatform, AnnotationPlatforms} {
		if v, ok := p.Metadata.Annotations[a]; ok {
			if _, err := oci.ParsePlatforms(v); err != nil {
				add("metadata.annotations"+keyPath(a), "%v", err)
			}
		}
	}
	if _, err := p.StatusDigests(); err != nil {
		errs = append(errs, err) // a *FieldError naming the entry
	}

	if p.Spec.Version == "" {
		add("spec.version", "required")
	} else if _, err := ParseVersion(p.Spec.Version); err != nil {
		add("spec.version", "%v", err)
	}

	for _, ref := range sortedKeys(p.Spec.Images) {
		path := "spec.images" + keyPath(ref)
		if _, err := name.ParseReference(ref); err != nil {
			add(path, "invalid image reference: %v", err)
		} else if _, err := oci.NormalizeReference(ref); err != nil {
			add(path, "invalid image reference: %v", err)
		}
		if d := p.Spec.Images[ref]; d != "" && !oci.IsDigest(d) {
			add(path, "value %q must be empty or a digest (sha256:<64 hex> or sha512:<128 hex>)", d)
		}
	}

	for _, key := range sortedKeys(p.Spec.Manifests) {
		path := "spec.manifests" + keyPath(key)
		m := p.Spec.Manifests[key]
		if m == nil {
			add(path, "must be an object")
			continue
		}
		complete := true
		for _, f := range []string{"apiVersion", "kind"} {
			if s, _ := m[f].(string); s == "" {
				add(path+"."+f, "required (a non-empty string)")
				complete = false
			}
		}
		if s, _ := stringAt(m, "metadata", "name"); s == "" {
			add(path+".metadata.name", "required (a non-empty string)")
			complete = false
		}
		if v, ok := mapAt(m, "metadata"); ok {
			if ns, present := v["namespace"]; present && ns != nil {
				if _, isString := ns.(string); !isString {
					add(path+".metadata.namespace", "must be a string")
					complete = false
				}
			}
		}
		if complete {
			if want := p.ManifestKey(m); key != want {
				add(path, "key does not match the object (want %q)", want)
			}
		}
	}
	return errors.Join(errs...)
}

// ManifestKey returns the key a manifest must have in spec.manifests:
// "<metadata.name>.<namespace>.<lowercase kind>", where namespace is the
// object's metadata.namespace, else the package's namespace, else "default".
func (p *KubePkg) ManifestKey(m Manifest) string {
	objName, _ := stringAt(m, "metadata", "name")
	ns, _ := stringAt(m, "metadata", "namespace")
	if ns == "" {
		ns = p.Namespace("default")
	}
	kind, _ := m["kind"].(string)
	return objName + "." + ns + "." + strings.ToLower(kind)
}

// ParseVersion parses a package version: strict semantic version X.Y.Z with
// optional pre-release and build metadata, a leading "v" allowed. "1.x",
// "1.2" and "latest" are rejected.
func ParseVersion(s string) (*semver.Version, error) {
	v, err := semver.StrictNewVersion(strings.TrimPrefix(s, "v"))
	if err != nil {
		return nil, fmt.Errorf("%q is not a semantic version (X.Y.Z): %v", s, err)
	}
	return v, nil
}

// IsDowngrade reports whether version next is lower than current: the one
// semver gate of crpe (the importer, `crpe apply` and the operator refuse a
// downgrade unless forced). A version that does not parse is never a
// downgrade, of or to anything: validation refuses it where it matters.
func IsDowngrade(current, next string) bool {
	cv, err1 := ParseVersion(current)
	nv, err2 := ParseVersion(next)
	return err1 == nil && err2 == nil && nv.LessThan(cv)
}

// IsDNS1123Subdomain reports whether s is a DNS-1123 subdomain, the form of
// most Kubernetes object names.
func IsDNS1123Subdomain(s string) bool {
	return len(s) <= 253 && dns1123Subdomain.MatchString(s)
}

// IsDNS1123Label reports whether s is a DNS-1123 label, the form of a
// Kubernetes namespace name.
func IsDNS1123Label(s string) bool {
	return len(s) <= 63 && dns1123Label.MatchString(s)
}

// Platforms returns the platforms of the AnnotationPlatform annotation, or
// of the phone app's AnnotationPlatforms when it is absent
// (oci.ParsePlatforms: normalized, without duplicates, sorted), nil when
// both are absent or empty.
func (p *KubePkg) Platforms() ([]ocispec.Platform, error) {
	if v := p.Metadata.Annotations[AnnotationPlatform]; v != "" {
		return oci.ParsePlatforms(v)
	}
	return oci.ParsePlatforms(p.Metadata.Annotations[AnnotationPlatforms])
}
