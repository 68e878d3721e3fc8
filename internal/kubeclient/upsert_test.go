package kubeclient_test

// Unit tests of internal/kubeclient with controller-runtime's fake client
// (no API server): Upsert, the agent's create-or-update of KubePkg objects
// with the semver gate, and the REST configuration's throttling.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
)

func fakeClient(t *testing.T) client.Client {
	t.Helper()
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(kubeclient.GVK, meta.RESTScopeNamespace)
	return fake.NewClientBuilder().WithScheme(runtime.NewScheme()).WithRESTMapper(m).Build()
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
	u := kubeclient.NewKubePkg()
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

const annKeep = "octohelm.tech/keep-resources"

// TestUpsertFake: created, updated, a lower version refused unless forced,
// the force annotation set by a forced write and dropped by the next
// ordinary one; annotations someone else put on the object survive.
func TestUpsertFake(t *testing.T) {
	ctx := context.Background()
	c := fakeClient(t)
	cm := kubepkg.Manifest{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "cfg"}}

	what, err := kubeclient.Upsert(ctx, c, testPkg("1.0.0", cm), "team", false)
	if err != nil || what != "created" {
		t.Fatalf("first Upsert: %q %v", what, err)
	}
	u := getKubePkg(t, c, "team", "demo")
	if v, _, _ := unstructured.NestedString(u.Object, "spec", "version"); v != "1.0.0" {
		t.Errorf("spec.version %q", v)
	}
	if u.GetAnnotations()[kubeclient.AnnotationForceDowngrade] != "" {
		t.Error("an ordinary create set the force annotation")
	}
	// a human keeps the resources on delete
	ann := map[string]string{annKeep: "true"}
	u.SetAnnotations(ann)
	if err := c.Update(ctx, u); err != nil {
		t.Fatal(err)
	}

	if what, err := kubeclient.Upsert(ctx, c, testPkg("1.1.0", cm), "team", false); err != nil || what != "updated" {
		t.Fatalf("upgrade: %q %v", what, err)
	}
	if _, err := kubeclient.Upsert(ctx, c, testPkg("1.0.5", cm), "team", false); err == nil ||
		!strings.Contains(err.Error(), "1.1.0") || !strings.Contains(err.Error(), "1.0.5") {
		t.Errorf("downgrade without force: %v, want an error naming both versions", err)
	}
	u = getKubePkg(t, c, "team", "demo")
	if v, _, _ := unstructured.NestedString(u.Object, "spec", "version"); v != "1.1.0" {
		t.Errorf("a refused downgrade wrote %q", v)
	}
	if what, err := kubeclient.Upsert(ctx, c, testPkg("1.0.5", cm), "team", true); err != nil || what != "updated" {
		t.Fatalf("forced downgrade: %q %v", what, err)
	}
	u = getKubePkg(t, c, "team", "demo")
	if v, _, _ := unstructured.NestedString(u.Object, "spec", "version"); v != "1.0.5" {
		t.Errorf("forced downgrade wrote %q", v)
	}
	if u.GetAnnotations()[kubeclient.AnnotationForceDowngrade] != "true" {
		t.Errorf("forced downgrade: annotations %v", u.GetAnnotations())
	}
	if _, err := kubeclient.Upsert(ctx, c, testPkg("1.2.0", cm), "team", false); err != nil {
		t.Fatal(err)
	}
	u = getKubePkg(t, c, "team", "demo")
	if _, ok := u.GetAnnotations()[kubeclient.AnnotationForceDowngrade]; ok {
		t.Errorf("the ordinary upgrade after a forced one kept the annotation: %v", u.GetAnnotations())
	}
	if u.GetAnnotations()[annKeep] != "true" {
		t.Errorf("Upsert dropped an annotation it does not own: %v", u.GetAnnotations())
	}

	// a forced import of a package the cluster does not have yet
	p := testPkg("0.1.0", cm)
	p.Metadata.Name = "fresh"
	if what, err := kubeclient.Upsert(ctx, c, p, "team", true); err != nil || what != "created" {
		t.Fatalf("forced create: %q %v", what, err)
	}
	if getKubePkg(t, c, "team", "fresh").GetAnnotations()[kubeclient.AnnotationForceDowngrade] != "true" {
		t.Error("forced create without the annotation")
	}

	// a version that is not semver on either side is no reason to refuse
	// (the operator reports it as Invalid)
	if _, err := kubeclient.Upsert(ctx, c, testPkg("latest", cm), "team", false); err != nil {
		t.Errorf("Upsert of a non-semver version: %v", err)
	}
}

// TestRESTConfigUnthrottled: the configuration turns client-go's
// client-side rate limit (5 requests/s, burst 10) off: with it, applying
// 100 ConfigMaps took a minute.
func TestRESTConfigUnthrottled(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := kubeclient.RESTConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS >= 0 || cfg.RateLimiter != nil {
		t.Errorf("QPS %v, Burst %d, RateLimiter %v: client-side throttling is on", cfg.QPS, cfg.Burst, cfg.RateLimiter)
	}
}
