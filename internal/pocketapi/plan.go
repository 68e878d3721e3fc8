package pocketapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/platform"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/registry"
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

// packagePlatforms are the platforms a package is carried for.
func packagePlatforms(p *kubepkg.KubePkg) ([]ocispec.Platform, error) {
	s := p.Metadata.Annotations[kubepkg.AnnotationPlatform]
	if s == "" {
		s = export.DefaultPlatforms
	}
	return platform.ParseList(s)
}

// manifestSource reads manifests for a plan.
type manifestSource func(ctx context.Context, repo, ref string) (*pullthrough.Manifest, error)

var errNotCached = errors.New("not in the cache")

// localManifest reads a manifest from the cache alone.
func (a *API) localManifest(ctx context.Context, repo, ref string) (*pullthrough.Manifest, error) {
	d := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		err := a.st.DB.View(func(tx *repodb.Tx) error {
			var err error
			d, err = tx.Tag(repo, ref)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%w: tag %s of %s", errNotCached, ref, repo)
		}
	}
	body, err := cas.ReadAll(ctx, a.st.Store, d, registry.MaxManifestSize)
	if err != nil {
		if errors.Is(err, cas.ErrNotFound) {
			return nil, fmt.Errorf("%w: manifest %s", errNotCached, d)
		}
		return nil, err
	}
	return &pullthrough.Manifest{Digest: d, Body: body}, nil
}

// planPackage walks every image of pkg (with the images of its pod
// templates) for plats (nil: the package's own).
func (a *API) planPackage(ctx context.Context, rec *repodb.PocketPackage, pkg *kubepkg.KubePkg, plats []ocispec.Platform, mode resolveMode) (*plan, error) {
	pkg.AddManifestImages()
	if plats == nil {
		var err error
		if plats, err = packagePlatforms(pkg); err != nil {
			return nil, err
		}
	}
	src := manifestSource(a.localManifest)
	if mode != resolveLocal {
		cache := a.ups.Cache()
		src = cache.Manifest
	}
	pl := &plan{Platforms: plats}
	refs := map[string]string{}
	for _, key := range pkg.ImageRefs() {
		ref, err := kubepkg.NormalizeRef(key)
		if err != nil {
			return nil, fmt.Errorf("spec.images[%q]: %w", key, err)
		}
		if v := pkg.Spec.Images[key]; v != "" || refs[ref] == "" {
			refs[ref] = v
		}
	}
	var names []string
	for ref := range refs {
		names = append(names, ref)
	}
	sort.Strings(names)
	for _, ref := range names {
		im := &planImage{Ref: ref}
		pl.Images = append(pl.Images, im)
		target := refs[ref]
		if target == "" && mode != resolveFresh && rec != nil {
			target = rec.Resolved[ref]
		}
		im.Err = a.walkImage(ctx, src, im, target, plats)
	}
	return pl, nil
}

// walkImage resolves im (target: a digest to use, "" to resolve the
// reference) and lists the blobs of its platforms.
func (a *API) walkImage(ctx context.Context, src manifestSource, im *planImage, target string, plats []ocispec.Platform) error {
	r, err := name.ParseReference(im.Ref, name.WeakValidation)
	if err != nil {
		return err
	}
	im.Repo = kubepkg.RepositoryName(r.Context())
	if target == "" {
		target = r.Identifier()
	}
	m, err := src(ctx, im.Repo, target)
	if err != nil {
		return err
	}
	im.Digest = m.Digest
	seen := map[digest.Digest]bool{}
	add := func(d digest.Digest, size int64, layer bool) {
		if seen[d] {
			return
		}
		seen[d] = true
		_, serr := a.st.Store.Stat(ctx, d)
		im.Blobs = append(im.Blobs, planBlob{Digest: d, Size: size, Present: serr == nil, Layer: layer})
	}
	add(m.Digest, int64(len(m.Body)), false)
	return a.walkManifest(ctx, src, im, m, plats, add, 0)
}

func (a *API) walkManifest(ctx context.Context, src manifestSource, im *planImage, m *pullthrough.Manifest, plats []ocispec.Platform, add func(digest.Digest, int64, bool), depth int) error {
	if depth > 4 {
		return errors.New("indexes nested too deep")
	}
	pm, err := registry.ParseManifest(m.MediaType, m.Body)
	if err != nil {
		return err
	}
	if !pm.IsIndex() {
		if pm.Config != nil {
			add(pm.Config.Digest, pm.Config.Size, false)
		}
		for _, l := range pm.Layers {
			if len(l.URLs) > 0 {
				continue // non-distributable: not fetched
			}
			add(l.Digest, l.Size, true)
		}
		return nil
	}
	n := 0
	for _, c := range pm.Manifests {
		isIndex := c.MediaType == ocispec.MediaTypeImageIndex || c.MediaType == registry.MediaTypeDockerManifestList
		if c.Platform != nil && !platform.MatchAny(plats, *c.Platform) || c.Platform == nil && !isIndex {
			continue
		}
		cm, err := src(ctx, im.Repo, string(c.Digest))
		if err != nil {
			return fmt.Errorf("manifest %s: %w", c.Digest, err)
		}
		add(c.Digest, c.Size, false)
		if err := a.walkManifest(ctx, src, im, cm, plats, add, depth+1); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no manifest for %s", platform.Join(plats))
	}
	return nil
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
		if ref, err := kubepkg.NormalizeRef(key); err == nil && byRef[ref] != "" {
			pkg.Spec.Images[key] = string(byRef[ref])
		}
	}
}
