//go:build linux

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

// TestSignedStory is issue #15's story on the one-node cluster: the images
// of hello v1 (hello:v1 and the sandbox image) are signed with cosign in the
// upstream registry, hello:v2 is not; the agent checks signatures
// (--verify-key). v1 is imported, the operator applies it and its pod runs,
// the verdicts in the KubePkg object's status; v2 (hello:v2 unsigned) is
// refused with nothing published, and v1 keeps running.
func TestSignedStory(t *testing.T) {
	bins := testenv.NodePeers(t)
	testenv.Crpe(t)
	ctx := testenv.WaitCtx(t, 8*time.Minute)
	waitNode := launchNode(t, bins)

	// internet side: the images, signed but hello:v2, and both versions
	// exported with what is carried with their images
	src, im, work := storyRegistry(ctx, t)
	cs := testenv.StartCosign(t)
	key, pub := cs.KeyPair(t, "site")
	for ref, repo := range map[string]string{kit.HelloV1: "library/hello", kit.Pause: "pause"} {
		d, err := im.Digest(ref)
		if err != nil {
			t.Fatal(err)
		}
		cs.Sign(t, src.Addr+"/"+repo+"@"+d.String(), key)
	}
	archives := map[string]string{"v1": exportStory(ctx, t, src, work, "v1"), "v2": exportStory(ctx, t, src, work, "v2")}
	v1 := exportedImages(t, archives["v1"])[kit.HelloV1]

	// intranet side: the agent checks signatures with the public key
	node := waitNode()
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", node.Kubeconfig, "--namespace", kit.PkgNamespace, "--verify-key", pub}})
	testenv.StartOperator(t, node.Kubeconfig, kit.PkgNamespace, "--resync", "1m")
	if out, err := crpe(ctx, t, "mirror-config", "--agent", agent.URL, "--hosts", "docker.io,registry.k8s.io", "-o", node.CertsD); err != nil {
		t.Fatalf("crpe mirror-config: %v\n%s", err, out)
	}
	runsV1 := func(ps []pod) bool {
		for _, p := range ps {
			if !(p.running() && strings.HasSuffix(p.imageID(), "@"+v1)) {
				return false
			}
		}
		return len(ps) > 0
	}

	if out, err := crpe(ctx, t, "import", archives["v1"], "--to", agent.URL, "--token", agent.Token); err != nil {
		t.Fatalf("crpe import v1: %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	waitPods(ctx, t, node.Kube, kit.PkgNamespace, "app="+kit.PkgName, 90*time.Second, "signed hello v1 Running", runsV1)
	obj, err := node.Kube.Kubectl(ctx, "get", "kubepkg", "-n", kit.PkgNamespace, kit.PkgName, "-o", "json")
	if err != nil {
		t.Fatalf("kubectl get kubepkg: %v\n%s", err, obj)
	}
	var got struct {
		Status struct {
			Signatures []kubepkg.Signature `json:"signatures"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(obj), &got); err != nil || len(got.Status.Signatures) != 2 {
		t.Fatalf("status.signatures of the KubePkg object: %v %+v", err, got.Status.Signatures)
	}
	for _, v := range got.Status.Signatures {
		if !v.Verified || !strings.HasPrefix(v.Key, "sha256:") {
			t.Errorf("verdict %+v", v)
		}
	}

	// v2: hello:v2 carries no signature; refused, nothing published
	out, err := crpe(ctx, t, "import", archives["v2"], "--to", agent.URL, "--token", agent.Token)
	if err == nil || !strings.Contains(out, "SIGNATURE_REFUSED") || !strings.Contains(out, kit.HelloV2) {
		t.Fatalf("the import of v2 (unsigned hello:v2) was not refused as such: %v\n%s", err, out)
	}
	if v, err := node.Kube.Kubectl(ctx, "get", "kubepkg", "-n", kit.PkgNamespace, kit.PkgName, "-o", "jsonpath={.spec.version}"); err != nil || strings.TrimSpace(v) != kit.Versions["v1"] {
		t.Errorf("the KubePkg object is at %q after the refused import (%v), want %s", v, err, kit.Versions["v1"])
	}
	time.Sleep(5 * time.Second) // what an upgrade would have started by now
	ps, _ := waitPods(ctx, t, node.Kube, kit.PkgNamespace, "app="+kit.PkgName, 30*time.Second, "hello v1 still Running", runsV1)
	for _, p := range ps {
		if p.Spec.Containers[0].Image != kit.HelloV1 {
			t.Errorf("pod %s runs %s after the refused upgrade", p.Metadata.Name, p.Spec.Containers[0].Image)
		}
	}
}
