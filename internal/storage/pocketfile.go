package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/repodb"
)

// PocketFileName is the file in a data folder that says how to reach the
// `crpe serve` running on it.
const PocketFileName = "pocket.json"

// PocketFilePath is where a data folder's pocket file lives.
func PocketFilePath(dir string) string { return filepath.Join(dir, PocketFileName) }

// PocketFile is <data>/pocket.json: written by `crpe serve` once it listens,
// removed when it stops cleanly, so that another crpe command on the same
// data folder (whose index the pocket holds locked) can ask the pocket
// instead. It holds no secret (the token stays in its file, named here) and
// is written with mode 0600 all the same: it is for the pocket's user only.
// A pocket that crashed leaves it behind; the lock on the index, not this
// file, says whether a pocket runs.
type PocketFile struct {
	// PID is the pocket's process.
	PID int `json:"pid"`
	// Instance is random for each start; GET /api/v1/pocket answers it,
	// so a client can tell this pocket from another that took its port.
	Instance string `json:"instance"`
	// URLs reach the pocket from this host, loopback first.
	URLs []string `json:"urls"`
	// TokenFile holds the pocket's tokens (absolute path): what a client
	// that cannot name the pocket by a loopback address sends.
	TokenFile string `json:"tokenFile,omitempty"`
	// TLSCert is the pocket's certificate (absolute path) when it serves
	// https: a local client pins it.
	TLSCert   string    `json:"tlsCert,omitempty"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"startedAt"`
}

// WritePocketFile publishes f in dir (mode 0600, atomically).
func WritePocketFile(dir string, f *PocketFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(PocketFilePath(dir), append(b, '\n'), 0o600)
}

// ReadPocketFile reads dir's pocket file; an error satisfying
// errors.Is(err, os.ErrNotExist) when there is none.
func ReadPocketFile(dir string) (*PocketFile, error) {
	b, err := os.ReadFile(PocketFilePath(dir))
	if err != nil {
		return nil, err
	}
	var f PocketFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", PocketFilePath(dir), err)
	}
	return &f, nil
}

// RemovePocketFile removes dir's pocket file if it is instance's (a
// pocket that failed to start on a folder in use leaves the running one's
// file alone).
func RemovePocketFile(dir, instance string) error {
	f, err := ReadPocketFile(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || f.Instance != instance {
		return err
	}
	return os.Remove(PocketFilePath(dir))
}

// InUse says who holds data folder dir when err is repodb.ErrInUse: the
// pocket its pocket file names, if any (err is kept, for errors.Is).
func InUse(dir string, err error) error {
	if !errors.Is(err, repodb.ErrInUse) {
		return err
	}
	f, ferr := ReadPocketFile(dir)
	if ferr != nil {
		return err
	}
	return fmt.Errorf("data folder %s is in use by crpe serve (pid %d, %s), as its %s says; one crpe process at a time uses a data folder: stop it first: %w",
		dir, f.PID, strings.Join(f.URLs, " "), PocketFileName, err)
}
