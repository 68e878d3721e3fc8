package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CtrNamespace is the containerd namespace Containerd.Ctr works in.
const CtrNamespace = "crpe-test"

// Containerd is Debian's containerd run for a test with its own root, state,
// socket and config in a temp dir (CRI plugin disabled), killed when the test
// ends.
type Containerd struct {
	// Dir holds root/, state/, opt/, config.toml and the sockets.
	Dir string
	// Socket is the gRPC socket (ctr --address).
	Socket string
	ctr    string
	logged
}

// StartContainerd starts containerd and waits until `ctr version` answers.
// The directory is made with os.MkdirTemp("", "ctd") rather than t.TempDir()
// so that the socket path stays well under the 108 bytes a unix socket name
// may have; it is removed at cleanup.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	bin := Peer(t, "containerd", "apt-get install containerd")
	ctr := Peer(t, "ctr", "apt-get install containerd")
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), ctr: ctr}
	t.Cleanup(func() {
		c.Stop()
		// the snapshotters may leave read-only or mounted files: best effort
		_ = os.RemoveAll(dir)
	})
	// the snapshotters that need kernel features or tools this host may not
	// have are disabled; overlayfs and native stay (unpacking is not needed
	// by the tests, which import with --no-unpack)
	cfg := containerdConfig(dir, c.Socket, false)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.start(exec.Command(bin, "--config", cfgPath)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log:\n%s", c.Logs())
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		out, err := exec.CommandContext(ctx, ctr, "--address", c.Socket, "version").CombinedOutput()
		cancel()
		if err == nil {
			return c
		}
		select {
		case <-c.done:
			t.Fatalf("containerd exited before it answered: %s\n%s", out, c.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer in 20s: %v %s\n%s", err, out, c.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ctr runs `ctr --address SOCK --namespace crpe-test ARGS` and returns its
// combined output.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	return c.CtrIn(ctx, nil, args...)
}

// CtrIn is Ctr with stdin (for `ctr images import ... -`).
func (c *Containerd) CtrIn(ctx context.Context, stdin []byte, args ...string) (string, error) {
	full := append([]string{"--address", c.Socket, "--namespace", CtrNamespace}, args...)
	cmd := exec.CommandContext(ctx, c.ctr, full...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// containerdConfig is the config of a containerd of the tests' own: its
// root, state and opt folders under dir, its sockets, the snapshotters and
// tracing it does not need disabled; and the CRI plugin disabled unless cri
// (the caller then appends its [plugins."io.containerd.grpc.v1.cri"]).
func containerdConfig(dir, socket string, cri bool) string {
	disabled := ""
	if !cri {
		disabled = "\n  \"io.containerd.grpc.v1.cri\","
	}
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, socket, socket+".ttrpc", filepath.Join(dir, "opt"))
}
