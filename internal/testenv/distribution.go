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
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

// StartDistribution starts docker-registry and waits until it answers.
func StartDistribution(t testing.TB) *Distribution {
	t.Helper()
	bin := Peer(t, "docker-registry", "apt-get install docker-registry")
	dir := t.TempDir()
	addr := FreeAddr(t)
	cfg := fmt.Sprintf(`version: 0.1
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
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Distribution{Addr: addr, URL: "http://" + addr, Dir: dir, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "serve", cfgPath)
	w := &syncWriter{mu: d.mu, w: d.log}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
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

// Stop kills the registry (idempotent): the upstream is gone.
func (d *Distribution) Stop() {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// Logs returns what the registry logged.
func (d *Distribution) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
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

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// WaitCtx is a context that ends with the test or after d.
func WaitCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
