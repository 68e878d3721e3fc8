//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

// importSummary is the part of `crpe import --to --json` the story reads.
type importSummary struct {
	Import struct {
		BlobsReceived int   `json:"blobsReceived"`
		BlobsPresent  int   `json:"blobsPresent"`
		BytesReceived int64 `json:"bytesReceived"`
	} `json:"import"`
	BytesSent    int64 `json:"bytesSent"`
	BlobsOmitted int   `json:"blobsOmitted"`
	BytesOmitted int64 `json:"bytesOmitted"`
}

// figures are what the story measures (docs/benchmarks.md).
type figures struct {
	V1ToRunning, V1ToReady             time.Duration
	V2ToRunning, V2ToRolledOut         time.Duration
	V2Sent, V2Archive, V2ChangedLayers int64
	V2ImportReported                   int64
	AgentPeakRSS, OperatorPeakRSS      int64
	NodeStart, NodeStop                time.Duration
}

// TestStory is issue #7's story, one step after the other:
//
//  1. internet side: a docker-registry holds hello:v1, hello:v2 and the
//     pause image; `crpe serve` caches them as clients pull through it;
//     then the registry and the pocket stop, and `crpe export --offline`
//     writes v1 and v2 of the package from the pocket's cache alone;
//  2. intranet side (a one-node cluster): `crpe agent --kubeconfig` and
//     `crpe operator` run, `crpe mirror-config` points the node's containerd
//     at the agent; `crpe import` of v1 ends with a Running pod whose imageID
//     is the exported digest and that answers on its port;
//  3. `crpe import` of v2 sends only what the agent lacks (counted on the
//     wire), the Deployment rolls out to v2, the ConfigMap is pruned;
//  4. a downgrade to v1 is refused, and the pod keeps running v2;
//  5. the cluster stops and the host is as it was.
func TestStory(t *testing.T) {
	bins := testenv.NodePeers(t)
	testenv.Crpe(t) // built outside the time bound
	ctx := testenv.WaitCtx(t, 8*time.Minute)
	var fig figures

	waitNode := launchNode(t, bins)

	// 1. internet side
	work := t.TempDir()
	im, pocketData := fillPocket(ctx, t, work)

	archives := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		doc, _ := kit.Package(v)
		src := filepath.Join(work, "hello-"+v+".yaml")
		if err := os.WriteFile(src, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		archives[v] = filepath.Join(work, "hello-"+v+".kubepkg.tgz")
		if out, err := crpe(ctx, t, "export", "-f", src, "-o", archives[v], "--data", pocketData, "--offline"); err != nil {
			t.Fatalf("crpe export %s: %v\n%s", v, err, out)
		}
	}
	exported := map[string]map[string]string{}
	for v, f := range archives {
		exported[v] = exportedImages(t, f)
	}
	for v, ref := range map[string]string{"v1": kit.HelloV1, "v2": kit.HelloV2} {
		want, _ := im.Digest(ref)
		if got := exported[v][ref]; got != want.String() {
			t.Fatalf("archive %s pins %s to %q, want %s (the upstream digest)", v, ref, got, want)
		}
		if exported[v][kit.Pause] == "" {
			t.Fatalf("archive %s does not carry the sandbox image %s: %v", v, kit.Pause, exported[v])
		}
	}

	// 2. intranet side
	node := waitNode()
	fig.NodeStart = node.Started
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", node.Kubeconfig, "--namespace", kit.PkgNamespace}})
	operator := testenv.StartOperator(t, node.Kubeconfig, kit.PkgNamespace, "--resync", "1m")
	if out, err := crpe(ctx, t, "mirror-config", "--agent", agent.URL, "--hosts", "docker.io,registry.k8s.io", "-o", node.CertsD); err != nil {
		t.Fatalf("crpe mirror-config: %v\n%s", err, out)
	}
	wire := testenv.StartProxy(t, agent.Addr, 0, 0)
	importTo := func(file string) (importSummary, string, error) {
		stdout, stderr, err := crpeSplit(ctx, t, "import", file, "--to", wire.URL, "--token", agent.Token, "--json")
		var sum importSummary
		if err == nil {
			if jerr := json.Unmarshal([]byte(stdout), &sum); jerr != nil {
				return sum, stdout + stderr, fmt.Errorf("import --json output: %v", jerr)
			}
		}
		return sum, stdout + stderr, err
	}
	hello := func(v string) func(pod) bool {
		digest := exported[v][map[string]string{"v1": kit.HelloV1, "v2": kit.HelloV2}[v]]
		return func(p pod) bool { return p.running() && strings.HasSuffix(p.imageID(), "@"+digest) }
	}
	all := func(pred func(pod) bool) func([]pod) bool {
		return func(ps []pod) bool {
			for _, p := range ps {
				if !pred(p) {
					return false
				}
			}
			return len(ps) > 0
		}
	}
	some := func(pred func(pod) bool) func([]pod) bool {
		return func(ps []pod) bool {
			for _, p := range ps {
				if pred(p) {
					return true
				}
			}
			return false
		}
	}
	answer := func(ps []pod, want string) {
		t.Helper()
		for _, p := range ps {
			url := fmt.Sprintf("http://%s:%d/", p.Status.PodIP, kit.Port)
			var got string
			testenv.Eventually(t, 10*time.Second, "pod "+p.Metadata.Name+" answers", func() (bool, string) {
				b, err := httpGet(ctx, url)
				got = b
				return err == nil, fmt.Sprint(err)
			})
			if got != want {
				t.Errorf("pod %s (%s) answered %q, want %q", p.Metadata.Name, url, got, want)
			}
		}
	}
	sel := "app=" + kit.PkgName

	begin := time.Now()
	sum1, out, err := importTo(archives["v1"])
	if err != nil {
		t.Fatalf("crpe import v1: %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	ps, _ := waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 60*time.Second, "v1 pod Running from the agent's image", some(hello("v1")))
	fig.V1ToRunning = time.Since(begin)
	ps, _ = waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 30*time.Second, "v1 pod Ready", all(func(p pod) bool { return hello("v1")(p) && p.ready() }))
	fig.V1ToReady = time.Since(begin)
	t.Logf("v1: %d blobs sent; pod Running %s and Ready %s after `crpe import` began; imageID %s",
		sum1.Import.BlobsReceived, fig.V1ToRunning.Round(time.Millisecond), fig.V1ToReady.Round(time.Millisecond), ps[0].imageID())
	answer(ps, "hello v1 (configured by hello-config)")
	checkService(ctx, t, node, ps)

	// 3. the upgrade
	before := wire.Up.Load()
	begin = time.Now()
	sum2, out, err := importTo(archives["v2"])
	if err != nil {
		t.Fatalf("crpe import v2: %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	fig.V2Sent = wire.Up.Load() - before
	fig.V2ImportReported = sum2.BytesSent
	waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 60*time.Second, "a v2 pod Running", some(hello("v2")))
	fig.V2ToRunning = time.Since(begin)
	ps, _ = waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 60*time.Second, "rolled out to v2 (v1 pods gone)", all(func(p pod) bool { return hello("v2")(p) && p.ready() }))
	fig.V2ToRolledOut = time.Since(begin)
	answer(ps, "hello v2")
	checkService(ctx, t, node, ps)
	testenv.Eventually(t, 30*time.Second, "ConfigMap "+kit.ConfigMap+" pruned", func() (bool, string) {
		code, err := node.API(ctx, http.MethodGet, "/api/v1/namespaces/"+kit.PkgNamespace+"/configmaps/"+kit.ConfigMap, nil, nil)
		return err == nil && code == http.StatusNotFound, fmt.Sprintf("%d %v", code, err)
	})
	fi, _ := os.Stat(archives["v2"])
	fig.V2Archive = fi.Size()
	fig.V2ChangedLayers, _ = im.ChangedLayers(kit.HelloV1, kit.HelloV2)
	t.Logf("v2: %d bytes on the wire (crpe import says %d sent, %d blobs / %d bytes left out), archive %d bytes, changed layers %d bytes (%.3fx); a v2 pod Running %s, rolled out %s after `crpe import` began",
		fig.V2Sent, sum2.BytesSent, sum2.BlobsOmitted, sum2.BytesOmitted, fig.V2Archive, fig.V2ChangedLayers,
		float64(fig.V2Sent)/float64(fig.V2ChangedLayers), fig.V2ToRunning.Round(time.Millisecond), fig.V2ToRolledOut.Round(time.Millisecond))
	if ratio := float64(fig.V2Sent) / float64(fig.V2ChangedLayers); ratio > 1.1 {
		t.Errorf("the upgrade sent %d bytes, %.3fx the %d bytes of changed layers (goal ≤ 1.1x)", fig.V2Sent, ratio, fig.V2ChangedLayers)
	}
	if fig.V2ToRunning > 10*time.Second {
		t.Logf("GOAL MISSED: the upgrade's pod ran %s after the import began (goal: within 10 s)", fig.V2ToRunning)
	}

	// 4. a downgrade is refused; v2 keeps running
	podsBefore := map[string]bool{}
	for _, p := range ps {
		podsBefore[p.Metadata.Name] = true
	}
	if _, out, err := importTo(archives["v1"]); err == nil {
		t.Errorf("crpe import of v1 after v2 succeeded:\n%s", out)
	} else if !strings.Contains(strings.ToLower(out), "version") {
		t.Errorf("the refused downgrade does not say why:\n%s", out)
	} else {
		t.Logf("downgrade refused: %s", firstLine(out))
	}
	time.Sleep(3 * time.Second) // what a wrongly accepted downgrade would need to start rolling
	var kp struct {
		Spec   struct{ Version string } `json:"spec"`
		Status struct {
			AppliedVersion string `json:"appliedVersion"`
		} `json:"status"`
	}
	if _, err := node.API(ctx, http.MethodGet, "/apis/octohelm.tech/v1alpha1/namespaces/"+kit.PkgNamespace+"/kubepkgs/"+kit.PkgName, nil, &kp); err != nil {
		t.Fatal(err)
	}
	if kp.Spec.Version != "2.0.0" || kp.Status.AppliedVersion != "2.0.0" {
		t.Errorf("after the refused downgrade, KubePkg spec.version %q, applied %q: want 2.0.0", kp.Spec.Version, kp.Status.AppliedVersion)
	}
	ps, _ = waitPods(ctx, t, node.Kube, kit.PkgNamespace, sel, 5*time.Second, "still v2", all(func(p pod) bool { return hello("v2")(p) && p.ready() }))
	for _, p := range ps {
		if !podsBefore[p.Metadata.Name] {
			t.Errorf("pod %s appeared after the refused downgrade", p.Metadata.Name)
		}
	}
	answer(ps, "hello v2")

	// figures
	fig.AgentPeakRSS = peakRSS(agent.Cmd.Process.Pid)
	fig.OperatorPeakRSS = peakRSS(operator.Cmd.Process.Pid)
	t.Logf("FIGURES node start %s | v1: import→Running %s, →Ready %s | v2: import→Running %s, →rolled out %s | v2 sent %d B (import's own count %d B), archive %d B, changed layers %d B, sent/changed %.3f, sent/archive %.3f | peak RSS agent %.1f MiB, operator %.1f MiB",
		fig.NodeStart.Round(time.Millisecond), fig.V1ToRunning.Round(time.Millisecond), fig.V1ToReady.Round(time.Millisecond),
		fig.V2ToRunning.Round(time.Millisecond), fig.V2ToRolledOut.Round(time.Millisecond),
		fig.V2Sent, fig.V2ImportReported, fig.V2Archive, fig.V2ChangedLayers,
		float64(fig.V2Sent)/float64(fig.V2ChangedLayers), float64(fig.V2Sent)/float64(fig.V2Archive),
		float64(fig.AgentPeakRSS)/(1<<20), float64(fig.OperatorPeakRSS)/(1<<20))
	if f := os.Getenv("E2E_FIGURES"); f != "" {
		b, _ := json.MarshalIndent(fig, "", "  ")
		_ = os.WriteFile(f, b, 0o644)
	}
}

// crpe runs the crpe binary to completion; out is stdout then stderr.
func crpe(ctx context.Context, t *testing.T, args ...string) (out string, err error) {
	t.Helper()
	stdout, stderr, err := crpeSplit(ctx, t, args...)
	return stdout + stderr, err
}

func crpeSplit(ctx context.Context, t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	return so.String(), se.String(), err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// exportedImages reads spec.images of an archive's kubepkg.json (its first
// entry): the digest each reference was pinned to.
func exportedImages(t *testing.T, file string) map[string]string {
	t.Helper()
	var pkg struct {
		Spec struct {
			Images map[string]string `json:"images"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(testenv.ArchivePackage(t, file), &pkg); err != nil {
		t.Fatal(err)
	}
	return pkg.Spec.Images
}

// checkService: the package's Service got a ClusterIP from the service range
// and its EndpointSlice names exactly the pods (no kube-proxy runs, so the
// ClusterIP itself is not dialled).
func checkService(ctx context.Context, t *testing.T, n *testenv.Node, ps []pod) {
	t.Helper()
	var svc struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"spec"`
	}
	if _, err := n.API(ctx, http.MethodGet, "/api/v1/namespaces/"+kit.PkgNamespace+"/services/"+kit.PkgName, nil, &svc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(svc.Spec.ClusterIP, "10.96.0.") {
		t.Errorf("service %s: clusterIP %q, want one of %s", kit.PkgName, svc.Spec.ClusterIP, testenv.DefaultServiceCIDR)
	}
	want := map[string]bool{}
	for _, p := range ps {
		want[p.Status.PodIP] = true
	}
	testenv.Eventually(t, 20*time.Second, "EndpointSlice of service "+kit.PkgName+" names the pods", func() (bool, string) {
		var l struct {
			Items []struct {
				Endpoints []struct {
					Addresses  []string `json:"addresses"`
					Conditions struct {
						Ready *bool `json:"ready"`
					} `json:"conditions"`
				} `json:"endpoints"`
			} `json:"items"`
		}
		if _, err := n.API(ctx, http.MethodGet, "/apis/discovery.k8s.io/v1/namespaces/"+kit.PkgNamespace+"/endpointslices?labelSelector=kubernetes.io/service-name="+kit.PkgName, nil, &l); err != nil {
			return false, err.Error()
		}
		got := map[string]bool{}
		for _, it := range l.Items {
			for _, e := range it.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, a := range e.Addresses {
						got[a] = true
					}
				}
			}
		}
		if len(got) != len(want) {
			return false, fmt.Sprintf("ready endpoints %v, want %v", got, want)
		}
		for a := range want {
			if !got[a] {
				return false, fmt.Sprintf("ready endpoints %v, want %v", got, want)
			}
		}
		return true, ""
	})
}
