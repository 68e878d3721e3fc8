// Package install tests `crpe install --image-archive`: crpe's own image,
// built from the static crpe binary with no Docker, is taken by a real
// containerd (`ctr images import`), unpacked, and its entrypoint runs.
package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

func TestSelfImageImportsIntoContainerd(t *testing.T) {
	ctd := testenv.StartContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	archive := filepath.Join(dir, "crpe-image.tar")
	ref := "registry.local/octohelm/crpe:test"
	out, err := exec.CommandContext(ctx, testenv.Crpe(t), "install", "--image", ref, "--image-archive", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("crpe install --image-archive: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "image: "+ref) {
		t.Errorf("the manifests do not name the image %s", ref)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("image archive: %v", err)
	}
	if out, err := ctd.Ctr(ctx, "images", "import", "--snapshotter", "native", archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	ls, err := ctd.Ctr(ctx, "images", "ls")
	if err != nil || !strings.Contains(ls, ref) {
		t.Fatalf("ctr images ls does not list %s (%v):\n%s", ref, err, ls)
	}
	check, err := ctd.Ctr(ctx, "images", "check", "--snapshotter", "native")
	if err != nil || !strings.Contains(check, "complete") {
		t.Fatalf("ctr images check: %v\n%s", err, check)
	}
	// the unpacked root holds the binary, and it runs
	mnt := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := ctd.Ctr(ctx, "images", "mount", "--snapshotter", "native", ref, mnt); err != nil {
		t.Fatalf("ctr images mount: %v\n%s", err, out)
	}
	defer func() { _, _ = ctd.Ctr(context.Background(), "images", "unmount", mnt) }()
	v, err := exec.CommandContext(ctx, filepath.Join(mnt, "crpe"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "crpe ") {
		t.Fatalf("the image's /crpe does not run: %v\n%s", err, v)
	}
}
