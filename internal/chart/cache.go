package chart

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/octohelm/crpe/internal/atomicfile"
)

// The chart cache of a data folder (Options.CacheDir): every chart fetched
// from a repository or a registry is kept by its digest, and the source it
// was asked as (repository, name, version constraint) remembers which, so
// that a pocket that fetched a chart once packages it again with no
// network: when the source cannot be reached, the cached chart is used,
// and OnFallback says so (which one, cached when).

// cacheEntry is what a source resolved to.
type cacheEntry struct {
	Digest  string    `json:"digest"`
	Version string    `json:"version"`
	Fetched time.Time `json:"fetched"`
}

// sourceKey names a remote chart request.
func sourceKey(repo, name, version string) string {
	sum := sha256.Sum256([]byte(repo + "\x00" + name + "\x00" + version))
	return hex.EncodeToString(sum[:])
}

// cacheStore keeps a fetched chart archive and what key resolved to.
func cacheStore(dir, key string, archive []byte, version string) error {
	sum := sha256.Sum256(archive)
	d := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(dir, "archives"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "sources"), 0o755); err != nil {
		return err
	}
	p := filepath.Join(dir, "archives", d+".tgz")
	if _, err := os.Stat(p); err != nil {
		if err := atomicfile.WriteFile(p, archive, 0o644); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(cacheEntry{Digest: "sha256:" + d, Version: version, Fetched: time.Now().UTC()})
	return atomicfile.WriteFile(filepath.Join(dir, "sources", key+".json"), b, 0o644)
}

// cacheLookup returns the chart archive key last resolved to, verified
// against its digest.
func cacheLookup(dir, key string) ([]byte, *cacheEntry, error) {
	b, err := readCapped(filepath.Join(dir, "sources", key+".json"), 4<<10)
	if err != nil {
		return nil, nil, err
	}
	var e cacheEntry
	if err := json.Unmarshal(b, &e); err != nil || len(e.Digest) != len("sha256:")+64 {
		return nil, nil, fmt.Errorf("chart cache: a damaged entry")
	}
	archive, err := readCapped(filepath.Join(dir, "archives", e.Digest[len("sha256:"):]+".tgz"), MaxChartSize)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(archive)
	if "sha256:"+hex.EncodeToString(sum[:]) != e.Digest {
		return nil, nil, errors.New("chart cache: an archive does not match its digest")
	}
	return archive, &e, nil
}
