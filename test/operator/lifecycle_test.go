//go:build linux

package operator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestDeleteWithFinalizer: deleting a KubePkg deletes what it applied, with
// background propagation (with foreground deletion, and no garbage
// collector running here, the Deployment would stay with a
// foregroundDeletion finalizer); a Deployment never becomes available
// here, so Ready is False with a message naming it while Applied is True.
// A KubePkg annotated octohelm.tech/keep-resources: "true" goes away and
// leaves its objects.
func TestDeleteWithFinalizer(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "app", "0.1.0", nil,
		deployment("app", "docker.io/library/nginx:alpine"),
		configMap("app-config", map[string]string{"k": "v"}),
		service("app", 80)))
	obj := waitPkg(ctx, t, k, ns, "app", 30*time.Second, "Applied, not Ready",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "False", ""), versionIs("0.1.0")))
	ready := cond(obj, "Ready")
	if msg := fmt.Sprint(ready["message"]); !strings.Contains(msg, "Deployment/"+ns+"/app") {
		t.Errorf("Ready message %q should name the Deployment it waits for", msg)
	}
	if ready["reason"] == "" {
		t.Error("Ready=False without a reason")
	}
	checkOwned(t, getObj(ctx, t, k, "-n", ns, "deployment", "app"), ns+".app")

	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "app", "-n", ns, "--wait=false")
	testenv.Eventually(t, 30*time.Second, "KubePkg app gone with its objects", func() (bool, string) {
		var left []string
		for _, o := range [][2]string{{"kubepkg.octohelm.tech", "app"}, {"deployment", "app"}, {"configmap", "app-config"}, {"service", "app"}} {
			if u := getObj(ctx, t, k, "-n", ns, o[0], o[1]); u != nil {
				left = append(left, fmt.Sprintf("%s/%s (deletionTimestamp %v, finalizers %v)", o[0], o[1],
					at(u, "metadata", "deletionTimestamp"), at(u, "metadata", "finalizers")))
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	waitEvent(ctx, t, k, ns, "app", "Normal", "Deleted", "3 objects")

	// keep-resources
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "kept", "1.0.0", map[string]string{annKeep: "true"},
		configMap("kept-config", map[string]string{"k": "v"}), secret("kept-secret", map[string]string{"k": "v"})))
	waitPkg(ctx, t, k, ns, "kept", 30*time.Second, "Applied and Ready",
		and(condIs("Applied", "True", ""), condIs("Ready", "True", "")))
	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "kept", "-n", ns, "--timeout=30s")
	for _, o := range [][2]string{{"configmap", "kept-config"}, {"secret", "kept-secret"}} {
		u := getObj(ctx, t, k, "-n", ns, o[0], o[1])
		if u == nil {
			t.Errorf("%s/%s deleted despite %s", o[0], o[1], annKeep)
		} else if at(u, "metadata", "deletionTimestamp") != nil {
			t.Errorf("%s/%s being deleted despite %s", o[0], o[1], annKeep)
		}
	}
}

// TestCRDAndCustomResource: a package holding a CRD and a custom resource
// of it applies in one reconcile (the CRD first, waited for until
// Established); v2 drops the custom resource, which is pruned; deleting the
// package deletes the CRD too.
func TestCRDAndCustomResource(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	group := ns + ".example.com"
	crd := widgetCRD(group)
	w := func(name, size string) map[string]any {
		return map[string]any{"apiVersion": group + "/v1", "kind": "Widget", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"size": size}}
	}
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "widgets", "1.0.0", nil, crd, w("w1", "small"), w("w2", "large")))
	obj := waitPkg(ctx, t, k, ns, "widgets", 60*time.Second, "Applied",
		and(condIs("Applied", "True", "Applied"), versionIs("1.0.0")))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "3 created") {
		t.Errorf("Applied message %q: the CRD and both widgets should be created in the first reconcile", msg)
	}
	for _, n := range []string{"w1", "w2"} {
		u := getObj(ctx, t, k, "-n", ns, "widgets."+group, n)
		if u == nil {
			t.Fatalf("Widget %s not applied", n)
		}
		checkOwned(t, u, ns+".widgets")
	}
	checkOwned(t, getObj(ctx, t, k, "crd", "widgets."+group), ns+".widgets")
	want := []string{"CustomResourceDefinition/widgets." + group, "Widget/" + ns + "/w1", "Widget/" + ns + "/w2"}
	if got := inventory(obj); !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
	waitPkg(ctx, t, k, ns, "widgets", 30*time.Second, "Ready", condIs("Ready", "True", ""))

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "widgets", "1.1.0", nil, crd, w("w1", "medium")))
	waitPkg(ctx, t, k, ns, "widgets", 30*time.Second, "v1.1.0 Applied",
		and(condIs("Applied", "True", "Applied"), versionIs("1.1.0")))
	if getObj(ctx, t, k, "-n", ns, "widgets."+group, "w2") != nil {
		t.Error("Widget w2 not pruned")
	}
	if got := str(getObj(ctx, t, k, "-n", ns, "widgets."+group, "w1"), "spec", "size"); got != "medium" {
		t.Errorf("w1 size %q", got)
	}

	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "widgets", "-n", ns, "--wait=false")
	testenv.Eventually(t, 30*time.Second, "the CRD deleted with the package", func() (bool, string) {
		c := getObj(ctx, t, k, "crd", "widgets."+group)
		p := kpkg(ctx, t, k, ns, "widgets")
		return c == nil && p == nil, fmt.Sprintf("crd: %v, kubepkg: %v", c != nil, p != nil)
	})
}

func widgetCRD(group string) map[string]any {
	return map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets." + group},
		"spec": map[string]any{"group": group, "scope": "Namespaced",
			"names": map[string]any{"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object",
					"properties": map[string]any{"spec": map[string]any{"type": "object",
						"properties": map[string]any{"size": map[string]any{"type": "string"}}}}}}}}}}
}

// TestClusterScoped: a ClusterRole and a Namespace in a package are applied
// without a namespace (and labelled), a ConfigMap inside the new Namespace
// comes after it; a version that drops the ClusterRole prunes it; deleting
// the package deletes the Namespace (it stays Terminating here: no
// namespace controller runs).
func TestClusterScoped(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	role := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
		"metadata": map[string]any{"name": ns + "-reader"},
		"rules":    []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"}, "verbs": []any{"get"}}}}
	other := ns + "-extra"
	nsObj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": other}}
	inner := configMap("inside", map[string]string{"k": "v"})
	inner["metadata"].(map[string]any)["namespace"] = other
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "cluster", "1.0.0", nil, role, nsObj, inner, configMap("local", nil)))
	obj := waitPkg(ctx, t, k, ns, "cluster", 30*time.Second, "Applied",
		and(condIs("Applied", "True", "Applied"), versionIs("1.0.0")))
	want := []string{"ClusterRole/" + ns + "-reader", "ConfigMap/" + ns + "/local", "ConfigMap/" + other + "/inside", "Namespace/" + other}
	slices.Sort(want)
	if got := inventory(obj); !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
	for _, args := range [][]string{{"clusterrole", ns + "-reader"}, {"namespace", other}, {"-n", other, "configmap", "inside"}} {
		u := getObj(ctx, t, k, args...)
		if u == nil {
			t.Errorf("%v not applied", args)
			continue
		}
		checkOwned(t, u, ns+".cluster")
	}

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "cluster", "1.1.0", nil, nsObj, inner, configMap("local", nil)))
	waitPkg(ctx, t, k, ns, "cluster", 30*time.Second, "v1.1.0 Applied",
		and(condIs("Applied", "True", "Applied"), versionIs("1.1.0")))
	if getObj(ctx, t, k, "clusterrole", ns+"-reader") != nil {
		t.Error("ClusterRole not pruned")
	}

	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "cluster", "-n", ns, "--wait=false")
	testenv.Eventually(t, 30*time.Second, "package deleted, its Namespace deleting", func() (bool, string) {
		n := getObj(ctx, t, k, "namespace", other)
		p := kpkg(ctx, t, k, ns, "cluster")
		local := getObj(ctx, t, k, "-n", ns, "configmap", "local")
		return p == nil && local == nil && (n == nil || at(n, "metadata", "deletionTimestamp") != nil),
			fmt.Sprintf("kubepkg %v, local %v, namespace %v", p != nil, local != nil, at(n, "status"))
	})
}

// TestBadInput: objects the API server refuses (a ConfigMap with an invalid
// name, a Service with a port out of range) are named with the API error in
// Applied=False/ApplyFailed while the valid ones are applied, and no
// appliedVersion is recorded; a kind the API server does not know is named
// too; a version that is not semver and a manifest key that disagrees with
// its object give Invalid and Stalled with nothing applied; the operator
// keeps reconciling the good package next to them.
func TestBadInput(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	badPort := service("badport", 80)
	badPort["spec"].(map[string]any)["ports"] = []any{map[string]any{"name": "http", "port": 70000}}
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "mixed", "1.0.0", nil,
		configMap("Bad_Name", map[string]string{"k": "v"}),
		badPort,
		configMap("good", map[string]string{"k": "v"}),
		secret("good-secret", map[string]string{"k": "v"})))
	gadget := map[string]any{"apiVersion": "nowhere.example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g"}}
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "unknown", "1.0.0", nil, gadget, configMap("beside-gadget", nil)))
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "notsemver", "latest", nil, configMap("never-1", nil)))
	mismatch := pkgDoc(t, ns, "mismatch", "1.0.0", nil, configMap("never-2", nil))
	mismatch = strings.Replace(mismatch, "never-2."+ns+".configmap:", "other."+ns+".configmap:", 1)
	kubectlApply(ctx, t, k, mismatch)
	kubectlApply(ctx, t, k, fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: notobjects, namespace: %s}
spec:
  version: 1.0.0
  manifests:
    a.%s.configmap: "just a string"
    b.%s.configmap: {data: {k: v}}
    never-3.%s.configmap: {apiVersion: v1, kind: ConfigMap, metadata: {name: never-3}}
`, ns, ns, ns, ns))
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "fine", "1.0.0", nil, configMap("fine", nil)))

	obj := waitPkg(ctx, t, k, ns, "mixed", 30*time.Second, "ApplyFailed",
		condIs("Applied", "False", "ApplyFailed"))
	msg := fmt.Sprint(cond(obj, "Applied")["message"])
	for _, want := range []string{"ConfigMap/" + ns + "/Bad_Name", "Service/" + ns + "/badport", "Invalid value", "70000"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Applied message does not name %q: %s", want, msg)
		}
	}
	for _, good := range [][2]string{{"configmap", "good"}, {"secret", "good-secret"}} {
		if getObj(ctx, t, k, "-n", ns, good[0], good[1]) == nil {
			t.Errorf("valid %s/%s not applied next to the refused ones", good[0], good[1])
		}
	}
	if got, want := inventory(obj), []string{"ConfigMap/" + ns + "/good", "Secret/" + ns + "/good-secret"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v (only what was applied)", got, want)
	}
	if v := str(obj, "status", "appliedVersion"); v != "" {
		t.Errorf("appliedVersion %q although objects were refused", v)
	}
	waitEvent(ctx, t, k, ns, "mixed", "Warning", "ApplyFailed", "Bad_Name")

	obj = waitPkg(ctx, t, k, ns, "unknown", 30*time.Second, "ApplyFailed", condIs("Applied", "False", "ApplyFailed"))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "Gadget") || !strings.Contains(msg, "/g") {
		t.Errorf("unknown kind: message %q should name Gadget g", msg)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "beside-gadget") == nil {
		t.Error("the ConfigMap beside an unknown kind was not applied")
	}
	if got, want := inventory(obj), []string{"ConfigMap/" + ns + "/beside-gadget"}; !slices.Equal(got, want) {
		t.Errorf("unknown kind: inventory %v, want %v", got, want)
	}

	obj = waitPkg(ctx, t, k, ns, "notsemver", 30*time.Second, "Invalid and Stalled",
		and(condIs("Applied", "False", "Invalid"), condIs("Stalled", "True", "Invalid")))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "spec.version") || !strings.Contains(msg, "latest") {
		t.Errorf("not semver: message %q should name spec.version and the value", msg)
	}
	if c := cond(obj, "Ready"); c == nil || c["status"] != "False" {
		t.Errorf("not semver: Ready %v, want False", c)
	}
	obj = waitPkg(ctx, t, k, ns, "mismatch", 30*time.Second, "Invalid", condIs("Applied", "False", "Invalid"))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "other."+ns+".configmap") {
		t.Errorf("key mismatch: message %q should name the key", msg)
	}
	obj = waitPkg(ctx, t, k, ns, "notobjects", 30*time.Second, "Invalid", condIs("Applied", "False", "Invalid"))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "a."+ns+".configmap") {
		t.Errorf("manifests that are not objects: message %q should name the key", msg)
	}
	for _, n := range []string{"never-1", "never-2", "never-3"} {
		if getObj(ctx, t, k, "-n", ns, "configmap", n) != nil {
			t.Errorf("ConfigMap %s of an invalid package was applied", n)
		}
	}
	waitEvent(ctx, t, k, ns, "notsemver", "Warning", "Invalid", "latest")
	waitPkg(ctx, t, k, ns, "fine", 30*time.Second, "Applied and Ready",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", "")))

	// an upgrade whose new version of an object is refused keeps the old
	// object (not pruned) and the rest of the upgrade goes through; the
	// applied version stays the last one applied without a failure
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "fine", "1.1.0", nil,
		map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "fine",
			"labels": map[string]any{"bad": "not a valid label value!"}}},
		configMap("fine-new", nil)))
	obj = waitPkg(ctx, t, k, ns, "fine", 30*time.Second, "1.1.0 ApplyFailed",
		and(condIs("Applied", "False", "ApplyFailed"), versionIs("1.0.0")))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "ConfigMap/"+ns+"/fine:") {
		t.Errorf("message %q should name ConfigMap fine", msg)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "fine") == nil {
		t.Error("the refused new version of ConfigMap fine got the old one pruned")
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "fine-new") == nil {
		t.Error("fine-new not applied")
	}
	if got, want := inventory(obj), []string{"ConfigMap/" + ns + "/fine", "ConfigMap/" + ns + "/fine-new"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}

	// invalid packages can be deleted (nothing to delete, the finalizer goes)
	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "notsemver", "mismatch", "notobjects", "-n", ns, "--timeout=30s")
}

// TestDrift: an applied object changed by hand (an update by kubectl, a
// server-side apply by another field manager with --force-conflicts) or
// deleted is put back within a resync (5 s).
func TestDrift(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "drift", "1.0.0", nil,
		configMap("drift", map[string]string{"color": "blue"}), secret("drift", map[string]string{"k": "v"})))
	waitPkg(ctx, t, k, ns, "drift", 30*time.Second, "Applied", condIs("Applied", "True", "Applied"))

	colorIs := func(want string) func() (bool, string) {
		return func() (bool, string) {
			got := str(getObj(ctx, t, k, "-n", ns, "configmap", "drift"), "data", "color")
			return got == want, "color " + got
		}
	}
	begin := time.Now()
	kubectl(ctx, t, k, "patch", "-n", ns, "configmap", "drift", "--type=merge", "-p", `{"data":{"color":"red"}}`)
	testenv.Eventually(t, 15*time.Second, "the patched ConfigMap restored", colorIs("blue"))
	t.Logf("kubectl patch undone after %s", time.Since(begin).Round(time.Millisecond))

	begin = time.Now()
	if _, err := k.KubectlInput(ctx, fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"drift","namespace":%q},"data":{"color":"pink"}}`, ns),
		"apply", "--server-side", "--field-manager", "someone-else", "--force-conflicts", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "the field taken by another manager restored", colorIs("blue"))
	t.Logf("server-side apply by another manager undone after %s", time.Since(begin).Round(time.Millisecond))

	begin = time.Now()
	kubectl(ctx, t, k, "delete", "-n", ns, "secret", "drift")
	testenv.Eventually(t, 15*time.Second, "the deleted Secret recreated", func() (bool, string) {
		return getObj(ctx, t, k, "-n", ns, "secret", "drift") != nil, "absent"
	})
	t.Logf("deleted Secret recreated after %s", time.Since(begin).Round(time.Millisecond))
}

// TestResyncWritesNothing: the operator's resync of a package nobody
// changed writes nothing (no apply, no status patch, no event) and reads
// its objects with at most one request per object; the requests are
// counted by a proxy between the operator and the API server. The resyncs
// are told by the operator's log.
func TestResyncWritesNothing(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	kc, api := countingKubeconfig(t, k)
	op := startOperatorWith(ctx, t, kc, ns)

	objs := []map[string]any{configMap("quiet-a", map[string]string{"k": "v"}), configMap("quiet-b", nil),
		secret("quiet", map[string]string{"password": "p"}), service("quiet", 80)}
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "quiet", "1.0.0", nil, objs...))
	waitPkg(ctx, t, k, ns, "quiet", 30*time.Second, "Applied and Ready",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", "")))
	reconciles := func() int {
		n := 0
		for _, l := range strings.Split(op.Logs(), "\n") {
			if strings.Contains(l, "reconciled") && strings.Contains(l, "kubepkg="+ns+".quiet") {
				n++
			}
		}
		return n
	}
	// the first reconcile may be followed by one that records its status:
	// start counting after the next one
	n0 := reconciles()
	testenv.Eventually(t, 30*time.Second, "a resync", func() (bool, string) { return reconciles() > n0, "" })
	n0 = reconciles()
	api.take()
	testenv.Eventually(t, 30*time.Second, "two more resyncs", func() (bool, string) { return reconciles() >= n0+2, "" })
	reqs := api.take()
	done := reconciles() - n0
	if w := reqs.writes(); len(w) != 0 {
		t.Errorf("%d resyncs of an unchanged package wrote: %v", done, w)
	}
	if c := reqs.on(ns); c.total() > (done+1)*len(objs) || c.applies+c.other != 0 {
		t.Errorf("%d resyncs of %d unchanged objects: %s; want at most one request per object each, no apply", done, len(objs), c)
	} else {
		t.Logf("%d resyncs of %d unchanged objects: %s", done, len(objs), c)
	}
}
