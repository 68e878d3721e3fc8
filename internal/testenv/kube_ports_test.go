package testenv

import (
	"path/filepath"
	"testing"
)

// TestLostPort: a peer that exited saying its address was in use is
// started again (up to the third attempt); one that exited otherwise, or
// still runs, is not.
func TestLostPort(t *testing.T) {
	dir := t.TempDir()
	start := func(name, script string) *peerProc {
		p, err := startPeerProc(name, "/bin/sh", filepath.Join(dir, name+".log"), "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.kill)
		return p
	}
	taken := start("taken", `echo "listen tcp 127.0.0.1:1234: bind: address already in use" >&2; exit 1`)
	if !lostPort(taken, 1) || !lostPort(taken, 2) {
		t.Error("a peer whose port was taken is not started again")
	}
	if lostPort(taken, 3) {
		t.Error("a third lost port is tried again")
	}
	other := start("other", `echo "no such flag" >&2; exit 2`)
	if lostPort(other, 1) {
		t.Error("a peer that failed otherwise is started again")
	}
	running := start("running", `sleep 30`)
	if lostPort(running, 1) {
		t.Error("a running peer is taken for one that lost its port")
	}
}
