package pocketapi

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/repodb"
)

// resolveMode says how a plan finds what an image reference names.
type resolveMode int

const (
	// local: the digest pinned by the last sync, else the cache's tag index;
	// never a network request.
	resolveLocal resolveMode = iota
	// pinned: the digest pinned by the last sync, else through the cache
	// (tags upstream-first, falling back to the cache).
	resolvePinned
	// fresh: every tag resolved again through the cache (a sync).
	resolveFresh
)

// planBlob is one blob an image needs.
type planBlob struct {
	Digest  digest.Digest
	Size    int64
	Present bool
	Layer   bool
}

// planImage is what one image of a package needs for its platforms.
type planImage struct {
	Ref    string // normalized reference
	Repo   string // full repository name
	Digest digest.Digest
	Blobs  []planBlob
	// Err says why the image could not be walked whole (a manifest not
	// cached, locally, or an upstream error): its blobs are then unknown.
	Err error
}

// plan is what a package needs.
type plan struct {
	Platforms []ocispec.Platform
	Images    []*planImage
}

// counts counts the image's blobs and bytes, and those present.
func (im *planImage) counts() (blobs, present int, bytes, presentBytes int64) {
	for _, b := range im.Blobs {
		blobs++
		bytes += b.Size
		if b.Present {
			present++
			presentBytes += b.Size
		}
	}
	return
}

// totals counts unique blobs and bytes, and those present.
func (p *plan) totals() (blobs, present int, bytes, presentBytes int64, complete bool) {
	seen := map[digest.Digest]bool{}
	complete = true
	for _, im := range p.Images {
		if im.Err != nil {
			complete = false
		}
		for _, b := range im.Blobs {
			if seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			blobs++
			bytes += b.Size
			if b.Present {
				present++
				presentBytes += b.Size
			} else {
				complete = false
			}
		}
	}
	return
}

// missing lists the blobs not cached yet, once each, with an image (and
// its repository) that needs each.
func (p *plan) missing() []missingBlob {
	seen := map[digest.Digest]bool{}
	var out []missingBlob
	for _, im := range p.Images {
		for _, b := range im.Blobs {
			if b.Present || seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			out = append(out, missingBlob{planBlob: b, image: im})
		}
	}
	return out
}

type missingBlob struct {
	planBlob
	image *planImage
}

// firstErr returns the first image error.
func (p *plan) firstErr() error {
	for _, im := range p.Images {
		if im.Err != nil {
			return fmt.Errorf("image %s: %w", im.Ref, im.Err)
		}
	}
	return nil
}

var errNotCached = errors.New("not in the cache")

// localManifest reads a manifest from the cache alone.
func (a *API) localManifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	d := digest.Digest(ref)
	if !oci.IsDigestRef(ref) {
		err := a.st.DB.View(func(tx *repodb.Tx) error {
			var err error
			d, err = tx.Tag(repo, ref)
			return err
		})
		if err != nil {
			return ocispec.Descriptor{}, nil, fmt.Errorf("%w: tag %s of %s", errNotCached, ref, repo)
		}
	}
	body, err := cas.ReadAll(ctx, a.st.Store, d, oci.MaxManifestSize)
	if err != nil {
		if errors.Is(err, cas.ErrNotFound) {
			return ocispec.Descriptor{}, nil, fmt.Errorf("%w: manifest %s", errNotCached, d)
		}
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(body))}, body, nil
}

// planPackage walks every image of pkg (with the images of its pod
// templates) for plats (nil: the package's own).
func (a *API) planPackage(ctx context.Context, rec *repodb.PocketPackage, pkg *kubepkg.KubePkg, plats []ocispec.Platform, mode resolveMode) (*plan, error) {
	pkg.AddManifestImages()
	if plats == nil {
		var err error
		if plats, err = export.PackagePlatforms(pkg); err != nil {
			return nil, err
		}
	}
	src, config := export.ManifestSource(a.localManifest), export.ConfigPlatform(a.localConfigPlatform)
	refs := export.ReferrersSource(a.localReferrers)
	if mode != resolveLocal {
		cache := a.ups.Cache()
		fetchConfig := export.CacheConfigPlatform(cache)
		src, refs = export.CacheManifests(cache), export.CacheReferrers(cache)
		config = func(ctx context.Context, repo string, desc ocispec.Descriptor) (ocispec.Platform, error) {
			p, err := fetchConfig(ctx, repo, desc)
			if err != nil {
				// unknown for now: the config is fetched again with the
				// other blobs, where a failure shows in the progress
				return ocispec.Platform{}, nil
			}
			return p, nil
		}
	}
	pl := &plan{Platforms: plats}
	pins := map[string]string{}
	for _, key := range pkg.ImageRefs() {
		ref, err := oci.NormalizeReference(key)
		if err != nil {
			return nil, fmt.Errorf("spec.images[%q]: %w", key, err)
		}
		if v := pkg.Spec.Images[key]; v != "" || pins[ref] == "" {
			pins[ref] = v
		}
	}
	var names []string
	for ref := range pins {
		names = append(names, ref)
	}
	sort.Strings(names)
	for _, ref := range names {
		im := &planImage{Ref: ref}
		pl.Images = append(pl.Images, im)
		target := pins[ref]
		if target == "" && mode != resolveFresh && rec != nil {
			target = rec.Resolved[ref]
		}
		im.Err = a.walkImage(ctx, src, refs, config, im, target, plats)
	}
	return pl, nil
}

// localReferrers lists the referrers the cache holds.
func (a *API) localReferrers(_ context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		refs, err := tx.Referrers(repo, d)
		for _, r := range refs {
			out = append(out, ocispec.Descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size, ArtifactType: r.ArtifactType, Annotations: r.Annotations})
		}
		return err
	})
	return out, err
}

// walkImage resolves im (target: a digest to use, "" to resolve the
// reference) and lists the blobs of its platforms, as an export walks it.
func (a *API) walkImage(ctx context.Context, src export.ManifestSource, refs export.ReferrersSource, config export.ConfigPlatform, im *planImage, target string, plats []ocispec.Platform) error {
	wk, err := export.Walk(ctx, im.Ref, digest.Digest(target), plats, src, config)
	if err != nil {
		return err
	}
	im.Repo, im.Digest = wk.Repo, wk.Top.Digest
	// what is carried with it (its signatures, attestations, SBOMs) is
	// synced with it, so that an export offline carries it too
	var subjects []digest.Digest
	for _, b := range wk.Blobs {
		if b.Kind == oci.KindManifest {
			subjects = append(subjects, b.Desc.Digest)
		}
	}
	local := func(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
		desc, body, err := src(ctx, repo, ref)
		if errors.Is(err, errNotCached) {
			err = fmt.Errorf("%w: %w", pullthrough.ErrNotCached, err)
		}
		return desc, body, err
	}
	arts, err := export.WalkArtifacts(ctx, wk.Repo, subjects, export.ArtifactSource(local, nil), refs, export.Artifacts{})
	if err != nil {
		return err
	}
	blobs := wk.Blobs
	for _, x := range arts {
		blobs = append(blobs, x.Blobs...)
	}
	seen := map[digest.Digest]bool{}
	for _, b := range blobs {
		d := b.Desc.Digest
		if seen[d] || len(b.Desc.URLs) > 0 { // non-distributable: not fetched
			continue
		}
		seen[d] = true
		_, serr := a.st.Store.Stat(ctx, d)
		im.Blobs = append(im.Blobs, planBlob{Digest: d, Size: b.Desc.Size, Present: serr == nil, Layer: b.Kind == oci.KindLayer})
	}
	return nil
}

// localConfigPlatform reads an image config's platform from the cache
// alone: unknown when the config is not cached.
func (a *API) localConfigPlatform(ctx context.Context, _ string, desc ocispec.Descriptor) (ocispec.Platform, error) {
	if desc.Size > oci.MaxConfigSize {
		return ocispec.Platform{}, nil
	}
	body, err := cas.ReadAll(ctx, a.st.Store, desc.Digest, desc.Size)
	if err != nil {
		return ocispec.Platform{}, nil // not cached (yet): unknown
	}
	return oci.ConfigPlatform(body), nil
}

// pin sets every image of pkg to the digest pl resolved it to, so that an
// export uses exactly what was planned (and checked to be cached).
func pin(pkg *kubepkg.KubePkg, pl *plan) {
	byRef := map[string]digest.Digest{}
	for _, im := range pl.Images {
		byRef[im.Ref] = im.Digest
	}
	for key, v := range pkg.Spec.Images {
		if v != "" {
			continue
		}
		if ref, err := oci.NormalizeReference(key); err == nil && byRef[ref] != "" {
			pkg.Spec.Images[key] = string(byRef[ref])
		}
	}
}
