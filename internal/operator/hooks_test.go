package operator_test

// Unit tests of Helm hooks (hooks.go) with the fake client: the order Helm
// runs them in, and Reconcile through an install, a resync and an upgrade
// (pre hooks before the rest, post hooks once it is ready, delete policies,
// no second run for the version applied), failures (a failed Job, a
// timeout, a refused hook: the rest not applied, the stage run again at
// the next attempt), hooks crpe does not run, and Applier.Apply's record
// for `crpe apply`. No controller runs here: the tests write the Jobs'
// status themselves; test/operator does the same against a real API
// server.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/operator"
)

// job returns a Job manifest of one container.
func job(name string) map[string]any {
	return map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"backoffLimit": 0, "template": map[string]any{"spec": map[string]any{
			"restartPolicy": "Never", "containers": []any{map[string]any{"name": "main", "image": "busybox"}}}}}}
}

// hook annotates a manifest as a Helm hook of events ("" leaves the
// weight or the delete policy out).
func hook(m map[string]any, events, weight, policy string) map[string]any {
	ann := map[string]any{operator.AnnotationHook: events}
	if weight != "" {
		ann[operator.AnnotationHookWeight] = weight
	}
	if policy != "" {
		ann[operator.AnnotationHookDeletePolicy] = policy
	}
	m["metadata"].(map[string]any)["annotations"] = ann
	return m
}

func (e *env) get(t *testing.T, gvk schema.GroupVersionKind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	e.calls.take()
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var (
	jobGVK = schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}
	podGVK = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	saGVK  = schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}
	cmGVK  = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
)

// finishJob writes a Job's status as the Job controller would: condition
// typ (Complete or Failed) True.
func (e *env) finishJob(t *testing.T, name, typ string) {
	t.Helper()
	u := e.get(t, jobGVK, name)
	if u == nil {
		t.Fatalf("Job %s is not there to finish", name)
	}
	_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": typ, "status": "True", "reason": "ByTheTest", "message": typ + " by the test"}}, "status", "conditions")
	u.SetManagedFields(nil)
	if err := e.c.Status().Update(context.Background(), u, client.FieldOwner("job-controller")); err != nil {
		t.Fatal(err)
	}
	e.calls.take()
}

// before tells whether a comes before b in log (both present).
func before(log []string, a, b string) bool {
	i, j := slices.Index(log, a), slices.Index(log, b)
	return i >= 0 && j >= 0 && i < j
}

func runs(st operator.Status) []string {
	if st.Hooks == nil {
		return nil
	}
	var out []string
	for _, r := range st.Hooks.Runs {
		out = append(out, r.Event+" "+r.Object+" "+r.Phase)
	}
	return out
}

// TestHookOrder: hooks run by weight (a number, "" and junk are 0, as
// Helm), then name, then kind in Helm's install order (unknown kinds
// last); a hook of two events runs in both; an object whose helm.sh/hook
// names an unknown event is neither applied nor run; pre-delete, rollback
// and test hooks are ignored, with a reason.
func TestHookOrder(t *testing.T) {
	e := newEnv(t)
	a := operator.NewApplier(e.c)
	p := &kubepkg.KubePkg{APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
		Metadata: kubepkg.ObjectMeta{Name: "demo", Namespace: ns},
		Spec:     kubepkg.Spec{Version: "1.0.0", Images: map[string]string{}, Manifests: map[string]kubepkg.Manifest{}}}
	for _, m := range []map[string]any{
		hook(job("z-late"), "pre-install", "10", ""),
		hook(job("b-mid"), "pre-install,pre-upgrade", "", ""),
		hook(configMap("a-mid", nil), "pre-install", "junk", ""),
		hook(job("same"), "pre-install", "-5", ""),
		hook(map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "same"}}, "pre-install", "-5", ""),
		hook(map[string]any{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "same"}}, "Pre-Install ", "-5", ""),
		hook(job("first"), "pre-install", "-10", ""),
		hook(job("after"), "post-install", "", ""),
		hook(job("cleanup"), "pre-delete", "", ""),
		hook(job("smoke"), "test", "", ""),
		hook(job("both"), "pre-install,post-rollback", "", ""),
		hook(configMap("typo", nil), "pre-instal", "", ""),
		configMap("plain", nil),
	} {
		p.Spec.Manifests[p.ManifestKey(m)] = m
	}
	plan, err := a.Prepare(context.Background(), p, ns, operator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Job/team/first", "ServiceAccount/team/same", "Job/team/same", "Gadget/team/same",
		"ConfigMap/team/a-mid", "Job/team/b-mid", "Job/team/both", "Job/team/z-late"}
	if got := plan.HooksOf("pre-install"); !slices.Equal(got, want) {
		t.Errorf("pre-install hooks run as %v, want %v", got, want)
	}
	if got := plan.HooksOf("pre-upgrade"); !slices.Equal(got, []string{"Job/team/b-mid"}) {
		t.Errorf("pre-upgrade hooks %v", got)
	}
	if got := plan.HooksOf("post-install"); !slices.Equal(got, []string{"Job/team/after"}) {
		t.Errorf("post-install hooks %v", got)
	}
	ign := strings.Join(plan.Ignored(), "\n")
	for _, w := range []string{"Job/team/cleanup: pre-delete hook not run", "Job/team/smoke: test hook not run",
		"Job/team/both: post-rollback hook not run", `ConfigMap/team/typo: helm.sh/hook "pre-instal" names an unknown event`} {
		if !strings.Contains(ign, w) {
			t.Errorf("ignored hooks:\n%s\nwant %q", ign, w)
		}
	}

	// applied: the plain object alone, as the package's first apply
	e.put(t, kubePkg(t, "demo", "1.0.0", 1, configMap("plain", nil),
		hook(job("cleanup"), "pre-delete", "", ""), hook(configMap("typo", nil), "pre-instal", "", "")))
	e.reconcile(t, "demo")
	st := e.status(t, "demo")
	if got := inventory(st); !slices.Equal(got, []string{"ConfigMap/team/plain"}) {
		t.Errorf("inventory %v", got)
	}
	if e.get(t, jobGVK, "cleanup") != nil || e.get(t, cmGVK, "typo") != nil {
		t.Error("a hook crpe does not run, or an object of an unknown hook event, was applied")
	}
	if st.Hooks == nil || len(st.Hooks.Ignored) != 2 || st.Hooks.Stage != "done" {
		t.Errorf("status.hooks %+v", st.Hooks)
	}
	if ev := drain(e.rec); !slices.ContainsFunc(ev, func(s string) bool {
		return strings.HasPrefix(s, "Warning HooksIgnored") && strings.Contains(s, "Job/team/cleanup: pre-delete hook not run")
	}) {
		t.Errorf("events %v: want a HooksIgnored warning", ev)
	}
}

// TestReconcileHooksInstallUpgrade: an install runs the pre-install hooks
// one at a time by weight (a Job waited for until Complete, across
// reconciles), then the rest, then, once it is ready, the post-install
// hooks; hook-succeeded deletes a hook after its stage, the default
// (before-hook-creation) leaves it until its next run. Hooks stay out of
// the inventory. A resync writes nothing and runs nothing. An upgrade runs
// pre-upgrade (a hook of both events again, its previous object deleted
// first), the rest, then post-upgrade; a pre-install-only hook does not
// run again.
func TestReconcileHooksInstallUpgrade(t *testing.T) {
	e := newEnv(t)
	v1 := func(version string, gen int64, data string) *unstructured.Unstructured {
		return kubePkg(t, "app", version, gen, configMap("app", map[string]string{"v": data}),
			hook(map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "migrator"}}, "pre-install,pre-upgrade", "-10", ""),
			hook(configMap("seed", map[string]string{"k": "v"}), "pre-install", "-5", "hook-succeeded"),
			hook(job("migrate"), "pre-install,pre-upgrade", "0", "before-hook-creation,hook-succeeded"),
			hook(job("notify"), "post-install,post-upgrade", "", ""))
	}
	e.put(t, v1("1.0.0", 1, "1"))
	res := e.reconcile(t, "app")
	if res.RequeueAfter != 2*time.Second {
		t.Errorf("result %+v: a running hook is looked at again in HookPoll (2s)", res)
	}
	log := e.calls.takeLog()
	if want := []string{"apply ServiceAccount/migrator", "apply ConfigMap/seed", "apply Job/migrate"}; !slices.Equal(log, want) {
		t.Errorf("first reconcile wrote %v, want %v (the pre-install hooks by weight, the rest waiting for the Job)", log, want)
	}
	st := e.status(t, "app")
	if c := checkCondition(t, st, "Applied", metav1.ConditionFalse, "HookRunning"); !strings.Contains(c.Message, "pre-install hook Job/team/migrate") {
		t.Errorf("Applied message %q should name the running hook", c.Message)
	}
	checkCondition(t, st, "Ready", metav1.ConditionFalse, "Progressing")
	if got, want := runs(st), []string{"pre-install ServiceAccount/team/migrator Succeeded", "pre-install ConfigMap/team/seed Succeeded",
		"pre-install Job/team/migrate Running"}; !slices.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
	if st.AppliedVersion != "" || len(st.Inventory) != 0 || e.object(t, "ConfigMap", "app") != nil {
		t.Errorf("the rest was applied before the pre-install hooks were done: %+v", st)
	}
	// still running: nothing more happens
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); len(log) != 0 {
		t.Errorf("a reconcile while the Job runs wrote %v", log)
	}

	e.finishJob(t, "migrate", "Complete")
	e.reconcile(t, "app")
	log = e.calls.takeLog()
	// the stage's hook-succeeded hooks go (last first), then the rest, then
	// (a ConfigMap being ready at once) the post-install hook
	if want := []string{"delete Job/migrate", "delete ConfigMap/seed", "apply ConfigMap/app", "apply Job/notify"}; !slices.Equal(log, want) {
		t.Errorf("second reconcile wrote %v, want %v", log, want)
	}
	st = e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied")
	if c := checkCondition(t, st, "Ready", metav1.ConditionFalse, "Progressing"); !strings.Contains(c.Message, "post-install hook Job/team/notify") {
		t.Errorf("Ready message %q should name the running post-install hook", c.Message)
	}
	if st.AppliedVersion != "1.0.0" || st.Hooks.Stage != "post-install" {
		t.Errorf("status %+v, hooks %+v", st, st.Hooks)
	}
	if got := inventory(st); !slices.Equal(got, []string{"ConfigMap/team/app"}) {
		t.Errorf("inventory %v: hooks are not in it", got)
	}
	e.finishJob(t, "notify", "Complete")
	e.reconcile(t, "app")
	st = e.status(t, "app")
	checkCondition(t, st, "Ready", metav1.ConditionTrue, "Ready")
	if st.Hooks.Stage != "done" || len(st.Hooks.Runs) != 4 {
		t.Errorf("hooks %+v", st.Hooks)
	}
	if e.get(t, jobGVK, "notify") == nil || e.get(t, saGVK, "migrator") == nil {
		t.Error("hooks without hook-succeeded were deleted after they succeeded")
	}
	if ev := drain(e.rec); !slices.ContainsFunc(ev, func(s string) bool {
		return strings.HasPrefix(s, "Normal HooksSucceeded") && strings.Contains(s, "post-install")
	}) {
		t.Errorf("events %v", ev)
	}
	e.calls.takeLog()

	// a resync: nothing written, no hook run again
	for range 2 {
		e.reconcile(t, "app")
		if got := e.calls.take(); writes(got) != 0 {
			t.Errorf("resync wrote %v", got)
		}
	}

	// the same version changed: applied, no hook runs
	e.put(t, v1("1.0.0", 2, "2"))
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"apply ConfigMap/app"}) {
		t.Errorf("a new generation of the same version wrote %v, want the ConfigMap alone", log)
	}

	// upgrade
	e.put(t, v1("1.1.0", 3, "3"))
	e.reconcile(t, "app")
	log = e.calls.takeLog()
	if want := []string{"delete ServiceAccount/migrator", "apply ServiceAccount/migrator", "apply Job/migrate"}; !slices.Equal(log, want) {
		t.Errorf("upgrade wrote %v, want %v (the pre-upgrade hooks; seed is pre-install only)", log, want)
	}
	st = e.status(t, "app")
	if st.Hooks.Action != "upgrade" || st.Hooks.From != "1.0.0" || st.Hooks.Version != "1.1.0" || st.Hooks.Stage != "pre-upgrade" {
		t.Errorf("hooks %+v", st.Hooks)
	}
	checkCondition(t, st, "Applied", metav1.ConditionFalse, "HookRunning")
	// the previous version still runs: Ready is left as it was
	checkCondition(t, st, "Ready", metav1.ConditionTrue, "Ready")
	e.finishJob(t, "migrate", "Complete")
	e.reconcile(t, "app")
	log = e.calls.takeLog()
	if want := []string{"delete Job/migrate", "apply ConfigMap/app", "delete Job/notify", "apply Job/notify"}; !slices.Equal(log, want) {
		t.Errorf("upgrade wrote %v, want %v", log, want)
	}
	if v, _, _ := unstructured.NestedString(e.object(t, "ConfigMap", "app").Object, "data", "v"); v != "3" {
		t.Errorf("app.v = %q after the upgrade", v)
	}
	if j := e.get(t, jobGVK, "notify"); j == nil || j.Object["status"] != nil && len(j.Object["status"].(map[string]any)) > 0 {
		t.Errorf("notify was not created anew for post-upgrade: %v", j)
	}
	e.finishJob(t, "notify", "Complete")
	e.reconcile(t, "app")
	st = e.status(t, "app")
	if st.AppliedVersion != "1.1.0" || st.Hooks.Stage != "done" {
		t.Errorf("status %+v, hooks %+v", st, st.Hooks)
	}
	checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied")
	checkCondition(t, st, "Ready", metav1.ConditionTrue, "Ready")
	if got, want := runs(st), []string{"pre-upgrade ServiceAccount/team/migrator Succeeded", "pre-upgrade Job/team/migrate Succeeded",
		"post-upgrade Job/team/notify Succeeded"}; !slices.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}

	// deleting the package leaves the hooks (not part of the package's
	// inventory, as a Helm uninstall leaves them)
	pkg := e.get(t, schema.GroupVersionKind{Group: "octohelm.tech", Version: "v1alpha1", Kind: "KubePkg"}, "app")
	if err := e.c.Delete(context.Background(), pkg); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t, "app")
	if e.object(t, "ConfigMap", "app") != nil {
		t.Error("app not deleted with its package")
	}
	if e.get(t, jobGVK, "notify") == nil {
		t.Error("a hook was deleted with its package")
	}
}

// TestReconcileHookFailure: a failed pre-install Job stops the stage:
// Applied=False/HookFailed names it, an event says so, the rest is not
// applied, hook-failed deletes it and hook-succeeded the hooks before it,
// and the reconcile comes back at the resync (no error, no hammering).
// The next attempt runs the stage again from its first hook. A hook not
// done within the timeout fails the same way; so does one the API server
// refuses. A failed post hook leaves the version applied and says so.
func TestReconcileHookFailure(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.r.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e.r.HookTimeout = time.Minute
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	pkg := func(gen int64) *unstructured.Unstructured {
		return kubePkg(t, "app", "1.0.0", gen, configMap("app", nil),
			hook(configMap("before", nil), "pre-install", "-1", "hook-succeeded"),
			hook(job("migrate"), "pre-install", "", "hook-failed"),
			hook(job("after"), "post-install", "", ""))
	}
	e.put(t, pkg(1))
	e.reconcile(t, "app")
	e.finishJob(t, "migrate", "Failed")
	e.calls.takeLog()
	res := e.reconcile(t, "app")
	if res.RequeueAfter != e.r.Resync {
		t.Errorf("result %+v: a failed hook is retried at the resync", res)
	}
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"delete Job/migrate", "delete ConfigMap/before"}) {
		t.Errorf("after the failure: %v, want the failed hook deleted (hook-failed), then the one before it (hook-succeeded)", log)
	}
	st := e.status(t, "app")
	c := checkCondition(t, st, "Applied", metav1.ConditionFalse, "HookFailed")
	for _, w := range []string{"pre-install hook Job/team/migrate failed", "Failed by the test", "the rest of the package was not applied"} {
		if !strings.Contains(c.Message, w) {
			t.Errorf("Applied message %q lacks %q", c.Message, w)
		}
	}
	checkCondition(t, st, "Ready", metav1.ConditionFalse, "HookFailed")
	if e.object(t, "ConfigMap", "app") != nil || st.AppliedVersion != "" {
		t.Errorf("the rest was applied after a failed pre-install hook (status %+v)", st)
	}
	if ev := drain(e.rec); !slices.ContainsFunc(ev, func(s string) bool {
		return strings.HasPrefix(s, "Warning HookFailed") && strings.Contains(s, "Job/team/migrate")
	}) {
		t.Errorf("events %v", ev)
	}

	// the next attempt: the stage again, from its first hook
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"apply ConfigMap/before", "apply Job/migrate"}) {
		t.Errorf("retry wrote %v", log)
	}
	if got := runs(e.status(t, "app")); !slices.Equal(got, []string{"pre-install ConfigMap/team/before Succeeded", "pre-install Job/team/migrate Running"}) {
		t.Errorf("runs %v", got)
	}

	// a timeout
	advance(59 * time.Second)
	e.reconcile(t, "app")
	checkCondition(t, e.status(t, "app"), "Applied", metav1.ConditionFalse, "HookRunning")
	advance(time.Second)
	e.reconcile(t, "app")
	st = e.status(t, "app")
	if c := checkCondition(t, st, "Applied", metav1.ConditionFalse, "HookFailed"); !strings.Contains(c.Message, "not done after 1m0s") {
		t.Errorf("Applied message %q", c.Message)
	}
	if e.get(t, jobGVK, "migrate") != nil {
		t.Error("a timed-out hook with hook-failed was not deleted")
	}

	// refused by the API server
	e.calls.refuse["migrate"] = true
	e.reconcile(t, "app")
	if c := checkCondition(t, e.status(t, "app"), "Applied", metav1.ConditionFalse, "HookFailed"); !strings.Contains(c.Message, "refused by the API server") {
		t.Errorf("Applied message %q", c.Message)
	}
	delete(e.calls.refuse, "migrate")

	// fixed: the rest goes on, then the post-install hook, which fails
	e.reconcile(t, "app")
	e.finishJob(t, "migrate", "Complete")
	e.reconcile(t, "app")
	e.finishJob(t, "after", "Failed")
	e.reconcile(t, "app")
	st = e.status(t, "app")
	if st.AppliedVersion != "1.0.0" || e.object(t, "ConfigMap", "app") == nil {
		t.Errorf("status %+v after the pre-install hooks succeeded", st)
	}
	if c := checkCondition(t, st, "Applied", metav1.ConditionFalse, "HookFailed"); !strings.Contains(c.Message, "post-install hook Job/team/after failed") {
		t.Errorf("Applied message %q", c.Message)
	}
	checkCondition(t, st, "Ready", metav1.ConditionFalse, "HookFailed")
	// retried: before-hook-creation deletes the failed Job, a new one runs
	e.calls.takeLog()
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"delete Job/after", "apply Job/after"}) {
		t.Errorf("post-install retry wrote %v", log)
	}
	e.finishJob(t, "after", "Complete")
	e.reconcile(t, "app")
	st = e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied")
	checkCondition(t, st, "Ready", metav1.ConditionTrue, "Ready")
}

// TestReconcileHookPod: a Pod hook is waited for until it Succeeded; a
// Failed one fails its stage.
func TestReconcileHookPod(t *testing.T) {
	e := newEnv(t)
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "check"},
		"spec": map[string]any{"restartPolicy": "Never", "containers": []any{map[string]any{"name": "main", "image": "busybox"}}}}
	e.put(t, kubePkg(t, "app", "1.0.0", 1, configMap("app", nil), hook(pod, "pre-install", "", "")))
	e.reconcile(t, "app")
	checkCondition(t, e.status(t, "app"), "Applied", metav1.ConditionFalse, "HookRunning")
	setPhase := func(phase string) {
		u := e.get(t, podGVK, "check")
		_ = unstructured.SetNestedField(u.Object, phase, "status", "phase")
		u.SetManagedFields(nil)
		if err := e.c.Status().Update(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	setPhase("Failed")
	e.reconcile(t, "app")
	if c := checkCondition(t, e.status(t, "app"), "Applied", metav1.ConditionFalse, "HookFailed"); !strings.Contains(c.Message, "Pod failed") {
		t.Errorf("Applied message %q", c.Message)
	}
	e.reconcile(t, "app") // a new Pod (the failed one deleted first)
	setPhase("Succeeded")
	e.reconcile(t, "app")
	st := e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied")
	if e.object(t, "ConfigMap", "app") == nil {
		t.Error("app not applied after the Pod hook succeeded")
	}
}

// TestApplyHooksRecord: Applier.Apply (crpe apply) runs the hooks of a
// version once, keeping where they stand in the ConfigMap
// crpe-hooks.<name> (not an object of the package: --prune's inventory
// does not see it, nor the hooks); an upgrade runs pre-upgrade; a dry run
// runs none and tells what would run; a failed hook is a *HookError.
func TestApplyHooksRecord(t *testing.T) {
	e := newEnv(t)
	a := operator.NewApplier(e.c)
	ctx := context.Background()
	mk := func(version string) *kubepkg.KubePkg {
		p := &kubepkg.KubePkg{APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
			Metadata: kubepkg.ObjectMeta{Name: "direct", Namespace: ns},
			Spec:     kubepkg.Spec{Version: version, Images: map[string]string{}, Manifests: map[string]kubepkg.Manifest{}}}
		for _, m := range []map[string]any{configMap("app", map[string]string{"v": version}),
			hook(configMap("pre", map[string]string{"v": version}), "pre-install,pre-upgrade", "", ""),
			hook(configMap("post", map[string]string{"v": version}), "post-install", "", "hook-succeeded")} {
			p.Spec.Manifests[p.ManifestKey(m)] = m
		}
		return p
	}
	res, err := a.Apply(ctx, mk("1.0.0"), ns, operator.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Hooks == nil || len(res.Hooks.Runs) != 2 || res.Hooks.Runs[0].Phase != "Pending" {
		t.Errorf("dry run: hooks %+v", res.Hooks)
	}
	if e.get(t, cmGVK, "pre") != nil || e.get(t, cmGVK, "crpe-hooks.direct") != nil {
		t.Error("a dry run ran a hook or wrote the record")
	}
	e.calls.takeLog()
	res, err = a.Apply(ctx, mk("1.0.0"), ns, operator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := e.calls.takeLog()
	if !before(log, "apply ConfigMap/pre", "apply ConfigMap/app") || !before(log, "apply ConfigMap/app", "apply ConfigMap/post") ||
		!before(log, "apply ConfigMap/post", "delete ConfigMap/post") {
		t.Errorf("install wrote %v", log)
	}
	if res.Hooks == nil || res.Hooks.Stage != "done" || len(res.Hooks.Runs) != 2 {
		t.Errorf("hooks %+v", res.Hooks)
	}
	rec := e.get(t, cmGVK, "crpe-hooks.direct")
	if rec == nil || rec.GetLabels()[operator.LabelHookRecord] != "team.direct" || rec.GetLabels()[operator.LabelKubePkg] != "" {
		t.Fatalf("record %v", rec)
	}
	owned, err := a.Owned(ctx, "team.direct")
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 1 || owned[0].Name != "app" {
		t.Errorf("Owned %v: the package's object alone (no hook, no record)", owned)
	}

	// again: no hook runs
	res, err = a.Apply(ctx, mk("1.0.0"), ns, operator.Options{Prune: true, Previous: owned})
	if err != nil {
		t.Fatal(err)
	}
	if log := e.calls.takeLog(); len(log) != 0 || res.Hooks != nil {
		t.Errorf("the same version again wrote %v, hooks %+v", log, res.Hooks)
	}
	if e.get(t, cmGVK, "pre") == nil {
		t.Error("--prune deleted a hook")
	}

	// upgrade: pre-upgrade only (post is post-install only)
	res, err = a.Apply(ctx, mk("2.0.0"), ns, operator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log = e.calls.takeLog()
	// (the record is written once the rest is applied, and once done)
	if !slices.Equal(log, []string{"delete ConfigMap/pre", "apply ConfigMap/pre", "apply ConfigMap/app",
		"apply ConfigMap/crpe-hooks.direct", "apply ConfigMap/crpe-hooks.direct"}) {
		t.Errorf("upgrade wrote %v", log)
	}
	if res.Hooks == nil || res.Hooks.Action != "upgrade" || res.Hooks.From != "1.0.0" {
		t.Errorf("hooks %+v", res.Hooks)
	}

	// a failed hook: a *HookError, the rest not applied
	e.calls.refuse["pre"] = true
	res, err = a.Apply(ctx, mk("3.0.0"), ns, operator.Options{})
	var he *operator.HookError
	if !errors.As(err, &he) || he.Run.Object != "ConfigMap/team/pre" || res == nil {
		t.Fatalf("Apply: %v, want a HookError naming ConfigMap/team/pre", err)
	}
	if v, _, _ := unstructured.NestedString(e.get(t, cmGVK, "app").Object, "data", "v"); v != "2.0.0" {
		t.Errorf("app.v = %q: the rest was applied after a failed pre-upgrade hook", v)
	}
}

// TestReconcileHooksAfterCRDsAndNamespaces: the pre-install hooks run after
// the package's Namespaces (and CRDs), before its other definitions
// (ClusterRoles) and the rest: the order `crpe manifests` prints.
func TestReconcileHooksAfterCRDsAndNamespaces(t *testing.T) {
	e := newEnv(t)
	extra := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "extra"}}
	role := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "reader"},
		"rules": []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"pods"}, "verbs": []any{"get"}}}}
	e.put(t, kubePkg(t, "app", "1.0.0", 1, extra, role, configMap("app", nil), hook(job("migrate"), "pre-install", "", "")))
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"apply Namespace/extra", "apply Job/migrate"}) {
		t.Errorf("first reconcile wrote %v, want the Namespace, then the hook", log)
	}
	// the Namespace is in the inventory already (deleted with the package)
	if got := inventory(e.status(t, "app")); !slices.Equal(got, []string{"Namespace/extra"}) {
		t.Errorf("inventory %v", got)
	}
	e.finishJob(t, "migrate", "Complete")
	e.reconcile(t, "app")
	if log := e.calls.takeLog(); !slices.Equal(log, []string{"apply ClusterRole/reader", "apply ConfigMap/app"}) {
		t.Errorf("second reconcile wrote %v", log)
	}
	st := e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied")
	if got, want := inventory(st), []string{"ClusterRole/reader", "ConfigMap/team/app", "Namespace/extra"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
}
