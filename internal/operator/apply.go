// Package operator owns the cluster side of crpe: the KubePkg CRD, the
// apply engine (server-side apply with field manager crpe, forcing
// conflicts, staged: CRDs and Namespaces first, then everything else; an
// inventory of what was applied; pruning with background propagation) shared
// by `crpe apply` and the controller, the controller-runtime reconciler
// behind `crpe operator` (finalizer, semver gate, status with conditions
// Applied and Ready, events, drift correction at each resync), and the
// agent's creation of KubePkg objects after an import.
package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/kubepkg"
)

// Names crpe puts on what it applies.
const (
	FieldManager            = "crpe"
	LabelManagedBy          = "app.kubernetes.io/managed-by"
	LabelKubePkg            = "octohelm.tech/kubepkg"
	AnnotationKeepResources = "octohelm.tech/keep-resources"
	Finalizer               = "octohelm.tech/finalizer"
)

// InventoryEntry names one applied object.
type InventoryEntry struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// ID is the entry's identity, independent of the API version.
func (e InventoryEntry) ID() string {
	return e.Group + "/" + e.Kind + "/" + e.Namespace + "/" + e.Name
}

func (e InventoryEntry) String() string {
	if e.Namespace != "" {
		return e.Kind + "/" + e.Namespace + "/" + e.Name
	}
	return e.Kind + "/" + e.Name
}

func entryOf(u *unstructured.Unstructured) InventoryEntry {
	gvk := u.GroupVersionKind()
	return InventoryEntry{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}
}

// Change is what happened to one object.
type Change struct {
	Object string `json:"object"`
	Action string `json:"action"` // created, configured, unchanged, pruned
}

// ObjectError is an object the API server refused.
type ObjectError struct {
	Object string `json:"object"`
	Error  string `json:"error"`
}

// Result is what an apply did.
type Result struct {
	Changes   []Change         `json:"changes"`
	Failed    []ObjectError    `json:"failed,omitempty"`
	Inventory []InventoryEntry `json:"inventory"`
}

// Count tells how many changes have action.
func (r *Result) Count(action string) int {
	n := 0
	for _, c := range r.Changes {
		if c.Action == action {
			n++
		}
	}
	return n
}

// Options tune an apply.
type Options struct {
	// DryRun asks the API server what would change, changing nothing.
	DryRun bool
	// Prune deletes what Previous holds and the package no longer has.
	Prune    bool
	Previous []InventoryEntry
	// Force recreates objects whose immutable fields changed.
	Force bool
	// Concurrency bounds parallel applies (default 8).
	Concurrency int
	// Owner is the value of the octohelm.tech/kubepkg label of what the
	// package owns (<namespace>.<name>); prune and delete touch nothing else.
	Owner string
}

// Applier applies packages to a cluster.
type Applier struct {
	c  client.Client
	rm *ssa.ResourceManager
}

// NewApplier returns an applier using c.
func NewApplier(c client.Client) *Applier {
	rm := ssa.NewResourceManager(c, nil, ssa.Owner{Field: FieldManager, Group: "octohelm.tech"})
	return &Applier{c: c, rm: rm}
}

// Objects turns a package's manifests into objects: labelled as crpe's,
// namespaced kinds without a namespace placed in the package's namespace,
// cluster-scoped kinds without one. Objects whose kind the API server does
// not know (yet) are returned apart.
func (a *Applier) Objects(pkg *kubepkg.KubePkg, ns string) (objs []*unstructured.Unstructured, unknown []*unstructured.Unstructured, err error) {
	keys := make([]string, 0, len(pkg.Spec.Manifests))
	for k := range pkg.Spec.Manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	owner := ns + "." + pkg.Metadata.Name
	for _, k := range keys {
		b, err := json.Marshal(pkg.Spec.Manifests[k])
		if err != nil {
			return nil, nil, fmt.Errorf("spec.manifests[%q]: %w", k, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			return nil, nil, fmt.Errorf("spec.manifests[%q]: not a Kubernetes object: %w", k, err)
		}
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelManagedBy] = "crpe"
		labels[LabelKubePkg] = owner
		u.SetLabels(labels)
		mapping, err := a.c.RESTMapper().RESTMapping(u.GroupVersionKind().GroupKind(), u.GroupVersionKind().Version)
		if err != nil {
			if meta.IsNoMatchError(err) {
				// most custom kinds are namespaced: named so until known
				if u.GetNamespace() == "" {
					u.SetNamespace(ns)
				}
				unknown = append(unknown, u)
				continue
			}
			return nil, nil, err
		}
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if u.GetNamespace() == "" {
				u.SetNamespace(ns)
			}
		} else {
			u.SetNamespace("")
		}
		objs = append(objs, u)
	}
	return objs, unknown, nil
}

// Apply applies pkg (whose objects default to namespace ns).
func (a *Applier) Apply(ctx context.Context, pkg *kubepkg.KubePkg, ns string, o Options) (*Result, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	o.Owner = ns + "." + pkg.Metadata.Name
	res := &Result{Changes: []Change{}, Inventory: []InventoryEntry{}}
	objs, unknown, err := a.Objects(pkg, ns)
	if err != nil {
		return nil, err
	}
	// stage 1: CRDs and Namespaces, waited for
	var defs, rest []*unstructured.Unstructured
	for _, u := range objs {
		if utils.IsCRD(u) || utils.IsNamespace(u) {
			defs = append(defs, u)
		} else {
			rest = append(rest, u)
		}
	}
	applied := a.applyAll(ctx, defs, o, res)
	if len(applied) > 0 && !o.DryRun {
		if err := a.waitEstablished(ctx, applied); err != nil {
			return nil, err
		}
		// kinds the new CRDs define become known; discovery may lag a
		// moment behind Established, so wait (bounded) for those
		deadline := time.Now().Add(10 * time.Second)
		for len(unknown) > 0 {
			if r, ok := a.c.RESTMapper().(interface{ Reset() }); ok {
				r.Reset()
			}
			again := &kubepkg.KubePkg{Metadata: pkg.Metadata, Spec: kubepkg.Spec{Manifests: map[string]kubepkg.Manifest{}}}
			for i, u := range unknown {
				again.Spec.Manifests[fmt.Sprint(i)] = kubepkg.Manifest(u.Object)
			}
			more, still, err := a.Objects(again, ns)
			if err != nil {
				return nil, err
			}
			rest = append(rest, more...)
			unknown = still
			if !slices.ContainsFunc(still, func(u *unstructured.Unstructured) bool { return definedBy(u, defs) }) || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	for _, u := range unknown {
		if o.DryRun && definedBy(u, defs) {
			res.Changes = append(res.Changes, Change{Object: utils.FmtUnstructured(u), Action: "created"})
			continue
		}
		res.Failed = append(res.Failed, ObjectError{Object: utils.FmtUnstructured(u),
			Error: fmt.Sprintf("the API server does not know kind %s", u.GroupVersionKind())})
	}
	// stage 2: everything else
	a.applyAll(ctx, rest, o, res)
	if o.Prune {
		if err := a.prune(ctx, res, o); err != nil {
			return res, err
		}
	}
	sort.Slice(res.Changes, func(i, j int) bool { return res.Changes[i].Object < res.Changes[j].Object })
	sort.Slice(res.Failed, func(i, j int) bool { return res.Failed[i].Object < res.Failed[j].Object })
	sort.Slice(res.Inventory, func(i, j int) bool { return res.Inventory[i].ID() < res.Inventory[j].ID() })
	return res, nil
}

func definedBy(u *unstructured.Unstructured, defs []*unstructured.Unstructured) bool {
	gk := u.GroupVersionKind().GroupKind()
	for _, d := range defs {
		if !utils.IsCRD(d) {
			continue
		}
		g, _, _ := unstructured.NestedString(d.Object, "spec", "group")
		k, _, _ := unstructured.NestedString(d.Object, "spec", "names", "kind")
		if g == gk.Group && k == gk.Kind {
			return true
		}
	}
	return false
}

// applyAll applies objs concurrently; each failure is recorded, the rest go
// on. It returns the objects applied.
func (a *Applier) applyAll(ctx context.Context, objs []*unstructured.Unstructured, o Options, res *Result) []*unstructured.Unstructured {
	var mu sync.Mutex
	var done []*unstructured.Unstructured
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for _, u := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var entry *ssa.ChangeSetEntry
			var err error
			if o.DryRun {
				entry, _, _, err = a.rm.Diff(ctx, u, ssa.DiffOptions{})
			} else {
				opts := ssa.DefaultApplyOptions()
				opts.Force = o.Force
				entry, err = a.rm.Apply(ctx, u, opts)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed = append(res.Failed, ObjectError{Object: utils.FmtUnstructured(u), Error: apiMessage(err)})
				return
			}
			res.Changes = append(res.Changes, Change{Object: entry.Subject, Action: string(entry.Action)})
			res.Inventory = append(res.Inventory, entryOf(u))
			done = append(done, u)
		}()
	}
	wg.Wait()
	return done
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

func (a *Applier) waitEstablished(ctx context.Context, objs []*unstructured.Unstructured) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, u := range objs {
		if !utils.IsCRD(u) {
			continue
		}
		err := wait.PollUntilContextCancel(wctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(u.GroupVersionKind())
			if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s was not established in time", u.GetName())
		}
	}
	return nil
}

// prune deletes what the previous inventory holds and the new one does not
// (only objects still labelled as this package's), in the background.
func (a *Applier) prune(ctx context.Context, res *Result, o Options) error {
	keep := map[string]bool{}
	for _, e := range res.Inventory {
		keep[e.ID()] = true
	}
	for _, f := range res.Failed {
		// a refused object of the new version is still wanted: keep its
		// previous entry rather than delete it
		for _, e := range o.Previous {
			if e.String() == f.Object || strings.HasSuffix(f.Object, e.Kind+"/"+e.Namespace+"/"+e.Name) || strings.HasSuffix(f.Object, e.Kind+"/"+e.Name) {
				keep[e.ID()] = true
				res.Inventory = append(res.Inventory, e)
			}
		}
	}
	var gone []*unstructured.Unstructured
	for _, e := range o.Previous {
		if keep[e.ID()] {
			continue
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: e.Group, Version: e.Version, Kind: e.Kind})
		u.SetNamespace(e.Namespace)
		u.SetName(e.Name)
		gone = append(gone, u)
	}
	if len(gone) == 0 {
		return nil
	}
	if o.DryRun {
		for _, u := range gone {
			res.Changes = append(res.Changes, Change{Object: utils.FmtUnstructured(u), Action: "pruned"})
		}
		return nil
	}
	// delete namespaced objects before namespaces and CRDs
	sort.SliceStable(gone, func(i, j int) bool { return !isDef(gone[i]) && isDef(gone[j]) })
	for _, u := range gone {
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(u.GroupVersionKind())
		if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
			if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
				continue
			}
			return fmt.Errorf("prune %s: %w", utils.FmtUnstructured(u), err)
		}
		if o.Owner != "" && cur.GetLabels()[LabelKubePkg] != o.Owner {
			continue // not (or no longer) this package's
		}
		err := a.c.Delete(ctx, cur, client.PropagationPolicy(metav1.DeletePropagationBackground))
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("prune %s: %w", utils.FmtUnstructured(u), err)
		}
		res.Changes = append(res.Changes, Change{Object: utils.FmtUnstructured(u), Action: "pruned"})
	}
	return nil
}

func isDef(u *unstructured.Unstructured) bool { return utils.IsCRD(u) || utils.IsNamespace(u) }

// Delete removes everything an inventory names that still carries owner's
// label (background propagation).
func (a *Applier) Delete(ctx context.Context, owner string, inv []InventoryEntry) error {
	return a.prune(ctx, &Result{}, Options{Prune: true, Previous: inv, Owner: owner})
}

// prunableKinds are the kinds Owned searches for objects of a package.
var prunableKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "ConfigMap"}, {Version: "v1", Kind: "Secret"}, {Version: "v1", Kind: "Service"},
	{Version: "v1", Kind: "ServiceAccount"}, {Version: "v1", Kind: "PersistentVolumeClaim"}, {Version: "v1", Kind: "Pod"},
	{Version: "v1", Kind: "Namespace"},
	{Group: "apps", Version: "v1", Kind: "Deployment"}, {Group: "apps", Version: "v1", Kind: "StatefulSet"},
	{Group: "apps", Version: "v1", Kind: "DaemonSet"}, {Group: "batch", Version: "v1", Kind: "Job"},
	{Group: "batch", Version: "v1", Kind: "CronJob"}, {Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}, {Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, {Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
}

// Owned finds, by label, the objects of the common kinds that carry owner's
// octohelm.tech/kubepkg label: the inventory of `crpe apply --prune`, which
// has no status to keep one in.
func (a *Applier) Owned(ctx context.Context, owner string) ([]InventoryEntry, error) {
	var out []InventoryEntry
	for _, gvk := range prunableKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := a.c.List(ctx, list, client.MatchingLabels{LabelKubePkg: owner}); err != nil {
			if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				continue
			}
			return nil, err
		}
		for i := range list.Items {
			u := &list.Items[i]
			u.SetGroupVersionKind(gvk)
			out = append(out, entryOf(u))
		}
	}
	return out, nil
}
