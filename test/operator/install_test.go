//go:build linux

package operator

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/testenv"
)

// installDocs splits `crpe install` output into objects.
func installDocs(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, doc := range strings.Split(out, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("crpe install: a document does not parse: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			objs = append(objs, m)
		}
	}
	return objs
}

func findObj(objs []map[string]any, kind, name string) map[string]any {
	for _, o := range objs {
		if str(o, "kind") == kind && str(o, "metadata", "name") == name {
			return o
		}
	}
	return nil
}

// TestInstallDryRun: `crpe install` prints the Namespace, the CRD,
// ServiceAccounts, RBAC, the agent (Deployment, PVC, token Secret, NodePort
// Service) and the operator, with /healthz probes and resource requests;
// `kubectl apply --dry-run=server` accepts all of it once the Namespace
// exists (a server dry run cannot create the namespace the namespaced
// objects go to: they fail with NotFound, so the Namespace is applied for
// real first). --image-archive writes crpe's own image as an OCI layout tar.
func TestInstallDryRun(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 60*time.Second)
	k := kube(t)

	img := filepath.Join(t.TempDir(), "crpe-image.tar")
	r := mustCrpe(ctx, t, "", "install", "--image-archive", img)
	objs := installDocs(t, r.Stdout)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, str(o, "kind")+"/"+str(o, "metadata", "name"))
	}
	for _, want := range []string{"Namespace/crpe-system", "CustomResourceDefinition/kubepkgs.octohelm.tech",
		"ServiceAccount/crpe-agent", "ServiceAccount/crpe-operator", "ClusterRole/crpe-agent", "ClusterRoleBinding/crpe-agent",
		"ClusterRole/crpe-operator", "ClusterRoleBinding/crpe-operator", "Secret/crpe-agent-token",
		"PersistentVolumeClaim/crpe-agent-data", "Deployment/crpe-agent", "Service/crpe-agent", "Deployment/crpe-operator"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("crpe install lacks %s (has %v)", want, kinds)
		}
	}
	if kinds[0] != "Namespace/crpe-system" {
		t.Errorf("the Namespace should come first: %v", kinds)
	}
	for _, name := range []string{"crpe-agent", "crpe-operator"} {
		d := findObj(objs, "Deployment", name)
		c := at(d, "spec", "template", "spec", "containers", 0)
		if str(c, "livenessProbe", "httpGet", "path") != "/healthz" || str(c, "readinessProbe", "httpGet", "path") != "/healthz" {
			t.Errorf("%s: probes %v %v", name, at(c, "livenessProbe"), at(c, "readinessProbe"))
		}
		if at(c, "resources", "requests", "cpu") == nil || at(c, "resources", "requests", "memory") == nil {
			t.Errorf("%s: no resource requests", name)
		}
		if got := str(c, "image"); !strings.HasPrefix(got, "ghcr.io/octohelm/crpe:") {
			t.Errorf("%s: image %q", name, got)
		}
		if str(d, "spec", "template", "spec", "serviceAccountName") != name {
			t.Errorf("%s: service account %q", name, str(d, "spec", "template", "spec", "serviceAccountName"))
		}
	}
	if svc := findObj(objs, "Service", "crpe-agent"); str(svc, "spec", "type") != "NodePort" || at(svc, "spec", "ports", 0, "nodePort") != float64(30660) {
		t.Errorf("agent Service: %v", at(svc, "spec"))
	}

	// the Namespace for real, then a server dry run of everything
	nsDoc, _ := json.Marshal(objs[0])
	kubectlApply(ctx, t, k, string(nsDoc))
	out, err := k.KubectlInput(ctx, r.Stdout, "apply", "--dry-run=server", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server of crpe install: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(objs) {
		t.Errorf("server dry run: %d lines for %d objects:\n%s", len(lines), len(objs), out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "(server dry run)") {
			t.Errorf("server dry run line %q", l)
		}
	}

	// --image-archive: an OCI layout tar
	if !strings.Contains(r.Stderr, "wrote "+img) {
		t.Errorf("--image-archive: stderr %q", r.Stderr)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("--image-archive: %v", err)
		}
		names = append(names, h.Name)
	}
	if !slices.Contains(names, "oci-layout") || !slices.Contains(names, "index.json") {
		t.Errorf("--image-archive entries %v: not an OCI layout", names)
	}
}

// canI asks the API server whether a service account may do something.
func canI(t *testing.T, k *testenv.Kube, sa string, args ...string) bool {
	t.Helper()
	ctx := ctxFor(t, 20*time.Second)
	out, _ := k.Kubectl(ctx, append([]string{"auth", "can-i", "--as", sa}, args...)...)
	return strings.TrimSpace(out) == "yes"
}

// saKubeconfig writes a kubeconfig that authenticates as a service account
// with a token from the TokenRequest API.
func saKubeconfig(t *testing.T, k *testenv.Kube, ns, sa string) string {
	t.Helper()
	ctx := ctxFor(t, 20*time.Second)
	tok := strings.TrimSpace(kubectl(ctx, t, k, "create", "token", sa, "-n", ns, "--duration", "1h"))
	b, err := os.ReadFile(k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, sa+".kubeconfig", strings.Replace(string(b), k.Token, tok, 1))
}

// TestInstallRBAC applies `crpe install` for real and runs crpe with the
// service accounts it creates (tokens from the TokenRequest API, RBAC
// enforced by the API server): the agent's role is enough to create and
// update KubePkg objects after imports and allows nothing else asked here;
// the operator's roles are enough to install the CRD, reconcile a package,
// write status and events, and honour the finalizer.
func TestInstallRBAC(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 120*time.Second)
	k := kube(t)
	sys := newNS(ctx, t, k) + "-sys"
	r := mustCrpe(ctx, t, "", "install", "--namespace", sys, "--token", "agent-token", "--image", "example.com/crpe:test", "--node-port", "30661")
	kubectlApply(ctx, t, k, r.Stdout)

	agentSA := "system:serviceaccount:" + sys + ":crpe-agent"
	opSA := "system:serviceaccount:" + sys + ":crpe-operator"
	for _, c := range []struct {
		sa   string
		args []string
		want bool
	}{
		{agentSA, []string{"create", "kubepkgs.octohelm.tech", "-n", "default"}, true},
		{agentSA, []string{"patch", "kubepkgs.octohelm.tech", "-n", "default"}, true},
		{agentSA, []string{"get", "kubepkgs.octohelm.tech", "-n", "default"}, true},
		{agentSA, []string{"delete", "kubepkgs.octohelm.tech", "-n", "default"}, false},
		// the agent records its signature verdicts (status.signatures) with a
		// merge patch of that field; it never updates the whole status
		{agentSA, []string{"patch", "kubepkgs.octohelm.tech", "--subresource", "status", "-n", "default"}, true},
		{agentSA, []string{"update", "kubepkgs.octohelm.tech", "--subresource", "status", "-n", "default"}, false},
		{agentSA, []string{"get", "secrets", "-n", sys}, false},
		{agentSA, []string{"create", "configmaps", "-n", "default"}, false},
		{agentSA, []string{"create", "customresourcedefinitions.apiextensions.k8s.io"}, false},
		{opSA, []string{"patch", "kubepkgs.octohelm.tech", "--subresource", "status", "-n", "default"}, true},
		{opSA, []string{"update", "kubepkgs.octohelm.tech", "--subresource", "finalizers", "-n", "default"}, true},
		{opSA, []string{"patch", "customresourcedefinitions.apiextensions.k8s.io"}, true},
		{opSA, []string{"create", "events", "-n", "default"}, true},
		{opSA, []string{"create", "deployments.apps", "-n", "default"}, true},
		{opSA, []string{"delete", "clusterroles.rbac.authorization.k8s.io"}, true},
	} {
		if got := canI(t, k, c.sa, c.args...); got != c.want {
			t.Errorf("%s can-i %v: %v, want %v", c.sa, c.args, got, c.want)
		}
	}

	ws := newNS(ctx, t, k)
	opKC := saKubeconfig(t, k, sys, "crpe-operator")
	agentKC := saKubeconfig(t, k, sys, "crpe-agent")
	op := startOperator(ctx, t, k, ws, "--kubeconfig", opKC) // the later --kubeconfig wins
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", agentKC, "--namespace", ws}})

	data := t.TempDir()
	export := func(version string) string {
		src := writeFile(t, "pkg-"+version+".yaml", fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: rbac
  namespace: %s
spec:
  version: %s
  manifests:
    rbac-config.%s.configmap: {apiVersion: v1, kind: ConfigMap, metadata: {name: rbac-config}, data: {version: %q}}
`, ws, version, ws, version))
		out := filepath.Join(t.TempDir(), "rbac-"+version+".kubepkg.tgz")
		mustCrpe(ctx, t, "", "export", "-f", src, "-o", out, "--data", data)
		return out
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		// (`crpe import --json` does not show the agent's kubepkgObjects:
		// see TestAgentCreatesKubePkg; the object is checked instead)
		mustCrpe(ctx, t, "", "import", export(v), "--to", agent.URL, "--token", agent.Token, "--json")
		testenv.Eventually(t, 10*time.Second, "KubePkg written by the agent's service account", func() (bool, string) {
			got := str(kpkg(ctx, t, k, ws, "rbac"), "spec", "version")
			return got == v, "spec.version " + got + "\nagent:\n" + agent.Logs()
		})
		waitPkg(ctx, t, k, ws, "rbac", 30*time.Second, "applied by the operator's service account",
			and(condIs("Applied", "True", "Applied"), condIs("Ready", "True", ""), versionIs(v)))
		if got := str(getObj(ctx, t, k, "-n", ws, "configmap", "rbac-config"), "data", "version"); got != v {
			t.Errorf("rbac-config version %q, want %s", got, v)
		}
	}
	waitEvent(ctx, t, k, ws, "rbac", "Normal", "Applied", "1.1.0")
	kubectl(ctx, t, k, "delete", "kubepkg.octohelm.tech", "rbac", "-n", ws, "--timeout=30s")
	if getObj(ctx, t, k, "-n", ws, "configmap", "rbac-config") != nil {
		t.Error("the operator's service account did not delete the package's ConfigMap")
	}
	if strings.Contains(op.Logs(), "forbidden") || strings.Contains(agent.Logs(), "forbidden") {
		t.Errorf("a request was forbidden:\noperator:\n%s\nagent:\n%s", op.Logs(), agent.Logs())
	}
}

// importSummary is the part of `crpe import --to --json` these tests read.
type importSummary struct {
	Import struct {
		Packages []struct {
			Namespace, Name, Version, Previous string
			Forced                             bool
		} `json:"packages"`
		Images         map[string]string `json:"images"`
		KubePkgObjects map[string]string `json:"kubepkgObjects"`
	} `json:"import"`
	raw string
}

func importJSON(t *testing.T, r result) importSummary {
	t.Helper()
	var s importSummary
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("import --json: %v\n%s", err, r)
	}
	s.raw = r.Stdout
	return s
}
