package operator_test

// Unit tests of the operator with controller-runtime's fake client (no API
// server, no external program): Applier.Objects, and Reconcile end to end
// (fresh apply, an unchanged resync that writes nothing, drift put back, an
// invalid spec Stalled, a failure leaving appliedVersion alone, prune of a
// dropped object, the downgrade gate). The fake client implements
// server-side apply with managedFields (structured-merge-diff, client-go's
// schemas), which is what the engine reads to tell drift. It has no
// admission, no defaulting, no validation and no dry run (a dry-run patch
// returns the object as sent): the API server's refusals are simulated
// with an interceptor, and what only a real API server shows is tested in
// test/operator.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/operator"
	"github.com/octohelm/crpe/internal/testenv"
)

const ns = "team"

// calls counts the requests the fake client serves, by verb.
type calls struct {
	mu     sync.Mutex
	counts map[string]int
	// refuse names objects whose apply the "API server" refuses
	refuse map[string]bool
	// log lists the applies and deletes of objects (not KubePkgs), in
	// order: "apply Kind/name", "delete Kind/name"
	log []string
}

func (c *calls) record(verb string, obj client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := obj.(*unstructured.Unstructured); ok && u.GroupVersionKind().Kind == kubeclient.GVK.Kind {
		return
	}
	c.log = append(c.log, verb+" "+obj.GetObjectKind().GroupVersionKind().Kind+"/"+obj.GetName())
}

// takeLog returns the log so far and starts it again.
func (c *calls) takeLog() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

func (c *calls) add(verb string, obj client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kind := "object"
	if u, ok := obj.(*unstructured.Unstructured); ok && u.GroupVersionKind().Kind == kubeclient.GVK.Kind {
		kind = "kubepkg"
	}
	c.counts[kind+" "+verb]++
}

// of returns the counts and starts again from zero.
func (c *calls) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

// writes counts the writes of a count map.
func writes(m map[string]int) int {
	n := 0
	for k, v := range m {
		if !strings.HasSuffix(k, " get") && !strings.HasSuffix(k, " list") && !strings.HasSuffix(k, " dry-run") {
			n += v
		}
	}
	return n
}

type env struct {
	c     client.Client
	r     *operator.Reconciler
	calls *calls
	rec   *record.FakeRecorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// the preferred versions let kstatus's poller map a kind without its
	// version (as it does to wait for a package to be ready)
	m := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"}, {Group: "batch", Version: "v1"},
		{Group: "rbac.authorization.k8s.io", Version: "v1"}, {Group: "apiextensions.k8s.io", Version: "v1"}, kubeclient.GVK.GroupVersion()})
	m.Add(kubeclient.GVK, meta.RESTScopeNamespace)
	for _, k := range []string{"ConfigMap", "Secret", "Service"} {
		m.Add(schema.GroupVersionKind{Version: "v1", Kind: k}, meta.RESTScopeNamespace)
	}
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}, meta.RESTScopeRoot)
	// the fake client's apply needs the built-in kinds in its scheme: with
	// an empty one, applying a second kind fails ("expected objects of the
	// same type"); objects are still read and written as unstructured
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cs := &calls{counts: map[string]int{}, refuse: map[string]bool{}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(m).
		WithStatusSubresource(kubeclient.NewKubePkg()).WithReturnManagedFields().
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				cs.add("get", obj)
				return c.Get(ctx, key, obj, opts...)
			},
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				cs.add("list", nil)
				return c.List(ctx, list, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				cs.add("create", obj)
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				cs.add("update", obj)
				return c.Update(ctx, obj, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				cs.add("delete", obj)
				cs.record("delete", obj)
				return c.Delete(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				po := &client.PatchOptions{}
				po.ApplyOptions(opts)
				verb := "patch"
				if len(po.DryRun) > 0 {
					verb = "dry-run"
				}
				cs.add(verb, obj)
				if verb == "patch" && patch.Type() == types.ApplyPatchType {
					cs.record("apply", obj)
				}
				if patch.Type() == types.ApplyPatchType && cs.refuse[obj.GetName()] {
					return apierrors.NewInvalid(obj.GetObjectKind().GroupVersionKind().GroupKind(), obj.GetName(),
						field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), obj.GetName(), "refused by the test")})
				}
				return c.Patch(ctx, obj, patch, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				cs.add(sub+" patch", obj)
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	rec := record.NewFakeRecorder(1000)
	r := &operator.Reconciler{Client: c, Applier: operator.NewApplier(c), Recorder: rec}
	return &env{c: c, r: r, calls: cs, rec: rec}
}

var (
	configMap = testenv.ConfigMap
	secret    = testenv.Secret
	service   = testenv.Service
)

// kubePkg returns a KubePkg object as kubectl would create it.
func kubePkg(t *testing.T, name, version string, generation int64, objs ...map[string]any) *unstructured.Unstructured {
	t.Helper()
	man := map[string]any{}
	for _, o := range objs {
		meta := o["metadata"].(map[string]any)
		man[fmt.Sprintf("%s.%s.%s", meta["name"], ns, strings.ToLower(o["kind"].(string)))] = o
	}
	b, err := yaml.Marshal(map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"version": version, "manifests": man}})
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetGeneration(generation)
	return u
}

// put creates or replaces (a new spec, a new generation) a KubePkg.
func (e *env) put(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	cur := kubeclient.NewKubePkg()
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
		if err := e.c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	} else {
		cur.Object["spec"] = u.Object["spec"]
		cur.SetGeneration(u.GetGeneration())
		if err := e.c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	e.calls.take()
}

func (e *env) reconcile(t *testing.T, name string) ctrl.Result {
	t.Helper()
	res, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (e *env) status(t *testing.T, name string) operator.Status {
	t.Helper()
	u := kubeclient.NewKubePkg()
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	b, _ := yaml.Marshal(u.Object["status"])
	var st operator.Status
	if err := yaml.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	e.calls.take()
	return st
}

func (e *env) object(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: kind})
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

func condition(st operator.Status, typ string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

func checkCondition(t *testing.T, st operator.Status, typ string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	c := condition(st, typ)
	if c == nil || c.Status != status || c.Reason != reason {
		t.Errorf("condition %s: %+v, want %s %s (status %+v)", typ, c, status, reason, st)
	}
	if c == nil {
		return &metav1.Condition{}
	}
	return c
}

func inventory(st operator.Status) []string {
	var out []string
	for _, e := range st.Inventory {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return out
}

// TestReconcileFreshApply: a new KubePkg costs one apply per object and no
// read of them beyond one LIST per kind; its objects carry crpe's labels
// and field manager; the status is written once, with the inventory,
// appliedVersion, Applied and Ready; the finalizer is set.
func TestReconcileFreshApply(t *testing.T) {
	e := newEnv(t)
	e.put(t, kubePkg(t, "web", "1.0.0", 1,
		configMap("a", map[string]string{"k": "1"}), configMap("b", map[string]string{"k": "1"}),
		secret("s", map[string]string{"password": "p"}), service("svc", 80)))
	res := e.reconcile(t, "web")
	got := e.calls.take()
	if got["object patch"] != 4 || got["object dry-run"] != 0 || got["object get"] != 0 || got["object list"] > 3 {
		t.Errorf("requests on the objects: %v, want 4 applies, at most 3 LISTs, nothing else", got)
	}
	if got["kubepkg status patch"] != 1 || got["kubepkg patch"] != 1 {
		t.Errorf("requests on the KubePkg: %v, want one finalizer patch and one status patch", got)
	}
	if res.RequeueAfter <= 0 {
		t.Errorf("result %+v: want a resync", res)
	}
	st := e.status(t, "web")
	if st.AppliedVersion != "1.0.0" || st.ObservedGeneration != 1 {
		t.Errorf("status %+v", st)
	}
	if c := checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied"); !strings.Contains(c.Message, "4 created") {
		t.Errorf("Applied message %q", c.Message)
	}
	checkCondition(t, st, "Ready", metav1.ConditionTrue, "Ready")
	want := []string{"ConfigMap/team/a", "ConfigMap/team/b", "Secret/team/s", "Service/team/svc"}
	if got := inventory(st); !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
	u := e.object(t, "ConfigMap", "a")
	if u == nil {
		t.Fatal("ConfigMap a not applied")
	}
	if u.GetLabels()[operator.LabelKubePkg] != "team.web" || u.GetLabels()[operator.LabelManagedBy] != "crpe" {
		t.Errorf("labels %v", u.GetLabels())
	}
	if mf := u.GetManagedFields(); len(mf) != 1 || mf[0].Manager != "crpe" || mf[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managedFields %+v", mf)
	}
	pkg := kubeclient.NewKubePkg()
	_ = e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "web"}, pkg)
	if !slices.Contains(pkg.GetFinalizers(), operator.Finalizer) {
		t.Errorf("finalizers %v", pkg.GetFinalizers())
	}
}

// TestReconcileResync: a resync of an unchanged package writes nothing (no
// apply, no status patch) and reads at most one LIST per kind; an object
// changed or deleted behind crpe's back is put back with one apply, the
// others left alone.
func TestReconcileResync(t *testing.T) {
	e := newEnv(t)
	e.put(t, kubePkg(t, "web", "1.0.0", 1,
		configMap("a", map[string]string{"k": "1"}), configMap("b", map[string]string{"k": "1"}),
		secret("s", map[string]string{"password": "p"}), service("svc", 80)))
	e.reconcile(t, "web")
	before := e.status(t, "web")
	for i := range 2 {
		e.reconcile(t, "web")
		got := e.calls.take()
		if w := writes(got); w != 0 {
			t.Errorf("resync %d of an unchanged package: %d writes (%v)", i, w, got)
		}
		if got["object get"]+got["object dry-run"]+got["object list"] > 4 || got["object list"] > 3 {
			t.Errorf("resync %d: requests on the objects %v, want at most one per object", i, got)
		}
	}
	if after := e.status(t, "web"); !slices.EqualFunc(before.Conditions, after.Conditions, func(a, b metav1.Condition) bool { return a.Message == b.Message && a.Status == b.Status }) {
		t.Errorf("conditions changed by an unchanged resync: %+v → %+v", before.Conditions, after.Conditions)
	}

	// drift: a value changed by hand, an object deleted
	a := e.object(t, "ConfigMap", "a")
	_ = unstructured.SetNestedField(a.Object, "2", "data", "k")
	a.SetManagedFields(nil)
	if err := e.c.Update(context.Background(), a, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(context.Background(), e.object(t, "ConfigMap", "b")); err != nil {
		t.Fatal(err)
	}
	e.calls.take()
	e.reconcile(t, "web")
	got := e.calls.take()
	if got["object patch"] != 2 || got["object dry-run"] != 0 {
		t.Errorf("drift: requests %v, want 2 applies (a and b) and no dry run", got)
	}
	if v, _, _ := unstructured.NestedString(e.object(t, "ConfigMap", "a").Object, "data", "k"); v != "1" {
		t.Errorf("a.data.k = %q after the resync, want 1", v)
	}
	if e.object(t, "ConfigMap", "b") == nil {
		t.Error("b not recreated")
	}
	// (the fake client does not move resourceVersion on an apply, so
	// "configured" is only told apart from "unchanged" by a real API
	// server: test/operator)
	st := e.status(t, "web")
	if c := checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied"); !strings.Contains(c.Message, "1 created") {
		t.Errorf("Applied message after drift %q", c.Message)
	}
}

// TestReconcileInvalidStalled: a package that is not valid is Stalled
// (condition, event), nothing is applied and nothing is requeued; another
// reconcile of it writes nothing.
func TestReconcileInvalidStalled(t *testing.T) {
	e := newEnv(t)
	e.put(t, kubePkg(t, "bad", "latest", 1, configMap("never", nil)))
	res := e.reconcile(t, "bad")
	if res.RequeueAfter != 0 || res.Requeue { //nolint:staticcheck // Requeue is what is checked
		t.Errorf("result %+v: an invalid package must not be requeued", res)
	}
	st := e.status(t, "bad")
	if c := checkCondition(t, st, "Stalled", metav1.ConditionTrue, "Invalid"); !strings.Contains(c.Message, "latest") {
		t.Errorf("Stalled message %q should name the version", c.Message)
	}
	checkCondition(t, st, "Applied", metav1.ConditionFalse, "Invalid")
	checkCondition(t, st, "Ready", metav1.ConditionFalse, "NotApplied")
	if st.AppliedVersion != "" || len(st.Inventory) != 0 {
		t.Errorf("status %+v", st)
	}
	if e.object(t, "ConfigMap", "never") != nil {
		t.Error("an invalid package was applied")
	}
	if ev := drain(e.rec); !slices.ContainsFunc(ev, func(s string) bool { return strings.HasPrefix(s, "Warning Invalid") }) {
		t.Errorf("events %v", ev)
	}
	e.reconcile(t, "bad")
	if got := e.calls.take(); writes(got) != 0 {
		t.Errorf("a second reconcile of an invalid package wrote: %v", got)
	}

	// fixed: applied, no longer Stalled
	e.put(t, kubePkg(t, "bad", "1.0.0", 2, configMap("never", nil)))
	e.reconcile(t, "bad")
	st = e.status(t, "bad")
	if condition(st, "Stalled") != nil || st.AppliedVersion != "1.0.0" {
		t.Errorf("status after the fix %+v", st)
	}
}

// TestReconcileFailure: an object the API server refuses is named in
// Applied=False/ApplyFailed, the others applied; appliedVersion stays what
// it was (empty on a first apply); a refused new version of an applied
// object keeps it (not pruned).
func TestReconcileFailure(t *testing.T) {
	e := newEnv(t)
	e.calls.refuse["refused"] = true
	e.put(t, kubePkg(t, "app", "1.0.0", 1, configMap("ok", nil), configMap("refused", nil)))
	e.reconcile(t, "app")
	st := e.status(t, "app")
	if c := checkCondition(t, st, "Applied", metav1.ConditionFalse, "ApplyFailed"); !strings.Contains(c.Message, "ConfigMap/team/refused") {
		t.Errorf("Applied message %q should name the refused object", c.Message)
	}
	if st.AppliedVersion != "" {
		t.Errorf("appliedVersion %q after a failed first apply, want none", st.AppliedVersion)
	}
	if got := inventory(st); !slices.Equal(got, []string{"ConfigMap/team/ok"}) {
		t.Errorf("inventory %v", got)
	}

	e.calls.refuse = map[string]bool{}
	e.reconcile(t, "app")
	if st = e.status(t, "app"); st.AppliedVersion != "1.0.0" {
		t.Fatalf("status %+v after the refusal went away", st)
	}
	// 1.1.0 changes ok, which is refused now: 1.0.0 stays the applied version
	e.calls.refuse["ok"] = true
	e.put(t, kubePkg(t, "app", "1.1.0", 2, configMap("ok", map[string]string{"v": "2"}), configMap("refused", nil), configMap("new", nil)))
	e.reconcile(t, "app")
	st = e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionFalse, "ApplyFailed")
	if st.AppliedVersion != "1.0.0" {
		t.Errorf("appliedVersion %q after a failed upgrade, want 1.0.0", st.AppliedVersion)
	}
	if e.object(t, "ConfigMap", "ok") == nil {
		t.Error("the refused new version of ok got the old one pruned")
	}
	if got, want := inventory(st), []string{"ConfigMap/team/new", "ConfigMap/team/ok", "ConfigMap/team/refused"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
}

// TestReconcilePrune: a version that drops an object deletes it, unless it
// no longer carries the package's label; the inventory follows.
func TestReconcilePrune(t *testing.T) {
	e := newEnv(t)
	e.put(t, kubePkg(t, "app", "1.0.0", 1, configMap("keep", nil), configMap("drop", nil), configMap("taken", nil)))
	e.reconcile(t, "app")
	// someone else took "taken" over
	taken := e.object(t, "ConfigMap", "taken")
	taken.SetLabels(map[string]string{operator.LabelKubePkg: "elsewhere.other"})
	taken.SetManagedFields(nil)
	if err := e.c.Update(context.Background(), taken); err != nil {
		t.Fatal(err)
	}
	e.put(t, kubePkg(t, "app", "2.0.0", 2, configMap("keep", nil)))
	e.reconcile(t, "app")
	got := e.calls.take()
	if got["object delete"] != 1 {
		t.Errorf("requests %v, want one delete", got)
	}
	if e.object(t, "ConfigMap", "drop") != nil {
		t.Error("drop not pruned")
	}
	if e.object(t, "ConfigMap", "taken") == nil {
		t.Error("an object another package took over was pruned")
	}
	st := e.status(t, "app")
	if c := checkCondition(t, st, "Applied", metav1.ConditionTrue, "Applied"); !strings.Contains(c.Message, "1 pruned") {
		t.Errorf("Applied message %q, want 1 pruned", c.Message)
	}
	if got := inventory(st); !slices.Equal(got, []string{"ConfigMap/team/keep"}) || st.AppliedVersion != "2.0.0" {
		t.Errorf("status %+v", st)
	}

	// deleting the package deletes what it applied
	pkg := kubeclient.NewKubePkg()
	_ = e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "app"}, pkg)
	if err := e.c.Delete(context.Background(), pkg); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t, "app")
	if e.object(t, "ConfigMap", "keep") != nil {
		t.Error("keep not deleted with its package")
	}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "app"}, kubeclient.NewKubePkg()); !apierrors.IsNotFound(err) {
		t.Errorf("the package is still there (finalizer not removed): %v", err)
	}
}

// TestReconcileDowngradeRefused: a lower version is refused (Stalled, not
// requeued, nothing applied) until forced by the annotation.
func TestReconcileDowngradeRefused(t *testing.T) {
	e := newEnv(t)
	e.put(t, kubePkg(t, "app", "2.0.0", 1, configMap("cfg", map[string]string{"v": "2"})))
	e.reconcile(t, "app")
	e.put(t, kubePkg(t, "app", "1.0.0", 2, configMap("cfg", map[string]string{"v": "1"})))
	res := e.reconcile(t, "app")
	if res.RequeueAfter != 0 {
		t.Errorf("result %+v: a refused downgrade must not be requeued", res)
	}
	st := e.status(t, "app")
	checkCondition(t, st, "Applied", metav1.ConditionFalse, "DowngradeRefused")
	checkCondition(t, st, "Stalled", metav1.ConditionTrue, "DowngradeRefused")
	if st.AppliedVersion != "2.0.0" {
		t.Errorf("appliedVersion %q", st.AppliedVersion)
	}
	if v, _, _ := unstructured.NestedString(e.object(t, "ConfigMap", "cfg").Object, "data", "v"); v != "2" {
		t.Errorf("a refused downgrade changed cfg: %q", v)
	}
	pkg := kubeclient.NewKubePkg()
	_ = e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "app"}, pkg)
	pkg.SetAnnotations(map[string]string{kubeclient.AnnotationForceDowngrade: "true"})
	if err := e.c.Update(context.Background(), pkg); err != nil {
		t.Fatal(err)
	}
	e.reconcile(t, "app")
	st = e.status(t, "app")
	if st.AppliedVersion != "1.0.0" || condition(st, "Stalled") != nil {
		t.Errorf("forced downgrade: status %+v", st)
	}
}

func drain(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestObjectsFake: manifests become objects labelled as crpe's, namespaced
// kinds without a namespace go to the package's, cluster-scoped kinds lose
// any namespace, their own labels stay, unknown kinds come apart, and a
// kind the package's own CRD defines takes its scope from that CRD.
func TestObjectsFake(t *testing.T) {
	e := newEnv(t)
	a := operator.NewApplier(e.c)
	crd := map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "clusterthings.example.com"},
		"spec": map[string]any{"group": "example.com", "scope": "Cluster",
			"names":    map[string]any{"kind": "ClusterThing", "plural": "clusterthings"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true}}}}
	p := &kubepkg.KubePkg{APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
		Metadata: kubepkg.ObjectMeta{Name: "demo", Namespace: "team"},
		Spec:     kubepkg.Spec{Version: "1.0.0", Images: map[string]string{}, Manifests: map[string]kubepkg.Manifest{}}}
	for _, m := range []kubepkg.Manifest{
		{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "here", "labels": map[string]any{"mine": "yes"}}},
		{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "there", "namespace": "elsewhere"}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "role", "namespace": "team"}},
		{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g"}},
		{"apiVersion": "example.com/v1", "kind": "ClusterThing", "metadata": map[string]any{"name": "ct"}},
		crd,
	} {
		p.Spec.Manifests[p.ManifestKey(m)] = m
	}
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
	if len(objs) != 5 || len(unknown) != 1 || unknown[0].GetKind() != "Gadget" {
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
	if ns := got["ClusterThing/ct"].GetNamespace(); ns != "" {
		t.Errorf("ClusterThing (cluster-scoped by the package's CRD) in namespace %q", ns)
	}
}
