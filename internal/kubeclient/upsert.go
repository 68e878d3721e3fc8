package kubeclient

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/kubepkg"
)

// Upsert creates or updates the KubePkg object of pkg in namespace ns,
// honouring the semver gate: a lower version than the object's is refused
// unless forced, and a forced downgrade annotates the object so that the
// operator follows. It returns what it did ("created" or "updated").
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
	cur := NewKubePkg()
	err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: pkg.Metadata.Name}, cur)
	switch {
	case err != nil && client.IgnoreNotFound(err) == nil:
		if forced {
			setAnnotation(want, AnnotationForceDowngrade, "true")
		}
		if err := c.Create(ctx, want); err != nil {
			return "", err
		}
		return "created", patchSignatures(ctx, c, want, pkg)
	case err != nil:
		return "", err
	}
	curVersion, _, _ := unstructured.NestedString(cur.Object, "spec", "version")
	if !forced && kubepkg.IsDowngrade(curVersion, pkg.Spec.Version) {
		return "", fmt.Errorf("KubePkg %s/%s is at %s; %s is lower (force to downgrade)", ns, pkg.Metadata.Name, curVersion, pkg.Spec.Version)
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
	return "updated", patchSignatures(ctx, c, cur, pkg)
}

// patchSignatures records the import's signature verdicts (the package's
// status.signatures) in the object's status, a merge patch of that field
// alone: the operator's fields are left as they are.
func patchSignatures(ctx context.Context, c client.Client, obj *unstructured.Unstructured, pkg *kubepkg.KubePkg) error {
	sigs, err := pkg.StatusSignatures()
	if err != nil || sigs == nil {
		return err
	}
	b, err := json.Marshal(map[string]any{"status": map[string]any{"signatures": sigs}})
	if err != nil {
		return err
	}
	if err := c.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, b)); err != nil {
		return fmt.Errorf("recording the signature verdicts in its status: %w", err)
	}
	return nil
}

func setAnnotation(u *unstructured.Unstructured, k, v string) {
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[k] = v
	u.SetAnnotations(ann)
}
