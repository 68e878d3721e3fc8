package importer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// GCResult tells what a garbage collection did.
type GCResult struct {
	ManifestsDropped int           `json:"manifestsDropped"`
	LinksDropped     int           `json:"linksDropped"`
	BlobsRemoved     int           `json:"blobsRemoved"`
	BytesFreed       int64         `json:"bytesFreed"`
	Duration         time.Duration `json:"duration"`
}

// GC drops what only expired package versions needed and removes blobs that
// nothing references any more. Blobs younger than grace are left alone even
// when unreferenced: a /v2 push links its blobs a moment after storing them.
// It never runs during an import. The index is updated first, the blobs
// removed after: a crash in between leaves unreferenced blobs, which the
// next run removes.
func (im *Importer) GC(ctx context.Context, grace time.Duration) (GCResult, error) {
	start := time.Now()
	im.lock.Lock()
	defer im.lock.Unlock()
	var res GCResult

	// roots: every tag (but cosign's artifact tags, which live and go with
	// their subject), and every image of a kept version; candidates: the
	// images of expired versions
	live := map[string]map[digest.Digest]bool{}    // repo → roots
	expired := map[string]map[digest.Digest]bool{} // repo → candidates
	add := func(m map[string]map[digest.Digest]bool, repo string, d digest.Digest) {
		if m[repo] == nil {
			m[repo] = map[digest.Digest]bool{}
		}
		m[repo][d] = true
	}
	err := im.db.View(func(tx *repodb.Tx) error {
		if err := tx.ForEachRepo(func(repo string) error {
			return tx.ForEachTag(repo, func(tag string, d digest.Digest) error {
				if _, _, ok := oci.CosignTagOf(tag); !ok {
					add(live, repo, d)
				}
				return nil
			})
		}); err != nil {
			return err
		}
		pkgs, err := tx.Packages()
		if err != nil {
			return err
		}
		for _, p := range pkgs {
			for _, v := range p.History {
				for ref, d := range v.Images {
					img, err := parseRef(ref)
					if err != nil {
						continue
					}
					if v.Expired {
						add(expired, img.repo, digest.Digest(d))
					} else {
						add(live, img.repo, digest.Digest(d))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	// what the candidates need and the roots do not; a live root that
	// cannot be read stops the collection before anything is deleted: a keep
	// set missing it could unlink (and sweep) the layers it shares
	type drop struct {
		manifests map[digest.Digest]bool
		blobs     map[digest.Digest]bool
	}
	drops := map[string]drop{}
	for repo, cands := range expired {
		keepM, keepB := map[digest.Digest]bool{}, map[digest.Digest]bool{}
		for d := range live[repo] {
			if err := im.closure(ctx, d, keepM, keepB); err != nil {
				return res, fmt.Errorf("garbage collection stopped, nothing deleted: live image %s@%s: %w (crpe fsck tells more)", repo, d, err)
			}
		}
		// what is carried with a kept manifest (its signatures, SBOMs) is kept
		if err := im.withArtifacts(ctx, repo, keepM, keepB); err != nil {
			return res, fmt.Errorf("garbage collection stopped, nothing deleted: the artifacts of %s: %w", repo, err)
		}
		dm, db := map[digest.Digest]bool{}, map[digest.Digest]bool{}
		for d := range cands {
			if live[repo][d] {
				continue
			}
			// an expired image that cannot be read is left as it is: only
			// what is read is dropped
			_ = im.closure(ctx, d, dm, db)
		}
		// and goes with an expired one
		_ = im.withArtifacts(ctx, repo, dm, db)
		for d := range dm {
			if keepM[d] {
				delete(dm, d)
			}
		}
		for d := range db {
			if keepB[d] {
				delete(db, d)
			}
		}
		drops[repo] = drop{dm, db}
	}
	err = im.db.Update(func(tx *repodb.Tx) error {
		for repo, dr := range drops {
			n, err := tx.DeleteManifests(repo, dr.manifests)
			if err != nil {
				return err
			}
			res.ManifestsDropped += n
			for d := range dr.blobs {
				if err := tx.UnlinkBlob(repo, d); err == nil {
					res.LinksDropped++
				}
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	// sweep: blobs no repository links or records
	referenced := map[digest.Digest]bool{}
	err = im.db.View(func(tx *repodb.Tx) error {
		return tx.ForEachRepo(func(repo string) error {
			if err := tx.ForEachBlob(repo, func(d digest.Digest, _ int64) error {
				referenced[d] = true
				return nil
			}); err != nil {
				return err
			}
			return tx.ForEachManifest(repo, func(d digest.Digest, _ repodb.Manifest) error {
				referenced[d] = true
				return nil
			})
		})
	})
	if err != nil {
		return res, err
	}
	var victims []cas.Info
	_ = im.store.Walk(ctx, func(i cas.Info) error {
		if !referenced[i.Digest] {
			victims = append(victims, i)
		}
		return nil
	})
	for _, v := range victims {
		// a blob whose age the store cannot tell is taken as young
		if grace > 0 && (v.Modified.IsZero() || time.Since(v.Modified) < grace) {
			continue
		}
		if err := im.store.Delete(ctx, v.Digest); err == nil {
			res.BlobsRemoved++
			res.BytesFreed += v.Size
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// closure adds root and everything under it (oci.Walk: manifests, their
// children, configs, layers and subjects) to manifests and blobs. A child
// manifest absent from the store (an index's other platforms, a subject) is
// skipped; any other failure to read or parse a manifest is an error.
func (im *Importer) closure(ctx context.Context, root digest.Digest, manifests, blobs map[digest.Digest]bool) error {
	if manifests[root] {
		return nil
	}
	fetch := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		return cas.ReadAll(ctx, im.store, d.Digest, oci.MaxManifestSize)
	}
	return oci.Walk(ctx, ocispec.Descriptor{Digest: root}, fetch, func(_ context.Context, n *oci.Node) error {
		switch {
		case n.Kind != oci.KindManifest:
			blobs[n.Desc.Digest] = true
		case n.Err != nil && n.Depth > 0 && errors.Is(n.Err, cas.ErrNotFound):
			return oci.ErrSkip
		case n.Err != nil:
			return n.Err
		case manifests[n.Desc.Digest] && n.Depth > 0:
			return oci.ErrSkip // walked from another root already
		default:
			manifests[n.Desc.Digest] = true
		}
		return nil
	}, oci.WalkOptions{})
}

// withArtifacts adds to manifests and blobs what is carried with each
// manifest of manifests in repository repo: its referrers (repodb) and
// cosign's tags of it (sha256-<hex>.sig, .att, .sbom), with their closures,
// and theirs in turn.
func (im *Importer) withArtifacts(ctx context.Context, repo string, manifests, blobs map[digest.Digest]bool) error {
	queue := make([]digest.Digest, 0, len(manifests))
	for d := range manifests {
		queue = append(queue, d)
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		var arts []digest.Digest
		if err := im.db.View(func(tx *repodb.Tx) error {
			refs, err := tx.Referrers(repo, d)
			if err != nil {
				return err
			}
			for _, r := range refs {
				arts = append(arts, r.Digest)
			}
			for _, suffix := range oci.CosignSuffixes {
				if a, err := tx.Tag(repo, oci.CosignTag(d, suffix)); err == nil {
					arts = append(arts, a)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		for _, a := range arts {
			if manifests[a] {
				continue
			}
			if err := im.closure(ctx, a, manifests, blobs); err != nil {
				return err
			}
			queue = append(queue, a)
		}
	}
	return nil
}
