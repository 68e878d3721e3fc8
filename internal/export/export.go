// Package export gathers packages' images through the pull-through cache and
// writes them, with the packages, into one kubepkg.tgz: each image resolved
// (a digest in spec.images is used as is, a tag is resolved), only the chosen
// platforms kept (an index is stored as it came, with only the matching
// children: a sparse index), every blob fetched once in parallel with a
// bound, even when images or packages share it.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
)

// DefaultPlatforms are exported when neither --platform nor the package's
// annotation says.
const DefaultPlatforms = "linux/amd64,linux/arm64"

// PackagePlatforms are the platforms a package is carried for: its
// octohelm.tech/platform annotation, DefaultPlatforms without one.
func PackagePlatforms(p *kubepkg.KubePkg) ([]ocispec.Platform, error) {
	ps, err := p.Platforms()
	if err != nil || len(ps) > 0 {
		return ps, err
	}
	return oci.ParsePlatforms(DefaultPlatforms)
}

// Options tune an export.
type Options struct {
	// Platforms overrides every package's platforms when set.
	Platforms []ocispec.Platform
	// Parallel bounds concurrent blob fetches (default 4).
	Parallel int
	// ModTime is the archive entries' time (SOURCE_DATE_EPOCH); zero is the
	// Unix epoch.
	ModTime time.Time
	// Exclude leaves these blobs out of the archive (the agent already has
	// them); the package is then annotated as partial.
	Exclude map[digest.Digest]bool
	// Progress receives progress events; may be nil.
	Progress Progress
	// Warn receives warnings (images added from manifests); may be nil.
	Warn func(msg string)
	// Artifacts choose the signatures, attestations and SBOMs carried with
	// each image (the zero value: all of them).
	Artifacts Artifacts
	// SignPackage, when set, signs kubepkg.json's bytes (a base64
	// signature, as cosign sign-blob makes it): the archive then carries
	// kubepkg.json.sig (archive.PackageSignatureEntry).
	SignPackage func(pkgJSON []byte) ([]byte, error)
	// Summary, if set, is called with the summary Export returns as soon as
	// the archive's content is known: before its first byte is written
	// (a server sends it ahead of the archive).
	Summary func(*Result)
}

// Progress is told what an export is doing.
type Progress interface {
	// Plan is called once every image is resolved, with each image's bytes.
	Plan(images []ImageResult)
	// Fetched is called as bytes of image ref's blobs are in the cache.
	Fetched(ref string, n int64)
	// Written is called as bytes are written to the archive.
	Written(n int64)
}

// ImageResult describes one exported image.
type ImageResult struct {
	Ref       string   `json:"ref"`
	Digest    string   `json:"digest"`
	MediaType string   `json:"mediaType"`
	Platforms []string `json:"platforms"`
	Blobs     int      `json:"blobs"`
	Bytes     int64    `json:"bytes"`
}

// ArtifactResult describes one artifact carried with an image.
type ArtifactResult struct {
	Ref          string `json:"ref"`
	Digest       string `json:"digest"`
	Subject      string `json:"subject"`
	ArtifactType string `json:"artifactType"`
	Kind         string `json:"kind"`
	Bytes        int64  `json:"bytes"`
}

// Result summarizes an export.
type Result struct {
	Packages  []PackageResult  `json:"packages"`
	Images    []ImageResult    `json:"images"`
	Artifacts []ArtifactResult `json:"artifacts,omitempty"`
	Blobs     int              `json:"blobs"`
	Bytes     int64            `json:"bytes"`
	Excluded  int              `json:"excluded,omitempty"`
}

// PackageResult names one exported package.
type PackageResult struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Platforms string `json:"platforms"`
}

// InvalidError is a package that cannot be exported as it is (invalid, or
// its images pinned to conflicting digests): nothing was fetched. Its text
// is the reason's.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// image is an image being gathered.
type image struct {
	ref       string // normalized reference (the index.json name)
	repo      string // full repository name (docker.io/library/nginx)
	top       ocispec.Descriptor
	platforms []ocispec.Platform
	blobs     []archive.Blob
	exported  map[string]bool
	// artifacts are the signatures, attestations and SBOMs carried with
	// the image; subject and artifactType are set on an artifact
	artifacts    []*image
	subject      digest.Digest
	artifactType string
}

// Export resolves and fetches everything pkgs need, then writes the archive
// to w. The packages are updated in place (images pinned, platforms set).
func Export(ctx context.Context, cache *pullthrough.Cache, store cas.Store, pkgs []*kubepkg.KubePkg, w io.Writer, o Options) (*Result, error) {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if len(pkgs) == 0 {
		return nil, &InvalidError{errors.New("no package to export")}
	}
	images, err := gather(pkgs, o)
	if err != nil {
		return nil, &InvalidError{err}
	}
	// blobs start to be fetched as soon as their image is walked
	var progressFetched func(string, int64)
	if o.Progress != nil {
		progressFetched = o.Progress.Fetched
	}
	fetch := newFetcher(ctx, cache, o.Parallel, func(b archive.Blob) bool {
		// left out on purpose (only layers are), or non-distributable
		return (o.Exclude[b.Desc.Digest] && b.Kind == oci.KindLayer) || len(b.Desc.URLs) > 0
	}, progressFetched)
	defer fetch.cancel()
	if err := resolve(ctx, cache, images, fetch, o.Parallel, o.Artifacts, o.Warn); err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		for ref, val := range p.Spec.Images {
			if im := images.byRef[ref]; im != nil && val == "" {
				p.Spec.Images[ref] = string(im.top.Digest)
			}
		}
	}
	res, blobs, sources := plan(ctx, store, images.list, o)
	if res.Excluded > 0 {
		for _, p := range pkgs {
			p.Metadata.Annotations[kubepkg.AnnotationPartial] = "true"
		}
	}
	if o.Progress != nil {
		o.Progress.Plan(res.Images)
	}
	setStatusDigests(pkgs, images, blobs)
	for _, p := range pkgs {
		res.Packages = append(res.Packages, PackageResult{Namespace: p.Metadata.Namespace, Name: p.Metadata.Name, Version: p.Spec.Version, Platforms: p.Metadata.Annotations[kubepkg.AnnotationPlatform]})
	}
	pkgJSON, err := kubepkg.Marshal(pkgs)
	if err != nil {
		return nil, err
	}
	if cache.Offline() {
		// every blob must be cached: say so before the first byte
		if err := checkCached(ctx, store, blobs); err != nil {
			return nil, err
		}
	}
	if o.Summary != nil {
		o.Summary(res)
	}
	werr := write(ctx, w, cache, store, pkgJSON, images.list, blobs, sources, o)
	if werr != nil {
		fetch.cancel()
	}
	// wait for the fetches to be committed: the cache is complete when
	// Export returns
	if err := fetch.wait(); err != nil {
		return nil, err // the fetch error says more than the writer's
	}
	if werr != nil {
		return nil, werr
	}
	return res, nil
}

// ArtifactSource is src for WalkArtifacts: with the upstream out of reach,
// an artifact's tag the cache lacks is taken as absent (as an image's own
// tag falls back to the cache), and warn (when set) is told: an export then
// carries what the cache holds, and says so.
func ArtifactSource(src ManifestSource, warn func(string)) ManifestSource {
	return func(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
		desc, body, err := src(ctx, repo, ref)
		if err != nil && pullthrough.IsUnreachable(err) && !oci.IsDigestRef(ref) {
			if warn != nil {
				warn(fmt.Sprintf("%s:%s: the upstream cannot be reached and the cache does not hold it: no such artifact is carried (%v)", repo, ref, err))
			}
			return desc, nil, fmt.Errorf("%w: %s:%s", pullthrough.ErrNotCached, repo, ref)
		}
		return desc, body, err
	}
}

// checkCached fails, naming how much is missing and one missing blob, when
// the store lacks any of blobs.
func checkCached(ctx context.Context, store cas.Store, blobs []archive.Blob) error {
	var n int
	var size int64
	var first digest.Digest
	for _, b := range blobs {
		if _, err := store.Stat(ctx, b.Desc.Digest); err != nil {
			if !errors.Is(err, cas.ErrNotFound) {
				return err
			}
			if n == 0 {
				first = b.Desc.Digest
			}
			n++
			size += b.Desc.Size
		}
	}
	if n > 0 {
		return fmt.Errorf("%w: %d blobs (%d bytes) of the images are not in the cache (the first: %s)", pullthrough.ErrNotCached, n, size, first)
	}
	return nil
}

// setStatusDigests writes each package's status.digests in the form the
// seed's tools read (the crpe phone app and octohelm/kubepkg): every blob of
// the archive that the package's images hold, in walk order — each image's
// top manifest or index first, typed "manifest" and tagged with the
// reference's tag, then each chosen child manifest (with its platform)
// followed by its config and layers, typed "blob" — each named by its
// repository and sized. An importer that reads kubepkg.json first and types
// each blob entry by status.digests (kubepkg's KubeTgzRange/ImportDigest)
// imports a crpe archive this way. Other status fields are kept.
func setStatusDigests(pkgs []*kubepkg.KubePkg, images *imageSet, blobs []archive.Blob) {
	inArchive := map[digest.Digest]bool{}
	for _, b := range blobs {
		inArchive[b.Desc.Digest] = true
	}
	for _, p := range pkgs {
		var refs []string
		for ref := range p.Spec.Images {
			refs = append(refs, ref)
		}
		sort.Strings(refs)
		var entries []kubepkg.DigestMeta
		listed := map[digest.Digest]bool{}
		for _, ref := range refs {
			im := images.byRef[ref]
			if im == nil {
				continue
			}
			// the image, then what is carried with it (a tagged artifact
			// with its tag, as the seed's importers tag what they import)
			for _, x := range append([]*image{im}, im.artifacts...) {
				tag := ""
				if r, err := oci.ParseReference(x.ref); err == nil {
					tag = r.Tag
				}
				for i, b := range x.blobs {
					d := b.Desc.Digest
					if !inArchive[d] || listed[d] {
						continue
					}
					listed[d] = true
					e := kubepkg.DigestMeta{Digest: d, Type: kubepkg.DigestTypeBlob, Name: x.repo, Size: b.Desc.Size}
					if b.Kind == oci.KindManifest {
						e.Type = kubepkg.DigestTypeManifest
					}
					if i == 0 {
						e.Tag = tag
					}
					if b.Desc.Platform != nil && i > 0 {
						e.Platform = oci.FormatPlatform(*b.Desc.Platform)
					}
					entries = append(entries, e)
				}
			}
		}
		p.SetStatusDigests(entries)
	}
}

// AddManifestImages adds to each package's spec.images the images its
// manifests' pod templates use that it does not list, telling warn (when
// set) of each, as Export does before it resolves anything.
func AddManifestImages(pkgs []*kubepkg.KubePkg, warn func(msg string)) {
	for _, p := range pkgs {
		for _, a := range p.AddManifestImages() {
			if warn != nil {
				warn(fmt.Sprintf("package %s: image %s is used by the manifests but not listed in spec.images; added", p.Metadata.Name, a))
			}
		}
	}
}

// imageSet are the images of an export, in order and by reference.
type imageSet struct {
	list  []*image
	byRef map[string]*image
}

// gather lists the images of pkgs (with the images of their pod
// templates), each with the platforms its packages want and its pinned
// digest, normalizing spec.images and setting each package's platforms.
func gather(pkgs []*kubepkg.KubePkg, o Options) (*imageSet, error) {
	set := &imageSet{byRef: map[string]*image{}}
	AddManifestImages(pkgs, o.Warn)
	for _, p := range pkgs {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("package %s: %w", p.Metadata.Name, err)
		}
		plats := o.Platforms
		if len(plats) == 0 {
			var err error
			if plats, err = PackagePlatforms(p); err != nil {
				return nil, fmt.Errorf("package %s: %w", p.Metadata.Name, err)
			}
		}
		pinned := map[string]string{}
		for _, key := range p.ImageRefs() {
			val := p.Spec.Images[key]
			ref, err := oci.NormalizeReference(key)
			if err != nil {
				return nil, fmt.Errorf("package %s: spec.images[%q]: %w", p.Metadata.Name, key, err)
			}
			if old, ok := pinned[ref]; ok && old != val && val != "" && old != "" {
				return nil, fmt.Errorf("package %s: spec.images lists %s twice with different digests", p.Metadata.Name, ref)
			}
			if pinned[ref] == "" {
				pinned[ref] = val
			}
			im := set.byRef[ref]
			if im == nil {
				im = &image{ref: ref}
				set.byRef[ref] = im
				set.list = append(set.list, im)
			}
			im.platforms = appendPlatforms(im.platforms, plats)
		}
		newImages := map[string]string{}
		for ref, val := range pinned {
			newImages[ref] = val
			if val != "" {
				if cur := set.byRef[ref].top.Digest; cur != "" && string(cur) != val {
					return nil, fmt.Errorf("package %s: spec.images pins %s to %s, another package pins it to %s", p.Metadata.Name, ref, val, cur)
				}
				set.byRef[ref].top.Digest = digest.Digest(val)
			}
		}
		p.Spec.Images = newImages
		if p.Metadata.Annotations == nil {
			p.Metadata.Annotations = map[string]string{}
		}
		p.Metadata.Annotations[kubepkg.AnnotationPlatform] = oci.JoinPlatforms(plats)
	}

	return set, nil
}

// resolve resolves and walks every image for its platforms (export.Walk),
// handing each image's blobs to fetch as soon as they are known.
func resolve(ctx context.Context, cache *pullthrough.Cache, images *imageSet, fetch *fetcher, parallel int, sel Artifacts, warn func(string)) error {
	artifactSrc := ArtifactSource(CacheManifests(cache), warn)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, im := range images.list {
		g.Go(func() error {
			wk, err := Walk(gctx, im.ref, im.top.Digest, im.platforms, CacheManifests(cache), CacheConfigPlatform(cache))
			if err != nil {
				return err
			}
			im.repo, im.top, im.blobs, im.exported = wk.Repo, wk.Top, wk.Blobs, wk.Platforms
			fetch.start(im.repo, im.ref, im.blobs)
			// what is carried with it: the artifacts of its manifests
			var subjects []digest.Digest
			for _, b := range wk.Blobs {
				if b.Kind == oci.KindManifest {
					subjects = append(subjects, b.Desc.Digest)
				}
			}
			arts, err := WalkArtifacts(gctx, im.repo, subjects, artifactSrc, CacheReferrers(cache), sel)
			if err != nil {
				return fmt.Errorf("image %s: %w", im.ref, err)
			}
			for _, a := range arts {
				art := &image{ref: a.Ref, repo: a.Repo, top: a.Top, blobs: a.Blobs, subject: a.Subject, artifactType: a.ArtifactType}
				im.artifacts = append(im.artifacts, art)
				fetch.start(art.repo, im.ref, art.blobs)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// the artifacts go into the archive as images do, once each
	for _, im := range append([]*image(nil), images.list...) {
		kept := im.artifacts[:0]
		for _, a := range im.artifacts {
			if prev := images.byRef[a.ref]; prev != nil {
				if prev.top.Digest != a.top.Digest {
					return fmt.Errorf("artifact %s changed while the export looked for it (%s, then %s)", a.ref, prev.top.Digest, a.top.Digest)
				}
				kept = append(kept, prev)
				continue
			}
			images.byRef[a.ref] = a
			images.list = append(images.list, a)
			kept = append(kept, a)
		}
		im.artifacts = kept
	}
	sort.Slice(images.list, func(i, j int) bool { return images.list[i].ref < images.list[j].ref })
	return nil
}

// source is where the archive writer reads a blob: the repository it is
// fetched from through the cache.
type source struct {
	blob archive.Blob
	repo string
}

// plan lists the blobs the archive holds (each once; layers of
// o.Exclude and non-distributable layers not at hand left out) and what
// each image holds.
func plan(ctx context.Context, store cas.Store, images []*image, o Options) (*Result, []archive.Blob, map[digest.Digest]*source) {
	res := &Result{}
	sources := map[digest.Digest]*source{}
	var order []digest.Digest
	for _, im := range images {
		for _, b := range im.blobs {
			if _, ok := sources[b.Desc.Digest]; !ok {
				sources[b.Desc.Digest] = &source{blob: b, repo: im.repo}
				order = append(order, b.Desc.Digest)
			}
		}
	}
	for _, im := range images {
		if im.subject != "" {
			ar := ArtifactResult{Ref: im.ref, Digest: string(im.top.Digest), Subject: string(im.subject), ArtifactType: im.artifactType, Kind: oci.ArtifactKind(im.artifactType)}
			for _, b := range im.blobs {
				ar.Bytes += b.Desc.Size
			}
			res.Artifacts = append(res.Artifacts, ar)
			continue
		}
		ir := ImageResult{Ref: im.ref, Digest: string(im.top.Digest), MediaType: im.top.MediaType, Blobs: len(im.blobs)}
		for _, b := range im.blobs {
			ir.Bytes += b.Desc.Size
		}
		for p := range im.exported {
			ir.Platforms = append(ir.Platforms, p)
		}
		sort.Strings(ir.Platforms)
		res.Images = append(res.Images, ir)
	}
	var blobs []archive.Blob
	for _, d := range order {
		src := sources[d]
		// only layers are left out: manifests and configs are small and let
		// the agent check every image
		if o.Exclude[d] && src.blob.Kind == oci.KindLayer {
			res.Excluded++
			continue
		}
		if len(src.blob.Desc.URLs) > 0 {
			if _, err := store.Stat(ctx, d); err != nil {
				continue // non-distributable and not at hand: left out, as allowed
			}
		}
		blobs = append(blobs, src.blob)
		res.Blobs++
		res.Bytes += src.blob.Desc.Size
	}
	return res, blobs, sources
}

// write writes the archive while the blobs are fetched: the writer follows
// each fetch as its bytes arrive instead of waiting for it to be committed.
func write(ctx context.Context, w io.Writer, cache *pullthrough.Cache, store cas.Store, pkgJSON []byte, images []*image, blobs []archive.Blob, sources map[digest.Digest]*source, o Options) error {
	var archImages []archive.Image
	for _, im := range images {
		archImages = append(archImages, archive.Image{Ref: im.ref, Desc: im.top, Subject: im.subject})
	}
	open := func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		src := sources[d]
		if src == nil { // a non-distributable blob at hand
			rc, _, err := store.Open(ctx, d)
			return rc, err
		}
		return cache.Open(ctx, src.repo, d, src.blob.Desc.Size)
	}
	var mu sync.Mutex
	last := map[digest.Digest]int64{}
	aopts := archive.Options{ModTime: o.ModTime, Absent: map[digest.Digest]bool{},
		// every blob comes from the content-addressed cache, which verified
		// it on the way in, or from a fetch that fails the read unless it
		// verifies
		Verified: func(digest.Digest) bool { return true },
	}
	for d := range o.Exclude {
		aopts.Absent[d] = true
	}
	if o.Progress != nil {
		aopts.Progress = func(d digest.Digest, n int64) {
			mu.Lock()
			delta := n - last[d]
			last[d] = n
			mu.Unlock()
			o.Progress.Written(delta)
		}
	}
	if o.SignPackage != nil {
		sig, err := o.SignPackage(pkgJSON)
		if err != nil {
			return fmt.Errorf("signing the package: %w", err)
		}
		aopts.PackageSignature = sig
	}
	return archive.Write(ctx, w, pkgJSON, archImages, blobs, open, aopts)
}

func appendPlatforms(list, add []ocispec.Platform) []ocispec.Platform {
	for _, a := range add {
		found := false
		for _, l := range list {
			if oci.FormatPlatform(l) == oci.FormatPlatform(a) {
				found = true
			}
		}
		if !found {
			list = append(list, a)
		}
	}
	return list
}
