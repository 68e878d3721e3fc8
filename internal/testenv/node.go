//go:build linux

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Install hints of the one-node cluster's peers.
const (
	NodeKubeInstall    = "KUBE_WITH_NODE=1 bash test/peers/kube.sh"
	NodeRuntimeInstall = "apt-get install containerd runc containernetworking-plugins iproute2"
)

// Defaults of NodeOptions.
const (
	DefaultPodCIDR      = "10.244.0.0/24"
	DefaultServiceCIDR  = "10.96.0.0/24"
	DefaultBridge       = "crpe0"
	DefaultSandboxImage = "registry.k8s.io/pause:3.10"
	// NodeName resolves to 127.0.0.1 everywhere: the API server reaches the
	// kubelet (logs, exec) by this name (--kubelet-preferred-address-types
	// Hostname first), and the kubelet listens on 127.0.0.1 only.
	NodeName = "localhost"
)

// NodeBins are the programs a one-node cluster runs.
type NodeBins struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kubelet, Kubectl string
	Containerd, Ctr, Shim, Runc                                     string
	CNIDir                                                          string // holds bridge, host-local, loopback
	IP                                                              string // iproute2
}

// FindNodeBins looks the programs up (PATH, then GOPATH/bin; the CNI
// plugins in /usr/lib/cni or /opt/cni/bin) and names those missing, with
// how to install them.
func FindNodeBins() (NodeBins, []string) {
	var missing []string
	find := func(name, install string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{goBin(), "/usr/sbin", "/sbin"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
		missing = append(missing, fmt.Sprintf("%s (install: %s)", name, install))
		return ""
	}
	b := NodeBins{
		Etcd:              find("etcd", EtcdInstall),
		APIServer:         find("kube-apiserver", NodeKubeInstall),
		ControllerManager: find("kube-controller-manager", NodeKubeInstall),
		Scheduler:         find("kube-scheduler", NodeKubeInstall),
		Kubelet:           find("kubelet", NodeKubeInstall),
		Kubectl:           find("kubectl", NodeKubeInstall),
		Containerd:        find("containerd", NodeRuntimeInstall),
		Ctr:               find("ctr", NodeRuntimeInstall),
		Shim:              find("containerd-shim-runc-v2", NodeRuntimeInstall),
		Runc:              find("runc", NodeRuntimeInstall),
		IP:                find("ip", NodeRuntimeInstall),
	}
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		ok := true
		for _, p := range []string{"bridge", "host-local", "loopback"} {
			if _, err := os.Stat(filepath.Join(d, p)); err != nil {
				ok = false
			}
		}
		if ok {
			b.CNIDir = d
			break
		}
	}
	if b.CNIDir == "" {
		missing = append(missing, "CNI plugins bridge, host-local, loopback (install: "+NodeRuntimeInstall+")")
	}
	return b, missing
}

func goBin() string {
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		return filepath.Join(string(bytes.TrimSpace(gp)), "bin")
	}
	return ""
}

// NodeOptions tune a one-node cluster.
type NodeOptions struct {
	// SandboxImage is containerd's sandbox_image, pulled like any image
	// (through certs.d) when the first pod starts. Default
	// registry.k8s.io/pause:3.10.
	SandboxImage string
	// PodCIDR is the CNI bridge's subnet (its first address is the bridge's
	// and the node's), ServiceCIDR the API server's service range (no
	// kube-proxy runs: nothing routes it). Defaults 10.244.0.0/24 and
	// 10.96.0.0/24.
	PodCIDR, ServiceCIDR string
	// Bridge names the CNI bridge (default crpe0); it must not exist.
	Bridge string
	// Logf reports progress (default: silent).
	Logf func(format string, args ...any)
}

// Node is a one-node Kubernetes cluster for tests: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a kubelet, with containerd
// (CRI plugin), runc and the CNI bridge plugin, all on loopback (the pods
// on a bridge of their own) and with every file under Root. Stop leaves the
// host as it was, and says what it could not undo.
//
// Host settings the cluster needs and Stop undoes: the bridge (made before
// the kubelet starts, so that its address is the node IP), a cgroup of its
// own in every hierarchy (the kubelet's cgroupRoot: kubepods lives under it),
// net.ipv4.ip_forward (the bridge plugin sets it) and the kernel tunables the
// kubelet sets (vm.overcommit_memory, kernel.panic, ...). The kubelet and
// containerd see iptables as absent (stubs first on their PATH), so no chain
// is made; registry traffic to anything but loopback goes to a dead loopback
// proxy, so a failed mirror pull never leaves the machine.
type Node struct {
	*Kube
	// Root holds everything: kube/ (etcd, certificates, kubeconfig),
	// containerd/, kubelet/, cni/, certs.d/, logs/.
	Root string
	// Name is the node's name (resolves to 127.0.0.1).
	Name string
	// IP is the node's InternalIP: the bridge's address, first of PodCIDR.
	IP string
	// CertsD is containerd's registry config_path: write
	// CertsD/<host>/hosts.toml (crpe mirror-config -o CertsD).
	CertsD string
	// ContainerdSocket is containerd's gRPC socket (ctr --address, namespace
	// k8s.io).
	ContainerdSocket string
	// Cgroup is the kubelet's cgroupRoot (/crpe-node-…, in every hierarchy):
	// kubepods and the pods' cgroups live under it.
	Cgroup string
	// Started is how long the cluster took to have a Ready node.
	Started time.Duration

	bins     NodeBins
	opts     NodeOptions
	state    nodeState
	kcm      *peerProc
	sched    *peerProc
	ctrd     *peerProc
	kubelet  *peerProc
	stopOnce sync.Once
	stopErr  error
	lastLogs string // the logs' tails, kept when Stop removes Root
}

// nodeState is what a sweep needs to undo a node (kept in Root/state.json,
// so that the next launch can undo a node whose test process was killed).
type nodeState struct {
	Root      string       `json:"root"`
	Owner     int          `json:"owner"`
	OwnerTick uint64       `json:"ownerStart"`
	Cgroup    string       `json:"cgroup"` // the kubelet's cgroupRoot, without the leading /
	Bridge    string       `json:"bridge"`
	MadeBr    bool         `json:"madeBridge"`
	Before    hostSnapshot `json:"before"`
}

func (o *NodeOptions) defaults() {
	if o.SandboxImage == "" {
		o.SandboxImage = DefaultSandboxImage
	}
	if o.PodCIDR == "" {
		o.PodCIDR = DefaultPodCIDR
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// NodePeers returns the node's programs, or skips t naming what is missing
// (fails under CI=true); it also needs root.
func NodePeers(t testing.TB) NodeBins {
	t.Helper()
	b, missing := FindNodeBins()
	if os.Geteuid() != 0 {
		missing = append(missing, "root (mounts, cgroups, network namespaces and the bridge need it)")
	}
	if len(missing) > 0 {
		msg := "one-node cluster: missing " + strings.Join(missing, "; ")
		if CI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b
}

// StartNode starts a one-node cluster for t; at t's end it is stopped, and
// t fails if the host is not as it was.
func StartNode(t testing.TB, o NodeOptions) *Node {
	t.Helper()
	b := NodePeers(t)
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	n, err := LaunchNode(b, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node logs:\n%s", n.Logs())
		}
		if err := n.Stop(); err != nil {
			t.Errorf("stopping the node: %v", err)
		}
	})
	return n
}

// LaunchNode starts a one-node cluster and waits until the node is Ready
// and the default ServiceAccount exists; the caller must call Stop (which
// is also done when the start fails).
func LaunchNode(b NodeBins, o NodeOptions) (n *Node, err error) {
	begin := time.Now()
	o.defaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("a one-node cluster needs root")
	}
	if err := SweepStaleNodes(o.Logf); err != nil {
		return nil, err
	}
	gw, err := firstHost(o.PodCIDR)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/class/net/" + o.Bridge); err == nil {
		return nil, fmt.Errorf("network interface %s exists: another node runs, or pick NodeOptions.Bridge", o.Bridge)
	}
	root, err := os.MkdirTemp("", "crpe-node-")
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(root, 0o755)
	n = &Node{Root: root, Name: NodeName, IP: gw, bins: b, opts: o,
		CertsD: filepath.Join(root, "certs.d"), ContainerdSocket: filepath.Join(root, "containerd", "containerd.sock")}
	n.state = nodeState{Root: root, Owner: os.Getpid(), OwnerTick: procStart(os.Getpid()),
		Cgroup: filepath.Base(root), Bridge: o.Bridge, Before: takeSnapshot(o.Bridge, filepath.Base(root))}
	n.Cgroup = "/" + n.state.Cgroup
	defer func() {
		if err != nil {
			logs := n.Logs()
			if serr := n.Stop(); serr != nil {
				err = fmt.Errorf("%w\n(and stopping: %v)", err, serr)
			}
			err = fmt.Errorf("%w\nlogs:\n%s", err, logs)
			n = nil
		}
	}()
	for _, d := range []string{"kube", "containerd", "runc", "certs.d", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "logs", "nobin", "certs"} {
		if err = os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return n, err
		}
	}
	if err = n.saveState(); err != nil {
		return n, err
	}

	// the host side: bridge (its address is the node IP), cgroup root
	o.Logf("node: bridge %s %s/%s, cgroup /%s, files in %s", o.Bridge, gw, maskBits(o.PodCIDR), n.state.Cgroup, root)
	for _, args := range [][]string{
		{"link", "add", o.Bridge, "type", "bridge"},
		{"addr", "add", gw + "/" + maskBits(o.PodCIDR), "dev", o.Bridge},
		{"link", "set", o.Bridge, "up"},
	} {
		if out, e := exec.Command(b.IP, args...).CombinedOutput(); e != nil {
			return n, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), e, out)
		}
		n.state.MadeBr = true
		_ = n.saveState()
	}
	if err = makeCgroup(n.state.Cgroup); err != nil {
		return n, err
	}
	if err = n.writeConfigs(); err != nil {
		return n, err
	}
	env := n.guardedEnv()

	// control plane
	o.Logf("node: starting etcd and kube-apiserver")
	k, err := launchKube(b.Etcd, b.APIServer, b.Kubectl, kubeOptions{dir: filepath.Join(root, "kube"), apiArgs: []string{
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--kubelet-preferred-address-types=Hostname,InternalIP",
	}})
	if err != nil {
		return n, err
	}
	n.Kube = k
	caFile := filepath.Join(k.Dir, "certs", "apiserver.crt")
	o.Logf("node: kube-apiserver ready at %s (%s); starting containerd, kube-controller-manager, kube-scheduler", k.URL, k.Started.Round(time.Millisecond))
	n.ctrd, err = startPeerProcEnv("containerd", b.Containerd, filepath.Join(root, "logs", "containerd.log"), env,
		"--config", filepath.Join(root, "containerd", "config.toml"))
	if err != nil {
		return n, err
	}
	n.kcm, err = startPeerProcEnv("kube-controller-manager", b.ControllerManager, filepath.Join(root, "logs", "kube-controller-manager.log"), env,
		"--kubeconfig="+k.Kubeconfig,
		"--authentication-kubeconfig="+k.Kubeconfig,
		"--authorization-kubeconfig="+k.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+port(freeAddr()),
		"--cert-dir="+filepath.Join(root, "certs"),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+filepath.Join(k.Dir, "sa.key"),
		"--root-ca-file="+caFile,
		"--service-cluster-ip-range="+o.ServiceCIDR,
		"--profiling=false",
	)
	if err != nil {
		return n, err
	}
	n.sched, err = startPeerProcEnv("kube-scheduler", b.Scheduler, filepath.Join(root, "logs", "kube-scheduler.log"), env,
		"--kubeconfig="+k.Kubeconfig,
		"--authentication-kubeconfig="+k.Kubeconfig,
		"--authorization-kubeconfig="+k.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+port(freeAddr()),
		"--leader-elect=false",
		"--profiling=false",
	)
	if err != nil {
		return n, err
	}
	if err = n.waitContainerd(30 * time.Second); err != nil {
		return n, err
	}
	o.Logf("node: containerd answers; starting the kubelet")
	n.kubelet, err = startPeerProcEnv("kubelet", b.Kubelet, filepath.Join(root, "logs", "kubelet.log"), env,
		"--config="+filepath.Join(root, "kubelet-config.yaml"),
		"--kubeconfig="+k.Kubeconfig,
		"--root-dir="+filepath.Join(root, "kubelet"),
		"--cert-dir="+filepath.Join(root, "kubelet", "pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+gw,
		"--v=1",
	)
	if err != nil {
		return n, err
	}
	if err = n.waitReady(90 * time.Second); err != nil {
		return n, err
	}
	n.Started = time.Since(begin)
	o.Logf("node: %s Ready in %s", n.Name, n.Started.Round(time.Millisecond))
	return n, nil
}

func port(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}

// firstHost returns the first host address of an IPv4 CIDR (a.b.c.1).
func firstHost(cidr string) (string, error) {
	ip, _, ok := strings.Cut(cidr, "/")
	parts := strings.Split(ip, ".")
	if !ok || len(parts) != 4 {
		return "", fmt.Errorf("pod CIDR %q: want an IPv4 a.b.c.0/n", cidr)
	}
	last, err := strconv.Atoi(parts[3])
	if err != nil {
		return "", fmt.Errorf("pod CIDR %q: %v", cidr, err)
	}
	parts[3] = strconv.Itoa(last + 1)
	return strings.Join(parts, "."), nil
}

func maskBits(cidr string) string {
	_, m, _ := strings.Cut(cidr, "/")
	return m
}

// guardedEnv is the environment of containerd and the kubelet: iptables
// stubs first on PATH (so the kubelet makes no chain), and a proxy on a dead
// loopback port for everything but loopback and the pods (so that a pull
// that falls back from the mirror to a registry's own server never leaves
// the machine).
func (n *Node) guardedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "KUBECONFIG":
			continue
		}
		env = append(env, kv)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	dead := "http://127.0.0.1:9"
	return append(env,
		"PATH="+filepath.Join(n.Root, "nobin")+":"+path,
		"HTTP_PROXY="+dead, "HTTPS_PROXY="+dead, "http_proxy="+dead, "https_proxy="+dead,
		"NO_PROXY=127.0.0.1,localhost,"+n.opts.PodCIDR, "no_proxy=127.0.0.1,localhost,"+n.opts.PodCIDR)
}

func (n *Node) writeConfigs() error {
	r := n.Root
	files := map[string]string{}
	// iptables as absent: the kubelet then makes no KUBE-* chain
	for _, s := range []string{"iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore"} {
		files[filepath.Join("nobin", s)] = "#!/bin/sh\necho 'iptables is not available on this test node' >&2\nexit 127\n"
	}
	files["resolv.conf"] = "# pods of the test node resolve nothing\nnameserver 127.0.0.1\n"
	files["cni/net.d/10-crpe.conflist"] = fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "crpe-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "dataDir": %q
      }
    }
  ]
}
`, n.opts.Bridge, n.opts.PodCIDR, n.IP, filepath.Join(r, "cni", "ipam"))
	c := filepath.Join(r, "containerd")
	files["containerd/config.toml"] = containerdConfig(c, n.ContainerdSocket, true) + fmt.Sprintf(`  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = %q
          Root = %q
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = %q
`, n.opts.SandboxImage, n.bins.Runc, filepath.Join(r, "runc"),
		n.bins.CNIDir, filepath.Join(r, "cni", "net.d"), n.CertsD)
	files["kubelet-config.yaml"] = fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "127.0.0.1"
port: %s
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: %s
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupRoot: "/%s"
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: "unix://%s"
podLogsDir: %q
resolvConf: %q
registerNode: true
maxPods: 32
serializeImagePulls: false
syncFrequency: 10s
nodeStatusReportFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
evictionPressureTransitionPeriod: 5s
containerLogMaxSize: 1Mi
containerLogMaxFiles: 2
shutdownGracePeriod: 0s
logging:
  format: text
`, port(freeAddr()), port(freeAddr()), n.state.Cgroup, n.ContainerdSocket,
		filepath.Join(r, "pod-logs"), filepath.Join(r, "resolv.conf"))
	for name, body := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "nobin/") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(r, name), []byte(body), mode); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) saveState() error {
	b, _ := json.MarshalIndent(n.state, "", "  ")
	return os.WriteFile(filepath.Join(n.Root, "state.json"), b, 0o644)
}

func (n *Node) waitContainerd(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		out, err := exec.CommandContext(ctx, n.bins.Ctr, "--address", n.ContainerdSocket, "version").CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		if n.ctrd.exited() {
			return fmt.Errorf("containerd exited at start:\n%s", n.ctrd.tail(8000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer in %s: %v %s", d, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// API does an authenticated request to the API server and decodes a JSON
// answer into v (when not nil); it returns the status code.
func (k *Kube) API(ctx context.Context, method, path string, body io.Reader, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, k.URL+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if v != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %v", method, path, err)
		}
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return resp.StatusCode, nil
}

// waitReady waits for the node's Ready condition and the default
// ServiceAccount (pods are refused until the controller-manager made it).
func (n *Node) waitReady(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	last := ""
	for {
		var node struct {
			Status struct {
				Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
			} `json:"status"`
		}
		code, err := n.API(ctx, http.MethodGet, "/api/v1/nodes/"+n.Name, nil, &node)
		ready := false
		switch {
		case err != nil:
			last = err.Error()
		case code == http.StatusNotFound:
			last = "node not registered"
		default:
			last = fmt.Sprintf("%+v", node.Status.Conditions)
			for _, c := range node.Status.Conditions {
				if c.Type == "Ready" && c.Status == "True" {
					ready = true
				}
			}
		}
		if ready {
			code, err = n.API(ctx, http.MethodGet, "/api/v1/namespaces/default/serviceaccounts/default", nil, nil)
			if err == nil && code == http.StatusOK {
				return nil
			}
			last = "node Ready; no default ServiceAccount yet"
		}
		for _, p := range []*peerProc{n.kubelet, n.ctrd, n.kcm, n.sched} {
			if p.exited() {
				return fmt.Errorf("%s exited at start:\n%s", p.name, p.tail(8000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not ready after %s (last: %s)", n.Name, d, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Ctr runs ctr against the node's containerd in the CRI's namespace (k8s.io).
func (n *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, n.bins.Ctr, append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Logs returns the tails of every part's log.
func (n *Node) Logs() string {
	if n.lastLogs != "" {
		return n.lastLogs
	}
	var b strings.Builder
	for _, p := range []*peerProc{n.kubelet, n.ctrd, n.kcm, n.sched} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s:\n%s\n", p.name, p.tail(6000))
		}
	}
	if n.Kube != nil {
		b.WriteString("--- " + n.Kube.Logs())
	}
	return b.String()
}

// PIDs returns the process ids of the node's parts that still run.
func (n *Node) PIDs() map[string]int {
	m := map[string]int{}
	for _, p := range []*peerProc{n.kubelet, n.ctrd, n.kcm, n.sched} {
		if p != nil && !p.exited() {
			m[p.name] = p.cmd.Process.Pid
		}
	}
	if n.Kube != nil {
		for _, p := range []*peerProc{n.Kube.api, n.Kube.etcd} {
			if p != nil && !p.exited() {
				m[p.name] = p.cmd.Process.Pid
			}
		}
	}
	return m
}

// Stop tears the node down and checks that the host is as it was before:
// the error names whatever is left (processes, mounts, network namespaces,
// interfaces, cgroups, iptables rules, sysctls, files). Idempotent.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { n.stopErr = n.stop() })
	return n.stopErr
}

func (n *Node) stop() error {
	logf := n.opts.Logf
	begin := time.Now()
	// 1. nothing re-creates pods; the kubelet takes them down (CNI DEL,
	// unmounts, sandbox stop) while containerd and the API server still run
	n.kcm.kill()
	n.sched.kill()
	graceful := ""
	if n.Kube != nil && n.kubelet != nil && !n.kubelet.exited() && !n.Kube.api.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		graceful = n.drain(ctx)
		cancel()
	}
	// 2. the node's daemons
	n.kubelet.kill()
	if n.ctrd != nil && !n.ctrd.exited() {
		_ = n.ctrd.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.ctrd.done:
		case <-time.After(5 * time.Second):
		}
		n.ctrd.kill()
	}
	// 3. the control plane
	n.lastLogs = n.Logs()
	if n.Kube != nil {
		n.Kube.Stop()
	}
	// 4. whatever is left
	swept := sweepNode(n.state, n.bins.IP)
	if err := os.RemoveAll(n.Root); err != nil {
		swept = append(swept, "remove "+n.Root+": "+err.Error())
	}
	left := n.state.leftovers(n.PIDs())
	msg := fmt.Sprintf("node: stopped in %s", time.Since(begin).Round(time.Millisecond))
	if graceful != "" {
		msg += "; drain: " + graceful
	}
	if len(swept) > 0 {
		msg += "; swept: " + strings.Join(swept, ", ")
	}
	logf("%s", msg)
	if len(left) > 0 {
		return fmt.Errorf("the host is not as it was:\n- %s", strings.Join(left, "\n- "))
	}
	return nil
}

// drain deletes every pod (no grace) and waits until containerd runs no
// task and no pod mount is left; it says how it went.
func (n *Node) drain(ctx context.Context) string {
	begin := time.Now()
	var nsl struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	if _, err := n.API(ctx, http.MethodGet, "/api/v1/namespaces", nil, &nsl); err != nil {
		return "listing namespaces: " + err.Error()
	}
	for _, ns := range nsl.Items {
		body := strings.NewReader(`{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0}`)
		_, _ = n.API(ctx, http.MethodDelete, "/api/v1/namespaces/"+ns.Metadata.Name+"/pods", body, nil)
	}
	for {
		tasks, err := n.Ctr(ctx, "tasks", "ls", "-q")
		mounts := mountsUnder(n.Root)
		busy := 0
		for _, m := range mounts {
			// the kubelet's rshared bind of its own root stays until it exits
			if m != filepath.Join(n.Root, "kubelet") {
				busy++
			}
		}
		if err == nil && strings.TrimSpace(tasks) == "" && busy == 0 {
			return fmt.Sprintf("pods gone in %s", time.Since(begin).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("gave up after %s (tasks %q, %d mounts)", time.Since(begin).Round(time.Millisecond), strings.TrimSpace(tasks), busy)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// SweepStaleNodes undoes nodes whose owning process is gone (a test killed
// by its timeout skips its cleanups): their processes, mounts, bridge,
// cgroups, sysctls and files. The error names what it could not undo.
func SweepStaleNodes(logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var left []string
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "crpe-node-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "state.json"))
		if err != nil {
			continue
		}
		var st nodeState
		if json.Unmarshal(b, &st) != nil || st.Root != d {
			continue
		}
		if st.Owner > 0 && procStart(st.Owner) == st.OwnerTick && st.OwnerTick != 0 {
			continue // its owner still runs
		}
		ipBin, _ := exec.LookPath("ip")
		swept := sweepNode(st, ipBin)
		if err := os.RemoveAll(d); err != nil {
			swept = append(swept, "remove "+d+": "+err.Error())
		}
		logf("node: swept the stale node %s (its owner, pid %d, is gone): %s", d, st.Owner, strings.Join(swept, ", "))
		for _, l := range st.leftovers(nil) {
			left = append(left, d+": "+l)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("stale nodes not fully undone:\n- %s", strings.Join(left, "\n- "))
	}
	return nil
}

// procStart is the start time (clock ticks since boot) of a process, 0 when
// it does not run.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// the command may hold spaces and parentheses: fields follow the last ')'
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// sweepNode kills, unmounts and removes whatever a node left and restores
// the sysctls; it returns what it had to do.
func sweepNode(st nodeState, ipBin string) []string {
	var did []string
	// processes: by their command line (shims name the socket under Root,
	// runc its --root) or their cgroup; killed by pid, then waited for
	for round := 0; round < 50; round++ {
		pids := nodeProcs(st)
		if len(pids) == 0 {
			break
		}
		if round == 0 {
			var names []string
			for _, p := range pids {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
				names = append(names, fmt.Sprintf("%s[%d]", bytes.TrimSpace(comm), p))
			}
			did = append(did, "killed "+strings.Join(names, " "))
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// mounts under Root (pod volumes, rootfs, shm, netns, the kubelet's
	// rshared bind), deepest first
	for round := 0; round < 5; round++ {
		ms := mountsUnder(st.Root)
		if len(ms) == 0 {
			break
		}
		if round == 0 {
			did = append(did, "unmounted "+strings.Join(ms, " "))
		}
		for i := len(ms) - 1; i >= 0; i-- {
			_ = unix.Unmount(ms[i], unix.MNT_DETACH)
		}
	}
	// network namespaces containerd may have put in /var/run/netns
	for _, ns := range newEntries("/var/run/netns", st.Before.Netns) {
		p := filepath.Join("/var/run/netns", ns)
		_ = unix.Unmount(p, unix.MNT_DETACH)
		if os.Remove(p) == nil {
			did = append(did, "removed netns "+ns)
		}
	}
	if !st.Before.NetnsDir {
		_ = os.Remove("/var/run/netns")
	}
	// the bridge (the pods' veths went with their namespaces)
	if st.MadeBr {
		if _, err := os.Stat("/sys/class/net/" + st.Bridge); err == nil && ipBin != "" {
			if out, err := exec.Command(ipBin, "link", "del", st.Bridge).CombinedOutput(); err != nil {
				did = append(did, fmt.Sprintf("ip link del %s: %v %s", st.Bridge, err, bytes.TrimSpace(out)))
			}
		}
	}
	// sysctls back as they were
	for k, v := range st.Before.Sysctls {
		p := filepath.Join("/proc/sys", k)
		if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				did = append(did, fmt.Sprintf("restore %s=%s: %v", k, v, err))
			}
		}
	}
	// cgroups: every hierarchy's copy of the kubelet's cgroupRoot
	if st.Cgroup != "" {
		if err := removeCgroup(st.Cgroup); err != nil {
			did = append(did, err.Error())
		}
	}
	// files the kubelet and the shims put outside Root
	did = append(did, restorePaths(st)...)
	return did
}

// nodeProcs are the processes that belong to a node.
func nodeProcs(st nodeState) []int {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		if procIsNode(pid, st) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func procIsNode(pid int, st nodeState) bool {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if bytes.Contains(cmd, []byte(st.Root+"/")) || bytes.Contains(cmd, []byte(st.Root+"\x00")) {
		return true
	}
	if st.Cgroup != "" {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		for _, line := range strings.Split(string(cg), "\n") {
			// hier:controllers:/path
			if i := strings.LastIndexByte(line, ':'); i >= 0 {
				p := line[i+1:]
				if p == "/"+st.Cgroup || strings.HasPrefix(p, "/"+st.Cgroup+"/") {
					return true
				}
			}
		}
	}
	return false
}

// mountsUnder lists the mount points at or under dir, in mount order.
func mountsUnder(dir string) []string {
	var out []string
	for _, m := range readMounts() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

// mountEntry is a line of mountinfo: where, what file system, from which
// device, and which path of that file system (a bind mount's source).
type mountEntry struct{ point, fstype, source, root string }

func readMounts() []mountEntry {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		m := mountEntry{point: unescapeMount(f[4]), root: unescapeMount(f[3])}
		for i := 6; i < len(f)-2; i++ {
			if f[i] == "-" {
				m.fstype, m.source = f[i+1], unescapeMount(f[i+2])
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupMounts are the mount points of the cgroup hierarchies (v1 and v2).
func cgroupMounts() []string {
	var out []string
	for _, m := range readMounts() {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	sort.Strings(out)
	return out
}

// makeCgroup makes /name in every hierarchy (the kubelet insists that its
// cgroupRoot exists); cpuset needs its cpus and mems set before use.
func makeCgroup(name string) error {
	for _, mp := range cgroupMounts() {
		d := filepath.Join(mp, name)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(mp, f)); err == nil {
				if _, err := os.Stat(filepath.Join(d, f)); err == nil {
					_ = os.WriteFile(filepath.Join(d, f), bytes.TrimSpace(v), 0o644)
				}
			}
		}
		// cgroup v2: hand the root's controllers down
		if v, err := os.ReadFile(filepath.Join(mp, "cgroup.subtree_control")); err == nil && len(bytes.TrimSpace(v)) > 0 {
			for _, c := range strings.Fields(string(v)) {
				_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+"+c), 0o644)
			}
		}
	}
	return nil
}

// removeCgroup kills what runs in /name of every hierarchy and removes its
// directories, deepest first.
func removeCgroup(name string) error {
	var dirs []string
	for _, mp := range cgroupMounts() {
		root := filepath.Join(mp, name)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	deadline := time.Now().Add(15 * time.Second)
	for _, d := range dirs {
		for {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			err := syscall.Rmdir(d)
			if err == nil || os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("rmdir %s: %v", d, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// hostSnapshot is what of the host the node may touch, taken before it
// starts and compared after it stops.
type hostSnapshot struct {
	Sysctls    map[string]string   `json:"sysctls"`
	Netns      []string            `json:"netns"`
	NetnsDir   bool                `json:"netnsDir"`
	Links      []string            `json:"links"`
	Paths      map[string][]string `json:"paths"` // nil: did not exist
	Iptables   map[string][]string `json:"iptables"`
	CgroupTops []string            `json:"cgroupTops"` // kubepods* at the hierarchies' roots
	Mounts     []string            `json:"mounts"`
	Time       time.Time           `json:"time"`
}

// nodeSysctls are the sysctls the node's parts may set: forwarding (the
// bridge plugin) and the kubelet's kernel tunables.
var nodeSysctls = []string{
	"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/forwarding",
	"net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"net/ipv4/conf/all/route_localnet",
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// hostPaths are the places outside Root the kubelet, containerd's shims and
// the CNI plugins write to.
var hostPaths = []string{
	"/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/var/lib/cni", "/var/lib/cni/results",
	"/var/lib/cni/networks", "/run/containerd", "/run/containerd/s", "/run/containerd/runc", "/var/run/netns",
	"/etc/cni", "/etc/cni/net.d", "/var/run/kubernetes", "/etc/kubernetes", "/var/lib/containerd", "/run/runc",
}

func takeSnapshot(bridge, cgroup string) hostSnapshot {
	s := hostSnapshot{Sysctls: map[string]string{}, Paths: map[string][]string{}, Iptables: map[string][]string{}, Time: time.Now()}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		s.Links = append(s.Links, l.Name())
		for _, fam := range []string{"ipv4", "ipv6"} {
			k := "net/" + fam + "/conf/" + l.Name() + "/forwarding"
			if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
				s.Sysctls[k] = strings.TrimSpace(string(v))
			}
		}
	}
	for _, k := range nodeSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(v))
		}
	}
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		s.NetnsDir = true
		for _, e := range ents {
			s.Netns = append(s.Netns, e.Name())
		}
	}
	for _, p := range hostPaths {
		if ents, err := os.ReadDir(p); err == nil {
			names := []string{}
			for _, e := range ents {
				names = append(names, e.Name())
			}
			s.Paths[p] = names
		}
	}
	s.Iptables = iptablesRules()
	for _, mp := range cgroupMounts() {
		ents, _ := os.ReadDir(mp)
		for _, e := range ents {
			if e.IsDir() && (strings.HasPrefix(e.Name(), "kubepods") || e.Name() == cgroup) {
				s.CgroupTops = append(s.CgroupTops, filepath.Join(mp, e.Name()))
			}
		}
	}
	for _, m := range readMounts() {
		s.Mounts = append(s.Mounts, m.point)
	}
	return s
}

// iptablesRules is iptables-save and ip6tables-save without comments and
// counters (nil when iptables is not installed).
func iptablesRules() map[string][]string {
	out := map[string][]string{}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		p, err := exec.LookPath(cmd)
		if err != nil {
			continue
		}
		b, err := exec.Command(p).Output()
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if i := strings.LastIndex(l, " ["); i > 0 && strings.HasPrefix(l, ":") {
				l = l[:i]
			}
			lines = append(lines, l)
		}
		out[cmd] = lines
	}
	return out
}

func newEntries(dir string, before []string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	had := map[string]bool{}
	for _, b := range before {
		had[b] = true
	}
	var out []string
	for _, e := range ents {
		if !had[e.Name()] {
			out = append(out, e.Name())
		}
	}
	return out
}

// restorePaths removes what the node put in hostPaths: the kubelet's
// /var/log/containers symlinks into Root, the CNI cache of its sandboxes,
// its shims' sockets. In a folder that did not exist before, what was made
// while the node ran is removed, then the folder if empty; in one that
// existed, only what is surely the node's.
func restorePaths(st nodeState) []string {
	var did []string
	since := st.Before.Time.Add(-time.Second)
	paths := append([]string(nil), hostPaths...)
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		before, existed := st.Before.Paths[p]
		if !existed {
			if removeNewer(p, since) {
				did = append(did, "removed "+p)
			}
			continue
		}
		for _, name := range newEntries(p, before) {
			full := filepath.Join(p, name)
			fi, err := os.Lstat(full)
			if err != nil {
				continue
			}
			ours := false
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				target, _ := os.Readlink(full)
				ours = strings.HasPrefix(target, st.Root+"/")
			case p == "/var/lib/cni/results":
				ours = fi.ModTime().After(since) && (strings.HasPrefix(name, "crpe-node-") || strings.HasPrefix(name, "cni-loopback-"))
			case p == "/run/containerd/s":
				ours = fi.ModTime().After(since)
			}
			if ours && os.RemoveAll(full) == nil {
				did = append(did, "removed "+full)
			}
		}
	}
	return did
}

// removeNewer removes, deepest first, what under dir was modified after
// since, then every folder left empty (dir too); it reports whether dir is
// gone.
func removeNewer(dir string, since time.Time) bool {
	var all []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			all = append(all, p)
		}
		return nil
	})
	for i := len(all) - 1; i >= 0; i-- {
		fi, err := os.Lstat(all[i])
		if err != nil {
			continue
		}
		if fi.IsDir() {
			_ = os.Remove(all[i]) // only when empty
		} else if fi.ModTime().After(since) {
			_ = os.Remove(all[i])
		}
	}
	_, err := os.Lstat(dir)
	return os.IsNotExist(err)
}

// leftovers compares the host with the snapshot taken before the node
// started; running lists the node's own processes still alive.
func (st nodeState) leftovers(running map[string]int) []string {
	var left []string
	for name, pid := range running {
		left = append(left, fmt.Sprintf("process %s (pid %d) runs", name, pid))
	}
	for _, pid := range nodeProcs(st) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("process %d runs: %s", pid, bytes.ReplaceAll(bytes.TrimRight(cmd, "\x00"), []byte{0}, []byte{' '})))
	}
	had := map[string]bool{}
	for _, m := range st.Before.Mounts {
		had[m] = true
	}
	for _, m := range readMounts() {
		if had[m.point] {
			continue
		}
		// the node's own (anything of Root, wherever mounted) and the fixed
		// places its parts may mount at; other tests' mounts are not looked at
		if strings.HasPrefix(m.point, st.Root) || strings.HasPrefix(m.source, st.Root) || strings.HasPrefix(m.root, st.Root) ||
			strings.HasPrefix(m.point, "/var/run/netns/") || strings.HasPrefix(m.point, "/run/netns/") ||
			strings.HasPrefix(m.point, "/var/lib/kubelet") || strings.HasPrefix(m.point, "/run/containerd/") {
			left = append(left, fmt.Sprintf("mount %s (%s %s %s)", m.point, m.fstype, m.source, m.root))
		}
	}
	for _, ns := range newEntries("/var/run/netns", st.Before.Netns) {
		left = append(left, "network namespace "+ns)
	}
	if _, err := os.Stat("/var/run/netns"); err == nil && !st.Before.NetnsDir {
		left = append(left, "folder /var/run/netns")
	}
	for _, l := range newEntries("/sys/class/net", st.Before.Links) {
		if l == st.Bridge || strings.HasPrefix(l, "veth") {
			left = append(left, "network interface "+l)
		}
	}
	hadTop := map[string]bool{}
	for _, c := range st.Before.CgroupTops {
		hadTop[c] = true
	}
	for _, mp := range cgroupMounts() {
		ents, _ := os.ReadDir(mp)
		for _, e := range ents {
			full := filepath.Join(mp, e.Name())
			if e.IsDir() && (strings.HasPrefix(e.Name(), "kubepods") || e.Name() == st.Cgroup) && !hadTop[full] {
				left = append(left, "cgroup "+full)
			}
		}
	}
	now := iptablesRules()
	for cmd, before := range st.Before.Iptables {
		if a, b := strings.Join(before, "\n"), strings.Join(now[cmd], "\n"); a != b {
			left = append(left, fmt.Sprintf("%s differs:\nbefore:\n%s\nafter:\n%s", cmd, a, b))
		}
	}
	keys := make([]string, 0, len(st.Before.Sysctls))
	for k := range st.Before.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue // its interface is gone
		}
		if got := strings.TrimSpace(string(v)); got != st.Before.Sysctls[k] {
			left = append(left, fmt.Sprintf("sysctl %s = %s (was %s)", k, got, st.Before.Sysctls[k]))
		}
	}
	for _, p := range hostPaths {
		before, existed := st.Before.Paths[p]
		ents, err := os.ReadDir(p)
		switch {
		case err != nil && existed:
			left = append(left, "folder "+p+" is gone")
		case err == nil && !existed:
			left = append(left, "folder "+p+" appeared")
		case err == nil:
			if extra := newEntries(p, before); len(extra) > 0 {
				left = append(left, fmt.Sprintf("%s holds new entries %v", p, extra))
			}
			_ = ents
		}
	}
	if _, err := os.Lstat(st.Root); err == nil {
		left = append(left, "folder "+st.Root)
	}
	sort.Strings(left)
	return left
}
