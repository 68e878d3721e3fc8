package operator

// Helm hooks. A package made from a Helm chart (`crpe package`) keeps the
// chart's hooks in spec.manifests with Helm's annotations (helm.sh/hook,
// helm.sh/hook-weight, helm.sh/hook-delete-policy). The engine runs the
// install and upgrade ones as Helm 4 does (helm.sh/helm/v4: pkg/action/hooks.go,
// pkg/release/v1/util/manifest_sorter.go and kind_sorter.go):
//
//   - An object whose helm.sh/hook names install or upgrade events is a hook:
//     it is not applied with the rest, not in the inventory, not pruned, and
//     not deleted with its package (Helm keeps hooks out of the release's
//     manifest, and uninstall leaves them).
//   - Each version of a package is one cycle: an install (nothing of the
//     package in the cluster yet) runs the pre-install hooks after the
//     package's CRDs and Namespaces (Helm installs a chart's crds/ before
//     anything too) and before the rest, and the post-install hooks once
//     the rest is applied and ready: the order `crpe manifests` prints
//     (applyorder.WithHooks). An upgrade (a version other than the one
//     applied) runs pre-upgrade and post-upgrade the same way. A hook
//     listing both events runs in both. A resync of the version applied
//     runs nothing.
//   - The hooks of a stage run one at a time, sorted by weight, then name,
//     then kind in Helm's install order (applyorder.HookLess), then manifest
//     key: each is applied (server-side, as crpe's) and waited for: a Job
//     until it is Complete, a Pod until it Succeeded; anything else is done
//     once applied.
//   - Delete policies (before-hook-creation when none is given): the
//     previous object of a hook is deleted, and gone, before the hook is
//     applied; hook-succeeded deletes the stage's hooks, last first, once
//     they all succeeded; hook-failed deletes a hook that failed (and
//     hook-succeeded the stage's hooks that succeeded before it). Only an
//     object labelled as the package's is deleted (another is applied over);
//     a CustomResourceDefinition never is, as Helm.
//   - A hook fails when the API server refuses it, its Job fails, its Pod
//     fails, it is deleted while it runs, or it is not done within the hook
//     timeout. The stage stops there: after a failed pre hook the rest of the
//     package is not applied. The next attempt runs the stage again from its
//     first hook, as a new helm install or upgrade would.
//
// Where a cycle stands is a HookStatus: the KubePkg's status.hooks for the
// operator (which never waits: a running hook ends the reconcile, which
// comes back to it), a ConfigMap crpe-hooks.<name> for `crpe apply` (which
// waits). pre-delete, post-delete, pre-rollback, post-rollback and test
// hooks are not run (HookStatus.Ignored lists them); an object whose
// helm.sh/hook names an event Helm does not know is left out entirely, as
// Helm leaves it out.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/applyorder"
)

// Helm's hook annotations.
const (
	AnnotationHook             = "helm.sh/hook"
	AnnotationHookWeight       = "helm.sh/hook-weight"
	AnnotationHookDeletePolicy = "helm.sh/hook-delete-policy"
)

// LabelHookRecord marks the ConfigMap where `crpe apply` keeps a package's
// HookStatus; its value is the package (<namespace>.<name>).
const LabelHookRecord = "octohelm.tech/hooks-of"

// The hook events crpe runs.
const (
	HookPreInstall  = "pre-install"
	HookPostInstall = "post-install"
	HookPreUpgrade  = "pre-upgrade"
	HookPostUpgrade = "post-upgrade"
)

// HookStageDone is the stage of a cycle whose hooks all ran.
const HookStageDone = "done"

// Helm's delete policies.
const (
	DeleteBeforeHookCreation = "before-hook-creation"
	DeleteHookSucceeded      = "hook-succeeded"
	DeleteHookFailed         = "hook-failed"
)

// Phases of a HookRun.
const (
	// HookPhasePending: the hook would run (a dry run).
	HookPhasePending   = "Pending"
	HookPhaseRunning   = "Running"
	HookPhaseSucceeded = "Succeeded"
	HookPhaseFailed    = "Failed"
)

// Defaults of the hook options.
const (
	// DefaultHookTimeout is Helm's --timeout.
	DefaultHookTimeout = 5 * time.Minute
	defaultHookPoll    = time.Second
)

// unsupportedHookEvents are the events Helm knows and crpe does not run.
var unsupportedHookEvents = map[string]string{
	"pre-delete": "pre-delete", "post-delete": "post-delete", "pre-rollback": "pre-rollback",
	"post-rollback": "post-rollback", "test": "test", "test-success": "test",
}

// HookRun is one run of a hook.
type HookRun struct {
	Event       string       `json:"event"`
	Object      string       `json:"object"` // Kind/namespace/name
	Phase       string       `json:"phase"`  // Running, Succeeded, Failed
	Message     string       `json:"message,omitempty"`
	StartedAt   *metav1.Time `json:"startedAt,omitempty"`
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
}

// HookStatus is where the hooks of one version of a package stand.
type HookStatus struct {
	// Version is the version whose hooks these are.
	Version string `json:"version"`
	// From is the version applied when the cycle began ("" for an install,
	// or when it is not known).
	From string `json:"from,omitempty"`
	// Action is install or upgrade.
	Action string `json:"action"`
	// Stage is the event whose hooks run next (pre-install, post-install,
	// pre-upgrade, post-upgrade), or done.
	Stage string `json:"stage"`
	// Runs are the hooks run in this cycle, in order (a stage run again
	// replaces its runs).
	Runs []HookRun `json:"runs,omitempty"`
	// Ignored names the hooks crpe does not run, and why.
	Ignored []string `json:"ignored,omitempty"`
}

// active tells whether hs still has hooks of version to run.
func (hs *HookStatus) active(version string) bool {
	return hs != nil && hs.Version == version && hs.Stage != HookStageDone
}

// pre tells whether hs's stage is one before the rest of the package.
func (hs *HookStatus) pre() bool { return strings.HasPrefix(hs.Stage, "pre-") }

func (hs *HookStatus) run(event, id string) *HookRun {
	for i := range hs.Runs {
		if hs.Runs[i].Event == event && hs.Runs[i].Object == id {
			return &hs.Runs[i]
		}
	}
	return nil
}

// HookError is a hook that failed: its stage stopped there.
type HookError struct {
	Run HookRun
}

func (e *HookError) Error() string {
	return fmt.Sprintf("%s hook %s failed: %s", e.Run.Event, e.Run.Object, e.Run.Message)
}

// Hook is one hook object of a package.
type Hook struct {
	obj      *unstructured.Unstructured
	id       string
	events   []string // those crpe runs
	policies []string
}

func (h *Hook) String() string { return h.id }

func (h *Hook) deletes(policy string) bool {
	// never a CustomResourceDefinition: its deletion cascades (Helm)
	return slices.Contains(h.policies, policy) && !utils.IsCRD(h.obj)
}

// splitHooks takes the hooks out of objs; ignored tells what of them is
// not run.
func splitHooks(objs []*unstructured.Unstructured) (rest []*unstructured.Unstructured, hooks []*Hook, ignored []string) {
	for _, u := range objs {
		ann := u.GetAnnotations()
		v, ok := ann[AnnotationHook]
		if !ok {
			rest = append(rest, u)
			continue
		}
		h := &Hook{obj: u, id: utils.FmtUnstructured(u)}
		var unsupported []string
		unknown, isUnknown := "", false
		for e := range strings.SplitSeq(v, ",") {
			e = strings.ToLower(strings.TrimSpace(e))
			switch e {
			case HookPreInstall, HookPostInstall, HookPreUpgrade, HookPostUpgrade:
				h.events = append(h.events, e)
			default:
				if name, ok := unsupportedHookEvents[e]; ok {
					unsupported = append(unsupported, name)
				} else if !isUnknown {
					unknown, isUnknown = e, true
				}
			}
		}
		if isUnknown {
			// Helm skips such an object altogether ("skipping unknown hooks")
			ignored = append(ignored, fmt.Sprintf("%s: %s %q names an unknown event %q: not applied at all, as Helm", h.id, AnnotationHook, v, unknown))
			continue
		}
		if len(unsupported) > 0 {
			ignored = append(ignored, fmt.Sprintf("%s: %s hook not run (crpe runs install and upgrade hooks only)", h.id, strings.Join(unsupported, ", ")))
		}
		if len(h.events) == 0 {
			continue
		}
		if p, ok := ann[AnnotationHookDeletePolicy]; ok {
			for s := range strings.SplitSeq(p, ",") {
				h.policies = append(h.policies, strings.ToLower(strings.TrimSpace(s)))
			}
		} else {
			h.policies = []string{DeleteBeforeHookCreation} // Helm 3 and 4's default
		}
		hooks = append(hooks, h)
	}
	return rest, hooks, ignored
}

// sortHooks sorts hooks as Helm runs them (applyorder.HookLess: weight,
// name, kind in Helm's install order); hooks equal in all three keep their
// order (manifest keys).
func sortHooks(hooks []*Hook) {
	sort.SliceStable(hooks, func(i, j int) bool { return applyorder.HookLess(hooks[i].obj, hooks[j].obj) })
}

// hooksOf returns the plan's hooks of event, in order.
func (p *Plan) hooksOf(event string) []*Hook {
	var out []*Hook
	for _, h := range p.hooks {
		if slices.Contains(h.events, event) {
			out = append(out, h)
		}
	}
	return out
}

// HooksOf names the plan's hooks of event, in the order they run.
func (p *Plan) HooksOf(event string) []string {
	var out []string
	for _, h := range p.hooksOf(event) {
		out = append(out, h.id)
	}
	return out
}

// wouldRun returns hs with the runs still to come as Pending, for a dry
// run.
func (p *Plan) wouldRun(hs *HookStatus) *HookStatus {
	out := *hs
	out.Runs = nil
	stages := []string{hs.Stage}
	if hs.pre() {
		stages = append(stages, "post-"+hs.Action)
	}
	for _, event := range stages {
		for _, h := range p.hooksOf(event) {
			if r := hs.run(event, h.id); r != nil && r.Phase == HookPhaseSucceeded {
				continue
			}
			out.Runs = append(out.Runs, HookRun{Event: event, Object: h.id, Phase: HookPhasePending})
		}
	}
	return &out
}

// installed tells whether some object of the package (not a hook) is in
// the cluster, as the plan's LISTs saw it.
func (p *Plan) installed() bool {
	for _, u := range p.live.objs {
		if _, hook := u.GetAnnotations()[AnnotationHook]; !hook {
			return true
		}
	}
	return false
}

// HookCycle returns the hook status to keep for this apply, given rec (the
// one kept so far) and applied (the version applied, "" for none): rec
// when it is this version's cycle (under way, or done); a new cycle when
// the plan's version is not the one applied (an install when nothing of
// the package is in the cluster, an upgrade otherwise), or nil when the
// package has no hooks; rec again when the version is the one applied (a
// resync: nothing runs).
func (p *Plan) HookCycle(rec *HookStatus, applied string) *HookStatus {
	if rec != nil && rec.Version == p.version && (rec.From == applied || applied == p.version) {
		return rec
	}
	if applied == p.version {
		return rec
	}
	if len(p.hooks) == 0 && len(p.ignored) == 0 {
		return nil
	}
	action := "install"
	if applied != "" || p.installed() {
		action = "upgrade"
	}
	return &HookStatus{Version: p.version, From: applied, Action: action, Stage: "pre-" + action, Ignored: p.ignored}
}

// hookProgress is where a stage stands after a step.
type hookProgress struct {
	stage   string
	done    bool
	running *HookRun // the hook waited for
	failed  *HookRun // the hook that failed
}

// runStage advances the hooks of hs's stage: with wait nil, as far as they
// go without waiting (it starts the next hook, or checks the one running);
// otherwise wait is called between steps until the stage is done or a hook
// failed. A failed hook is a result (progress.failed), not an error: errors
// are the API server's, on the way.
func (p *Plan) runStage(ctx context.Context, hs *HookStatus, wait func(context.Context) error) (hookProgress, error) {
	for {
		prog, err := p.stepStage(ctx, hs)
		if err != nil || prog.done || prog.failed != nil || wait == nil {
			return prog, err
		}
		if err := wait(ctx); err != nil {
			return prog, err
		}
	}
}

func (p *Plan) stepStage(ctx context.Context, hs *HookStatus) (hookProgress, error) {
	event := hs.Stage
	prog := hookProgress{stage: event}
	hooks := p.hooksOf(event)
	// a stage that failed runs again from its first hook
	if slices.ContainsFunc(hs.Runs, func(r HookRun) bool { return r.Event == event && r.Phase == HookPhaseFailed }) {
		hs.Runs = slices.DeleteFunc(hs.Runs, func(r HookRun) bool { return r.Event == event })
	}
	for i, h := range hooks {
		run := hs.run(event, h.id)
		var state *unstructured.Unstructured
		switch {
		case run != nil && run.Phase == HookPhaseSucceeded:
			continue
		case run == nil:
			if h.deletes(DeleteBeforeHookCreation) {
				free, err := p.a.deleteHook(ctx, h, p.o.Owner)
				if err != nil {
					return prog, fmt.Errorf("%s hook %s: deleting its previous object: %w", event, h.id, err)
				}
				if !free {
					prog.running = &HookRun{Event: event, Object: h.id, Phase: HookPhaseRunning, Message: "waiting for its previous object to be deleted"}
					return prog, nil
				}
			}
			now := metav1.NewTime(p.now())
			hs.Runs = append(hs.Runs, HookRun{Event: event, Object: h.id, Phase: HookPhaseRunning, StartedAt: &now})
			run = &hs.Runs[len(hs.Runs)-1]
			state = h.obj.DeepCopy()
			if err := p.a.patch(ctx, state, false); err != nil {
				return p.failHook(ctx, hooks, i, run, "refused by the API server: "+apiMessage(err)), nil
			}
		default: // running
			state = &unstructured.Unstructured{}
			state.SetGroupVersionKind(h.obj.GroupVersionKind())
			if err := p.a.c.Get(ctx, client.ObjectKeyFromObject(h.obj), state); err != nil {
				if !apierrors.IsNotFound(err) {
					return prog, fmt.Errorf("%s hook %s: %w", event, h.id, err)
				}
				return p.failHook(ctx, hooks, i, run, "deleted before it completed"), nil
			}
		}
		done, failed, msg := hookState(state)
		switch {
		case done:
			now := metav1.NewTime(p.now())
			run.Phase, run.Message, run.CompletedAt = HookPhaseSucceeded, msg, &now
		case failed:
			return p.failHook(ctx, hooks, i, run, msg), nil
		case run.StartedAt != nil && !p.now().Before(run.StartedAt.Add(p.o.HookTimeout)):
			return p.failHook(ctx, hooks, i, run, fmt.Sprintf("not done after %s (%s)", p.o.HookTimeout, msg)), nil
		default:
			run.Message = msg
			r := *run
			prog.running = &r
			return prog, nil
		}
	}
	// all succeeded: hook-succeeded deletes them, last first
	for i := len(hooks) - 1; i >= 0; i-- {
		if hooks[i].deletes(DeleteHookSucceeded) {
			if _, err := p.a.deleteHook(ctx, hooks[i], p.o.Owner); err != nil {
				return prog, fmt.Errorf("%s hook %s: deleting it (%s): %w", event, hooks[i].id, DeleteHookSucceeded, err)
			}
		}
	}
	prog.done = true
	switch event {
	case HookPreInstall:
		hs.Stage = HookPostInstall
	case HookPreUpgrade:
		hs.Stage = HookPostUpgrade
	default:
		hs.Stage = HookStageDone
	}
	return prog, nil
}

// failHook records hooks[i]'s failure and deletes what the delete policies
// say: the failed hook (hook-failed), the stage's hooks that succeeded
// before it (hook-succeeded). A deletion that fails is told in the run's
// message.
func (p *Plan) failHook(ctx context.Context, hooks []*Hook, i int, run *HookRun, msg string) hookProgress {
	now := metav1.NewTime(p.now())
	run.Phase, run.Message, run.CompletedAt = HookPhaseFailed, msg, &now
	var errs []string
	del := func(h *Hook, policy string) {
		if h.deletes(policy) {
			if _, err := p.a.deleteHook(ctx, h, p.o.Owner); err != nil {
				errs = append(errs, fmt.Sprintf("deleting %s (%s): %v", h.id, policy, err))
			}
		}
	}
	del(hooks[i], DeleteHookFailed)
	for _, h := range hooks[:i] {
		del(h, DeleteHookSucceeded)
	}
	if len(errs) > 0 {
		run.Message += "; " + strings.Join(errs, "; ")
	}
	r := *run
	return hookProgress{stage: run.Event, failed: &r}
}

// deleteHook deletes the object of a hook (background propagation) when it
// is there and labelled as owner's; free tells that nothing of owner's is
// in the hook's way any more (an object being deleted still is).
func (a *Applier) deleteHook(ctx context.Context, h *Hook, owner string) (free bool, err error) {
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(h.obj.GroupVersionKind())
	key := client.ObjectKeyFromObject(h.obj)
	if err := a.c.Get(ctx, key, cur); err != nil {
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}
	if cur.GetLabels()[LabelKubePkg] != owner {
		return true, nil // not the package's: applied over, never deleted
	}
	if cur.GetDeletionTimestamp() != nil {
		return false, nil
	}
	uid := cur.GetUID()
	err = a.c.Delete(ctx, cur, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &uid})
	if err != nil {
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}
	// gone at once, unless finalizers hold it
	if err := a.c.Get(ctx, key, cur); err != nil {
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}
	return false, nil
}

// hookState tells whether a hook's object is done (a Job Complete, a Pod
// Succeeded, any other kind at once) or failed, as Helm's hook waiter
// reads them (internal/statusreaders).
func hookState(u *unstructured.Unstructured) (done, failed bool, msg string) {
	gk := u.GroupVersionKind().GroupKind()
	switch {
	case gk.Group == "batch" && gk.Kind == "Job":
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["status"] != "True" {
				continue
			}
			switch m["type"] {
			case "Complete":
				return true, false, "Job completed"
			case "Failed":
				return false, true, joinNonEmpty("Job failed", m["reason"], m["message"])
			}
		}
		return false, false, "Job running"
	case gk.Group == "" && gk.Kind == "Pod":
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		switch phase {
		case "Succeeded":
			return true, false, "Pod succeeded"
		case "Failed":
			st, _ := u.Object["status"].(map[string]any)
			return false, true, joinNonEmpty("Pod failed", st["reason"], st["message"])
		}
		if phase == "" {
			phase = "Pending"
		}
		return false, false, "Pod " + phase
	}
	return true, false, "applied"
}

// joinNonEmpty joins the non-empty strings of parts with ": ".
func joinNonEmpty(first string, parts ...any) string {
	out := first
	for _, p := range parts {
		if s, _ := p.(string); s != "" {
			out += ": " + s
		}
	}
	return out
}

func (p *Plan) now() time.Time {
	if p.o.Clock != nil {
		return p.o.Clock()
	}
	return time.Now()
}

// hookRecordName is the name of the ConfigMap where `crpe apply` keeps a
// package's HookStatus.
func hookRecordName(pkg string) string { return "crpe-hooks." + pkg }

// readHookRecord reads the HookStatus `crpe apply` kept for a package (nil
// when there is none).
func (a *Applier) readHookRecord(ctx context.Context, ns, pkg string) (*HookStatus, error) {
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	if err := a.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: hookRecordName(pkg)}, cm); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	s, _, _ := unstructured.NestedString(cm.Object, "data", "status")
	var hs HookStatus
	if err := json.Unmarshal([]byte(s), &hs); err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", ns, hookRecordName(pkg), err)
	}
	return &hs, nil
}

// writeHookRecord keeps a HookStatus (JSON) in the package's ConfigMap
// (labelled octohelm.tech/hooks-of, not octohelm.tech/kubepkg: it is no
// object of the package).
func (a *Applier) writeHookRecord(ctx context.Context, ns, pkg, owner string, b []byte) error {
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": hookRecordName(pkg), "namespace": ns,
			"labels": map[string]any{LabelManagedBy: "crpe", LabelHookRecord: owner}},
		"data": map[string]any{"status": string(b)}}}
	if err := a.patch(ctx, cm, false); err != nil {
		return fmt.Errorf("recording the hooks of %s: %w", owner, err)
	}
	return nil
}

// waitReady waits until every object of res's inventory is ready (kstatus
// Current), for a stage of post hooks.
func (a *Applier) waitReady(ctx context.Context, res *Result, timeout time.Duration) error {
	set := make(object.ObjMetadataSet, 0, len(res.Inventory))
	for _, e := range res.Inventory {
		set = append(set, e.objMeta())
	}
	if len(set) == 0 {
		return nil
	}
	return a.rm.WaitForSetWithContext(ctx, set, ssa.WaitOptions{Interval: defsInterval, Timeout: timeout})
}
