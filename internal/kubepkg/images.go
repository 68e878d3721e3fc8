package kubepkg

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is the name containerd (and image references in manifests) use
// for Docker Hub; go-containerregistry calls it name.DefaultRegistry
// ("index.docker.io").
const dockerHub = "docker.io"

// tagPattern is the form of a tag in the distribution spec.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// NormalizeRef returns the fully-qualified form of an image reference, as
// containerd names it: the registry is always present (Docker Hub is
// "docker.io", official images get "library/"), a reference with neither tag
// nor digest gets ":latest", and a reference with both keeps both
// ("repo:tag@sha256:..."). Digests must be sha256 or sha512 (see IsDigest).
//
//	nginx:alpine              → docker.io/library/nginx:alpine
//	index.docker.io/x/y:1     → docker.io/x/y:1
//	ghcr.io/a/b@sha256:...    → ghcr.io/a/b@sha256:...
func NormalizeRef(s string) (string, error) {
	base, dgst, hasDigest := strings.Cut(s, "@")
	if hasDigest && !IsDigest(dgst) {
		return "", fmt.Errorf("image reference %q: %q is not a sha256 or sha512 digest", s, dgst)
	}
	repoPart, tag, hasTag := base, "", false
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		repoPart, tag, hasTag = base[:i], base[i+1:], true
	}
	repo, err := name.NewRepository(repoPart)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", s, err)
	}
	if hasTag {
		if !tagPattern.MatchString(tag) {
			return "", fmt.Errorf("image reference %q: invalid tag %q", s, tag)
		}
	} else if !hasDigest {
		tag = name.DefaultTag
	}

	out := RepositoryName(repo)
	if tag != "" {
		out += ":" + tag
	}
	if hasDigest {
		out += "@" + dgst
	}
	return out, nil
}

// Partial reports whether any of pkgs says octohelm.tech/partial: "true"
// (its archive leaves out blobs the receiver holds).
func Partial(pkgs []*KubePkg) bool {
	for _, p := range pkgs {
		if p.Metadata.Annotations[AnnotationPartial] == "true" {
			return true
		}
	}
	return false
}

// RepositoryName is the full name of a repository as containerd (and crpe's
// stores) name it: go-containerregistry's "index.docker.io" is docker.io.
func RepositoryName(r name.Repository) string {
	host := r.RegistryStr()
	if host == name.DefaultRegistry {
		host = dockerHub
	}
	return host + "/" + r.RepositoryStr()
}

// podSpecPaths tells where each workload kind keeps its pod spec.
var podSpecPaths = map[string][]string{
	"Pod":                   {"spec"},
	"PodTemplate":           {"template", "spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

// ManifestImages returns the images used by the pod templates of
// spec.manifests, as written (not normalized), sorted and without duplicates.
// It looks at Pod (spec), Deployment, StatefulSet, DaemonSet, ReplicaSet,
// ReplicationController and Job (spec.template.spec), PodTemplate
// (template.spec) and CronJob (spec.jobTemplate.spec.template.spec): their
// containers, initContainers and ephemeralContainers.
func (p *KubePkg) ManifestImages() []string {
	var images []string
	for _, m := range p.Spec.Manifests {
		kind, _ := m["kind"].(string)
		path, ok := podSpecPaths[kind]
		if !ok {
			continue
		}
		spec, ok := mapAt(m, path...)
		if !ok {
			continue
		}
		for _, field := range []string{"containers", "initContainers", "ephemeralContainers"} {
			list, _ := spec[field].([]any)
			for _, c := range list {
				cm, _ := c.(map[string]any)
				if img, _ := cm["image"].(string); img != "" {
					images = append(images, img)
				}
			}
		}
	}
	slices.Sort(images)
	return slices.Compact(images)
}

// AddManifestImages adds to spec.images, with the value "", every image of
// ManifestImages whose normalized form (NormalizeRef) is not already among
// the normalized keys of spec.images, and returns the images added (sorted,
// as written in the manifests). An image that cannot be normalized is added
// as written unless that exact key exists, so that Validate reports it.
func (p *KubePkg) AddManifestImages() (added []string) {
	have := map[string]bool{}
	for ref := range p.Spec.Images {
		have[ref] = true
		if n, err := NormalizeRef(ref); err == nil {
			have[n] = true
		}
	}
	for _, img := range p.ManifestImages() {
		key := img
		if n, err := NormalizeRef(img); err == nil {
			key = n
		}
		if have[key] || have[img] {
			continue
		}
		have[key] = true
		if p.Spec.Images == nil {
			p.Spec.Images = map[string]string{}
		}
		p.Spec.Images[img] = ""
		added = append(added, img)
	}
	return added
}

// mapAt walks nested objects along path and returns the object at its end.
func mapAt(m map[string]any, path ...string) (map[string]any, bool) {
	cur := m
	for _, k := range path {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, cur != nil
}

// stringAt returns the string at the end of path in nested objects.
func stringAt(m map[string]any, path ...string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	parent, ok := mapAt(m, path[:len(path)-1]...)
	if !ok {
		return "", false
	}
	s, ok := parent[path[len(path)-1]].(string)
	return s, ok
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
