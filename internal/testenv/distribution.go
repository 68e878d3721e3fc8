package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Distribution is CNCF distribution (Debian's docker-registry) run on
// loopback with filesystem storage in a temp dir, for a test.
type Distribution struct {
	Addr string
	URL  string
	Dir  string
	logged
}

// registryConfig is the configuration CNCF distribution (2.8 and v3)
// starts with here: info logs with the access log, filesystem storage in
// root with deletes allowed, listening on addr; http: comes last, so that
// more of its keys may follow.
func registryConfig(root, addr string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, root, addr)
}

// StartDistribution starts docker-registry and waits until it answers.
func StartDistribution(t testing.TB) *Distribution {
	t.Helper()
	bin := Peer(t, "docker-registry", "apt-get install docker-registry")
	dir := t.TempDir()
	addr := FreeAddr(t)
	cfg := registryConfig(filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Distribution{Addr: addr, URL: "http://" + addr, Dir: dir}
	if err := d.start(exec.Command(bin, "serve", cfgPath)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not start: %s", d.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Requests counts access-log lines whose request line contains all of
// the given parts (e.g. "GET", "/blobs/sha256:...").
func (d *Distribution) Requests(parts ...string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(d.Logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "HTTP/1.1\"") {
			continue // not an access-log line
		}
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// logged is a peer process whose output is kept in memory.
type logged struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
}

// start starts cmd with its output kept.
func (p *logged) start(cmd *exec.Cmd) error {
	w := &syncWriter{p}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	return nil
}

// Stop kills the process (idempotent): a registry stopped this way is an
// upstream gone.
func (p *logged) Stop() {
	if p.done == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Logs returns what the process wrote.
func (p *logged) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type syncWriter struct{ p *logged }

func (s *syncWriter) Write(b []byte) (int, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.log.Write(b)
}

// WaitCtx is a context that ends with the test or after d.
func WaitCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
