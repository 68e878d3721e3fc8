//go:build linux

// Package e2e runs the air-gap story end to end on a real one-node cluster
// (testenv.Node: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and a kubelet built from the Go module proxy, Debian's
// containerd with its CRI plugin, runc and the CNI bridge plugin), on
// loopback and in network namespaces of its own, and checks that stopping
// the cluster leaves the host as it was.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

func TestMain(m *testing.M) {
	// anything but loopback and the pods goes to a dead loopback port: the
	// story runs with no network, and proves it
	dead := "http://127.0.0.1:9"
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		os.Setenv(k, dead)
	}
	os.Setenv("NO_PROXY", "127.0.0.1,localhost,10.244.0.0/24")
	os.Setenv("no_proxy", "127.0.0.1,localhost,10.244.0.0/24")
	os.Unsetenv("KUBECONFIG")
	// crpe reads CRPE_<FLAG> as its flags: none of the caller's reach it
	// (CRPE_BIN names the binary and is no flag)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CRPE_") && k != testenv.EnvCrpeBin {
			os.Unsetenv(k)
		}
	}
	os.Exit(testenv.Main(m))
}

// pod is the part of a Pod the tests read.
type pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			Image string `json:"image"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		PodIP             string `json:"podIP"`
		ContainerStatuses []struct {
			Image   string `json:"image"`
			ImageID string `json:"imageID"`
			Ready   bool   `json:"ready"`
			State   struct {
				Running *struct {
					StartedAt string `json:"startedAt"`
				} `json:"running"`
				Waiting *struct {
					Reason  string `json:"reason"`
					Message string `json:"message"`
				} `json:"waiting"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (p pod) running() bool {
	return p.Metadata.DeletionTimestamp == nil && p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) > 0 &&
		p.Status.ContainerStatuses[0].State.Running != nil
}

func (p pod) ready() bool {
	return p.running() && p.Status.ContainerStatuses[0].Ready
}

func (p pod) imageID() string {
	if len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	return p.Status.ContainerStatuses[0].ImageID
}

func (p pod) String() string {
	s := fmt.Sprintf("%s phase=%s ip=%s", p.Metadata.Name, p.Status.Phase, p.Status.PodIP)
	for _, c := range p.Status.ContainerStatuses {
		s += fmt.Sprintf(" image=%s imageID=%s ready=%v", c.Image, c.ImageID, c.Ready)
		if c.State.Waiting != nil {
			s += fmt.Sprintf(" waiting=%s %s", c.State.Waiting.Reason, c.State.Waiting.Message)
		}
	}
	if p.Metadata.DeletionTimestamp != nil {
		s += " (terminating)"
	}
	return s
}

// pods lists the pods of ns matching a label selector.
func pods(ctx context.Context, k *testenv.Kube, ns, selector string) ([]pod, error) {
	var l struct {
		Items []pod `json:"items"`
	}
	_, err := k.API(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+selector, nil, &l)
	return l.Items, err
}

// waitPods polls (every 100 ms) until pred holds for the pods of ns
// matching selector; it returns them and how long it took.
func waitPods(ctx context.Context, t *testing.T, k *testenv.Kube, ns, selector string, d time.Duration, what string, pred func([]pod) bool) ([]pod, time.Duration) {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(d)
	var last []pod
	for {
		ps, err := pods(ctx, k, ns, selector)
		if err == nil {
			last = ps
			if pred(ps) {
				return ps, time.Since(begin)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var b strings.Builder
			for _, p := range last {
				b.WriteString("\n  " + p.String())
			}
			t.Fatalf("%s: not so after %s (err %v); pods:%s", what, d, err, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpGet fetches a URL (a pod's address) with a short timeout.
func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	// the pods are reached directly (no proxy, whatever the environment)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), err
}

// peakRSS is a process's peak resident set (VmHWM), in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// launchNode starts the one-node cluster in the background (while the
// internet side of a story runs) and returns how to wait for it; the node
// is stopped, and the host checked, when the test ends (after everything
// registered later has stopped).
func launchNode(t *testing.T, bins testenv.NodeBins) func() *testenv.Node {
	type started struct {
		n   *testenv.Node
		err error
	}
	ch := make(chan started, 1)
	go func() {
		n, err := testenv.LaunchNode(bins, testenv.NodeOptions{SandboxImage: kit.Pause, Logf: t.Logf})
		ch <- started{n, err}
	}()
	// what the launch gave, taken from ch once, by wait or by the cleanup
	launched := sync.OnceValue(func() started { return <-ch })
	wait := func() *testenv.Node {
		s := launched()
		if s.err != nil {
			t.Fatalf("launching the node: %v", s.err)
		}
		return s.n
	}
	t.Cleanup(func() {
		node := launched().n
		if node == nil {
			return
		}
		if t.Failed() {
			t.Logf("node logs:\n%s", node.Logs())
		}
		begin := time.Now()
		if err := node.Stop(); err != nil {
			t.Errorf("stopping the node: %v", err)
		} else {
			t.Logf("node stopped, host checked: as it was (%s)", time.Since(begin).Round(time.Millisecond))
		}
	})
	return wait
}

// fillPocket is the internet side the stories share: a docker-registry
// holds the story's images (built into work), a `crpe serve` with its data
// folder in work caches them as a client pulls through it, then the
// registry and the pocket stop, so that what follows exports from the
// cache alone.
func fillPocket(ctx context.Context, t *testing.T, work string) (*kit.Images, string) {
	t.Helper()
	reg := testenv.StartDistribution(t)
	im, err := kit.Build(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Push(ctx, reg.Addr); err != nil {
		t.Fatal(err)
	}
	pocketData := filepath.Join(work, "pocket")
	pocketAddr := testenv.FreeAddr(t)
	pocket := testenv.Start(t, "serve", "--addr", pocketAddr, "--data", pocketData, "--log-format", "text",
		"--registry-endpoint", "docker.io="+reg.URL, "--registry-endpoint", "registry.k8s.io="+reg.URL)
	pocket.Addr = pocketAddr
	testenv.WaitHealthy(t, pocket)
	pulled, err := kit.PullThrough(ctx, pocketAddr, im.Refs())
	if err != nil {
		t.Fatalf("%v\npocket:\n%s", err, pocket.Logs())
	}
	t.Logf("pulled %d bytes of %v through the pocket", pulled, im.Refs())
	// crpe serve commits a blob to its cache after its client has it all;
	// stopping it before that loses the blob (see kit.WaitCached)
	if err := im.WaitCached(ctx, pocketData, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = pocket.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pocket.Stopped():
	case <-time.After(30 * time.Second):
		t.Fatal("crpe serve did not stop on SIGTERM")
	}
	reg.Stop()
	t.Log("the upstream registry and the pocket are gone")
	return im, pocketData
}

// exportStory writes the story's package of version v into work and exports
// it from the registry src (serving docker.io and registry.k8s.io), with a
// cache in work; it returns the archive.
func exportStory(ctx context.Context, t *testing.T, src *testenv.Distribution, work, v string) string {
	t.Helper()
	doc, err := kit.Package(v)
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(work, "hello-"+v+".yaml")
	if err := os.WriteFile(pkg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(work, "hello-"+v+".kubepkg.tgz")
	if out, err := crpe(ctx, t, "export", "-f", pkg, "-o", archive, "--data", filepath.Join(work, "cache"),
		"--registry-endpoint", "docker.io="+src.URL, "--registry-endpoint", "registry.k8s.io="+src.URL); err != nil {
		t.Fatalf("crpe export %s: %v\n%s", v, err, out)
	}
	return archive
}

// storyRegistry is the internet side of the stories that export straight
// from a registry: a docker-registry holding the story's images (built into
// a temp folder, which it returns too).
func storyRegistry(ctx context.Context, t *testing.T) (*testenv.Distribution, *kit.Images, string) {
	t.Helper()
	src := testenv.StartDistribution(t)
	work := t.TempDir()
	im, err := kit.Build(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Push(ctx, src.Addr); err != nil {
		t.Fatal(err)
	}
	return src, im, work
}
