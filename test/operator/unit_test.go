package operator

// Unit tests of internal/operator with controller-runtime's fake client (no
// API server): Upsert, the agent's create-or-update of KubePkg objects with
// the semver gate, and Applier.Objects, how manifests become objects.

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/operator"
)

func fakeClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(kubeclient.GVK, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	return fake.NewClientBuilder().WithScheme(runtime.NewScheme()).WithRESTMapper(m).WithObjects(objs...).Build()
}

func testPkg(version string, manifests ...kubepkg.Manifest) *kubepkg.KubePkg {
	p := &kubepkg.KubePkg{APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
		Metadata: kubepkg.ObjectMeta{Name: "demo"},
		Spec:     kubepkg.Spec{Version: version, Images: map[string]string{}, Manifests: map[string]kubepkg.Manifest{}}}
	for _, m := range manifests {
		p.Spec.Manifests[p.ManifestKey(m)] = m
	}
	return p
}

func getKubePkg(t *testing.T, c client.Client, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kubeclient.GVK)
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestObjectsFake: manifests become objects labelled as crpe's, namespaced
// kinds without a namespace go to the package's, cluster-scoped kinds lose
// any namespace, their own labels stay, unknown kinds come apart.
func TestObjectsFake(t *testing.T) {
	c := fakeClient(t)
	a := operator.NewApplier(c)
	p := testPkg("1.0.0",
		kubepkg.Manifest{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "here", "labels": map[string]any{"mine": "yes"}}},
		kubepkg.Manifest{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "there", "namespace": "elsewhere"}},
		kubepkg.Manifest{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "role", "namespace": "team"}},
		kubepkg.Manifest{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g"}},
	)
	p.Metadata.Namespace = "team"
	objs, unknown, err := a.Objects(p, "team")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		got[o.GetKind()+"/"+o.GetName()] = o
		if o.GetLabels()["app.kubernetes.io/managed-by"] != "crpe" || o.GetLabels()["octohelm.tech/kubepkg"] != "team.demo" {
			t.Errorf("%s/%s labels %v", o.GetKind(), o.GetName(), o.GetLabels())
		}
	}
	if len(objs) != 3 || len(unknown) != 1 || unknown[0].GetKind() != "Gadget" {
		t.Fatalf("objects %v, unknown %v", got, unknown)
	}
	if ns := got["ConfigMap/here"].GetNamespace(); ns != "team" {
		t.Errorf("ConfigMap here in %q, want team", ns)
	}
	if got["ConfigMap/here"].GetLabels()["mine"] != "yes" {
		t.Error("the manifest's own label was lost")
	}
	if ns := got["ConfigMap/there"].GetNamespace(); ns != "elsewhere" {
		t.Errorf("ConfigMap there in %q, want its own elsewhere", ns)
	}
	if ns := got["ClusterRole/role"].GetNamespace(); ns != "" {
		t.Errorf("ClusterRole kept namespace %q", ns)
	}
}
