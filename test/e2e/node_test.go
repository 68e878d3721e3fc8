//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

// TestNode: the one-node cluster alone (no crpe). A pod whose images come
// from a local docker-registry through containerd's certs.d (sandbox image
// included) runs, answers on its port from its own network namespace, and
// `kubectl logs` reaches the kubelet; then Stop leaves no process, mount,
// network namespace, interface, cgroup, iptables rule, sysctl change or file
// behind (Stop checks each against a snapshot taken before the start).
func TestNode(t *testing.T) {
	bins := testenv.NodePeers(t)
	ctx := testenv.WaitCtx(t, 4*time.Minute)
	reg := testenv.StartDistribution(t)
	im, err := kit.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Push(ctx, reg.Addr); err != nil {
		t.Fatal(err)
	}

	n, err := testenv.LaunchNode(bins, testenv.NodeOptions{SandboxImage: kit.Pause, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			if t.Failed() {
				t.Logf("node logs:\n%s", n.Logs())
			}
			if err := n.Stop(); err != nil {
				t.Error(err)
			}
		}
	})
	// the registry as the mirror of both hosts, and as their server: a
	// failed pull has nowhere else to go
	for _, host := range []string{"docker.io", "registry.k8s.io"} {
		dir := filepath.Join(n.CertsD, host)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.URL, reg.URL)
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	begin := time.Now()
	if _, err := n.KubectlInput(ctx, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hello, labels: {app: hello}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: hello
      image: %s
      env: [{name: GREETING, value: "from a plain pod"}]
      ports: [{containerPort: %d}]
`, kit.HelloV1, kit.Port), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	ps, _ := waitPods(ctx, t, n.Kube, "default", "app=hello", 60*time.Second, "pod hello running", func(ps []pod) bool {
		return len(ps) == 1 && ps[0].running() && ps[0].Status.PodIP != ""
	})
	t.Logf("pod Running %s after it was created (node ready in %s)", time.Since(begin).Round(time.Millisecond), n.Started.Round(time.Millisecond))
	want, _ := im.Digest(kit.HelloV1)
	if id := ps[0].imageID(); !strings.HasSuffix(id, "@"+want.String()) {
		t.Errorf("imageID %q, want …@%s", id, want)
	}
	url := fmt.Sprintf("http://%s:%d/", ps[0].Status.PodIP, kit.Port)
	var body string
	testenv.Eventually(t, 20*time.Second, "pod answers "+url, func() (bool, string) {
		b, err := httpGet(ctx, url)
		body = b
		return err == nil, fmt.Sprint(err)
	})
	if body != "hello v1 (from a plain pod)" {
		t.Errorf("pod answered %q", body)
	}
	logs, err := n.Kubectl(ctx, "logs", "hello")
	if err != nil || !strings.Contains(logs, "listening on") {
		t.Errorf("kubectl logs: %q %v", logs, err)
	}
	if reg.Requests("/v2/pause/manifests/", "ns=registry.k8s.io", "containerd") == 0 {
		t.Errorf("the sandbox image was not pulled through certs.d from the registry:\n%s", reg.Logs())
	}

	// while it runs, the node holds what Stop must undo (a check that finds
	// nothing afterwards means something only if these were there): mounts
	// under Root (the pod's netns among them), the bridge, kubepods under the
	// node's cgroup, forwarding on
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var podMounts, nsMounts int
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, n.Root+"/") {
			podMounts++
			if strings.Contains(line, " - nsfs ") {
				nsMounts++
			}
		}
	}
	if podMounts < 3 || nsMounts == 0 {
		t.Errorf("%d mounts (%d nsfs) under %s while a pod runs: rootfs, shm, netns, volumes expected", podMounts, nsMounts, n.Root)
	}
	if _, err := os.Stat("/sys/class/net/" + testenv.DefaultBridge); err != nil {
		t.Errorf("no bridge %s while the pod runs", testenv.DefaultBridge)
	}
	kubepods, _ := filepath.Glob("/sys/fs/cgroup/*" + n.Cgroup + "/kubepods*")
	if v2, _ := filepath.Glob("/sys/fs/cgroup" + n.Cgroup + "/kubepods*"); len(v2) > 0 {
		kubepods = append(kubepods, v2...)
	}
	if len(kubepods) == 0 {
		t.Errorf("no kubepods cgroup under %s while the pod runs", n.Cgroup)
	}
	fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	t.Logf("while running: %d mounts under %s (%d nsfs), %d kubepods cgroups, ip_forward=%s, processes %v",
		podMounts, n.Root, nsMounts, len(kubepods), strings.TrimSpace(string(fwd)), n.PIDs())

	// and a leftover Stop cannot know about: a bind mount of a file of the
	// node's somewhere else. Stop must name it, and only it.
	planted := filepath.Join(t.TempDir(), "planted")
	if err := os.WriteFile(planted, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(n.Root, "resolv.conf"), planted, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(planted, unix.MNT_DETACH)

	stopBegin := time.Now()
	stopped = true
	err = n.Stop()
	t.Logf("stopped and checked in %s", time.Since(stopBegin).Round(time.Millisecond))
	if err == nil {
		t.Fatalf("Stop did not report the planted bind mount %s", planted)
	}
	if lines := strings.Count(err.Error(), "\n- "); lines != 1 || !strings.Contains(err.Error(), "mount "+planted+" ") {
		t.Fatalf("Stop should name the planted mount %s and nothing else:\n%v\nnode logs:\n%s", planted, err, n.Logs())
	}
	t.Logf("Stop named the planted leftover: %v", err)
	if _, err := os.Stat(n.Root); !os.IsNotExist(err) {
		t.Errorf("%s still exists", n.Root)
	}
}

// TestNodeKilled: a node whose owner is killed (SIGKILL, as a go test
// timeout or a Ctrl-C'd demo may) leaves shims, pod processes, mounts, the
// bridge and cgroups behind, since its daemons die with their owner but the
// pods do not; the next start sweeps them (testenv.SweepStaleNodes), and
// the host is as it was.
func TestNodeKilled(t *testing.T) {
	testenv.NodePeers(t)
	ctx := testenv.WaitCtx(t, 4*time.Minute)
	reg := testenv.StartDistribution(t)
	work := t.TempDir()
	im, err := kit.Build(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Push(ctx, reg.Addr); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(work, "demo")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", helper, "github.com/octohelm/crpe/test/e2e/demo").CombinedOutput(); err != nil {
		t.Fatalf("go build demo: %v\n%s", err, out)
	}
	envFile := filepath.Join(work, "node.env")
	owner := exec.Command(helper, "node", "-env", envFile)
	var ownerOut strings.Builder
	owner.Stdout, owner.Stderr = &ownerOut, &ownerOut
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	ownerDone := make(chan struct{})
	go func() { _ = owner.Wait(); close(ownerDone) }()
	t.Cleanup(func() {
		_ = owner.Process.Kill()
		<-ownerDone
		// whatever happened, nothing of the node may stay
		if err := testenv.SweepStaleNodes(t.Logf); err != nil {
			t.Error(err)
		}
	})
	testenv.Eventually(t, 120*time.Second, "the node started by "+helper, func() (bool, string) {
		select {
		case <-ownerDone:
			t.Fatalf("demo node exited:\n%s", ownerOut.String())
		default:
		}
		_, err := os.Stat(envFile)
		return err == nil, ownerOut.String()
	})
	env, _ := os.ReadFile(envFile)
	vars := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	root, kubeconfig, certsD, cgroup := vars["NODE_ROOT"], vars["KUBECONFIG"], vars["CERTS_D"], vars["NODE_CGROUP"]
	for _, host := range []string{"docker.io", "registry.k8s.io"} {
		_ = os.MkdirAll(filepath.Join(certsD, host), 0o755)
		toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.URL, reg.URL)
		if err := os.WriteFile(filepath.Join(certsD, host, "hosts.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kubectl := testenv.Peer(t, "kubectl", testenv.NodeKubeInstall)
	pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hello","labels":{"app":"hello"}},
"spec":{"terminationGracePeriodSeconds":30,"containers":[{"name":"hello","image":%q}]}}`, kit.HelloV1)
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(pod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	testenv.Eventually(t, 60*time.Second, "pod hello running", func() (bool, string) {
		out, _ := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "get", "pod", "hello", "-o", "jsonpath={.status.phase}").CombinedOutput()
		return string(out) == "Running", string(out)
	})

	// the owner dies at once: its daemons die with it (Pdeathsig), the
	// shims and the pod's processes do not
	if err := owner.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ownerDone
	time.Sleep(500 * time.Millisecond)
	var survivors []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cg, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cgroup"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if strings.Contains(string(cg), cgroup+"/") || strings.Contains(string(cmdline), root+"/") {
			survivors = append(survivors, p.Name()+":"+strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
		}
	}
	if len(survivors) == 0 {
		t.Fatalf("nothing of the node survived its owner: the sweep has nothing to prove")
	}
	t.Logf("survived their owner: %d processes (%s …)", len(survivors), survivors[0])
	if _, err := os.Stat("/sys/class/net/" + testenv.DefaultBridge); err != nil {
		t.Errorf("the bridge did not survive its owner")
	}

	if err := testenv.SweepStaleNodes(t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("%s still exists after the sweep", root)
	}
	if _, err := os.Stat("/sys/class/net/" + testenv.DefaultBridge); err == nil {
		t.Errorf("the bridge is still there after the sweep")
	}
}
