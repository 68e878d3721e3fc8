// Package testenv owns what tests need of the real world: the crpe binary
// ($CRPE_BIN, or built once per test process and removed by Main), free loopback ports, running `crpe agent`
// until the test ends, and finding real peers (docker-registry, crane,
// skopeo, containerd, cosign, the OCI conformance suite). A missing peer skips the
// test with a message naming it, except under CI=true, where it fails.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// CI reports whether the tests run under CI (CI=true), where a missing peer
// is a failure.
func CI() bool { return os.Getenv("CI") == "true" }

// Peer finds a peer program on PATH (or in GOPATH/bin) and returns its path.
func Peer(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(string(bytes.TrimSpace(gp)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("peer %q not found (install: %s)", name, install)
	if CI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// EnvCrpeBin names a crpe binary the tests run instead of building one:
// test/run.sh builds crpe once and hands it to every test process.
const EnvCrpeBin = "CRPE_BIN"

// The crpe binary built for this test process, when EnvCrpeBin is not set.
var (
	inMain bool // Main is running the tests
	build  struct {
		once      sync.Once
		dir, path string
		err       error
	}
)

// binDirPrefix names the temp folders of built binaries; the pid of the
// test process that owns one follows it.
const binDirPrefix = "crpe-bin-"

// Main runs a test package's tests and returns their exit code, then removes
// the crpe binary Crpe built for them, if it built one. Every test package
// that runs crpe calls it from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	inMain = true
	defer func() {
		if build.dir != "" {
			_ = os.RemoveAll(build.dir)
		}
	}()
	return m.Run()
}

// Crpe returns the path of the crpe binary the tests run: $CRPE_BIN when set
// (an absolute path), else a binary built from this checkout once per test
// process, into a temp folder that Main removes when the tests end.
func Crpe(t testing.TB) string {
	t.Helper()
	if !inMain {
		t.Fatal("testenv.Crpe: the test package's TestMain must run its tests with testenv.Main, which removes the crpe binary built for them")
	}
	if p := os.Getenv(EnvCrpeBin); p != "" {
		if !filepath.IsAbs(p) {
			t.Fatalf("%s=%q: want an absolute path (the tests run in their package's folder)", EnvCrpeBin, p)
		}
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			t.Fatalf("%s=%q: not a crpe binary: %v", EnvCrpeBin, p, err)
		}
		return p
	}
	build.once.Do(func() {
		sweepDeadBuilds()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
		if err != nil {
			build.err = err
			return
		}
		build.dir, build.path = dir, filepath.Join(dir, "crpe")
		cmd := exec.Command("go", "build", "-o", build.path, "github.com/octohelm/crpe/cmd/crpe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build crpe: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// sweepDeadBuilds removes the binaries of test processes that died before
// Main could remove theirs (a test timeout panics past TestMain), and those
// of an older testenv (crpe-bin-<random>, never removed by their process)
// after 30 minutes.
func sweepDeadBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), binDirPrefix), "-")
		if !ok {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > 30*time.Minute {
				_ = os.RemoveAll(d)
			}
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil && errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone) {
			_ = os.RemoveAll(d)
		}
	}
}

// FreeAddr returns a free 127.0.0.1:port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a crpe process run for a test.
type Proc struct {
	Cmd   *exec.Cmd
	Addr  string
	URL   string
	Data  string
	Token string
	Log   *bytes.Buffer
	mu    sync.Mutex
	done  chan struct{}
}

// Stopped is closed when the process has exited.
func (p *Proc) Stopped() <-chan struct{} { return p.done }

// Logs returns what the process wrote so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Log.String()
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.Log.Write(b)
}

// AgentOptions tune StartAgent.
type AgentOptions struct {
	Data  string // default: a temp dir
	Token string // default: "test-token"
	Args  []string
}

// StartAgent runs `crpe agent` on a free port with a token file and waits
// until /healthz answers. It is killed when the test ends.
func StartAgent(t testing.TB, o AgentOptions) *Proc {
	t.Helper()
	if o.Data == "" {
		o.Data = t.TempDir()
	}
	if o.Token == "" {
		o.Token = "test-token"
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(o.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// a port taken before the agent binds it: a fresh one (see addrInUse)
	for attempt := 1; ; attempt++ {
		addr := FreeAddr(t)
		args := append([]string{"agent", "--addr", addr, "--data", o.Data, "--token-file", tokFile, "--log-format", "text"}, o.Args...)
		p := Start(t, args...)
		p.Addr, p.URL, p.Data, p.Token = addr, "http://"+addr, o.Data, o.Token
		err := waitOwnHealthy(p)
		if err == nil {
			return p
		}
		if !errors.Is(err, errAddrInUse) || attempt == portAttempts {
			t.Fatal(err)
		}
	}
}

// Start runs crpe with args until the test ends (SIGKILL at cleanup, unless
// it already exited).
func Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	p := &Proc{Log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd := exec.Command(Crpe(t), args...)
	cmd.Stdout = lockedWriter{p}
	cmd.Stderr = lockedWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.Cmd = cmd
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("crpe %v output:\n%s", args, p.Logs())
		}
	})
	return p
}

// WaitHealthy waits until p answers GET /healthz with 200 and has logged
// that it listens: another process answering at p's address (one that took
// the port FreeAddr handed out, while p failed to bind it) is not p.
func WaitHealthy(t testing.TB, p *Proc) {
	t.Helper()
	if err := waitOwnHealthy(p); err != nil {
		t.Fatal(err)
	}
}

// A port FreeAddr (or freeAddr) hands out may be taken by another test's
// process before the one it was picked for binds it. That process then
// exits saying addrInUse in its log, and is started again on a fresh port:
// portAttempts times in all (crpe agents here, etcd and kube-apiserver in
// kube.go).
const (
	addrInUse    = "address already in use"
	portAttempts = 3
)

// errAddrInUse is waitOwnHealthy's error for a process that could not bind
// its address.
var errAddrInUse = errors.New(addrInUse)

func waitOwnHealthy(p *Proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(p.Logs(), "listening") {
				select {
				case <-p.done:
				default:
					return nil
				}
			}
		}
		select {
		case <-p.done:
			if strings.Contains(p.Logs(), addrInUse) {
				return fmt.Errorf("%w: crpe could not listen on %s:\n%s", errAddrInUse, p.Addr, p.Logs())
			}
			return fmt.Errorf("crpe exited before it was healthy:\n%s", p.Logs())
		case <-ctx.Done():
			return fmt.Errorf("crpe not healthy after 15s:\n%s", p.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Run runs crpe with args to completion and returns its combined output.
func Run(ctx context.Context, t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(ctx, Crpe(t), args...).CombinedOutput()
	return string(out), err
}

// Eventually polls check every 200 ms until it returns true or d passes,
// then fails the test with what and check's last message.
func Eventually(t testing.TB, d time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %s: %s", what, d, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Result is a finished crpe command, its output kept apart.
type Result struct {
	Args           []string
	Stdout, Stderr string
	Code           int
	Err            error
}

// String says what ran and how it ended, for failure messages.
func (r Result) String() string {
	cut := func(s string) string {
		if len(s) > 3000 {
			return s[:3000] + "…"
		}
		return s
	}
	return fmt.Sprintf("crpe %s: exit %d (%v)\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.Code, r.Err, cut(r.Stdout), cut(r.Stderr))
}

// CrpeOptions shape a crpe command's environment and input.
type CrpeOptions struct {
	// Drop names variables of the test's environment left out besides
	// every CRPE_ one (a developer's settings never reach the command):
	// "SOURCE_DATE_EPOCH", "HOME", "KUBECONFIG"...
	Drop []string
	// Env is added (KEY=VALUE).
	Env []string
	// Stdin, when set, is the command's input.
	Stdin string
}

// RunCrpe runs the crpe binary to completion with o's environment and
// returns its output apart and its exit code.
func RunCrpe(ctx context.Context, t testing.TB, o CrpeOptions, args ...string) Result {
	t.Helper()
	cmd := exec.CommandContext(ctx, Crpe(t), args...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "CRPE_") && !slices.Contains(o.Drop, k) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, o.Env...)
	if o.Stdin != "" {
		cmd.Stdin = strings.NewReader(o.Stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := Result{Args: args, Stdout: so.String(), Stderr: se.String(), Err: err}
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	return r
}

// StartOperator runs `crpe operator --kubeconfig KC [--namespace NS]
// --health-addr 0 --log-format text` with extra flags (ns "": every
// namespace), and waits until its workers run (failing the test if it
// exits first).
func StartOperator(t testing.TB, kubeconfig, ns string, extra ...string) *Proc {
	t.Helper()
	args := []string{"operator", "--kubeconfig", kubeconfig, "--health-addr", "0", "--log-format", "text"}
	if ns != "" {
		args = append(args, "--namespace", ns)
	}
	op := Start(t, append(args, extra...)...)
	Eventually(t, 30*time.Second, "crpe operator started", func() (bool, string) {
		select {
		case <-op.Stopped():
			t.Fatalf("crpe operator exited:\n%s", op.Logs())
		default:
		}
		return strings.Contains(op.Logs(), "Starting workers"), op.Logs()
	})
	return op
}
