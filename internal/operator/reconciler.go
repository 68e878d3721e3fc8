package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
)

// Condition types.
const (
	ConditionApplied = "Applied"
	ConditionReady   = "Ready"
	// ConditionStalled is True while the package cannot be applied as it is
	// (invalid, or a refused downgrade): nothing is retried until the
	// object changes.
	ConditionStalled = "Stalled"
)

// Condition reasons.
const (
	ReasonApplied          = "Applied"
	ReasonApplyFailed      = "ApplyFailed"
	ReasonInvalid          = "Invalid"
	ReasonDowngradeRefused = "DowngradeRefused"
	ReasonReady            = "Ready"
	ReasonProgressing      = "Progressing"
	ReasonNotApplied       = "NotApplied"
	// ReasonHookRunning: a pre hook runs; the rest of the package waits.
	ReasonHookRunning = "HookRunning"
	// ReasonHookFailed: a hook failed (retried at the next resync, or when
	// the object changes); after a pre hook, the rest was not applied.
	ReasonHookFailed = "HookFailed"
	// ReasonHooksSucceeded (an event): a stage of hooks succeeded.
	ReasonHooksSucceeded = "HooksSucceeded"
	// ReasonHooksIgnored (an event): hooks crpe does not run.
	ReasonHooksIgnored = "HooksIgnored"
)

// Status is the KubePkg status crpe writes.
type Status struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	AppliedVersion     string             `json:"appliedVersion,omitempty"`
	Inventory          []InventoryEntry   `json:"inventory,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
	// Hooks is where the Helm hooks of the last version with hooks stand.
	Hooks *HookStatus `json:"hooks,omitempty"`
}

// Reconciler applies KubePkg objects.
type Reconciler struct {
	Client client.Client
	// Reader reads KubePkg objects: the manager's cache, which the
	// controller's watch fills anyway (Client when nil).
	Reader   client.Reader
	Applier  *Applier
	Recorder record.EventRecorder
	// Resync re-applies every package this often (drift correction).
	Resync time.Duration
	// ReadyPoll re-checks readiness this often while workloads come up.
	ReadyPoll time.Duration
	// HookPoll looks at a running hook this often (2s by default).
	HookPoll time.Duration
	// HookTimeout bounds each hook's run (DefaultHookTimeout).
	HookTimeout time.Duration
	// Clock tells the time of hook runs (time.Now when nil).
	Clock func() time.Time
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.defaults()
	// status and finalizer patches do not call for another apply: only a new
	// generation (spec) or changed annotations (force-downgrade,
	// keep-resources) do, besides the resync
	return ctrl.NewControllerManagedBy(mgr).
		For(kubeclient.NewKubePkg(), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Named("kubepkg").Complete(r)
}

func (r *Reconciler) defaults() {
	if r.Resync <= 0 {
		r.Resync = 10 * time.Minute
	}
	if r.ReadyPoll <= 0 {
		r.ReadyPoll = 5 * time.Second
	}
	if r.HookPoll <= 0 {
		r.HookPoll = 2 * time.Second
	}
	if r.Reader == nil {
		r.Reader = r.Client
	}
}

// Reconcile brings one KubePkg to its desired state. Its status is
// patched once, on the way out, whatever the way out (and not at all when
// nothing in it changed).
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	r.defaults()
	obj := kubeclient.NewKubePkg()
	if err := r.Reader.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	owner := obj.GetNamespace() + "." + obj.GetName()
	if !obj.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, r.finalize(ctx, obj, owner)
	}

	st := readStatus(obj)
	before := st.encode()
	defer func() {
		if err := r.patchStatus(ctx, obj, before, &st); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	// the finalizer goes first: nothing is written before it is on the
	// object (its patch runs while the package is read and the cluster
	// listed, which write nothing)
	finalized := r.addFinalizer(ctx, obj)
	defer func() {
		if err := finalized(); err != nil {
			retErr = errors.Join(retErr, client.IgnoreNotFound(err))
		}
	}()

	pkg, err := toKubePkg(obj)
	if err == nil {
		err = pkg.Validate()
	}
	if err != nil {
		// invalid as it is: retried when the object changes, not before
		r.stall(&st, obj, ReasonInvalid, err.Error(), "the package is invalid")
		return ctrl.Result{}, nil
	}
	if st.AppliedVersion != "" && obj.GetAnnotations()[kubeclient.AnnotationForceDowngrade] != "true" {
		if kubepkg.IsDowngrade(st.AppliedVersion, pkg.Spec.Version) {
			msg := fmt.Sprintf("version %s is lower than the applied %s; annotate %s: \"true\" to downgrade", pkg.Spec.Version, st.AppliedVersion, kubeclient.AnnotationForceDowngrade)
			r.stall(&st, obj, ReasonDowngradeRefused, msg, "")
			return ctrl.Result{}, nil
		}
	}
	removeCondition(&st, ConditionStalled)

	plan, err := r.Applier.Prepare(ctx, pkg, obj.GetNamespace(), Options{Prune: true, Previous: st.Inventory,
		HookTimeout: r.HookTimeout, Clock: r.Clock})
	if err == nil {
		if err := finalized(); err != nil {
			return ctrl.Result{}, nil // reported by the deferred call
		}
	}
	var res *Result
	if err == nil {
		was := st.Hooks
		st.Hooks = plan.HookCycle(st.Hooks, st.AppliedVersion)
		if st.Hooks != was && st.Hooks != nil && len(st.Hooks.Ignored) > 0 {
			r.event(obj, "Warning", ReasonHooksIgnored, fmt.Sprintf("version %s: %s", pkg.Spec.Version, strings.Join(st.Hooks.Ignored, "; ")))
		}
		res, err = plan.Apply(ctx, st.Hooks)
	}
	if err != nil {
		setCondition(&st, obj, ConditionApplied, metav1.ConditionFalse, ReasonApplyFailed, err.Error())
		r.event(obj, "Warning", ReasonApplyFailed, err.Error())
		return ctrl.Result{}, err
	}
	if res.pre != nil && !res.pre.done {
		log.FromContext(ctx).V(1).Info("reconciled", "kubepkg", owner, "version", pkg.Spec.Version, "hooks", res.pre.stage,
			"running", res.pre.running != nil, "failed", res.pre.failed != nil)
		return r.preHooksPending(&st, obj, pkg.Spec.Version, res), nil
	}
	if res.pre != nil {
		r.hooksSucceeded(obj, pkg.Spec.Version, res.pre.stage, plan)
	}
	st.Inventory = res.Inventory
	changes := res.Count(ActionCreated) + res.Count(ActionConfigured) + res.Count(ActionPruned)
	summary := fmt.Sprintf("version %s: %d created, %d configured, %d unchanged, %d pruned", pkg.Spec.Version,
		res.Count(ActionCreated), res.Count(ActionConfigured), res.Count(ActionUnchanged), res.Count(ActionPruned))
	if len(res.Failed) > 0 {
		var msgs []string
		for _, f := range res.Failed {
			msgs = append(msgs, f.Object+": "+f.Error)
		}
		msg := summary + "; refused by the API server: " + strings.Join(msgs, "; ")
		setCondition(&st, obj, ConditionApplied, metav1.ConditionFalse, ReasonApplyFailed, msg)
		r.event(obj, "Warning", ReasonApplyFailed, msg)
	} else {
		st.AppliedVersion = pkg.Spec.Version
		// a resync that changed nothing keeps the condition that tells
		// what the last change was
		if changes > 0 || !appliedAlready(st, obj, pkg.Spec.Version) {
			setCondition(&st, obj, ConditionApplied, metav1.ConditionTrue, ReasonApplied, summary)
		}
		if changes > 0 {
			r.event(obj, "Normal", ReasonApplied, summary)
		}
	}
	ready, msg := readiness(res, st.Inventory)
	requeue := r.Resync
	if hs := st.Hooks; ready && len(res.Failed) == 0 && hs.active(pkg.Spec.Version) && !hs.pre() {
		// the post hooks, once the rest is applied and ready
		if err := plan.RunHooks(ctx, hs, res); err != nil {
			setCondition(&st, obj, ConditionApplied, metav1.ConditionFalse, ReasonApplyFailed, err.Error())
			r.event(obj, "Warning", ReasonApplyFailed, err.Error())
			return ctrl.Result{}, err
		}
		post := res.post
		if !post.done {
			log.FromContext(ctx).V(1).Info("reconciled", "kubepkg", owner, "version", pkg.Spec.Version, "hooks", post.stage,
				"running", post.running != nil, "failed", post.failed != nil)
		}
		switch {
		case post.failed != nil:
			msg := fmt.Sprintf("version %s: %s", pkg.Spec.Version, (&HookError{Run: *post.failed}).Error())
			setCondition(&st, obj, ConditionApplied, metav1.ConditionFalse, ReasonHookFailed, msg)
			setCondition(&st, obj, ConditionReady, metav1.ConditionFalse, ReasonHookFailed, msg)
			r.event(obj, "Warning", ReasonHookFailed, msg)
			return ctrl.Result{RequeueAfter: r.Resync}, nil
		case !post.done:
			setCondition(&st, obj, ConditionReady, metav1.ConditionFalse, ReasonProgressing,
				fmt.Sprintf("version %s: running %s hook %s (%s)", pkg.Spec.Version, post.stage, post.running.Object, post.running.Message))
			return ctrl.Result{RequeueAfter: r.HookPoll}, nil
		default:
			r.hooksSucceeded(obj, pkg.Spec.Version, post.stage, plan)
		}
	} else if !ready && hs.active(pkg.Spec.Version) && !hs.pre() && len(plan.HooksOf(hs.Stage)) > 0 {
		msg += fmt.Sprintf("; the %s hooks run once it is ready", hs.Stage)
	}
	if ready {
		setCondition(&st, obj, ConditionReady, metav1.ConditionTrue, ReasonReady, msg)
	} else {
		setCondition(&st, obj, ConditionReady, metav1.ConditionFalse, ReasonProgressing, msg)
		requeue = r.ReadyPoll
	}
	log.FromContext(ctx).V(1).Info("reconciled", "kubepkg", owner, "version", pkg.Spec.Version, "changes", changes,
		"failed", len(res.Failed), "ready", ready)
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// preHooksPending records a reconcile that stopped at the pre hooks: one
// runs (looked at again in HookPoll), or one failed (retried at the next
// resync). The rest of the package was not applied; the definitions
// applied before the hooks join the inventory. Ready is left as it was on
// an upgrade (the previous version still runs).
func (r *Reconciler) preHooksPending(st *Status, obj *unstructured.Unstructured, version string, res *Result) ctrl.Result {
	st.Inventory = mergeInventory(st.Inventory, res.Inventory)
	pre := res.pre
	upgrade := st.Hooks.Action == "upgrade"
	if pre.failed != nil {
		msg := fmt.Sprintf("version %s: %s; the rest of the package was not applied", version, (&HookError{Run: *pre.failed}).Error())
		setCondition(st, obj, ConditionApplied, metav1.ConditionFalse, ReasonHookFailed, msg)
		if !upgrade {
			setCondition(st, obj, ConditionReady, metav1.ConditionFalse, ReasonHookFailed, msg)
		}
		r.event(obj, "Warning", ReasonHookFailed, msg)
		return ctrl.Result{RequeueAfter: r.Resync}
	}
	msg := fmt.Sprintf("version %s: running %s hook %s (%s); the rest of the package waits", version, pre.stage, pre.running.Object, pre.running.Message)
	setCondition(st, obj, ConditionApplied, metav1.ConditionFalse, ReasonHookRunning, msg)
	if !upgrade {
		setCondition(st, obj, ConditionReady, metav1.ConditionFalse, ReasonProgressing, msg)
	}
	return ctrl.Result{RequeueAfter: r.HookPoll}
}

// hooksSucceeded tells (an event) that a stage of hooks succeeded.
func (r *Reconciler) hooksSucceeded(obj *unstructured.Unstructured, version, stage string, plan *Plan) {
	if hooks := plan.HooksOf(stage); len(hooks) > 0 {
		r.event(obj, "Normal", ReasonHooksSucceeded, fmt.Sprintf("version %s: %s hooks succeeded: %s", version, stage, strings.Join(hooks, ", ")))
	}
}

// mergeInventory returns inv with the entries of more it lacks.
func mergeInventory(inv, more []InventoryEntry) []InventoryEntry {
	have := map[string]bool{}
	for _, e := range inv {
		have[e.ID()] = true
	}
	out := append([]InventoryEntry(nil), inv...)
	for _, e := range more {
		if !have[e.ID()] {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// addFinalizer starts adding crpe's finalizer to obj (when it lacks it)
// and returns a function that waits for that and tells how it went (the
// same answer every time). The patch goes through an object of obj's name
// alone: obj itself is read meanwhile.
func (r *Reconciler) addFinalizer(ctx context.Context, obj *unstructured.Unstructured) func() error {
	if controllerutil.ContainsFinalizer(obj, Finalizer) {
		return func() error { return nil }
	}
	stub := kubeclient.NewKubePkg()
	stub.SetNamespace(obj.GetNamespace())
	stub.SetName(obj.GetName())
	finalizers := append(obj.GetFinalizers(), Finalizer)
	done := make(chan error, 1)
	go func() { done <- r.setFinalizers(ctx, stub, finalizers) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			if err = <-done; err == nil {
				obj.SetFinalizers(finalizers)
			}
		})
		return err
	}
}

// finalize deletes what a deleted KubePkg applied (unless it says to keep
// it), then lets the object go.
func (r *Reconciler) finalize(ctx context.Context, obj *unstructured.Unstructured, owner string) error {
	if !controllerutil.ContainsFinalizer(obj, Finalizer) {
		return nil
	}
	if obj.GetAnnotations()[AnnotationKeepResources] != "true" {
		st := readStatus(obj)
		if err := r.Applier.Delete(ctx, owner, st.Inventory); err != nil {
			r.event(obj, "Warning", "DeleteFailed", err.Error())
			return err
		}
		r.event(obj, "Normal", "Deleted", fmt.Sprintf("deleted %d objects", len(st.Inventory)))
	}
	var rest []string
	for _, f := range obj.GetFinalizers() {
		if f != Finalizer {
			rest = append(rest, f)
		}
	}
	return client.IgnoreNotFound(r.setFinalizers(ctx, obj, rest))
}

// setFinalizers writes the object's finalizers with a merge patch of
// metadata.finalizers alone: a KubePkg can be large, and a patch computed
// from the whole object costs two encodings of it.
func (r *Reconciler) setFinalizers(ctx context.Context, obj *unstructured.Unstructured, finalizers []string) error {
	if finalizers == nil {
		finalizers = []string{}
	}
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": finalizers}})
	if err != nil {
		return err
	}
	return r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, b))
}

// stall records a package that cannot be applied as it is.
func (r *Reconciler) stall(st *Status, obj *unstructured.Unstructured, reason, msg, readyMsg string) {
	setCondition(st, obj, ConditionApplied, metav1.ConditionFalse, reason, msg)
	setCondition(st, obj, ConditionStalled, metav1.ConditionTrue, reason, msg)
	if readyMsg != "" {
		setCondition(st, obj, ConditionReady, metav1.ConditionFalse, ReasonNotApplied, readyMsg)
	}
	r.event(obj, "Warning", reason, msg)
}

// appliedAlready tells whether Applied is True for this generation and
// version.
func appliedAlready(st Status, obj *unstructured.Unstructured, version string) bool {
	for _, c := range st.Conditions {
		if c.Type == ConditionApplied {
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.GetGeneration() &&
				strings.HasPrefix(c.Message, "version "+version+":")
		}
	}
	return false
}

// readiness computes kstatus for every inventory object, from the states
// the apply saw (its responses, or the live copies it listed).
func readiness(res *Result, inv []InventoryEntry) (bool, string) {
	var waiting []string
	for _, e := range inv {
		u := res.Object(e)
		if u == nil {
			waiting = append(waiting, e.String()+" (not found)")
			continue
		}
		s, err := status.Compute(u)
		if err != nil || s.Status != status.CurrentStatus {
			reason := "unknown"
			if s != nil {
				reason = string(s.Status)
				if s.Message != "" {
					reason += ": " + s.Message
				}
			}
			waiting = append(waiting, e.String()+" ("+reason+")")
		}
	}
	if len(waiting) == 0 {
		return true, fmt.Sprintf("all %d objects are ready", len(inv))
	}
	sort.Strings(waiting)
	return false, "waiting for " + strings.Join(waiting, ", ")
}

func (r *Reconciler) event(obj *unstructured.Unstructured, typ, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Event(obj, typ, reason, msg)
	}
}

func readStatus(obj *unstructured.Unstructured) Status {
	var st Status
	if raw, ok := obj.Object["status"]; ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &st)
	}
	return st
}

func (st *Status) encode() []byte {
	b, _ := json.Marshal(st)
	return b
}

// patchStatus writes st unless it is what the object had (before), with a
// merge patch of the status alone (a field st no longer has is nulled).
func (r *Reconciler) patchStatus(ctx context.Context, obj *unstructured.Unstructured, before []byte, st *Status) error {
	st.ObservedGeneration = obj.GetGeneration()
	b := st.encode()
	if bytes.Equal(b, before) {
		return nil
	}
	var now, was map[string]any
	if err := json.Unmarshal(b, &now); err != nil {
		return err
	}
	_ = json.Unmarshal(before, &was)
	for k := range was {
		if _, ok := now[k]; !ok {
			now[k] = nil
		}
	}
	patch, err := json.Marshal(map[string]any{"status": now})
	if err != nil {
		return err
	}
	if err := r.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

func setCondition(st *Status, obj *unstructured.Unstructured, typ string, s metav1.ConditionStatus, reason, msg string) {
	if len(msg) > 32000 {
		msg = msg[:32000] + "…"
	}
	c := metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: obj.GetGeneration(), LastTransitionTime: metav1.Now()}
	for i, old := range st.Conditions {
		if old.Type == typ {
			if old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

func removeCondition(st *Status, typ string) {
	out := st.Conditions[:0]
	for _, c := range st.Conditions {
		if c.Type != typ {
			out = append(out, c)
		}
	}
	st.Conditions = out
}

// toKubePkg reads a KubePkg object.
func toKubePkg(obj *unstructured.Unstructured) (*kubepkg.KubePkg, error) {
	b, err := obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	pkgs, err := kubepkg.Parse(b)
	if err != nil {
		return nil, err
	}
	if len(pkgs) != 1 {
		return nil, fmt.Errorf("not one package")
	}
	p := pkgs[0]
	if p.Metadata.Namespace == "" {
		p.Metadata.Namespace = obj.GetNamespace()
	}
	return p, nil
}
