package oci

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform reads "os/arch[/variant]" (the --platform convention of
// docker, crane and containerd) with containerd's parser: names are
// lowercased and aliases folded (x86_64 is amd64, aarch64 is arm64), an
// architecture crpe does not know is taken as written. One component alone
// is refused: a platform is always os/arch here.
func ParsePlatform(s string) (ocispec.Platform, error) {
	s = strings.TrimSpace(s)
	if n := strings.Count(s, "/"); n < 1 || n > 2 {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	for _, part := range strings.Split(s, "/") {
		if part == "" {
			return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant], with no empty part", s)
		}
	}
	p, err := platforms.Parse(strings.ToLower(s))
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("platform %q: %v", s, err)
	}
	return p, nil
}

// ParsePlatforms reads a comma-separated list (spaces around entries are
// ignored), dropping duplicates (by their normalized form), sorted; a blank
// list gives nil, an empty entry is an error.
func ParsePlatforms(s string) ([]ocispec.Platform, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []ocispec.Platform
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		p, err := ParsePlatform(part)
		if err != nil {
			return nil, err
		}
		if k := platforms.Format(platforms.Normalize(p)); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return FormatPlatform(out[i]) < FormatPlatform(out[j]) })
	return out, nil
}

// FormatPlatform writes os/arch[/variant] ("unknown" for a platform with no
// OS, as containerd does).
func FormatPlatform(p ocispec.Platform) string { return platforms.Format(p) }

// JoinPlatforms writes a list as "os/arch,os/arch".
func JoinPlatforms(ps []ocispec.Platform) string {
	ss := make([]string, 0, len(ps))
	for _, p := range ps {
		ss = append(ss, FormatPlatform(p))
	}
	return strings.Join(ss, ",")
}

// MatchPlatform reports whether an image's platform have is want, once both
// are normalized (arm is arm/v7, arm64/v8 is arm64, amd64/v1 is amd64): the
// strict match of containerd, without its fallbacks (an arm64 image is not
// taken for arm/v7).
func MatchPlatform(want, have ocispec.Platform) bool {
	return platforms.OnlyStrict(want).Match(have)
}

// MatchAnyPlatform reports whether have matches one of wants.
func MatchAnyPlatform(wants []ocispec.Platform, have ocispec.Platform) bool {
	for _, w := range wants {
		if MatchPlatform(w, have) {
			return true
		}
	}
	return false
}

// ConfigPlatform reads os, architecture and variant of an image config; an
// unreadable config (an artifact's) gives the zero platform (unknown).
func ConfigPlatform(body []byte) ocispec.Platform {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	_ = json.Unmarshal(body, &c)
	return ocispec.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
}
