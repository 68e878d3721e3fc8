package kubepkg

import (
	"fmt"
	"slices"
	"strings"

	"github.com/octohelm/crpe/internal/oci"
)

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
		for _, u := range PodImages(m) {
			images = append(images, u.Image)
		}
	}
	slices.Sort(images)
	return slices.Compact(images)
}

// ImageUse is an image a pod template names, and where.
type ImageUse struct {
	// Image as written.
	Image string
	// Path of the container in the object, e.g.
	// "spec.template.spec.initContainers[0]".
	Path string
}

// PodImages lists the images of m's pod template (see ManifestImages for
// the kinds and fields), in order.
func PodImages(m Manifest) []ImageUse {
	kind, _ := m["kind"].(string)
	path, ok := podSpecPaths[kind]
	if !ok {
		return nil
	}
	spec, ok := mapAt(m, path...)
	if !ok {
		return nil
	}
	var out []ImageUse
	for _, field := range []string{"containers", "initContainers", "ephemeralContainers"} {
		list, _ := spec[field].([]any)
		for i, c := range list {
			cm, _ := c.(map[string]any)
			if img, _ := cm["image"].(string); img != "" {
				out = append(out, ImageUse{Image: img, Path: fmt.Sprintf("%s.%s[%d]", strings.Join(path, "."), field, i)})
			}
		}
	}
	return out
}

// AddManifestImages adds to spec.images, with the value "", every image of
// ManifestImages whose normalized form (oci.NormalizeReference) is not already among
// the normalized keys of spec.images, and returns the images added (sorted,
// as written in the manifests). An image that cannot be normalized is added
// as written unless that exact key exists, so that Validate reports it.
func (p *KubePkg) AddManifestImages() (added []string) {
	have := map[string]bool{}
	for ref := range p.Spec.Images {
		have[ref] = true
		if n, err := oci.NormalizeReference(ref); err == nil {
			have[n] = true
		}
	}
	for _, img := range p.ManifestImages() {
		key := img
		if n, err := oci.NormalizeReference(img); err == nil {
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
