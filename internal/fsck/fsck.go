// Package fsck owns the consistency check of a crpe data folder: every blob
// re-hashed, every tag resolving to a recorded manifest whose bytes are
// present, every manifest's config and layers present (index children may be
// absent: sparse indexes are legitimate; so may the blobs of a manifest
// recorded as partial, such as one a pull-through cache holds before its
// layers were asked for), every blob link backed by a blob.
// It reads the index read-only, so it runs on the folder of a process that was
// just killed, with no restart first.
package fsck

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// Finding is one line of the report.
type Finding struct {
	Problem  bool   `json:"problem"`
	Where    string `json:"where"`
	Message  string `json:"message"`
	Repaired bool   `json:"repaired,omitempty"`
}

// Summary counts what was checked.
type Summary struct {
	Blobs     int `json:"blobs"`
	Repos     int `json:"repositories"`
	Manifests int `json:"manifests"`
	Tags      int `json:"tags"`
	Problems  int `json:"problems"`
	Info      int `json:"info"`
}

// Run checks the data folder and reports each finding.
func Run(ctx context.Context, data, indexPath string, repair bool, report func(Finding)) (Summary, error) {
	var sum Summary
	emit := func(f Finding) {
		if f.Problem {
			sum.Problems++
		} else {
			sum.Info++
		}
		report(f)
	}
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		return sum, fmt.Errorf("data folder %s: not found", data)
	}
	// Take the index (and its lock) first: nothing is touched while another
	// process holds the folder.
	var db *repodb.DB
	if fi, err := os.Stat(indexPath); err == nil && fi.Size() > 0 {
		if db, err = repodb.Open(indexPath, true, 2*time.Second); err != nil {
			return sum, err
		}
		defer db.Close()
	} else {
		// killed during its very first start, before the index existed
		emit(Finding{Where: indexPath, Message: "index not created yet (no repository recorded)"})
	}
	store, err := casfs.Open(data)
	if err != nil {
		return sum, err
	}
	n, err := store.Check(ctx, repair, func(f casfs.Finding) {
		emit(Finding{Problem: f.Problem, Where: f.Path, Message: f.Message, Repaired: f.Repaired})
	})
	sum.Blobs = n
	if err != nil || db == nil {
		return sum, err
	}
	present := func(d digest.Digest) bool {
		_, err := store.Stat(ctx, d)
		return err == nil
	}
	err = db.View(func(tx *repodb.Tx) error {
		return tx.ForEachRepo(func(repo string) error {
			sum.Repos++
			if !oci.ValidName(repo) {
				emit(Finding{Problem: true, Where: repo, Message: "invalid repository name"})
			}
			if err := tx.ForEachBlob(repo, func(d digest.Digest, size int64) error {
				if !present(d) {
					emit(Finding{Problem: true, Where: repo + "@" + string(d), Message: "linked blob is missing from the store"})
				}
				return nil
			}); err != nil {
				return err
			}
			if err := tx.ForEachManifest(repo, func(d digest.Digest, m repodb.Manifest) error {
				sum.Manifests++
				where := repo + "@" + string(d)
				body, err := cas.ReadAll(ctx, store, d, oci.MaxManifestSize)
				if err != nil {
					emit(Finding{Problem: true, Where: where, Message: "manifest content unreadable: " + err.Error()})
					return nil
				}
				pm, err := oci.ParseManifest(m.MediaType, body)
				if err != nil {
					emit(Finding{Problem: true, Where: where, Message: "manifest invalid: " + err.Error()})
					return nil
				}
				for _, desc := range pm.Required() {
					if !present(desc.Digest) && !m.Partial {
						emit(Finding{Problem: true, Where: where, Message: fmt.Sprintf("references missing blob %s", desc.Digest)})
					}
				}
				return nil
			}); err != nil {
				return err
			}
			return tx.ForEachTag(repo, func(tag string, d digest.Digest) error {
				sum.Tags++
				where := repo + ":" + tag
				if !oci.ValidTag(tag) {
					emit(Finding{Problem: true, Where: where, Message: "invalid tag"})
				}
				if _, err := tx.Manifest(repo, d); err != nil {
					emit(Finding{Problem: true, Where: where, Message: fmt.Sprintf("tag points at unrecorded manifest %s", d)})
				}
				return nil
			})
		})
	})
	return sum, err
}
