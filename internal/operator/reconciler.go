package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// Condition reasons.
const (
	ReasonApplied          = "Applied"
	ReasonApplyFailed      = "ApplyFailed"
	ReasonInvalid          = "Invalid"
	ReasonDowngradeRefused = "DowngradeRefused"
	ReasonReady            = "Ready"
	ReasonProgressing      = "Progressing"
	ReasonNotApplied       = "NotApplied"
)

// Status is the KubePkg status crpe writes.
type Status struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	AppliedVersion     string             `json:"appliedVersion,omitempty"`
	Inventory          []InventoryEntry   `json:"inventory,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// Reconciler applies KubePkg objects.
type Reconciler struct {
	Client   client.Client
	Applier  *Applier
	Recorder record.EventRecorder
	// Resync re-applies every package this often (drift correction).
	Resync time.Duration
	// ReadyPoll re-checks readiness this often while workloads come up.
	ReadyPoll time.Duration
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync <= 0 {
		r.Resync = 10 * time.Minute
	}
	if r.ReadyPoll <= 0 {
		r.ReadyPoll = 5 * time.Second
	}
	// status and finalizer patches do not call for another apply: only a new
	// generation (spec) or changed annotations (force-downgrade,
	// keep-resources) do, besides the resync
	return ctrl.NewControllerManagedBy(mgr).
		For(kubeclient.NewKubePkg(), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Named("kubepkg").Complete(r)
}

// Reconcile brings one KubePkg to its desired state.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	obj := kubeclient.NewKubePkg()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	st := readStatus(obj)
	owner := obj.GetNamespace() + "." + obj.GetName()

	if !obj.GetDeletionTimestamp().IsZero() {
		if controllerutil.ContainsFinalizer(obj, Finalizer) {
			if obj.GetAnnotations()[AnnotationKeepResources] != "true" {
				if err := r.Applier.Delete(ctx, owner, st.Inventory); err != nil {
					r.event(obj, "Warning", "DeleteFailed", err.Error())
					return ctrl.Result{}, err
				}
				r.event(obj, "Normal", "Deleted", fmt.Sprintf("deleted %d objects", len(st.Inventory)))
			}
			patch := client.MergeFrom(obj.DeepCopy())
			controllerutil.RemoveFinalizer(obj, Finalizer)
			if err := r.Client.Patch(ctx, obj, patch); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
		}
		return ctrl.Result{}, nil
	}
	if !controllerutil.ContainsFinalizer(obj, Finalizer) {
		patch := client.MergeFrom(obj.DeepCopy())
		controllerutil.AddFinalizer(obj, Finalizer)
		if err := r.Client.Patch(ctx, obj, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	pkg, perr := toKubePkg(obj)
	if perr == nil {
		perr = pkg.Validate()
	}
	if perr != nil {
		setCondition(&st, obj, "Applied", metav1.ConditionFalse, ReasonInvalid, perr.Error())
		setCondition(&st, obj, "Ready", metav1.ConditionFalse, ReasonNotApplied, "the package is invalid")
		r.event(obj, "Warning", ReasonInvalid, perr.Error())
		return ctrl.Result{RequeueAfter: r.Resync}, r.writeStatus(ctx, obj, st)
	}
	if st.AppliedVersion != "" && obj.GetAnnotations()[kubeclient.AnnotationForceDowngrade] != "true" {
		nv, err1 := kubepkg.ParseVersion(pkg.Spec.Version)
		ov, err2 := kubepkg.ParseVersion(st.AppliedVersion)
		if err1 == nil && err2 == nil && nv.LessThan(ov) {
			msg := fmt.Sprintf("version %s is lower than the applied %s; annotate %s: \"true\" to downgrade", pkg.Spec.Version, st.AppliedVersion, kubeclient.AnnotationForceDowngrade)
			setCondition(&st, obj, "Applied", metav1.ConditionFalse, ReasonDowngradeRefused, msg)
			r.event(obj, "Warning", ReasonDowngradeRefused, msg)
			return ctrl.Result{RequeueAfter: r.Resync}, r.writeStatus(ctx, obj, st)
		}
	}

	res, err := r.Applier.Apply(ctx, pkg, obj.GetNamespace(), Options{Prune: true, Previous: st.Inventory})
	if err != nil {
		setCondition(&st, obj, "Applied", metav1.ConditionFalse, ReasonApplyFailed, err.Error())
		r.event(obj, "Warning", ReasonApplyFailed, err.Error())
		_ = r.writeStatus(ctx, obj, st)
		return ctrl.Result{}, err
	}
	st.Inventory = res.Inventory
	st.AppliedVersion = pkg.Spec.Version
	summary := fmt.Sprintf("version %s: %d created, %d configured, %d unchanged, %d pruned", pkg.Spec.Version,
		res.Count("created"), res.Count("configured"), res.Count("unchanged"), res.Count("pruned"))
	if len(res.Failed) > 0 {
		var msgs []string
		for _, f := range res.Failed {
			msgs = append(msgs, f.Object+": "+f.Error)
		}
		msg := summary + "; refused by the API server: " + strings.Join(msgs, "; ")
		setCondition(&st, obj, "Applied", metav1.ConditionFalse, ReasonApplyFailed, msg)
		r.event(obj, "Warning", ReasonApplyFailed, msg)
	} else {
		setCondition(&st, obj, "Applied", metav1.ConditionTrue, ReasonApplied, summary)
		if res.Count("created")+res.Count("configured")+res.Count("pruned") > 0 {
			r.event(obj, "Normal", ReasonApplied, summary)
		}
	}
	ready, msg := r.readiness(ctx, st.Inventory)
	requeue := r.Resync
	if ready {
		setCondition(&st, obj, "Ready", metav1.ConditionTrue, ReasonReady, msg)
	} else {
		setCondition(&st, obj, "Ready", metav1.ConditionFalse, ReasonProgressing, msg)
		requeue = r.ReadyPoll
	}
	logger.V(1).Info("reconciled", "kubepkg", owner, "version", pkg.Spec.Version, "ready", ready)
	return ctrl.Result{RequeueAfter: requeue}, r.writeStatus(ctx, obj, st)
}

// readiness computes kstatus for every inventory object.
func (r *Reconciler) readiness(ctx context.Context, inv []InventoryEntry) (bool, string) {
	var waiting []string
	for _, e := range inv {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: e.Group, Version: e.Version, Kind: e.Kind})
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: e.Name}, u); err != nil {
			waiting = append(waiting, e.String()+" (not found)")
			continue
		}
		res, err := status.Compute(u)
		if err != nil || res.Status != status.CurrentStatus {
			reason := "unknown"
			if res != nil {
				reason = string(res.Status)
				if res.Message != "" {
					reason += ": " + res.Message
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

func (r *Reconciler) writeStatus(ctx context.Context, obj *unstructured.Unstructured, st Status) error {
	st.ObservedGeneration = obj.GetGeneration()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Object["status"] = m
	if err := r.Client.Status().Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
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
