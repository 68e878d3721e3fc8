// Package operator owns the cluster side of crpe: the KubePkg CRD, the
// apply engine shared by `crpe apply` and the controller, and the
// controller-runtime reconciler behind `crpe operator` (finalizer, semver
// gate, status with conditions Applied, Ready and Stalled, events, drift
// correction at each resync).
//
// The engine is server-side apply with field manager crpe, forcing
// conflicts, staged as fluxcd/pkg/ssa stages (cluster definitions — CRDs,
// Namespaces, ClusterRoles — then class definitions, each waited for with
// ssa's kstatus poller, then everything else), an inventory of what was
// applied, and pruning through ssa's DeleteAll with background
// propagation. It costs what `kubectl apply --server-side` costs: the
// package's objects already in the cluster are read with one LIST per kind
// and namespace (by crpe's octohelm.tech/kubepkg label), an object is
// compared with its live copy locally (drift.go), and only an object that
// is new or changed is applied (one request); a dry run is made only where
// the local comparison cannot decide. Helm hooks in a package run around
// the apply as Helm runs them (hooks.go). Reaching the cluster is
// internal/kubeclient's.
package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/clusterreader"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	"github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/applyorder"
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

// Actions of a Change.
const (
	ActionCreated    = string(ssa.CreatedAction)
	ActionConfigured = string(ssa.ConfiguredAction)
	ActionUnchanged  = string(ssa.UnchangedAction)
	ActionPruned     = "pruned"
)

// How long definitions (CRDs, Namespaces) are waited for, and how often
// they are polled meanwhile.
const (
	defsTimeout  = 60 * time.Second
	defsInterval = 200 * time.Millisecond
	// kinds a package's CRDs define may take a moment longer than
	// Established to be served by discovery
	kindsTimeout = 10 * time.Second
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

func (e InventoryEntry) objMeta() object.ObjMetadata {
	return object.ObjMetadata{GroupKind: schema.GroupKind{Group: e.Group, Kind: e.Kind}, Namespace: e.Namespace, Name: e.Name}
}

func (e InventoryEntry) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: e.Group, Version: e.Version, Kind: e.Kind}
}

func (e InventoryEntry) stub() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(e.gvk())
	u.SetNamespace(e.Namespace)
	u.SetName(e.Name)
	return u
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
	// Hooks is the hook cycle this apply ran (nil when it ran none).
	Hooks *HookStatus `json:"hooks,omitempty"`

	// where the stages of hooks stand after this apply (nil when none ran);
	// the rest of the package is applied only once pre is done
	pre, post *hookProgress

	// the state of each object of the inventory as last seen: the apply's
	// response, or the live copy when nothing was applied
	objects map[object.ObjMetadata]*unstructured.Unstructured
	failed  map[object.ObjMetadata]bool
}

func newResult() *Result {
	return &Result{Changes: []Change{}, Inventory: []InventoryEntry{},
		objects: map[object.ObjMetadata]*unstructured.Unstructured{}, failed: map[object.ObjMetadata]bool{}}
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

// Object returns the last seen state of an inventory entry's object (nil
// when unknown).
func (r *Result) Object(e InventoryEntry) *unstructured.Unstructured {
	return r.objects[e.objMeta()]
}

func (r *Result) fail(u *unstructured.Unstructured, msg string) {
	r.Failed = append(r.Failed, ObjectError{Object: utils.FmtUnstructured(u), Error: msg})
	r.failed[object.UnstructuredToObjMetadata(u)] = true
}

func (r *Result) done(u *unstructured.Unstructured, action string, state *unstructured.Unstructured) {
	r.Changes = append(r.Changes, Change{Object: utils.FmtUnstructured(u), Action: action})
	r.Inventory = append(r.Inventory, entryOf(u))
	if state != nil {
		r.objects[object.UnstructuredToObjMetadata(u)] = state
	}
}

func (r *Result) sort() {
	sort.Slice(r.Changes, func(i, j int) bool { return r.Changes[i].Object < r.Changes[j].Object })
	sort.Slice(r.Failed, func(i, j int) bool { return r.Failed[i].Object < r.Failed[j].Object })
	sort.Slice(r.Inventory, func(i, j int) bool { return r.Inventory[i].ID() < r.Inventory[j].ID() })
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
	// Concurrency bounds parallel requests (default 8).
	Concurrency int
	// Owner is the value of the octohelm.tech/kubepkg label of what the
	// package owns (<namespace>.<name>); prune and delete touch nothing else.
	Owner string
	// HookTimeout bounds each hook's run, and Applier.Apply's wait for the
	// package to be ready before its post hooks (DefaultHookTimeout).
	HookTimeout time.Duration
	// HookPoll is how often Applier.Apply looks at a running hook (1s).
	HookPoll time.Duration
	// Clock tells the time of hook runs (time.Now when nil).
	Clock func() time.Time
}

// Applier applies packages to a cluster.
type Applier struct {
	c  client.Client
	rm *ssa.ResourceManager
}

// NewApplier returns an applier using c.
func NewApplier(c client.Client) *Applier {
	// definitions are waited for by reading them, not by listing their kind
	// across the cluster at every poll
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{
		ClusterReaderFactory: engine.ClusterReaderFactoryFunc(clusterreader.NewDirectClusterReader)})
	rm := ssa.NewResourceManager(c, poller, ssa.Owner{Field: FieldManager, Group: "octohelm.tech"})
	return &Applier{c: c, rm: rm}
}

// Objects turns a package's manifests into objects: labelled as crpe's,
// namespaced kinds without a namespace placed in the package's namespace,
// cluster-scoped kinds without one (the scope of a kind the cluster does
// not know yet comes from the package's own CRD of it). Objects whose kind
// neither the API server nor the package defines are returned apart.
func (a *Applier) Objects(pkg *kubepkg.KubePkg, ns string) (objs []*unstructured.Unstructured, unknown []*unstructured.Unstructured, err error) {
	keys := make([]string, 0, len(pkg.Spec.Manifests))
	for k := range pkg.Spec.Manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	owner := ns + "." + pkg.Metadata.Name
	all := make([]*unstructured.Unstructured, 0, len(keys))
	var crds []*unstructured.Unstructured
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
		if utils.IsCRD(u) {
			utils.RemoveCABundleFromCRD(u)
			crds = append(crds, u)
		}
		all = append(all, u)
	}
	for _, u := range all {
		scope, err := object.LookupResourceScope(u, crds, a.c.RESTMapper())
		if err != nil {
			var unknownType *object.UnknownTypeError
			if !errors.As(err, &unknownType) && !meta.IsNoMatchError(err) {
				return nil, nil, err
			}
			// most custom kinds are namespaced: named so until known
			if u.GetNamespace() == "" {
				u.SetNamespace(ns)
			}
			unknown = append(unknown, u)
			continue
		}
		if scope.Name() == meta.RESTScopeNameNamespace {
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

// Apply applies pkg (whose objects default to namespace ns) and runs its
// Helm hooks (hooks.go) as one install or upgrade of its version, waiting
// for each hook, and for the package to be ready before its post hooks.
// Where the hooks stand is kept in a ConfigMap crpe-hooks.<name> (only for
// a package that has hooks), so that the same version applied again runs
// none. A failed hook is returned as a *HookError, with the result so far.
// A dry run runs no hook: Result.Hooks tells what would run.
func (a *Applier) Apply(ctx context.Context, pkg *kubepkg.KubePkg, ns string, o Options) (*Result, error) {
	p, err := a.Prepare(ctx, pkg, ns, o)
	if err != nil {
		return nil, err
	}
	var hs *HookStatus
	if len(p.hooks) > 0 || len(p.ignored) > 0 {
		rec, err := a.readHookRecord(ctx, ns, pkg.Metadata.Name)
		if err != nil {
			return nil, err
		}
		applied := ""
		if rec != nil {
			applied = rec.Version
			if rec.pre() {
				applied = rec.From
			}
		}
		if hs = p.HookCycle(rec, applied); !hs.active(p.version) {
			hs = nil
		}
	}
	if p.o.DryRun {
		res, err := p.Apply(ctx, nil)
		if res != nil && hs != nil {
			res.Hooks = p.wouldRun(hs)
		}
		return res, err
	}
	var saved []byte
	save := func(ctx context.Context) error {
		if hs == nil {
			return nil
		}
		b, err := json.Marshal(hs)
		if err != nil || bytes.Equal(b, saved) {
			return err
		}
		if err := a.writeHookRecord(ctx, ns, pkg.Metadata.Name, p.o.Owner, b); err != nil {
			return err
		}
		saved = b
		return nil
	}
	wait := func(ctx context.Context) error {
		if err := save(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.o.HookPoll):
			return nil
		}
	}
	res, err := p.apply(ctx, hs, wait)
	if err == nil {
		err = save(ctx)
	}
	if err != nil || hs == nil {
		return res, err
	}
	res.Hooks = hs
	if res.pre != nil && res.pre.failed != nil {
		return res, &HookError{Run: *res.pre.failed}
	}
	if len(res.Failed) > 0 || !hs.active(p.version) || hs.pre() {
		return res, nil
	}
	if len(p.hooksOf(hs.Stage)) > 0 {
		if err := a.waitReady(ctx, res, p.o.HookTimeout); err != nil {
			return res, fmt.Errorf("the %s hooks did not run: the package is not ready: %w", hs.Stage, err)
		}
	}
	prog, err := p.runStage(ctx, hs, wait)
	if err == nil {
		err = save(ctx)
	}
	res.post = &prog
	if err != nil {
		return res, err
	}
	if prog.failed != nil {
		return res, &HookError{Run: *prog.failed}
	}
	return res, nil
}

// Plan is a package ready to be applied: its objects, its hooks, and what
// the cluster has of its objects.
type Plan struct {
	a             *Applier
	version       string
	objs, unknown []*unstructured.Unstructured
	hooks         []*Hook
	ignored       []string
	live          liveSet
	o             Options
}

// Prepare turns pkg into objects and hooks and reads what the cluster has
// of the objects (one LIST per kind and namespace); it writes nothing.
func (a *Applier) Prepare(ctx context.Context, pkg *kubepkg.KubePkg, ns string, o Options) (*Plan, error) {
	o.Owner = ns + "." + pkg.Metadata.Name
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.HookTimeout <= 0 {
		o.HookTimeout = DefaultHookTimeout
	}
	if o.HookPoll <= 0 {
		o.HookPoll = defaultHookPoll
	}
	objs, unknown, err := a.Objects(pkg, ns)
	if err != nil {
		return nil, err
	}
	objs, hooks, ignored := splitHooks(objs)
	unknown, more, ignoredMore := splitHooks(unknown)
	hooks = append(hooks, more...)
	sortHooks(hooks)
	live := a.observe(ctx, objs, o)
	return &Plan{a: a, version: pkg.Spec.Version, objs: objs, unknown: unknown, hooks: hooks,
		ignored: append(ignored, ignoredMore...), live: live, o: o}, nil
}

// Ignored tells which hooks of the package are not run, and why.
func (p *Plan) Ignored() []string { return p.ignored }

// Apply applies the plan without waiting for hooks. With hs (from
// HookCycle) at a stage of pre hooks, the package's CRDs and Namespaces go
// first, then the stage's hooks as far as they go without waiting; the rest
// of the package (and the prune) only once they all succeeded: until then
// the result holds the CRDs and Namespaces alone. Post hooks are RunHooks'.
func (p *Plan) Apply(ctx context.Context, hs *HookStatus) (*Result, error) {
	return p.apply(ctx, hs, nil)
}

// apply is Apply; wait, when set, is called between the steps of a stage
// of pre hooks until it is done (or a hook failed).
func (p *Plan) apply(ctx context.Context, hs *HookStatus, wait func(context.Context) error) (*Result, error) {
	res := newResult()
	defs, rest := splitDefinitions(p.objs)
	if hs.active(p.version) && hs.pre() && !p.o.DryRun {
		// the CRDs and Namespaces before the pre hooks (applyorder.WithHooks'
		// order), the other definitions after them
		var first, later []*unstructured.Unstructured
		for _, u := range defs[0] {
			if utils.IsCRD(u) || utils.IsNamespace(u) {
				first = append(first, u)
			} else {
				later = append(later, u)
			}
		}
		if err := p.a.applyDefinitions(ctx, [2][]*unstructured.Unstructured{first, nil}, p.live, p.o, res); err != nil {
			return nil, err
		}
		prog, err := p.runStage(ctx, hs, wait)
		res.pre = &prog
		if err != nil || !prog.done {
			res.sort()
			return res, err
		}
		defs[0] = later
	}
	if err := p.a.applyDefinitions(ctx, defs, p.live, p.o, res); err != nil {
		return nil, err
	}
	rest = p.a.awaitKinds(ctx, rest, p.o, res)
	p.a.applySet(ctx, rest, p.live, p.o, res)
	for _, u := range p.unknown {
		res.fail(u, fmt.Sprintf("the API server does not know kind %s", u.GroupVersionKind()))
	}
	if p.o.Prune {
		if err := p.a.prune(ctx, res, p.live, p.o, p.hooks); err != nil {
			return res, err
		}
	}
	res.sort()
	return res, nil
}

// RunHooks advances hs's stage of post hooks (the package being applied and
// ready) as far as it goes without waiting; res records it.
func (p *Plan) RunHooks(ctx context.Context, hs *HookStatus, res *Result) error {
	if !hs.active(p.version) || hs.pre() {
		return nil
	}
	prog, err := p.runStage(ctx, hs, nil)
	res.post = &prog
	return err
}

// applyObjects applies objs in ssa's stages (live holds what the cluster
// has of them); each refused object is recorded and the rest go on. An
// error is returned only when a stage's definitions do not become ready.
func (a *Applier) applyObjects(ctx context.Context, objs []*unstructured.Unstructured, live liveSet, o Options) (*Result, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	res := newResult()
	defs, rest := splitDefinitions(objs)
	if err := a.applyDefinitions(ctx, defs, live, o, res); err != nil {
		return nil, err
	}
	rest = a.awaitKinds(ctx, rest, o, res)
	a.applySet(ctx, rest, live, o, res)
	return res, nil
}

// splitDefinitions splits objs into the first two stages of applyorder
// (cluster definitions — CRDs, Namespaces, ClusterRoles — then class
// definitions) and the rest.
func splitDefinitions(objs []*unstructured.Unstructured) (stages [2][]*unstructured.Unstructured, rest []*unstructured.Unstructured) {
	defs, classes, rest := applyorder.Stages(objs)
	return [2][]*unstructured.Unstructured{defs, classes}, rest
}

// applyDefinitions applies the definitions stage by stage, each waited for
// until ready (an error when they do not become ready).
func (a *Applier) applyDefinitions(ctx context.Context, stages [2][]*unstructured.Unstructured, live liveSet, o Options, res *Result) error {
	for _, stage := range stages {
		changed := a.applySet(ctx, stage, live, o, res)
		if len(changed) == 0 || o.DryRun {
			continue
		}
		set := object.UnstructuredSetToObjMetadataSet(changed)
		if err := a.rm.WaitForSetWithContext(ctx, set, ssa.WaitOptions{Interval: defsInterval, Timeout: defsTimeout}); err != nil {
			return err
		}
		// their ready state, for the package's readiness
		for _, u := range changed {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(u.GroupVersionKind())
			if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err == nil {
				res.objects[object.UnstructuredToObjMetadata(u)] = cur
			}
		}
	}
	return nil
}

// awaitKinds returns objs without those whose kind the API server does not
// serve yet: kinds defined by CRDs of the same apply, waited for (bounded)
// after their CRD was established; in a dry run, reported as created.
func (a *Applier) awaitKinds(ctx context.Context, objs []*unstructured.Unstructured, o Options, res *Result) []*unstructured.Unstructured {
	pending := func(objs []*unstructured.Unstructured) (known, waiting []*unstructured.Unstructured) {
		for _, u := range objs {
			gvk := u.GroupVersionKind()
			if _, err := a.c.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				waiting = append(waiting, u)
			} else {
				known = append(known, u)
			}
		}
		return known, waiting
	}
	known, waiting := pending(objs)
	if len(waiting) == 0 {
		return known
	}
	if o.DryRun {
		for _, u := range waiting {
			res.done(u, ActionCreated, nil)
		}
		return known
	}
	deadline := time.Now().Add(kindsTimeout)
	for len(waiting) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			deadline = time.Now()
			continue
		case <-time.After(250 * time.Millisecond):
		}
		var more []*unstructured.Unstructured
		more, waiting = pending(waiting)
		known = append(known, more...)
	}
	for _, u := range waiting {
		res.fail(u, fmt.Sprintf("the API server does not know kind %s", u.GroupVersionKind()))
	}
	return known
}

// listKey names one LIST: a kind in a namespace ("" for cluster-scoped).
type listKey struct {
	gvk schema.GroupVersionKind
	ns  string
}

// liveSet holds the package's objects found in the cluster.
type liveSet struct {
	objs   map[object.ObjMetadata]*unstructured.Unstructured
	listed map[listKey]bool
}

// lookup returns u's live copy; known is false when no LIST covered it.
func (l liveSet) lookup(u *unstructured.Unstructured) (cur *unstructured.Unstructured, known bool) {
	if !l.listed[listKey{u.GroupVersionKind(), u.GetNamespace()}] {
		return nil, false
	}
	return l.objs[object.UnstructuredToObjMetadata(u)], true
}

// observe lists, by the owner's label, the kinds and namespaces of objs and
// of the previous inventory (when pruning): one request per kind and namespace, instead of
// one per object. A LIST that fails (not allowed, say) leaves its objects
// unknown: they are read one by one.
func (a *Applier) observe(ctx context.Context, objs []*unstructured.Unstructured, o Options) liveSet {
	live := liveSet{objs: map[object.ObjMetadata]*unstructured.Unstructured{}, listed: map[listKey]bool{}}
	if o.Owner == "" {
		return live
	}
	keys := map[listKey]bool{}
	for _, u := range objs {
		keys[listKey{u.GroupVersionKind(), u.GetNamespace()}] = true
	}
	if o.Prune {
		for _, e := range o.Previous {
			keys[listKey{e.gvk(), e.Namespace}] = true
		}
	}
	for k := range keys {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(k.gvk.GroupVersion().WithKind(k.gvk.Kind + "List"))
		opts := []client.ListOption{client.MatchingLabels{LabelKubePkg: o.Owner}}
		if k.ns != "" {
			opts = append(opts, client.InNamespace(k.ns))
		}
		if err := a.c.List(ctx, list, opts...); err != nil {
			continue
		}
		live.listed[k] = true
		for i := range list.Items {
			u := &list.Items[i]
			u.SetGroupVersionKind(k.gvk)
			if k.ns == "" && u.GetNamespace() != "" {
				continue // a namespaced kind listed as cluster-scoped
			}
			live.objs[object.UnstructuredToObjMetadata(u)] = u
		}
	}
	return live
}

// outcome is what applying one object did.
type outcome struct {
	action string
	state  *unstructured.Unstructured
	err    error
}

// applySet applies objs concurrently (bounded) and records the outcomes in
// res; it returns the objects created or configured.
func (a *Applier) applySet(ctx context.Context, objs []*unstructured.Unstructured, live liveSet, o Options, res *Result) []*unstructured.Unstructured {
	if len(objs) == 0 {
		return nil
	}
	applyorder.Sort(objs)
	outs := make([]outcome, len(objs))
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, u := range objs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			outs[i] = a.applyOne(ctx, u, live, o)
		}()
	}
	wg.Wait()
	var changed []*unstructured.Unstructured
	for i, u := range objs {
		out := outs[i]
		if out.err != nil {
			res.fail(u, apiMessage(out.err))
			continue
		}
		res.done(u, out.action, out.state)
		if out.action == ActionCreated || out.action == ActionConfigured {
			changed = append(changed, u)
		}
	}
	return changed
}

// applyOne brings one object to its desired state with as few requests as
// it can: none when its live copy shows it in sync, one apply when it is
// new or changed, a dry run first only when the live copy cannot tell.
func (a *Applier) applyOne(ctx context.Context, u *unstructured.Unstructured, live liveSet, o Options) outcome {
	cur, known := live.lookup(u)
	if !known {
		cur = &unstructured.Unstructured{}
		cur.SetGroupVersionKind(u.GroupVersionKind())
		if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
			if !apierrors.IsNotFound(err) {
				return outcome{err: err}
			}
			cur = nil
		}
	}
	if cur == nil {
		return a.create(ctx, u, o)
	}
	switch compare(u, cur) {
	case inSync:
		return outcome{action: ActionUnchanged, state: cur}
	case drifted:
		if !o.DryRun {
			return a.update(ctx, u, cur, o)
		}
	}
	dry := u.DeepCopy()
	if err := a.patch(ctx, dry, true); err != nil {
		return a.refused(ctx, u, cur, err, o)
	}
	if !hasDrifted(cur, dry) {
		return outcome{action: ActionUnchanged, state: cur}
	}
	if o.DryRun {
		return outcome{action: ActionConfigured, state: dry}
	}
	return a.update(ctx, u, cur, o)
}

// create applies an object the package's LIST did not find: absent, or
// there without crpe's label.
func (a *Applier) create(ctx context.Context, u *unstructured.Unstructured, o Options) outcome {
	out := u.DeepCopy()
	if err := a.patch(ctx, out, o.DryRun); err != nil {
		return a.refused(ctx, u, nil, err, o)
	}
	action := ActionCreated
	if o.DryRun && out.GetResourceVersion() != "" || !o.DryRun && adopted(out) {
		action = ActionConfigured
	}
	return outcome{action: action, state: out}
}

// adopted tells, from an apply's response, whether the object existed
// before: another field manager has fields in it, or crpe's apply is later
// than the object's creation.
func adopted(u *unstructured.Unstructured) bool {
	created := u.GetCreationTimestamp()
	for _, e := range u.GetManagedFields() {
		if e.Manager != FieldManager || e.Operation != metav1.ManagedFieldsOperationApply {
			return true
		}
		if e.Time != nil && !created.IsZero() && e.Time.Sub(created.Time) > 2*time.Second {
			return true
		}
	}
	return false
}

// update applies an object whose live copy is cur.
func (a *Applier) update(ctx context.Context, u, cur *unstructured.Unstructured, o Options) outcome {
	out := u.DeepCopy()
	if err := a.patch(ctx, out, false); err != nil {
		return a.refused(ctx, u, cur, err, o)
	}
	if out.GetResourceVersion() == cur.GetResourceVersion() {
		return outcome{action: ActionUnchanged, state: out}
	}
	return outcome{action: ActionConfigured, state: out}
}

// refused handles an apply the API server refused: with Force, an object
// whose immutable fields changed is recreated by ssa (deleted, waited for,
// applied); anything else is the object's failure.
func (a *Applier) refused(ctx context.Context, u, cur *unstructured.Unstructured, err error, o Options) outcome {
	if !o.Force || o.DryRun || cur == nil || !ssaerrors.IsImmutableError(err) {
		return outcome{err: err}
	}
	opts := ssa.DefaultApplyOptions()
	opts.Force = true
	opts.WaitInterval = defsInterval
	cs, err := a.rm.ApplyAll(ctx, []*unstructured.Unstructured{u.DeepCopy()}, opts)
	if err != nil {
		return outcome{err: err}
	}
	action := ActionCreated
	if len(cs.Entries) == 1 {
		action = string(cs.Entries[0].Action)
	}
	state := &unstructured.Unstructured{}
	state.SetGroupVersionKind(u.GroupVersionKind())
	if err := a.c.Get(ctx, client.ObjectKeyFromObject(u), state); err != nil {
		state = nil
	}
	return outcome{action: action, state: state}
}

// patch server-side applies u as crpe, forcing conflicts; u becomes the
// response.
func (a *Applier) patch(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	opts := []client.PatchOption{client.ForceOwnership, client.FieldOwner(FieldManager)}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return a.c.Patch(ctx, u, client.Apply, opts...)
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

// prune deletes what the previous inventory holds and this apply does not
// (a refused object's previous entry is kept), through ssa's DeleteAll:
// only objects still labelled as this package's, namespaced ones before
// Namespaces and CRDs, with background propagation. Entries whose objects
// the apply's LIST showed gone are skipped, and so are the package's hooks
// (an object that became a hook is no longer pruned as an object).
func (a *Applier) prune(ctx context.Context, res *Result, live liveSet, o Options, hooks []*Hook) error {
	previous := map[object.ObjMetadata]InventoryEntry{}
	var before, now object.ObjMetadataSet
	for _, e := range o.Previous {
		previous[e.objMeta()] = e
		before = append(before, e.objMeta())
	}
	for _, h := range hooks {
		now = append(now, object.UnstructuredToObjMetadata(h.obj))
	}
	for _, e := range res.Inventory {
		now = append(now, e.objMeta())
	}
	var gone []*unstructured.Unstructured
	for _, id := range before.Diff(now) {
		e := previous[id]
		if res.failed[id] {
			// a refused object of the new version is still wanted
			res.Inventory = append(res.Inventory, e)
			if cur, known := live.lookup(e.stub()); known && cur != nil {
				res.objects[id] = cur
			}
			continue
		}
		stub := e.stub()
		if cur, known := live.lookup(stub); known && cur == nil {
			continue
		}
		gone = append(gone, stub)
	}
	if len(gone) == 0 {
		return nil
	}
	if o.DryRun {
		for _, u := range gone {
			res.Changes = append(res.Changes, Change{Object: utils.FmtUnstructured(u), Action: ActionPruned})
		}
		return nil
	}
	return a.deleteAll(ctx, gone, o.Owner, res)
}

func (a *Applier) deleteAll(ctx context.Context, objs []*unstructured.Unstructured, owner string, res *Result) error {
	cs, err := a.rm.DeleteAll(ctx, objs, ssa.DeleteOptions{
		PropagationPolicy: metav1.DeletePropagationBackground,
		Inclusions:        map[string]string{LabelKubePkg: owner},
	})
	if cs != nil {
		for _, e := range cs.Entries {
			if e.Action == ssa.DeletedAction {
				res.Changes = append(res.Changes, Change{Object: e.Subject, Action: ActionPruned})
			}
		}
	}
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// Delete removes everything an inventory names that still carries owner's
// label (background propagation).
func (a *Applier) Delete(ctx context.Context, owner string, inv []InventoryEntry) error {
	objs := make([]*unstructured.Unstructured, 0, len(inv))
	for _, e := range inv {
		objs = append(objs, e.stub())
	}
	if len(objs) == 0 {
		return nil
	}
	return a.deleteAll(ctx, objs, owner, newResult())
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
// has no status to keep one in. Hook objects (helm.sh/hook) are left out:
// they are not pruned.
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
			if _, hook := u.GetAnnotations()[AnnotationHook]; hook {
				continue
			}
			u.SetGroupVersionKind(gvk)
			out = append(out, entryOf(u))
		}
	}
	return out, nil
}
