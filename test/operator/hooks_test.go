//go:build linux

package operator

// Helm hooks against a real API server. No Job controller runs here: a
// test finishes a hook's Job itself, writing its status through the status
// subresource as the Job controller would (Complete with SuccessCriteriaMet,
// or Failed with FailureTarget: the API server checks those pairs).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// Helm's hook annotations (spelled out: the contract, not the code).
const (
	annHook       = "helm.sh/hook"
	annHookWeight = "helm.sh/hook-weight"
	annHookDelete = "helm.sh/hook-delete-policy"
)

// asHook annotates a manifest as a Helm hook of events (weight and policy
// left out when "").
func asHook(m map[string]any, events, weight, policy string) map[string]any {
	ann := map[string]any{annHook: events}
	if weight != "" {
		ann[annHookWeight] = weight
	}
	if policy != "" {
		ann[annHookDelete] = policy
	}
	m["metadata"].(map[string]any)["annotations"] = ann
	return m
}

// hookJob returns a Job manifest of one container.
func hookJob(name string) map[string]any {
	return map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"backoffLimit": 0, "template": map[string]any{"spec": map[string]any{
			"restartPolicy": "Never", "containers": []any{map[string]any{"name": "main", "image": "docker.io/library/busybox:1.36"}}}}}}
}

func serviceAccount(name string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name}}
}

// finishJob writes a Job's status as the Job controller does when it
// completes (ok) or fails.
func finishJob(ctx context.Context, t *testing.T, k *testenv.Kube, ns, name string, ok bool) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339)
	cond := func(typ, reason, msg string) map[string]any {
		return map[string]any{"type": typ, "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now}
	}
	st := map[string]any{"startTime": now}
	if ok {
		st["completionTime"], st["succeeded"] = now, 1
		st["conditions"] = []any{cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
			cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods")}
	} else {
		st["failed"] = 1
		st["conditions"] = []any{cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
			cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")}
	}
	b, _ := json.Marshal(map[string]any{"status": st})
	kubectl(ctx, t, k, "patch", "job", name, "-n", ns, "--subresource=status", "--type=merge", "-p", string(b))
}

// uid returns an object's uid ("" when it is not there).
func uid(ctx context.Context, t *testing.T, k *testenv.Kube, ns, kind, name string) string {
	t.Helper()
	return str(getObj(ctx, t, k, "-n", ns, kind, name), "metadata", "uid")
}

// waitUID waits for an object of that name whose uid is not old, and
// returns its uid.
func waitUID(ctx context.Context, t *testing.T, k *testenv.Kube, ns, kind, name, old string) string {
	t.Helper()
	var u string
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("a new %s/%s", kind, name), func() (bool, string) {
		u = uid(ctx, t, k, ns, kind, name)
		return u != "" && u != old, "uid " + u
	})
	return u
}

// hookRuns renders status.hooks.runs as "event Kind/ns/name Phase".
func hookRuns(obj map[string]any) []string {
	var out []string
	rs, _ := at(obj, "status", "hooks", "runs").([]any)
	for _, r := range rs {
		out = append(out, str(r, "event")+" "+str(r, "object")+" "+str(r, "phase"))
	}
	return out
}

func hookStage(version, stage string) func(map[string]any) bool {
	return func(obj map[string]any) bool {
		return str(obj, "status", "hooks", "version") == version && str(obj, "status", "hooks", "stage") == stage
	}
}

// TestHooksInstallUpgrade: `crpe operator` installs a package with
// pre-install hooks (a ServiceAccount of weight -5 applied before a Job of
// weight 0, the Job waited for until it completes, while the rest of the
// package waits), then the rest, then, once it is ready, the post-install
// Job; hook-succeeded deletes a hook once its stage succeeded, the default
// policy leaves it; hooks are not in the inventory. Resyncs write nothing
// and run no hook. An upgrade runs the pre-upgrade hooks before the new
// version of the rest and the post-upgrade Job after it, created anew
// (before-hook-creation).
func TestHooksInstallUpgrade(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 180*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	kc, api := countingKubeconfig(t, k)
	op := startOperatorWith(ctx, t, kc, ns)

	doc := func(version, data string) string {
		return pkgDoc(t, ns, "app", version, nil, configMap("app", map[string]string{"v": data}),
			asHook(serviceAccount("migrator"), "pre-install,pre-upgrade", "-5", ""),
			asHook(hookJob("migrate"), "pre-install,pre-upgrade", "0", "before-hook-creation,hook-succeeded"),
			asHook(hookJob("notify"), "post-install,post-upgrade", "", ""))
	}
	kubectlApply(ctx, t, k, doc("1.0.0", "1"))
	obj := waitPkg(ctx, t, k, ns, "app", 30*time.Second, "the pre-install Job running", condIs("Applied", "False", "HookRunning"))
	if msg := str(cond(obj, "Applied"), "message"); !strings.Contains(msg, "pre-install hook Job/"+ns+"/migrate") {
		t.Errorf("Applied message %q should name the running hook", msg)
	}
	if got, want := hookRuns(obj), []string{"pre-install ServiceAccount/" + ns + "/migrator Succeeded", "pre-install Job/" + ns + "/migrate Running"}; !slices.Equal(got, want) {
		t.Errorf("hook runs %v, want %v", got, want)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "app") != nil {
		t.Error("the rest of the package was applied before its pre-install hook completed")
	}
	checkOwned(t, getObj(ctx, t, k, "-n", ns, "job", "migrate"), ns+".app")
	if getObj(ctx, t, k, "-n", ns, "serviceaccount", "migrator") == nil {
		t.Error("the ServiceAccount hook is not there")
	}

	finishJob(ctx, t, k, ns, "migrate", true)
	obj = waitPkg(ctx, t, k, ns, "app", 30*time.Second, "applied, the post-install Job running",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "False", ""), hookStage("1.0.0", "post-install"), versionIs("1.0.0")))
	if msg := str(cond(obj, "Ready"), "message"); !strings.Contains(msg, "post-install hook Job/"+ns+"/notify") {
		t.Errorf("Ready message %q should name the running post-install hook", msg)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "app") == nil {
		t.Error("the rest was not applied before the post-install hook")
	}
	if getObj(ctx, t, k, "-n", ns, "job", "migrate") != nil {
		t.Error("the migrate Job (hook-succeeded) was not deleted")
	}
	if got := inventory(obj); !slices.Equal(got, []string{"ConfigMap/" + ns + "/app"}) {
		t.Errorf("inventory %v: hooks are not in it", got)
	}
	notify := uid(ctx, t, k, ns, "job", "notify")
	finishJob(ctx, t, k, ns, "notify", true)
	obj = waitPkg(ctx, t, k, ns, "app", 30*time.Second, "Ready, hooks done",
		and(condIs("Ready", "True", "Ready"), hookStage("1.0.0", "done")))
	if got, want := len(hookRuns(obj)), 3; got != want {
		t.Errorf("hook runs %v", hookRuns(obj))
	}
	waitEvent(ctx, t, k, ns, "app", "Normal", "HooksSucceeded", "post-install hooks succeeded: Job/"+ns+"/notify")

	// resyncs: nothing written, no hook run again
	reconciles := func() int { return strings.Count(op.Logs(), "kubepkg="+ns+".app") }
	n0 := reconciles()
	testenv.Eventually(t, 30*time.Second, "a resync", func() (bool, string) { return reconciles() > n0, "" })
	n0 = reconciles()
	api.take()
	testenv.Eventually(t, 30*time.Second, "two more resyncs", func() (bool, string) { return reconciles() >= n0+2, "" })
	if w := api.take().writes(); len(w) != 0 {
		t.Errorf("resyncs of a package whose hooks ran wrote: %v", w)
	}
	if u := uid(ctx, t, k, ns, "job", "notify"); u != notify {
		t.Errorf("notify Job %q, was %q: a resync ran the hook again", u, notify)
	}
	if getObj(ctx, t, k, "-n", ns, "job", "migrate") != nil {
		t.Error("a resync ran the migrate hook again")
	}

	// upgrade
	kubectlApply(ctx, t, k, doc("1.1.0", "2"))
	obj = waitPkg(ctx, t, k, ns, "app", 30*time.Second, "the pre-upgrade Job running",
		and(condIs("Applied", "False", "HookRunning"), hookStage("1.1.0", "pre-upgrade")))
	if str(obj, "status", "hooks", "action") != "upgrade" || str(obj, "status", "hooks", "from") != "1.0.0" {
		t.Errorf("status.hooks %v", at(obj, "status", "hooks"))
	}
	if v := str(getObj(ctx, t, k, "-n", ns, "configmap", "app"), "data", "v"); v != "1" {
		t.Errorf("app.v = %q while the pre-upgrade hook runs, want the old 1", v)
	}
	finishJob(ctx, t, k, ns, "migrate", true)
	waitPkg(ctx, t, k, ns, "app", 30*time.Second, "1.1.0 applied, the post-upgrade Job running",
		and(versionIs("1.1.0"), hookStage("1.1.0", "post-upgrade"), condIs("Ready", "False", "")))
	if v := str(getObj(ctx, t, k, "-n", ns, "configmap", "app"), "data", "v"); v != "2" {
		t.Errorf("app.v = %q after the pre-upgrade hook, want 2", v)
	}
	waitUID(ctx, t, k, ns, "job", "notify", notify)
	finishJob(ctx, t, k, ns, "notify", true)
	obj = waitPkg(ctx, t, k, ns, "app", 30*time.Second, "1.1.0 Ready, hooks done",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", "Ready"), hookStage("1.1.0", "done")))
	want := []string{"pre-upgrade ServiceAccount/" + ns + "/migrator Succeeded", "pre-upgrade Job/" + ns + "/migrate Succeeded",
		"post-upgrade Job/" + ns + "/notify Succeeded"}
	if got := hookRuns(obj); !slices.Equal(got, want) {
		t.Errorf("hook runs %v, want %v", got, want)
	}
}

// TestHookFailure: a pre-install Job that fails stops the apply: Applied
// is False with reason HookFailed naming the hook and the Job's reason, a
// Warning event says so, and the rest of the package is not applied;
// hook-failed deletes the Job. The next reconcile (the resync) runs the
// hook again, a new Job; once it completes the rest is applied.
func TestHookFailure(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 120*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "app", "1.0.0", nil, configMap("app", nil),
		asHook(hookJob("migrate"), "pre-install", "", "before-hook-creation,hook-failed")))
	waitPkg(ctx, t, k, ns, "app", 30*time.Second, "the pre-install Job running", condIs("Applied", "False", "HookRunning"))
	failed := uid(ctx, t, k, ns, "job", "migrate")
	finishJob(ctx, t, k, ns, "migrate", false)
	obj := waitPkg(ctx, t, k, ns, "app", 30*time.Second, "the hook failure reported", condIs("Applied", "False", "HookFailed"))
	msg := str(cond(obj, "Applied"), "message")
	for _, w := range []string{"pre-install hook Job/" + ns + "/migrate failed", "BackoffLimitExceeded", "the rest of the package was not applied"} {
		if !strings.Contains(msg, w) {
			t.Errorf("Applied message %q lacks %q", msg, w)
		}
	}
	checkCondition(t, obj, "Ready", "False", "HookFailed")
	if getObj(ctx, t, k, "-n", ns, "configmap", "app") != nil {
		t.Error("the rest was applied after its pre-install hook failed")
	}
	if str(obj, "status", "appliedVersion") != "" {
		t.Errorf("appliedVersion %q after a failed install", str(obj, "status", "appliedVersion"))
	}
	waitEvent(ctx, t, k, ns, "app", "Warning", "HookFailed", "Job/"+ns+"/migrate")
	if u := uid(ctx, t, k, ns, "job", "migrate"); u == failed {
		t.Error("the failed Job (hook-failed) was not deleted")
	}

	// the retry: a new Job
	waitUID(ctx, t, k, ns, "job", "migrate", failed)
	finishJob(ctx, t, k, ns, "migrate", true)
	waitPkg(ctx, t, k, ns, "app", 30*time.Second, "Applied after the retry",
		and(condIs("Applied", "True", "Applied"), versionIs("1.0.0")))
	if getObj(ctx, t, k, "-n", ns, "configmap", "app") == nil {
		t.Error("app not applied after its hook succeeded")
	}
}

// checkCondition fails t unless obj's condition typ has status and reason.
func checkCondition(t *testing.T, obj map[string]any, typ, status, reason string) {
	t.Helper()
	if c := cond(obj, typ); c == nil || c["status"] != status || c["reason"] != reason {
		t.Errorf("condition %s: %v, want %s %s", typ, c, status, reason)
	}
}

// TestHookTimeout: a hook Job that does not complete within the operator's
// --hook-timeout fails its stage, naming the timeout; the rest is not
// applied.
func TestHookTimeout(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns, "--hook-timeout", "2s")

	kubectlApply(ctx, t, k, pkgDoc(t, ns, "slow", "1.0.0", nil, configMap("slow", nil),
		asHook(hookJob("forever"), "pre-install", "", "")))
	obj := waitPkg(ctx, t, k, ns, "slow", 30*time.Second, "the timeout reported", condIs("Applied", "False", "HookFailed"))
	if msg := str(cond(obj, "Applied"), "message"); !strings.Contains(msg, "pre-install hook Job/"+ns+"/forever failed: not done after 2s") {
		t.Errorf("Applied message %q", msg)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "slow") != nil {
		t.Error("the rest was applied after its pre-install hook timed out")
	}
}

// TestCrpeApplyHooks: `crpe apply` runs the pre-install Job and waits for
// it (the rest is not applied meanwhile), then the rest, then the
// post-install hook, and prints each; the ConfigMap crpe-hooks.<name>
// records them, so the same version applied again (with --prune) runs no
// hook and prunes none. A dry run of the upgrade tells what would run; the
// upgrade's pre-upgrade Job fails: exit code 1, the hook named, the rest
// left at the old version.
func TestCrpeApplyHooks(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 120*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	kc := k.Kubeconfig

	doc := func(version string) string {
		return writeFile(t, "v"+version+".yaml", pkgDoc(t, ns, "direct", version, nil, configMap("app", map[string]string{"v": version}),
			asHook(hookJob("migrate"), "pre-install,pre-upgrade", "", ""),
			asHook(configMap("marker", nil), "post-install", "", ""),
			asHook(hookJob("cleanup"), "pre-delete", "", "")))
	}
	apply := func(file string, args ...string) <-chan result {
		ch := make(chan result, 1)
		go func() { ch <- crpe(ctx, t, "", append([]string{"apply", "-f", file, "--kubeconfig", kc}, args...)...) }()
		return ch
	}
	done := apply(doc("1.0.0"), "--prune")
	first := waitUID(ctx, t, k, ns, "job", "migrate", "")
	if getObj(ctx, t, k, "-n", ns, "configmap", "app") != nil {
		t.Error("crpe apply applied the rest before its pre-install hook completed")
	}
	finishJob(ctx, t, k, ns, "migrate", true)
	r := <-done
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	for _, w := range []string{"Job/" + ns + "/migrate pre-install hook Succeeded\n", "ConfigMap/" + ns + "/app created\n",
		"ConfigMap/" + ns + "/marker post-install hook Succeeded\n"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("crpe apply printed:\n%s\nwant %q", r.Stdout, w)
		}
	}
	if !strings.Contains(r.Stderr, "warning: Job/"+ns+"/cleanup: pre-delete hook not run") {
		t.Errorf("stderr %q: want a warning about the pre-delete hook", r.Stderr)
	}
	if getObj(ctx, t, k, "-n", ns, "job", "cleanup") != nil {
		t.Error("a pre-delete hook was applied")
	}
	rec := getObj(ctx, t, k, "-n", ns, "configmap", "crpe-hooks.direct")
	if str(rec, "metadata", "labels", "octohelm.tech/hooks-of") != ns+".direct" || !strings.Contains(str(rec, "data", "status"), `"stage":"done"`) {
		t.Errorf("the hooks' record: %v", rec)
	}

	// again, with --prune: no hook runs, none is pruned
	r = mustCrpe(ctx, t, "", "apply", "-f", doc("1.0.0"), "--kubeconfig", kc, "--prune")
	if strings.Contains(r.Stdout, " hook ") {
		t.Errorf("the same version again ran hooks:\n%s", r.Stdout)
	}
	if _, sum := applyLines(r.Stdout); !strings.HasSuffix(sum, "0 created, 0 configured, 1 unchanged, 0 pruned, 0 failed") {
		t.Errorf("summary %q", sum)
	}
	if uid(ctx, t, k, ns, "job", "migrate") != first || getObj(ctx, t, k, "-n", ns, "configmap", "marker") == nil {
		t.Error("the same version applied again ran or pruned a hook")
	}

	// the upgrade: a dry run first
	r = mustCrpe(ctx, t, "", "apply", "-f", doc("2.0.0"), "--kubeconfig", kc, "--dry-run=server")
	if !strings.Contains(r.Stdout, "Job/"+ns+"/migrate pre-upgrade hook would run (server dry run)\n") {
		t.Errorf("dry run printed:\n%s", r.Stdout)
	}
	if uid(ctx, t, k, ns, "job", "migrate") != first {
		t.Error("a dry run ran a hook")
	}
	done = apply(doc("2.0.0"))
	waitUID(ctx, t, k, ns, "job", "migrate", first)
	finishJob(ctx, t, k, ns, "migrate", false)
	r = <-done
	if r.Code != 1 || !strings.Contains(r.Stdout, "Job/"+ns+"/migrate FAILED: pre-upgrade hook: Job failed: BackoffLimitExceeded") ||
		!strings.Contains(r.Stderr, "1 hooks failed") {
		t.Errorf("a failed pre-upgrade hook: %s", r)
	}
	if v := str(getObj(ctx, t, k, "-n", ns, "configmap", "app"), "data", "v"); v != "1.0.0" {
		t.Errorf("app.v = %q after a failed pre-upgrade hook, want 1.0.0", v)
	}
}

// TestPackagedChartHooks: the hooks of a chart, as `crpe package` keeps
// them (its test hook left out), run in Helm's order through `crpe apply`:
// the pre-install ServiceAccount (weight -5) before the pre-install
// ConfigMap (weight 0, hook-succeeded: gone afterwards), the chart's
// objects, then the post-install ConfigMap.
func TestPackagedChartHooks(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)

	chart := t.TempDir()
	files := map[string]string{
		"Chart.yaml":         "apiVersion: v2\nname: hooked\nversion: 0.1.0\n",
		"templates/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  release: {{ .Release.Name }}\n",
		"templates/hooks.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: seed
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "0"
    "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: migrator
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-5"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: installed
  annotations:
    "helm.sh/hook": post-install
`,
		"templates/tests/smoke.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: smoke\n  annotations:\n    helm.sh/hook: test\nspec:\n  restartPolicy: Never\n  containers: [{name: main, image: docker.io/library/busybox:1.36}]\n",
	}
	for name, content := range files {
		writeChartFile(t, chart, name, content)
	}
	pkgFile := filepath.Join(t.TempDir(), "hooked.kubepkg.yaml")
	mustCrpe(ctx, t, "", "package", chart, "--namespace", ns, "-o", pkgFile)
	r := mustCrpe(ctx, t, "", "apply", "-f", pkgFile, "--kubeconfig", k.Kubeconfig)
	var hookLines []string
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.Contains(l, " hook ") {
			hookLines = append(hookLines, l)
		}
	}
	want := []string{"ServiceAccount/" + ns + "/migrator pre-install hook Succeeded", "ConfigMap/" + ns + "/seed pre-install hook Succeeded",
		"ConfigMap/" + ns + "/installed post-install hook Succeeded"}
	if !slices.Equal(hookLines, want) {
		t.Errorf("hooks run %q, want %q\n%s", hookLines, want, r)
	}
	if !strings.Contains(r.Stdout, "ConfigMap/"+ns+"/app created\n") {
		t.Errorf("the chart's object not applied:\n%s", r)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "seed") != nil {
		t.Error("the seed hook (hook-succeeded) was left")
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "installed") == nil || getObj(ctx, t, k, "-n", ns, "serviceaccount", "migrator") == nil {
		t.Error("a hook without hook-succeeded is not there")
	}
	if getObj(ctx, t, k, "-n", ns, "pod", "smoke") != nil {
		t.Error("a test hook was applied")
	}
}

func writeChartFile(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
