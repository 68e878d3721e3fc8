//go:build linux

package operator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// applyLines returns `crpe apply`'s per-object lines ("Kind/ns/name action
// [(server dry run)]") sorted, and its summary line.
func applyLines(out string) (lines []string, summary string) {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, "@") && strings.Contains(l, " failed") {
			summary = l
			continue
		}
		lines = append(lines, l)
	}
	slices.Sort(lines)
	return lines, summary
}

// TestCrpeApply: `crpe apply -f` prints created / unchanged / configured /
// pruned per object and a summary; --dry-run=server reports the same changes
// and changes nothing; --prune deletes what the package dropped; the
// objects carry crpe's labels and field manager; a refused object is
// printed as FAILED with the API error, the rest applied, exit code 1.
func TestCrpeApply(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	kc := k.Kubeconfig

	v1 := writeFile(t, "v1.yaml", pkgDoc(t, ns, "direct", "1.0.0", nil,
		configMap("a", map[string]string{"k": "1"}), configMap("b", map[string]string{"k": "1"}), service("svc", 80)))
	r := mustCrpe(ctx, t, "", "apply", "-f", v1, "--kubeconfig", kc)
	lines, sum := applyLines(r.Stdout)
	want := []string{"ConfigMap/" + ns + "/a created", "ConfigMap/" + ns + "/b created", "Service/" + ns + "/svc created"}
	if !slices.Equal(lines, want) {
		t.Errorf("first apply printed %q, want %q", lines, want)
	}
	if wantSum := ns + "/direct@1.0.0: 3 created, 0 configured, 0 unchanged, 0 pruned, 0 failed"; sum != wantSum {
		t.Errorf("summary %q, want %q", sum, wantSum)
	}
	for _, o := range [][2]string{{"configmap", "a"}, {"configmap", "b"}, {"service", "svc"}} {
		checkOwned(t, getObj(ctx, t, k, "-n", ns, o[0], o[1]), ns+".direct")
	}

	r = mustCrpe(ctx, t, "", "apply", "-f", v1, "--kubeconfig", kc)
	if _, sum := applyLines(r.Stdout); !strings.Contains(sum, "0 created, 0 configured, 3 unchanged") {
		t.Errorf("second apply: %q, want 3 unchanged", r.Stdout)
	}

	// v2: a changed, b dropped, c new
	v2 := writeFile(t, "v2.yaml", pkgDoc(t, ns, "direct", "2.0.0", nil,
		configMap("a", map[string]string{"k": "2"}), configMap("c", map[string]string{"k": "2"}), service("svc", 80)))
	before := kubectl(ctx, t, k, "get", "configmaps,services", "-n", ns, "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}")
	r = mustCrpe(ctx, t, "", "apply", "-f", v2, "--kubeconfig", kc, "--dry-run=server", "--prune")
	lines, sum = applyLines(r.Stdout)
	want = []string{"ConfigMap/" + ns + "/a configured (server dry run)", "ConfigMap/" + ns + "/b pruned (server dry run)",
		"ConfigMap/" + ns + "/c created (server dry run)", "Service/" + ns + "/svc unchanged (server dry run)"}
	if !slices.Equal(lines, want) {
		t.Errorf("dry run printed %q, want %q", lines, want)
	}
	if !strings.HasSuffix(sum, "1 created, 1 configured, 1 unchanged, 1 pruned, 0 failed (server dry run)") {
		t.Errorf("dry-run summary %q", sum)
	}
	after := kubectl(ctx, t, k, "get", "configmaps,services", "-n", ns, "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}")
	if before != after {
		t.Errorf("--dry-run=server changed the cluster:\nbefore %s\nafter  %s", before, after)
	}

	// without --prune nothing is pruned
	r = mustCrpe(ctx, t, "", "apply", "-f", v2, "--kubeconfig", kc)
	if _, sum := applyLines(r.Stdout); !strings.Contains(sum, "1 created, 1 configured, 1 unchanged, 0 pruned") {
		t.Errorf("apply v2 without --prune: %q", r.Stdout)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "b") == nil {
		t.Error("b deleted without --prune")
	}
	r = mustCrpe(ctx, t, "", "apply", "-f", v2, "--kubeconfig", kc, "--prune")
	lines, _ = applyLines(r.Stdout)
	if !slices.Contains(lines, "ConfigMap/"+ns+"/b pruned") {
		t.Errorf("--prune printed %q, want b pruned", lines)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "b") != nil {
		t.Error("b not pruned by --prune")
	}
	if got := str(getObj(ctx, t, k, "-n", ns, "configmap", "a"), "data", "k"); got != "2" {
		t.Errorf("a.k = %q after v2", got)
	}

	// --json, from stdin
	r = mustCrpe(ctx, t, pkgDoc(t, ns, "direct", "2.0.0", nil,
		configMap("a", map[string]string{"k": "2"}), configMap("c", map[string]string{"k": "2"}), service("svc", 80)),
		"apply", "-f", "-", "--kubeconfig", kc, "--json")
	var res []struct {
		Namespace, Name, Version string
		Result                   struct {
			Changes   []struct{ Object, Action string }
			Inventory []struct{ Kind, Namespace, Name string }
		}
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res) != 1 {
		t.Fatalf("--json: %v\n%s", err, r.Stdout)
	}
	if len(res[0].Result.Changes) != 3 || len(res[0].Result.Inventory) != 3 || res[0].Version != "2.0.0" {
		t.Errorf("--json: %+v", res[0])
	}
	for _, c := range res[0].Result.Changes {
		if c.Action != "unchanged" {
			t.Errorf("--json: %s %s, want unchanged", c.Object, c.Action)
		}
	}

	// refused objects: printed, the rest applied, exit 1
	bad := writeFile(t, "bad.yaml", pkgDoc(t, ns, "bad", "1.0.0", nil,
		configMap("Not_Valid", nil), configMap("valid-one", nil)))
	r = crpe(ctx, t, "", "apply", "-f", bad, "--kubeconfig", kc)
	if r.Code != 1 {
		t.Errorf("apply with a refused object: exit %d, want 1\n%s", r.Code, r)
	}
	if !strings.Contains(r.Stdout, "ConfigMap/"+ns+"/Not_Valid FAILED: ") || !strings.Contains(r.Stdout, "Invalid value") {
		t.Errorf("refused object not printed with the API error:\n%s", r)
	}
	if !strings.Contains(r.Stdout, "ConfigMap/"+ns+"/valid-one created") || getObj(ctx, t, k, "-n", ns, "configmap", "valid-one") == nil {
		t.Errorf("the valid object beside a refused one not applied:\n%s", r)
	}
	if !strings.Contains(r.Stderr, "1 objects were refused") {
		t.Errorf("stderr %q", r.Stderr)
	}

	// an immutable field: refused without --force, recreated with it
	imm := func(v string) string {
		sec := secret("imm", map[string]string{"k": v})
		sec["immutable"] = true
		return writeFile(t, "imm-"+v+".yaml", pkgDoc(t, ns, "imm", "1.0."+v, nil, sec))
	}
	mustCrpe(ctx, t, "", "apply", "-f", imm("1"), "--kubeconfig", kc)
	uid := str(getObj(ctx, t, k, "-n", ns, "secret", "imm"), "metadata", "uid")
	r = crpe(ctx, t, "", "apply", "-f", imm("2"), "--kubeconfig", kc)
	if r.Code != 1 || !strings.Contains(r.Stdout, "Secret/"+ns+"/imm FAILED: ") || !strings.Contains(r.Stdout, "immutable") {
		t.Errorf("a change to an immutable Secret without --force:\n%s", r)
	}
	r = mustCrpe(ctx, t, "", "apply", "-f", imm("2"), "--kubeconfig", kc, "--force")
	u := getObj(ctx, t, k, "-n", ns, "secret", "imm")
	if str(u, "metadata", "uid") == uid || str(u, "data", "k") != "Mg==" {
		t.Errorf("--force did not recreate the immutable Secret (uid %s → %s, data %v):\n%s", uid, str(u, "metadata", "uid"), at(u, "data"), r)
	}

	// only server dry runs exist
	if r := crpe(ctx, t, "", "apply", "-f", v2, "--kubeconfig", kc, "--dry-run=client"); r.Code == 0 {
		t.Errorf("--dry-run=client accepted:\n%s", r)
	}
}

// TestCrpeApplyCRD: `crpe apply` of a CRD and a custom resource of it: a
// server dry run reports both as created and creates nothing (the kind is
// not known yet), then the real apply creates both in one run.
func TestCrpeApplyCRD(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	group := ns + ".example.com"
	w := map[string]any{"apiVersion": group + "/v1", "kind": "Widget", "metadata": map[string]any{"name": "w"},
		"spec": map[string]any{"size": "s"}}
	src := writeFile(t, "crd.yaml", pkgDoc(t, ns, "crd", "1.0.0", nil, widgetCRD(group), w))

	// the custom resource is named with its namespace although its kind is
	// not served yet (once printed as "Widget/w")
	r := mustCrpe(ctx, t, "", "apply", "-f", src, "--kubeconfig", k.Kubeconfig, "--dry-run=server")
	lines, _ := applyLines(r.Stdout)
	want := []string{"CustomResourceDefinition/widgets." + group + " created (server dry run)", "Widget/" + ns + "/w created (server dry run)"}
	if !slices.Equal(lines, want) {
		t.Errorf("dry run printed %q, want %q", lines, want)
	}
	if getObj(ctx, t, k, "crd", "widgets."+group) != nil {
		t.Fatal("a server dry run created the CRD")
	}

	r = mustCrpe(ctx, t, "", "apply", "-f", src, "--kubeconfig", k.Kubeconfig)
	lines, _ = applyLines(r.Stdout)
	want = []string{"CustomResourceDefinition/widgets." + group + " created", "Widget/" + ns + "/w created"}
	if !slices.Equal(lines, want) {
		t.Errorf("apply printed %q, want %q", lines, want)
	}
	if u := getObj(ctx, t, k, "-n", ns, "widgets."+group, "w"); u == nil {
		t.Error("Widget not created")
	} else {
		checkOwned(t, u, ns+".crd")
	}
	// --prune finds nothing to prune (the CRD and widget are still wanted)
	r = mustCrpe(ctx, t, "", "apply", "-f", src, "--kubeconfig", k.Kubeconfig, "--prune")
	if _, sum := applyLines(r.Stdout); !strings.Contains(sum, "0 created, 0 configured, 2 unchanged, 0 pruned, 0 failed") {
		t.Errorf("re-apply with --prune: %s", fmt.Sprint(r))
	}
}

// TestApplyRequests: `crpe apply` costs what `kubectl apply
// --server-side` costs: a fresh apply of a package makes one apply per
// object and reads no object one by one (a LIST per kind); a re-apply of
// the same package writes nothing and makes at most one request per
// object. The requests are counted by a proxy between crpe and the API
// server; the times beside kubectl's are logged, not checked.
func TestApplyRequests(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	var objs []map[string]any
	var items []string
	for i := 0; i < 40; i++ {
		objs = append(objs, configMap(fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}))
		items = append(items, fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kubectl-%d","namespace":%q},"data":{"i":"%d"}}`, i, ns, i))
	}
	for i := 0; i < 10; i++ {
		objs = append(objs, secret(fmt.Sprintf("secret-%d", i), map[string]string{"password": fmt.Sprint(i)}), service(fmt.Sprintf("svc-%d", i), 8000+i))
	}
	dep := deployment("web", "docker.io/library/nginx:alpine")
	container := at(dep, "spec", "template", "spec", "containers", 0).(map[string]any)
	container["ports"] = []any{map[string]any{"containerPort": 80}}
	container["resources"] = map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "64Mi"}}
	objs = append(objs, dep)
	n := len(objs)
	const kinds = 4
	kc, api := countingKubeconfig(t, k)
	src := writeFile(t, "big.yaml", pkgDoc(t, ns, "big", "1.0.0", nil, objs...))

	begin := time.Now()
	kubectlApply(ctx, t, k, `{"apiVersion":"v1","kind":"List","items":[`+strings.Join(items, ",")+`]}`, "--server-side")
	ref := time.Since(begin)
	begin = time.Now()
	r := mustCrpe(ctx, t, "", "apply", "-f", src, "--kubeconfig", kc)
	took := time.Since(begin)
	t.Logf("kubectl apply --server-side of 40 ConfigMaps: %s; crpe apply of %d objects: %s", ref.Round(time.Millisecond), n, took.Round(time.Millisecond))
	if _, sum := applyLines(r.Stdout); !strings.Contains(sum, fmt.Sprintf("%d created, 0 configured, 0 unchanged", n)) {
		t.Errorf("first apply: %s", sum)
	}
	fresh := api.take().on(ns)
	if fresh.applies != n || fresh.dryRuns != 0 || fresh.gets != 0 || fresh.lists > kinds || fresh.other != 0 {
		t.Errorf("a fresh apply of %d objects: %s; want %d applies, at most %d LISTs, nothing else", n, fresh, n, kinds)
	}

	r = mustCrpe(ctx, t, "", "apply", "-f", src, "--kubeconfig", kc)
	if _, sum := applyLines(r.Stdout); !strings.Contains(sum, fmt.Sprintf("0 created, 0 configured, %d unchanged", n)) {
		t.Errorf("second apply: %s", sum)
	}
	again := api.take().on(ns)
	if again.applies != 0 || again.other != 0 || again.total() > n {
		t.Errorf("a re-apply of the same %d objects: %s; want no write and at most one request per object", n, again)
	}
	t.Logf("requests on the package's objects: fresh apply %s; re-apply %s", fresh, again)
}
