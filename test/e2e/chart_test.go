//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/chart/charttest"
	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

// writeChart writes the chart of the chart story at version v ("0.1.0" or
// "0.2.0"): a CRD, a pre-install/pre-upgrade hook Job running hello once,
// a Deployment of hello, and (0.1.0 only) a ConfigMap that 0.2.0 drops.
func writeChart(t *testing.T, dir, v, image string) string {
	t.Helper()
	c := filepath.Join(dir, "hello-chart-"+v)
	files := map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: hello-chart\nversion: " + v + "\n",
		"values.yaml":       "image: " + image + "\n",
		"crds/crontab.yaml": charttest.CronTabCRD,
		"templates/hook.yaml": `apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-1"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: {{ .Values.image }}
        env: [{name: HELLO_EXIT, value: "1"}]
`,
		"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: hello
        image: {{ .Values.image }}
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
`,
	}
	if v == "0.1.0" {
		files["templates/extra.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\ndata: {a: \"1\"}\n"
	}
	for name, body := range files {
		p := filepath.Join(c, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestChartStory is issue #13's story on the one-node cluster: a chart with
// a CRD, a pre-install hook Job and a Deployment is packaged (crpe
// package), exported from the pocket's cache, imported by the agent and
// applied by the operator: the hook runs first (its Job completed before
// the Deployment was created), the pod runs from the agent's image; the
// chart's next version rolls out (the hook runs again, pre-upgrade) and
// the ConfigMap it dropped is pruned.
func TestChartStory(t *testing.T) {
	bins := testenv.NodePeers(t)
	testenv.Crpe(t)
	ctx := testenv.WaitCtx(t, 8*time.Minute)

	waitNode := launchNode(t, bins)

	// internet side: the images through the pocket, the charts packaged,
	// the archives exported from the cache alone
	work := t.TempDir()
	_, pocketData := fillPocket(ctx, t, work)

	archives := map[string]string{}
	for v, image := range map[string]string{"0.1.0": kit.HelloV1, "0.2.0": kit.HelloV2} {
		c := writeChart(t, work, v, image)
		pkg := filepath.Join(work, "hello-chart-"+v+".yaml")
		if out, err := crpe(ctx, t, "package", c, "--release-name", "hello", "--namespace", kit.PkgNamespace,
			"--image", kit.Pause, "--data", pocketData, "-o", pkg); err != nil {
			t.Fatalf("crpe package %s: %v\n%s", v, err, out)
		}
		archives[v] = filepath.Join(work, "hello-chart-"+v+".kubepkg.tgz")
		if out, err := crpe(ctx, t, "export", "-f", pkg, "-o", archives[v], "--data", pocketData, "--offline", "--platform", "linux/amd64"); err != nil {
			t.Fatalf("crpe export %s: %v\n%s", v, err, out)
		}
	}
	exported := exportedImages(t, archives["0.1.0"])
	if exported["crpe.local/charts/hello-chart:0.1.0"] == "" {
		t.Fatalf("the archive does not carry the chart: %v", exported)
	}

	// intranet side
	node := waitNode()
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", node.Kubeconfig, "--namespace", kit.PkgNamespace}})
	operator := testenv.StartOperator(t, node.Kubeconfig, kit.PkgNamespace, "--resync", "1m")
	if out, err := crpe(ctx, t, "mirror-config", "--agent", agent.URL, "--hosts", "docker.io,registry.k8s.io", "-o", node.CertsD); err != nil {
		t.Fatalf("crpe mirror-config: %v\n%s", err, out)
	}

	type job struct {
		Metadata struct {
			UID               string `json:"uid"`
			CreationTimestamp string `json:"creationTimestamp"`
		} `json:"metadata"`
		Status struct {
			Succeeded      int    `json:"succeeded"`
			CompletionTime string `json:"completionTime"`
		} `json:"status"`
	}
	type deploy struct {
		Metadata struct {
			CreationTimestamp string `json:"creationTimestamp"`
		} `json:"metadata"`
	}
	getJob := func() (job, int) {
		var j job
		code, _ := node.API(ctx, http.MethodGet, "/apis/batch/v1/namespaces/"+kit.PkgNamespace+"/jobs/hello-migrate", nil, &j)
		return j, code
	}
	sel := "app=hello"
	running := func(image string) func([]pod) bool {
		want := exported[image]
		if image == kit.HelloV2 {
			want = exportedImages(t, archives["0.2.0"])[image]
		}
		return func(ps []pod) bool {
			for _, p := range ps {
				if !(p.running() && p.ready() && strings.HasSuffix(p.imageID(), "@"+want)) {
					return false
				}
			}
			return len(ps) > 0
		}
	}

	// 0.1.0: the hook first, then the rest
	if out, err := crpe(ctx, t, "import", archives["0.1.0"], "--to", agent.URL, "--token", agent.Token); err != nil {
		t.Fatalf("crpe import 0.1.0: %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 90*time.Second, "hello 0.1.0 Ready from the agent's image", running(kit.HelloV1))
	j1, code := getJob()
	if code != http.StatusOK || j1.Status.Succeeded != 1 {
		t.Fatalf("the pre-install hook Job: %d %+v\noperator:\n%s", code, j1, operator.Logs())
	}
	var d deploy
	if _, err := node.API(ctx, http.MethodGet, "/apis/apps/v1/namespaces/"+kit.PkgNamespace+"/deployments/hello", nil, &d); err != nil {
		t.Fatal(err)
	}
	jc, _ := time.Parse(time.RFC3339, j1.Status.CompletionTime)
	dc, _ := time.Parse(time.RFC3339, d.Metadata.CreationTimestamp)
	if jc.IsZero() || dc.Before(jc) {
		t.Errorf("the Deployment was created at %s, before the hook Job completed at %s", d.Metadata.CreationTimestamp, j1.Status.CompletionTime)
	}
	if code, _ := node.API(ctx, http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com", nil, nil); code != http.StatusOK {
		t.Errorf("the chart's CRD: %d", code)
	}
	if code, _ := node.API(ctx, http.MethodGet, "/api/v1/namespaces/"+kit.PkgNamespace+"/configmaps/hello-extra", nil, nil); code != http.StatusOK {
		t.Errorf("the ConfigMap of 0.1.0: %d", code)
	}

	// 0.2.0: the hook again (pre-upgrade), the roll-out, the prune
	if out, err := crpe(ctx, t, "import", archives["0.2.0"], "--to", agent.URL, "--token", agent.Token); err != nil {
		t.Fatalf("crpe import 0.2.0: %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 90*time.Second, "rolled out to 0.2.0", running(kit.HelloV2))
	testenv.Eventually(t, 30*time.Second, "the hook ran again for the upgrade", func() (bool, string) {
		j2, code := getJob()
		return code == http.StatusOK && j2.Metadata.UID != j1.Metadata.UID && j2.Status.Succeeded == 1, fmt.Sprintf("%d %+v", code, j2)
	})
	testenv.Eventually(t, 30*time.Second, "ConfigMap hello-extra pruned", func() (bool, string) {
		code, err := node.API(ctx, http.MethodGet, "/api/v1/namespaces/"+kit.PkgNamespace+"/configmaps/hello-extra", nil, nil)
		return err == nil && code == http.StatusNotFound, fmt.Sprintf("%d %v", code, err)
	})
}
