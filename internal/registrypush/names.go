package registrypush

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/octohelm/crpe/internal/oci"
)

// Target is the site registry and the path prefix under which packages'
// repositories go: HOST[:PORT][/PREFIX].
type Target struct {
	// Host is host[:port] as the registry is reached.
	Host string
	// Prefix is a path of zero or more repository components (a Harbor
	// project, a namespace), without leading or trailing slash.
	Prefix string
}

// component is one repository path component (the distribution spec's
// grammar).
var component = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)

// ParseTarget parses HOST[:PORT][/PREFIX]; a scheme (https:// or http://) is
// refused: TLS or plain HTTP is an option of its own.
func ParseTarget(s string) (Target, error) {
	if strings.Contains(s, "://") {
		return Target{}, fmt.Errorf("registry %q: give HOST[:PORT][/PREFIX] without a scheme (plain HTTP is --plain-http)", s)
	}
	s = strings.Trim(s, "/")
	host, prefix, _ := strings.Cut(s, "/")
	if host == "" || strings.ContainsAny(host, " \\@?#") {
		return Target{}, fmt.Errorf("registry %q: want HOST[:PORT][/PREFIX]", s)
	}
	if prefix != "" {
		for _, c := range strings.Split(prefix, "/") {
			if !component.MatchString(c) {
				return Target{}, fmt.Errorf("registry %q: prefix component %q is not a valid repository name component (lowercase letters, digits, . _ __ -)", s, c)
			}
		}
	}
	return Target{Host: strings.ToLower(host), Prefix: prefix}, nil
}

func (t Target) String() string {
	if t.Prefix == "" {
		return t.Host
	}
	return t.Host + "/" + t.Prefix
}

// Naming is how a source repository (docker.io/library/nginx) is named in
// the site registry.
type Naming int

const (
	// Nested keeps the source's path under the prefix:
	// PREFIX/docker.io/library/nginx. A source host with a port
	// (10.0.0.1:5000) becomes 10.0.0.1_5000, a colon being no valid path
	// character.
	Nested Naming = iota
	// Flat joins the source's components with "_" into one component under
	// the prefix, for registries that limit the depth of a path (a project
	// and one name): PREFIX/docker.io_library_nginx.
	Flat
)

// HostComponent is a source registry host as a repository path component:
// lowercase, a port's colon replaced by "_" (10.0.0.1:5000 → 10.0.0.1_5000).
func HostComponent(host string) string {
	return strings.ReplaceAll(strings.ToLower(host), ":", "_")
}

// Repository names the source repository full (docker.io/library/nginx, as
// oci.ParseReference gives it) in the site registry, without the host.
func (t Target) Repository(full string, n Naming) (string, error) {
	host, path, ok := oci.SplitRepository(full)
	if !ok {
		return "", fmt.Errorf("repository %q has no registry host", full)
	}
	parts := append([]string{HostComponent(host)}, strings.Split(path, "/")...)
	var name string
	if n == Flat {
		name = strings.Join(parts, "_")
	} else {
		name = strings.Join(parts, "/")
	}
	if t.Prefix != "" {
		name = t.Prefix + "/" + name
	}
	if !oci.ValidName(name) {
		return "", fmt.Errorf("repository %q maps to %q, which is not a valid repository name", full, name)
	}
	return name, nil
}
