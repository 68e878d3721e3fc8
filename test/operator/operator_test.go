//go:build linux

package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestCRDInstall: `crpe operator` installs the KubePkg CRD at start
// (namespaced, v1alpha1, status subresource, printer columns, short name
// kpkg, spec.version required by the schema), and, watching every namespace
// (no --namespace), applies a package.
// It runs first and alone (not parallel): the other tests run operators
// that watch only their own namespace.
func TestCRDInstall(t *testing.T) {
	timed(t)
	ctx := ctxFor(t, 90*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	op := startOperator(ctx, t, k, "")
	if !strings.Contains(op.Logs(), "KubePkg CRD installed") {
		t.Errorf("operator log does not say the CRD was installed:\n%s", op.Logs())
	}

	crd := getObj(ctx, t, k, "crd", "kubepkgs.octohelm.tech")
	if crd == nil {
		t.Fatal("kubectl get crd kubepkgs.octohelm.tech: not found after the operator started")
	}
	if got := str(crd, "spec", "scope"); got != "Namespaced" {
		t.Errorf("scope %q, want Namespaced", got)
	}
	if got := str(crd, "spec", "group"); got != "octohelm.tech" {
		t.Errorf("group %q", got)
	}
	short, _ := at(crd, "spec", "names", "shortNames").([]any)
	if !slices.Contains(short, any("kpkg")) {
		t.Errorf("shortNames %v, want kpkg", short)
	}
	established := false
	for _, c := range at(crd, "status", "conditions").([]any) {
		if m := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			established = true
		}
	}
	if !established {
		t.Errorf("CRD not Established: %v", at(crd, "status", "conditions"))
	}
	var cols []string
	v := at(crd, "spec", "versions", 0)
	if str(v, "name") != "v1alpha1" {
		t.Errorf("version %q, want v1alpha1", str(v, "name"))
	}
	if at(v, "subresources", "status") == nil {
		t.Error("no status subresource")
	}
	for _, c := range at(v, "additionalPrinterColumns").([]any) {
		cols = append(cols, str(c, "name"))
	}
	if want := []string{"Version", "Applied", "Ready", "Age"}; !slices.Equal(cols, want) {
		t.Errorf("printer columns %v, want %v", cols, want)
	}
	if _, err := k.Kubectl(ctx, "api-resources", "--api-group", "octohelm.tech"); err != nil {
		t.Error(err)
	}

	// the schema requires spec.version
	_, err := k.KubectlInput(ctx, fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: noversion, namespace: %s}
spec: {manifests: {}}
`, ns), "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "spec.version") {
		t.Errorf("a KubePkg without spec.version: %v, want a refusal naming spec.version", err)
	}

	// an operator watching every namespace applies a package; kubectl get
	// kpkg shows the printer columns
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "hello", "1.0.0", nil, configMap("hello", map[string]string{"a": "1"})))
	waitPkg(ctx, t, k, ns, "hello", 30*time.Second, "Applied and Ready",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", "Ready"), versionIs("1.0.0")))
	out := kubectl(ctx, t, k, "get", "kpkg", "-n", ns)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME VERSION APPLIED READY AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "hello 1.0.0 True True ") {
		t.Errorf("kubectl get kpkg:\n%s", out)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "hello") == nil {
		t.Error("ConfigMap hello not applied")
	}

	// a second start updates the CRD in place (server-side apply, no error)
	op.Cmd.Process.Kill()
	<-op.Stopped()
	health := testenv.FreeAddr(t)
	op2 := startOperator(ctx, t, k, "", "--health-addr", health)
	if !strings.Contains(op2.Logs(), "KubePkg CRD installed") {
		t.Errorf("second start:\n%s", op2.Logs())
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + health + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	// SIGTERM: a clean exit
	_ = op2.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-op2.Stopped():
		if code := op2.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("operator exit code %d after SIGTERM:\n%s", code, op2.Logs())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("operator still running 15 s after SIGTERM")
	}
}

// TestApplyUpgradeDowngrade: a KubePkg created with kubectl is applied
// (labels, field manager crpe, status, conditions, events, printer
// columns); v2 drops a ConfigMap, which is pruned; a lower version is
// refused (DowngradeRefused, objects untouched) until annotated
// octohelm.tech/force-downgrade: "true".
func TestApplyUpgradeDowngrade(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 120*time.Second)
	k := kube(t)
	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)
	owner := ns + ".web"

	v1 := pkgDoc(t, ns, "web", "1.0.0", nil,
		configMap("web-config", map[string]string{"color": "blue"}),
		configMap("web-extra", map[string]string{"x": "1"}),
		secret("web-secret", map[string]string{"password": "s3cret"}),
		service("web", 8080))
	kubectlApply(ctx, t, k, v1)
	obj := waitPkg(ctx, t, k, ns, "web", 30*time.Second, "v1 Applied and Ready",
		and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", "Ready"), versionIs("1.0.0")))
	if c := cond(obj, "Applied"); !strings.Contains(fmt.Sprint(c["message"]), "4 created") {
		t.Errorf("Applied message %q, want it to count 4 created", c["message"])
	}
	if c := cond(obj, "Ready"); c["message"] == "" {
		t.Error("Ready has no message")
	}
	if fin, _ := at(obj, "metadata", "finalizers").([]any); len(fin) == 0 {
		t.Error("no finalizer on the KubePkg")
	}
	inv := inventory(obj)
	want := []string{"ConfigMap/" + ns + "/web-config", "ConfigMap/" + ns + "/web-extra", "Secret/" + ns + "/web-secret", "Service/" + ns + "/web"}
	if !slices.Equal(inv, want) {
		t.Errorf("inventory %v, want %v", inv, want)
	}
	for _, o := range [][2]string{{"configmap", "web-config"}, {"configmap", "web-extra"}, {"secret", "web-secret"}, {"service", "web"}} {
		u := getObj(ctx, t, k, "-n", ns, o[0], o[1])
		if u == nil {
			t.Errorf("%s/%s not applied", o[0], o[1])
			continue
		}
		checkOwned(t, u, owner)
	}

	// printer columns
	out := kubectl(ctx, t, k, "get", "kpkg", "web", "-n", ns, "--no-headers")
	if f := strings.Fields(out); len(f) < 4 || f[1] != "1.0.0" || f[2] != "True" || f[3] != "True" {
		t.Errorf("kubectl get kpkg: %q", out)
	}
	waitEvent(ctx, t, k, ns, "web", "Normal", "Applied", "4 created")

	// v2: web-extra is dropped, web-config changed
	kubectlApply(ctx, t, k, pkgDoc(t, ns, "web", "2.0.0", nil,
		configMap("web-config", map[string]string{"color": "green"}),
		secret("web-secret", map[string]string{"password": "s3cret"}),
		service("web", 8080)))
	obj = waitPkg(ctx, t, k, ns, "web", 30*time.Second, "v2 Applied",
		and(condIs("Applied", "True", "Applied"), versionIs("2.0.0")))
	if getObj(ctx, t, k, "-n", ns, "configmap", "web-extra") != nil {
		t.Error("web-extra not pruned by v2")
	}
	if got := str(getObj(ctx, t, k, "-n", ns, "configmap", "web-config"), "data", "color"); got != "green" {
		t.Errorf("web-config color %q after v2, want green", got)
	}
	if n := len(inventory(obj)); n != 3 {
		t.Errorf("v2 inventory %v, want 3 entries", inventory(obj))
	}
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "1 pruned") || !strings.Contains(msg, "1 configured") {
		t.Errorf("v2 Applied message %q, want 1 configured, 1 pruned", msg)
	}
	waitEvent(ctx, t, k, ns, "web", "Normal", "Applied", "1 pruned")

	// a lower version is refused; nothing changes
	v15 := func(ann map[string]string) string {
		return pkgDoc(t, ns, "web", "1.5.0", ann,
			configMap("web-config", map[string]string{"color": "red"}),
			configMap("web-extra", map[string]string{"x": "2"}),
			secret("web-secret", map[string]string{"password": "s3cret"}),
			service("web", 8080))
	}
	kubectlApply(ctx, t, k, v15(nil))
	obj = waitPkg(ctx, t, k, ns, "web", 30*time.Second, "1.5.0 refused",
		and(condIs("Applied", "False", "DowngradeRefused"), versionIs("2.0.0")))
	if msg := fmt.Sprint(cond(obj, "Applied")["message"]); !strings.Contains(msg, "1.5.0") || !strings.Contains(msg, "2.0.0") || !strings.Contains(msg, annForce) {
		t.Errorf("DowngradeRefused message %q should name both versions and the annotation", msg)
	}
	waitEvent(ctx, t, k, ns, "web", "Warning", "DowngradeRefused", "1.5.0")
	// a resync later, still untouched
	time.Sleep(6 * time.Second)
	if getObj(ctx, t, k, "-n", ns, "configmap", "web-extra") != nil {
		t.Error("a refused downgrade created web-extra")
	}
	if got := str(getObj(ctx, t, k, "-n", ns, "configmap", "web-config"), "data", "color"); got != "green" {
		t.Errorf("a refused downgrade changed web-config: color %q", got)
	}
	obj = kpkg(ctx, t, k, ns, "web")
	if str(obj, "status", "appliedVersion") != "2.0.0" || cond(obj, "Applied")["reason"] != "DowngradeRefused" {
		t.Errorf("after a resync: %s", condString(obj))
	}

	// forced
	kubectlApply(ctx, t, k, v15(map[string]string{annForce: "true"}))
	obj = waitPkg(ctx, t, k, ns, "web", 30*time.Second, "1.5.0 forced",
		and(condIs("Applied", "True", "Applied"), versionIs("1.5.0")))
	if got := str(getObj(ctx, t, k, "-n", ns, "configmap", "web-config"), "data", "color"); got != "red" {
		t.Errorf("forced downgrade: web-config color %q, want red", got)
	}
	if getObj(ctx, t, k, "-n", ns, "configmap", "web-extra") == nil {
		t.Error("forced downgrade: web-extra not created")
	}
	if n := len(inventory(obj)); n != 4 {
		t.Errorf("forced downgrade inventory %v", inventory(obj))
	}
}

// inventory renders status.inventory as Kind/ns/name (sorted as written).
func inventory(obj map[string]any) []string {
	var out []string
	inv, _ := at(obj, "status", "inventory").([]any)
	for _, e := range inv {
		s := str(e, "kind") + "/"
		if n := str(e, "namespace"); n != "" {
			s += n + "/"
		}
		out = append(out, s+str(e, "name"))
	}
	slices.Sort(out)
	return out
}

// checkOwned checks crpe's labels and field manager on an applied object.
func checkOwned(t *testing.T, u map[string]any, owner string) {
	t.Helper()
	what := str(u, "kind") + "/" + str(u, "metadata", "name")
	if got := str(u, "metadata", "labels", labelManagedBy); got != "crpe" {
		t.Errorf("%s: label %s=%q, want crpe", what, labelManagedBy, got)
	}
	if got := str(u, "metadata", "labels", labelKubePkg); got != owner {
		t.Errorf("%s: label %s=%q, want %s", what, labelKubePkg, got, owner)
	}
	found := false
	mf, _ := at(u, "metadata", "managedFields").([]any)
	for _, m := range mf {
		if str(m, "manager") == "crpe" && str(m, "operation") == "Apply" {
			found = true
		}
	}
	if !found {
		b, _ := json.Marshal(mf)
		t.Errorf("%s: no managedFields entry of manager crpe with operation Apply: %s", what, b)
	}
}

// waitEvent waits for an event on the KubePkg with type, reason and a
// message containing msg.
func waitEvent(ctx context.Context, t *testing.T, k *testenv.Kube, ns, name, typ, reason, msg string) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, fmt.Sprintf("event %s %s %q on KubePkg %s/%s", typ, reason, msg, ns, name), func() (bool, string) {
		list := getObj(ctx, t, k, "events", "-n", ns, "--field-selector", "involvedObject.kind=KubePkg,involvedObject.name="+name)
		items, _ := at(list, "items").([]any)
		var seen []string
		for _, e := range items {
			if str(e, "type") == typ && str(e, "reason") == reason && strings.Contains(str(e, "message"), msg) {
				if str(e, "involvedObject", "apiVersion") != "octohelm.tech/v1alpha1" {
					return false, "event on " + str(e, "involvedObject", "apiVersion")
				}
				return true, ""
			}
			seen = append(seen, str(e, "type")+" "+str(e, "reason")+": "+str(e, "message"))
		}
		return false, strings.Join(seen, "\n")
	})
}
