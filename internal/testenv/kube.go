//go:build linux

package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Install hints of the Kubernetes peers.
const (
	EtcdInstall          = "apt-get install etcd-server"
	KubeAPIServerInstall = "bash test/peers/kube.sh"
)

// Kube is a real control plane without nodes: Debian's etcd and a
// kube-apiserver built from the Go module proxy (test/peers/kube.sh), both
// on loopback only, with RBAC authorization, the default admission plugins,
// service-account keys generated for the run, and an admin token in group
// system:masters. Nothing runs controllers: Deployments never become
// available, deleted Namespaces stay Terminating, nothing garbage-collects.
type Kube struct {
	// Dir holds the kubeconfig, the token file, the keys, certs/ and the logs.
	Dir string
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// Token is the admin's bearer token (group system:masters).
	Token string
	// Kubeconfig names a kubeconfig file for the admin (CA verified).
	Kubeconfig string
	// EtcdURL is etcd's client URL.
	EtcdURL string
	// CA is the PEM of the certificates the API server serves with.
	CA []byte
	// Started is how long etcd plus the API server took to become ready.
	Started time.Duration

	kubectl  string
	etcdDir  string
	etcd     *peerProc
	api      *peerProc
	stopOnce sync.Once
}

// peerProc is a peer process whose output goes to a log file.
type peerProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startPeerProc(name, bin, logFile string, args ...string) (*peerProc, error) {
	return startPeerProcEnv(name, bin, logFile, nil, args...)
}

// startPeerProcEnv starts a peer with env (nil: this process's), its output
// in logFile.
func startPeerProcEnv(name, bin, logFile string, env []string, args ...string) (*peerProc, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	// the peers die with the test process even when it is killed (a go test
	// timeout skips the cleanups); in a process group of their own, a Ctrl-C
	// reaches the test process alone, which then stops them in order
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &peerProc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *peerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *peerProc) kill() {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// tail returns the last n bytes of the log.
func (p *peerProc) tail(n int) string {
	if p == nil {
		return ""
	}
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// StartKube starts etcd and kube-apiserver for t and stops them when t
// ends. It skips t (fails under CI=true) when a peer is missing. Starting
// costs a few seconds: prefer SharedKube in packages with several tests.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	etcd, api, kubectl := kubePeers(t)
	k, err := LaunchKube(etcd, api, kubectl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

var shared struct {
	mu  sync.Mutex
	k   *Kube
	err error
}

// SharedKube returns the test process's one Kube, started by the first
// caller. The package's TestMain must call StopSharedKube after m.Run (the
// peers also die with the test process, whatever happens). Tests that share
// it should work in namespaces of their own.
func SharedKube(t testing.TB) *Kube {
	t.Helper()
	etcd, api, kubectl := kubePeers(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.k == nil && shared.err == nil {
		shared.k, shared.err = LaunchKube(etcd, api, kubectl)
		if shared.err == nil {
			t.Logf("etcd + kube-apiserver ready in %s at %s", shared.k.Started.Round(time.Millisecond), shared.k.URL)
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.k
}

// StopSharedKube stops the Kube SharedKube started, if any.
func StopSharedKube() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.k != nil {
		shared.k.Stop()
		shared.k = nil
	}
}

func kubePeers(t testing.TB) (etcd, api, kubectl string) {
	t.Helper()
	etcd = Peer(t, "etcd", EtcdInstall)
	api = Peer(t, "kube-apiserver", KubeAPIServerInstall)
	kubectl = Peer(t, "kubectl", KubeAPIServerInstall)
	return
}

// LaunchKube starts etcd and kube-apiserver from the given binaries and
// waits until /readyz answers ok and the default namespace exists; the
// caller must call Stop.
func LaunchKube(etcdBin, apiBin, kubectlBin string) (k *Kube, err error) {
	return launchKube(etcdBin, apiBin, kubectlBin, kubeOptions{})
}

// kubeOptions tune launchKube (for the one-node cluster of node.go).
type kubeOptions struct {
	// dir, when set, holds everything (etcd's data too) instead of temp
	// dirs of their own; it must exist.
	dir string
	// apiArgs are added to the API server's flags (a later flag wins).
	apiArgs []string
}

func launchKube(etcdBin, apiBin, kubectlBin string, o kubeOptions) (k *Kube, err error) {
	begin := time.Now()
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "crpe-kube-"); err != nil {
			return nil, err
		}
	}
	k = &Kube{Dir: dir, kubectl: kubectlBin}
	defer func() {
		if err != nil {
			k.Stop()
			k = nil
		}
	}()

	// etcd: its data on tmpfs when there is one (etcd 3.4 has no
	// --unsafe-no-fsync; fsync on tmpfs is free)
	base := ""
	if fi, e := os.Stat("/dev/shm"); e == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	// a port picked free can be taken by another process before the peer
	// binds it: then the peer is started again on new ports
	var clientURL string
	for attempt := 1; ; attempt++ {
		if o.dir != "" {
			k.etcdDir = filepath.Join(o.dir, "etcd")
			_ = os.RemoveAll(k.etcdDir) // an attempt's that lost its port
			if err = os.Mkdir(k.etcdDir, 0o700); err != nil {
				return k, err
			}
		} else if k.etcdDir, err = os.MkdirTemp(base, "crpe-etcd-"); err != nil {
			if k.etcdDir, err = os.MkdirTemp("", "crpe-etcd-"); err != nil {
				return k, err
			}
		}
		clientURL = "http://" + freeAddr()
		peerURL := "http://" + freeAddr()
		k.EtcdURL = clientURL
		k.etcd, err = startPeerProc("etcd", etcdBin, filepath.Join(dir, "etcd.log"),
			"--name", "crpe-test",
			"--data-dir", filepath.Join(k.etcdDir, "data"),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "crpe-test="+peerURL,
			"--initial-cluster-state", "new",
			"--logger", "zap", "--log-level", "warn")
		if err != nil {
			return k, err
		}
		if err = k.waitEtcd(30 * time.Second); err == nil {
			break
		}
		if !lostPort(k.etcd, attempt) {
			return k, err
		}
		k.etcd.kill()
		if o.dir == "" {
			_ = os.RemoveAll(k.etcdDir)
		}
	}

	// credentials: an admin token, a service-account signing key
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	k.Token = hex.EncodeToString(tok[:])
	tokens := filepath.Join(dir, "tokens.csv")
	if err = os.WriteFile(tokens, []byte(k.Token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return k, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return k, err
	}
	saKey := filepath.Join(dir, "sa.key")
	if err = os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return k, err
	}

	certDir := filepath.Join(dir, "certs")
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		addr := freeAddr()
		_, port, _ := net.SplitHostPort(addr)
		k.URL = "https://" + addr
		apiArgs := []string{
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + port,
			"--etcd-servers=" + clientURL,
			"--cert-dir=" + certDir,
			"--token-auth-file=" + tokens,
			"--authorization-mode=RBAC",
			"--anonymous-auth=false",
			"--service-account-key-file=" + saKey,
			"--service-account-signing-key-file=" + saKey,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			// an allocation range only: no traffic ever goes there
			"--service-cluster-ip-range=10.96.0.0/16",
			// the kubernetes Endpoints would name 127.0.0.1, which the API
			// server itself refuses (loopback) and retries forever
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		}
		k.api, err = startPeerProc("kube-apiserver", apiBin, filepath.Join(dir, "kube-apiserver.log"), append(apiArgs, o.apiArgs...)...)
		if err != nil {
			return k, err
		}
		if err = k.waitAPI(certDir, deadline); err == nil {
			break
		}
		if !lostPort(k.api, attempt) {
			return k, err
		}
		k.api.kill()
	}
	k.Started = time.Since(begin)
	return k, nil
}

// lostPort reports whether peer p exited because the port picked for it
// was taken meanwhile, and may be started again (see addrInUse).
func lostPort(p *peerProc, attempt int) bool {
	if attempt >= portAttempts {
		return false
	}
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		return false // still running: not a lost port
	}
	return strings.Contains(p.tail(8000), addrInUse)
}

// waitAPI waits until the API server has written its serving certificate
// (before it listens), then until it is ready, writing the kubeconfig in
// between.
func (k *Kube) waitAPI(certDir string, deadline time.Time) error {
	crt := filepath.Join(certDir, "apiserver.crt")
	for {
		if b, e := os.ReadFile(crt); e == nil && bytes.Contains(b, []byte("END CERTIFICATE")) {
			k.CA = b
			break
		}
		if k.api.exited() {
			return fmt.Errorf("kube-apiserver exited at start:\n%s", k.api.tail(8000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver wrote no certificate in %s:\n%s", certDir, k.api.tail(8000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := k.writeKubeconfig(); err != nil {
		return err
	}
	if err := k.waitReady(deadline); err != nil {
		if k.api.exited() {
			return fmt.Errorf("%w; kube-apiserver exited:\n%s", err, k.api.tail(8000))
		}
		return err
	}
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (k *Kube) waitEtcd(d time.Duration) error {
	deadline := time.Now().Add(d)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get(k.EtcdURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"true"`)) {
				return nil
			}
		}
		if k.etcd.exited() {
			return fmt.Errorf("etcd exited at start:\n%s", k.etcd.tail(8000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy after %s:\n%s", d, k.etcd.tail(8000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTPClient is a client that trusts the API server's certificate (it
// sends no credentials by itself: set "Authorization: Bearer "+k.Token).
func (k *Kube) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.CA)
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// waitReady waits for /readyz to answer ok (TLS verified) and for the
// default namespace (made by a bootstrap controller) to exist.
func (k *Kube) waitReady(deadline time.Time) error {
	c := k.HTTPClient()
	get := func(path string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, k.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+k.Token)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b), nil
	}
	last := ""
	for {
		code, body, err := get("/readyz")
		if err == nil && code == http.StatusOK && strings.TrimSpace(body) == "ok" {
			if code, _, err = get("/api/v1/namespaces/default"); err == nil && code == http.StatusOK {
				return nil
			}
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, body)
		}
		if k.api.exited() {
			return fmt.Errorf("kube-apiserver exited at start:\n%s", k.api.tail(8000))
		}
		if time.Now().After(deadline) {
			_, verbose, _ := get("/readyz?verbose")
			return fmt.Errorf("kube-apiserver not ready (last: %s)\n%s\nlog:\n%s", last, verbose, k.api.tail(8000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeKubeconfig writes Dir/kubeconfig. Every name is quoted: YAML 1.1
// reads short words such as n or y as booleans.
func (k *Kube) writeKubeconfig() error {
	k.Kubeconfig = filepath.Join(k.Dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: "v1"
kind: "Config"
clusters:
  - name: "crpe-test"
    cluster:
      server: %q
      certificate-authority-data: %q
users:
  - name: "admin"
    user:
      token: %q
contexts:
  - name: "crpe-test"
    context:
      cluster: "crpe-test"
      user: "admin"
      namespace: "default"
current-context: "crpe-test"
`, k.URL, base64.StdEncoding.EncodeToString(k.CA), k.Token)
	return os.WriteFile(k.Kubeconfig, []byte(cfg), 0o600)
}

// Stop kills the API server, then etcd, and removes their files
// (idempotent).
func (k *Kube) Stop() {
	k.stopOnce.Do(func() {
		// SIGKILL: a terminated API server waits on etcd and its own
		// graceful shutdown; nothing here needs to outlive the test
		k.api.kill()
		k.etcd.kill()
		if k.etcdDir != "" {
			_ = os.RemoveAll(k.etcdDir)
		}
		_ = os.RemoveAll(k.Dir)
	})
}

// Logs returns the tails of the API server's and etcd's logs.
func (k *Kube) Logs() string {
	return "kube-apiserver:\n" + k.api.tail(16000) + "\netcd:\n" + k.etcd.tail(4000)
}

// Kubectl runs kubectl against k (--kubeconfig, no $KUBECONFIG) and returns
// its stdout; the error carries stderr.
func (k *Kube) Kubectl(ctx context.Context, args ...string) (string, error) {
	return k.KubectlInput(ctx, "", args...)
}

// KubectlInput is Kubectl with stdin (for -f -).
func (k *Kube) KubectlInput(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.kubectl, append([]string{"--kubeconfig", k.Kubeconfig}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		return so.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(se.String()))
	}
	return so.String(), nil
}
