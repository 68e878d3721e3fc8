package applyorder

import (
	"reflect"
	"sort"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/octohelm/crpe/internal/kubepkg"
)

func obj(apiVersion, kind, ns, name string, annotations map[string]any) kubepkg.Manifest {
	meta := map[string]any{"name": name}
	if ns != "" {
		meta["namespace"] = ns
	}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return kubepkg.Manifest{"apiVersion": apiVersion, "kind": kind, "metadata": meta}
}

func pkgOf(ms ...kubepkg.Manifest) *kubepkg.KubePkg {
	p := &kubepkg.KubePkg{APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
		Metadata: kubepkg.ObjectMeta{Name: "demo", Namespace: "default"},
		Spec:     kubepkg.Spec{Version: "1.0.0", Manifests: map[string]kubepkg.Manifest{}}}
	for _, m := range ms {
		p.Spec.Manifests[p.ManifestKey(m)] = m
	}
	return p
}

func keys(objs []*Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

// TestWithHooks: definitions first, pre-install hooks by weight then name
// after the CRDs and Namespaces, the rest in ssa's kind order, post-install
// hooks last; hooks an install never runs are left out, and --no-hooks
// leaves every hook out.
func TestWithHooks(t *testing.T) {
	hook := func(events string, weight string) map[string]any {
		a := map[string]any{AnnotationHook: events}
		if weight != "" {
			a[AnnotationHookWeight] = weight
		}
		return a
	}
	p := pkgOf(
		obj("apps/v1", "Deployment", "apps", "web", nil),
		obj("example.com/v1", "Widget", "apps", "w1", nil),
		obj("v1", "Service", "apps", "web", nil),
		obj("v1", "ConfigMap", "apps", "conf", nil),
		obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "reader", nil),
		obj("networking.k8s.io/v1", "IngressClass", "", "nginx", nil),
		obj("v1", "Namespace", "", "apps", nil),
		obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com", nil),
		obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "check", nil),
		obj("batch/v1", "Job", "apps", "migrate", hook("pre-install, pre-upgrade", "5")),
		obj("batch/v1", "Job", "apps", "b-setup", hook("pre-install", "-1")),
		obj("v1", "ConfigMap", "apps", "a-setup", hook("pre-upgrade", "-1")),
		obj("batch/v1", "Job", "apps", "notify", hook("post-install", "")),
		obj("batch/v1", "Job", "apps", "first-notify", hook("post-upgrade", "not a number")),
		obj("batch/v1", "Job", "apps", "cleanup", hook("pre-delete", "")),
		obj("v1", "Pod", "apps", "probe", hook("test", "")),
		obj("v1", "ConfigMap", "apps", "old", hook("crd-install", "")),
	)
	objs, err := Objects(p)
	if err != nil {
		t.Fatal(err)
	}
	ordered, left := WithHooks(objs, true)
	want := []string{
		"widgets.example.com.default.customresourcedefinition", "apps.default.namespace",
		"a-setup.apps.configmap", "b-setup.apps.job", "migrate.apps.job",
		"reader.default.clusterrole", "nginx.default.ingressclass",
		"conf.apps.configmap", "web.apps.service", "web.apps.deployment", "w1.apps.widget", "check.default.validatingwebhookconfiguration",
		"first-notify.apps.job", "notify.apps.job",
	}
	if got := keys(ordered); !reflect.DeepEqual(got, want) {
		t.Errorf("order:\n got %v\nwant %v", got, want)
	}
	if got, want := keys(left), []string{"cleanup.apps.job", "old.apps.configmap", "probe.apps.pod"}; !reflect.DeepEqual(got, want) {
		t.Errorf("left out %v, want %v", got, want)
	}

	ordered, left = WithHooks(objs, false)
	want = []string{
		"widgets.example.com.default.customresourcedefinition", "apps.default.namespace",
		"reader.default.clusterrole", "nginx.default.ingressclass",
		"conf.apps.configmap", "web.apps.service", "web.apps.deployment", "w1.apps.widget", "check.default.validatingwebhookconfiguration",
	}
	if got := keys(ordered); !reflect.DeepEqual(got, want) {
		t.Errorf("order without hooks:\n got %v\nwant %v", got, want)
	}
	if len(left) != 8 {
		t.Errorf("without hooks, %d left out, want the 8 hooks: %v", len(left), keys(left))
	}
}

// TestStagesAreTheOperators: Order is the operator's stages (cluster
// definitions, classes, the rest) one after the other, each in ssa's order.
func TestStagesAreTheOperators(t *testing.T) {
	p := pkgOf(
		obj("v1", "Secret", "x", "s", nil),
		obj("storage.k8s.io/v1", "StorageClass", "", "fast", nil),
		obj("v1", "Namespace", "", "x", nil),
		obj("v1", "ServiceAccount", "x", "sa", nil),
	)
	objs, err := Objects(p)
	if err != nil {
		t.Fatal(err)
	}
	var us []*unstructured.Unstructured
	for _, o := range objs {
		us = append(us, o.Object)
	}
	defs, classes, rest := Stages(us)
	if len(defs) != 1 || len(classes) != 1 || len(rest) != 2 {
		t.Errorf("stages: %d definitions, %d classes, %d others", len(defs), len(classes), len(rest))
	}
	var kinds []string
	for _, u := range Order(us) {
		kinds = append(kinds, u.GetKind())
	}
	if want := []string{"Namespace", "StorageClass", "ServiceAccount", "Secret"}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("order %v, want %v", kinds, want)
	}
}

// TestHookLess: hooks by weight, then name, then kind in Helm's install
// order (ServiceAccount before ConfigMap before Job; kinds Helm does not
// list last, by name).
func TestHookLess(t *testing.T) {
	h := func(kind, name, weight string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetKind(kind)
		u.SetName(name)
		u.SetAnnotations(map[string]string{AnnotationHook: "pre-install", AnnotationHookWeight: weight})
		return u
	}
	hooks := []*unstructured.Unstructured{h("Job", "x", "1"), h("Zeta", "same", "0"), h("Job", "same", "0"), h("Alpha", "same", "0"),
		h("ConfigMap", "same", "0"), h("ServiceAccount", "same", "0"), h("Job", "a", "junk"), h("Job", "late", "-1")}
	sort.SliceStable(hooks, func(i, j int) bool { return HookLess(hooks[i], hooks[j]) })
	var got []string
	for _, u := range hooks {
		got = append(got, u.GetKind()+"/"+u.GetName())
	}
	want := []string{"Job/late", "Job/a", "ServiceAccount/same", "ConfigMap/same", "Job/same", "Alpha/same", "Zeta/same", "Job/x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}
