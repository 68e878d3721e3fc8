package operator

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/kubepkg"
)

//go:embed crd.yaml
var crdYAML []byte

// CRD returns the KubePkg CustomResourceDefinition.
func CRD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crdYAML, &u.Object); err != nil {
		panic(err)
	}
	return u
}

// CRDYAML is the CRD as YAML.
func CRDYAML() []byte { return crdYAML }

// RESTConfig loads a kubeconfig file, or the in-cluster configuration when
// path is empty (falling back to $KUBECONFIG and ~/.kube/config).
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			return unthrottled(c), nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return unthrottled(c), nil
}

// unthrottled turns off client-go's client-side rate limit (5 requests/s by
// default): an apply costs up to three requests per object and is already
// bounded by its concurrency, and the API server has its own priority and
// fairness.
func unthrottled(c *rest.Config) *rest.Config {
	c.QPS = -1
	c.Burst = 0
	return c
}

// NewClient returns a controller-runtime client for unstructured objects.
func NewClient(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: runtime.NewScheme()})
}

// InstallCRD applies the KubePkg CRD and waits until it is established.
func InstallCRD(ctx context.Context, c client.Client) error {
	a := NewApplier(c)
	crd := CRD()
	res := &Result{}
	applied := a.applyAll(ctx, []*unstructured.Unstructured{crd}, Options{Concurrency: 1}, res)
	if len(res.Failed) > 0 {
		return fmt.Errorf("installing the KubePkg CRD: %s", res.Failed[0].Error)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return a.waitEstablished(wctx, applied)
}

// Upsert creates or updates the KubePkg object of pkg in namespace ns,
// honouring the semver gate: a lower version than the object's is refused
// unless forced, and a forced downgrade annotates the object so that the
// operator follows. It returns what it did.
func Upsert(ctx context.Context, c client.Client, pkg *kubepkg.KubePkg, ns string, forced bool) (string, error) {
	// the object is built from what a package is, not from whatever cluster
	// metadata (resourceVersion, uid, status) the package may carry
	placed := *pkg
	placed.Metadata = kubepkg.ObjectMeta{Name: pkg.Metadata.Name, Namespace: ns, Labels: pkg.Metadata.Labels, Annotations: pkg.Metadata.Annotations}
	placed.Status = nil
	placed.Extra = nil
	// manifests without a namespace of their own follow the package into ns:
	// their keys say so
	placed.Spec.Manifests = map[string]kubepkg.Manifest{}
	for _, m := range pkg.Spec.Manifests {
		placed.Spec.Manifests[placed.ManifestKey(m)] = m
	}
	b, err := kubepkg.Marshal([]*kubepkg.KubePkg{&placed})
	if err != nil {
		return "", err
	}
	want := &unstructured.Unstructured{}
	if err := want.UnmarshalJSON(b); err != nil {
		return "", err
	}
	want.SetNamespace(ns)
	delete(want.Object, "status")
	cur := newKubePkg()
	err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: pkg.Metadata.Name}, cur)
	switch {
	case err != nil && client.IgnoreNotFound(err) == nil:
		if forced {
			setAnnotation(want, AnnotationForceDowngrade, "true")
		}
		if err := c.Create(ctx, want); err != nil {
			return "", err
		}
		return "created", nil
	case err != nil:
		return "", err
	}
	curVersion, _, _ := unstructured.NestedString(cur.Object, "spec", "version")
	if nv, e1 := kubepkg.ParseVersion(pkg.Spec.Version); e1 == nil {
		if ov, e2 := kubepkg.ParseVersion(curVersion); e2 == nil && nv.LessThan(ov) && !forced {
			return "", fmt.Errorf("KubePkg %s/%s is at %s; %s is lower (force to downgrade)", ns, pkg.Metadata.Name, curVersion, pkg.Spec.Version)
		}
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Object["spec"] = want.Object["spec"]
	labels := cur.GetLabels()
	for k, v := range want.GetLabels() {
		if labels == nil {
			labels = map[string]string{}
		}
		labels[k] = v
	}
	cur.SetLabels(labels)
	ann := cur.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	for k, v := range want.GetAnnotations() {
		ann[k] = v
	}
	if forced {
		ann[AnnotationForceDowngrade] = "true"
	} else {
		delete(ann, AnnotationForceDowngrade)
	}
	cur.SetAnnotations(ann)
	if err := c.Patch(ctx, cur, patch); err != nil {
		return "", err
	}
	return "updated", nil
}

func setAnnotation(u *unstructured.Unstructured, k, v string) {
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[k] = v
	u.SetAnnotations(ann)
}
