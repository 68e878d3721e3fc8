package kubepkg_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/octohelm/crpe/internal/kubepkg"
)

func container(image string) map[string]any { return map[string]any{"name": "c", "image": image} }

func podSpec(prefix string) map[string]any {
	return map[string]any{
		"containers":          []any{container(prefix + "-main:1"), container("shared:1")},
		"initContainers":      []any{container(prefix + "-init:1")},
		"ephemeralContainers": []any{container(prefix + "-debug:1")},
	}
}

func workload(kind string, spec map[string]any) kubepkg.Manifest {
	return kubepkg.Manifest{"apiVersion": "apps/v1", "kind": kind, "metadata": map[string]any{"name": strings.ToLower(kind)}, "spec": spec}
}

func templated(prefix string) map[string]any {
	return map[string]any{"template": map[string]any{"spec": podSpec(prefix)}}
}

func TestManifestImages(t *testing.T) {
	p := &kubepkg.KubePkg{Spec: kubepkg.Spec{Manifests: map[string]kubepkg.Manifest{
		"pod":         workload("Pod", podSpec("pod")),
		"deployment":  workload("Deployment", templated("deployment")),
		"statefulset": workload("StatefulSet", templated("statefulset")),
		"daemonset":   workload("DaemonSet", templated("daemonset")),
		"replicaset":  workload("ReplicaSet", templated("replicaset")),
		"job":         workload("Job", templated("job")),
		"cronjob": workload("CronJob", map[string]any{
			"schedule":    "* * * * *",
			"jobTemplate": map[string]any{"spec": templated("cronjob")},
		}),
		"podtemplate": {"apiVersion": "v1", "kind": "PodTemplate", "metadata": map[string]any{"name": "t"},
			"template": map[string]any{"spec": podSpec("podtemplate")}},
		// not workloads, or broken: ignored
		"configmap": {"apiVersion": "v1", "kind": "ConfigMap", "data": map[string]any{"image": "nope:1"},
			"spec": map[string]any{"containers": []any{container("nope:2")}}},
		"empty":         workload("Deployment", nil),
		"no template":   workload("Deployment", map[string]any{"template": "x"}),
		"bad list":      workload("Pod", map[string]any{"containers": "x", "initContainers": []any{"x", 1, nil}}),
		"no image":      workload("Pod", map[string]any{"containers": []any{map[string]any{"name": "x"}, map[string]any{"image": 5}}}),
		"cronjob wrong": workload("CronJob", templated("wrong")), // CronJob pods are under jobTemplate
		"nil":           nil,
	}}}
	var want []string
	for _, prefix := range []string{"pod", "deployment", "statefulset", "daemonset", "replicaset", "job", "cronjob", "podtemplate"} {
		want = append(want, prefix+"-main:1", prefix+"-init:1", prefix+"-debug:1")
	}
	want = append(want, "shared:1")
	slices.Sort(want)
	if got := p.ManifestImages(); !slices.Equal(got, want) {
		t.Errorf("ManifestImages =\n%q\nwant\n%q", got, want)
	}
	if got := (&kubepkg.KubePkg{}).ManifestImages(); len(got) != 0 {
		t.Errorf("ManifestImages of an empty package = %q", got)
	}
}

func TestManifestImagesFromParsedDocument(t *testing.T) {
	p := mustParseOne(t, demoYAML)
	if got := p.ManifestImages(); !slices.Equal(got, []string{"nginx:alpine"}) {
		t.Errorf("ManifestImages = %q", got)
	}
}

func TestAddManifestImages(t *testing.T) {
	p := mustParseOne(t, demoJSON) // spec.images has docker.io/library/nginx:alpine; the Deployment uses nginx:alpine
	if added := p.AddManifestImages(); len(added) != 0 {
		t.Errorf("added %q, want nothing (nginx:alpine is docker.io/library/nginx:alpine)", added)
	}
	if got := p.ImageRefs(); !slices.Equal(got, []string{"docker.io/library/nginx:alpine"}) {
		t.Errorf("ImageRefs = %q", got)
	}

	// a new init container image, one spelled two ways, and one already listed as written
	spec := p.Spec.Manifests["web.default.deployment"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	spec["initContainers"] = []any{container("busybox"), container("docker.io/library/busybox:latest"), container("ghcr.io/x/y:1")}
	p.Spec.Images["ghcr.io/x/y:1"] = sha256Digest
	added := p.AddManifestImages()
	if !slices.Equal(added, []string{"busybox"}) {
		t.Errorf("added %q, want [busybox]", added)
	}
	if v, ok := p.Spec.Images["busybox"]; !ok || v != "" {
		t.Errorf("spec.images = %v", p.Spec.Images)
	}
	if p.Spec.Images["ghcr.io/x/y:1"] != sha256Digest {
		t.Errorf("existing digest changed")
	}
	if added := p.AddManifestImages(); len(added) != 0 {
		t.Errorf("second call added %q", added)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// no spec.images at all
	q := &kubepkg.KubePkg{Spec: kubepkg.Spec{Manifests: map[string]kubepkg.Manifest{"p": workload("Pod", podSpec("x"))}}}
	added = q.AddManifestImages()
	if want := []string{"shared:1", "x-debug:1", "x-init:1", "x-main:1"}; !slices.Equal(added, want) || !slices.Equal(q.ImageRefs(), want) {
		t.Errorf("added %q, images %q", added, q.ImageRefs())
	}

	// an image that cannot be normalized is added as written, for Validate to report
	r := &kubepkg.KubePkg{Spec: kubepkg.Spec{Manifests: map[string]kubepkg.Manifest{"p": workload("Pod",
		map[string]any{"containers": []any{container("Bad:Ref")}})}}}
	if added := r.AddManifestImages(); !slices.Equal(added, []string{"Bad:Ref"}) {
		t.Errorf("added %q", added)
	}
}
