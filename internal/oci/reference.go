package oci

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// DockerHub is the name containerd, image references in manifests and
// crpe's stores use for Docker Hub; go-containerregistry calls it
// name.DefaultRegistry ("index.docker.io").
const DockerHub = "docker.io"

// Repository names per the distribution spec, plus an optional first
// component "host:port" so that a pull-through name such as
// "127.0.0.1:5000/library/alpine" (reached through ?ns=) can be stored under
// its full name.
var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
	hostPortRE  = regexp.MustCompile(`^[a-z0-9]+((\.|-+)[a-z0-9]+)*(:[0-9]{1,5})?$`)
	tagRE       = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidName reports whether name is a valid repository name.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLength {
		return false
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if componentRE.MatchString(p) {
			continue
		}
		if i == 0 && len(parts) > 1 && hostPortRE.MatchString(p) && strings.Contains(p, ":") {
			continue
		}
		return false
	}
	return true
}

// ValidTag reports whether tag is a valid tag.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

// CanonicalHost is the registry host as crpe names repositories after it:
// lowercased, with Docker Hub's aliases folded into docker.io.
func CanonicalHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return DockerHub
	}
	return h
}

// NormalizeNamespace maps containerd's ?ns= host to the name crpe stores
// repositories under (CanonicalHost). It returns "" when ns is not a valid
// host[:port].
func NormalizeNamespace(ns string) string {
	ns = CanonicalHost(strings.TrimSpace(ns))
	if !hostPortRE.MatchString(ns) || len(ns) > 253 {
		return ""
	}
	return ns
}

// IsHost reports whether the first component of a repository name is a
// registry host (it has a dot or a port, or is localhost), as Docker and
// containerd decide it.
func IsHost(component string) bool {
	return strings.ContainsAny(component, ".:") || component == "localhost"
}

// SplitRepository splits a full repository name ("docker.io/library/nginx")
// into its canonical host and the path within it. ok is false when the first
// component is not a host.
func SplitRepository(full string) (host, path string, ok bool) {
	host, path, found := strings.Cut(full, "/")
	if !found || path == "" || !IsHost(host) {
		return "", "", false
	}
	return CanonicalHost(host), path, true
}

// RepositoryName is the full name of a repository as containerd (and crpe's
// stores) name it: go-containerregistry's "index.docker.io" is docker.io.
func RepositoryName(r name.Repository) string {
	return CanonicalHost(r.RegistryStr()) + "/" + r.RepositoryStr()
}

// Reference is an image reference in crpe's full form: the repository with
// its host (docker.io/library/nginx), and a tag, a digest or both.
type Reference struct {
	Repository string
	Tag        string
	Digest     digest.Digest
}

// ParseReference reads an image reference as containerd names it: the
// registry is always present (Docker Hub is "docker.io", official images
// get "library/"), a reference with neither tag nor digest gets ":latest",
// and a reference with both keeps both. Digests must be sha256 or sha512.
//
//	nginx:alpine              → docker.io/library/nginx:alpine
//	index.docker.io/x/y:1     → docker.io/x/y:1
//	ghcr.io/a/b@sha256:...    → ghcr.io/a/b@sha256:...
func ParseReference(s string) (Reference, error) {
	base, dgst, hasDigest := strings.Cut(s, "@")
	var r Reference
	if hasDigest {
		d, err := ParseDigest(dgst)
		if err != nil {
			return r, fmt.Errorf("image reference %q: %q is not a sha256 or sha512 digest", s, dgst)
		}
		r.Digest = d
	}
	repoPart := base
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		repoPart, r.Tag = base[:i], base[i+1:]
		if !ValidTag(r.Tag) {
			return r, fmt.Errorf("image reference %q: invalid tag %q", s, r.Tag)
		}
	} else if !hasDigest {
		r.Tag = name.DefaultTag
	}
	// Hosts are case-insensitive: fold the host before go-containerregistry
	// decides whether it is Docker Hub (and adds "library/"), so that
	// "doCker.io/x" and "docker.io/x" name one repository.
	if host, rest, ok := strings.Cut(repoPart, "/"); ok && IsHost(host) {
		repoPart = strings.ToLower(host) + "/" + rest
	}
	repo, err := name.NewRepository(repoPart)
	if err != nil {
		return r, fmt.Errorf("image reference %q: %w", s, err)
	}
	r.Repository = RepositoryName(repo)
	return r, nil
}

// NormalizeReference is ParseReference(s).String().
func NormalizeReference(s string) (string, error) {
	r, err := ParseReference(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// String writes repository[:tag][@digest].
func (r Reference) String() string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + string(r.Digest)
	}
	return s
}

// Identifier is what to ask a registry for: the digest when there is one,
// the tag otherwise.
func (r Reference) Identifier() string {
	if r.Digest != "" {
		return string(r.Digest)
	}
	return r.Tag
}

// IsDigestRef reports whether a manifest reference (the part after
// /manifests/) is a digest rather than a tag: tags have no colon.
func IsDigestRef(ref string) bool { return strings.Contains(ref, ":") }
