//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

// TestRegistryModeStory is issue #14's story on the one-node cluster: the
// site runs its own registry (CNCF distribution v3 over TLS from a site
// CA); `crpe agent --registry` imports the package into it and keeps only
// the KubePkg record; the operator applies it; the node's containerd pulls
// docker.io/library/hello:v1 and the sandbox image unchanged from the site
// registry through the hosts.toml `crpe mirror-config --registry` wrote
// (override_path), and the pod runs with the exported digest.
func TestRegistryModeStory(t *testing.T) {
	bins := testenv.NodePeers(t)
	testenv.Crpe(t)
	ctx := testenv.WaitCtx(t, 8*time.Minute)

	waitNode := launchNode(t, bins)

	// internet side: the images in a registry, the package exported
	src, _, work := storyRegistry(ctx, t)
	archive := exportStory(ctx, t, src, work, "v1")
	exported := exportedImages(t, archive)

	// intranet side: the site registry, the agent in registry mode, the
	// operator, the nodes pointed at the site registry
	site := testenv.StartRegistry3(t, testenv.Registry3Options{TLS: true})
	node := waitNode()
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--registry", site.Addr + "/site", "--ca-file", site.CAFile,
		"--kubeconfig", node.Kubeconfig, "--namespace", kit.PkgNamespace}})
	testenv.StartOperator(t, node.Kubeconfig, kit.PkgNamespace, "--resync", "1m")
	if out, err := crpe(ctx, t, "mirror-config", "--registry", site.Addr+"/site", "--ca-file", site.CAFile,
		"--hosts", "docker.io,registry.k8s.io", "-o", node.CertsD); err != nil {
		t.Fatalf("crpe mirror-config --registry: %v\n%s", err, out)
	}

	if out, err := crpe(ctx, t, "import", archive, "--to", agent.URL, "--token", agent.Token); err != nil {
		t.Fatalf("crpe import --to (registry mode): %v\n%s\nagent:\n%s", err, out, agent.Logs())
	}
	want := exported[kit.HelloV1]
	waitPods(ctx, t, node.Kube, kit.PkgNamespace, "app="+kit.PkgName, 90*time.Second, "hello Running from the site registry", func(ps []pod) bool {
		for _, p := range ps {
			if !(p.running() && strings.HasSuffix(p.imageID(), "@"+want) && p.Spec.Containers[0].Image == kit.HelloV1) {
				return false
			}
		}
		return len(ps) > 0
	})
	// the blobs came from the site registry, not from the agent
	if n := strings.Count(agent.Logs(), "path=/v2/"); n > 1 {
		t.Errorf("the agent served %d /v2 requests: the node should pull from the site registry", n)
	}
	if !strings.Contains(site.Logs(), "/v2/site/docker.io/library/hello/manifests/") {
		t.Errorf("the site registry was never asked for hello's manifest:\n%s", site.Logs())
	}
}
