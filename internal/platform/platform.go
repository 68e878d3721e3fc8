// Package platform parses and matches image platforms written as
// os/arch[/variant] (the --platform convention of docker, crane and
// containerd), normalizing variants the way containerd does (arm64 is v8,
// arm is v7 unless said otherwise).
package platform

import (
	"fmt"
	"sort"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var knownOS = map[string]bool{
	"linux": true, "windows": true, "darwin": true, "freebsd": true, "netbsd": true, "openbsd": true,
	"solaris": true, "illumos": true, "aix": true, "android": true, "ios": true, "plan9": true, "js": true, "wasip1": true,
}

var knownArch = map[string]bool{
	"amd64": true, "arm64": true, "arm": true, "386": true, "ppc64le": true, "ppc64": true, "s390x": true,
	"riscv64": true, "mips64le": true, "mips64": true, "mipsle": true, "mips": true, "loong64": true, "wasm": true,
}

// Parse reads "os/arch[/variant]".
func Parse(s string) (ocispec.Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	p := ocispec.Platform{OS: strings.ToLower(parts[0]), Architecture: strings.ToLower(parts[1])}
	if len(parts) == 3 {
		p.Variant = strings.ToLower(parts[2])
		if p.Variant == "" {
			return ocispec.Platform{}, fmt.Errorf("platform %q: empty variant", s)
		}
	}
	if !knownOS[p.OS] {
		return ocispec.Platform{}, fmt.Errorf("platform %q: unknown operating system %q", s, p.OS)
	}
	if !knownArch[p.Architecture] {
		return ocispec.Platform{}, fmt.Errorf("platform %q: unknown architecture %q", s, p.Architecture)
	}
	return p, nil
}

// ParseList reads a comma-separated list, dropping duplicates, sorted.
func ParseList(s string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		p, err := Parse(part)
		if err != nil {
			return nil, err
		}
		if k := String(p); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platform in %q", s)
	}
	sort.Slice(out, func(i, j int) bool { return String(out[i]) < String(out[j]) })
	return out, nil
}

// String writes os/arch[/variant].
func String(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Join writes a list as "os/arch,os/arch".
func Join(ps []ocispec.Platform) string {
	var ss []string
	for _, p := range ps {
		ss = append(ss, String(p))
	}
	return strings.Join(ss, ",")
}

func normVariant(arch, variant string) string {
	switch arch {
	case "arm64":
		if variant == "" || variant == "8" {
			return "v8"
		}
	case "arm":
		if variant == "" {
			return "v7"
		}
		if !strings.HasPrefix(variant, "v") {
			return "v" + variant
		}
	case "amd64":
		if variant == "v1" {
			return ""
		}
	}
	return variant
}

// Match reports whether an image's platform have satisfies want.
func Match(want, have ocispec.Platform) bool {
	return strings.EqualFold(want.OS, have.OS) && strings.EqualFold(want.Architecture, have.Architecture) &&
		normVariant(want.Architecture, want.Variant) == normVariant(have.Architecture, have.Variant)
}

// MatchAny reports whether have satisfies one of wants.
func MatchAny(wants []ocispec.Platform, have ocispec.Platform) bool {
	for _, w := range wants {
		if Match(w, have) {
			return true
		}
	}
	return false
}
