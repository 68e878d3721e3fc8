package storage

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/repodb"
)

// TestPocketFile: the file is its user's only, is removed only by the
// pocket that wrote it, and names that pocket when the folder is in use.
func TestPocketFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadPocketFile(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no file: %v", err)
	}
	pf := &PocketFile{PID: 42, Instance: "one", URLs: []string{"http://127.0.0.1:6060"}, TokenFile: "/data/token", StartedAt: time.Now().UTC()}
	if err := WritePocketFile(dir, pf); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(PocketFilePath(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pocket.json: %v, mode %v", err, fi.Mode().Perm())
	}
	got, err := ReadPocketFile(dir)
	if err != nil || got.PID != 42 || got.Instance != "one" || got.URLs[0] != pf.URLs[0] || got.TokenFile != pf.TokenFile {
		t.Fatalf("read back: %+v, %v", got, err)
	}

	// the folder held: the error names the pocket, and is still ErrInUse
	st, err := Open(context.Background(), dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = OpenWait(context.Background(), dir, nil, nil, 10*time.Millisecond)
	if !errors.Is(err, repodb.ErrInUse) || !strings.Contains(err.Error(), "crpe serve (pid 42, http://127.0.0.1:6060)") {
		t.Errorf("a held folder: %v", err)
	}

	// another pocket's stop leaves the file
	if err := RemovePocketFile(dir, "two"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPocketFile(dir); err != nil {
		t.Fatalf("removed by another instance: %v", err)
	}
	if err := RemovePocketFile(dir, "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPocketFile(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after its pocket's stop: %v", err)
	}
}
