package export

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
)

// ManifestSource gives manifest ref (a tag or a digest) of repository repo:
// through the pull-through cache (Cache.Manifest), or from the cache alone.
type ManifestSource func(ctx context.Context, repo, ref string) (*pullthrough.Manifest, error)

// ConfigPlatform reads the platform an image config names; the zero
// platform means unknown (the image is then taken as it is).
type ConfigPlatform func(ctx context.Context, repo string, desc ocispec.Descriptor) (ocispec.Platform, error)

// Walked is an image resolved and walked for a set of platforms.
type Walked struct {
	Ref  string             // normalized reference
	Repo string             // full repository name (docker.io/library/nginx)
	Top  ocispec.Descriptor // what the reference resolved to
	// Blobs are the top manifest, then, as the walk meets them, the chosen
	// children and each image manifest's config and layers (layers with
	// URLs included: non-distributable, the caller decides).
	Blobs []archive.Blob
	// Platforms are the platforms found ("unknown" for an image whose
	// config names none).
	Platforms map[string]bool
}

// Walk resolves ref (to pinned when it is set, checking that it is what
// the reference names) and lists what the platforms plats need: an index
// keeps its children of those platforms (an error names the platforms it
// has when none match); a single image is taken when its config's platform
// is among plats or unknown, and is an error otherwise. config may be nil
// (platforms of single images are then not checked). Export, and the
// pocket's sync and readiness, walk images this way.
func Walk(ctx context.Context, ref string, pinned digest.Digest, plats []ocispec.Platform, src ManifestSource, config ConfigPlatform) (*Walked, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	w := &Walked{Ref: ref, Repo: oci.RepositoryName(r.Context()), Platforms: map[string]bool{}}
	target := r.Identifier()
	if pinned != "" {
		target = string(pinned)
	} else if d, ok := r.(name.Digest); ok {
		target = d.DigestStr()
	}
	m, err := src(ctx, w.Repo, target)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if pinned != "" && m.Digest != pinned {
		return nil, fmt.Errorf("image %s: resolved to %s, expected %s", ref, m.Digest, pinned)
	}
	pm, err := oci.ParseManifest(m.MediaType, m.Body)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	w.Top = ocispec.Descriptor{MediaType: pm.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}
	w.Blobs = append(w.Blobs, archive.Blob{Desc: w.Top, Kind: archive.KindManifest})
	wk := walker{src: src, config: config, plats: plats, w: w}
	if pm.IsIndex() {
		n, err := wk.index(ctx, pm, 0)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("image %s has no manifest for %s (it has %s)", ref, oci.JoinPlatforms(plats), strings.Join(available(pm), ", "))
		}
		return w, nil
	}
	plat, err := wk.image(ctx, pm)
	if err != nil {
		return nil, err
	}
	if plat.OS == "" && plat.Architecture == "" {
		// the config names no platform (an artifact, or an image built
		// without one): nothing to choose by, taken as it is
		w.Platforms["unknown"] = true
		return w, nil
	}
	if !oci.MatchAnyPlatform(plats, plat) {
		return nil, fmt.Errorf("image %s is %s only, which is not among the chosen platforms %s", ref, oci.FormatPlatform(plat), oci.JoinPlatforms(plats))
	}
	w.Platforms[oci.FormatPlatform(plat)] = true
	return w, nil
}

type walker struct {
	src    ManifestSource
	config ConfigPlatform
	plats  []ocispec.Platform
	w      *Walked
}

func available(pm *oci.Manifest) []string {
	var out []string
	for _, c := range pm.Manifests {
		if c.Platform != nil {
			out = append(out, oci.FormatPlatform(*c.Platform))
		}
	}
	if len(out) == 0 {
		out = []string{"no platforms"}
	}
	return out
}

// index adds the children of an index that match the platforms and
// returns how many image manifests it added.
func (wk *walker) index(ctx context.Context, pm *oci.Manifest, depth int) (int, error) {
	w := wk.w
	if depth > 4 {
		return 0, fmt.Errorf("image %s: indexes nested too deep", w.Ref)
	}
	n := 0
	for _, c := range pm.Manifests {
		isIndex := c.MediaType == ocispec.MediaTypeImageIndex || c.MediaType == oci.MediaTypeDockerManifestList
		if !isIndex && (c.Platform == nil || !oci.MatchAnyPlatform(wk.plats, *c.Platform)) {
			continue
		}
		if isIndex && c.Platform != nil && !oci.MatchAnyPlatform(wk.plats, *c.Platform) {
			continue
		}
		m, err := wk.src(ctx, w.Repo, string(c.Digest))
		if err != nil {
			return 0, fmt.Errorf("image %s: manifest %s: %w", w.Ref, c.Digest, err)
		}
		if int64(len(m.Body)) != c.Size {
			return 0, fmt.Errorf("image %s: manifest %s has %d bytes, the index says %d", w.Ref, c.Digest, len(m.Body), c.Size)
		}
		cpm, err := oci.ParseManifest(m.MediaType, m.Body)
		if err != nil {
			return 0, fmt.Errorf("image %s: manifest %s: %w", w.Ref, c.Digest, err)
		}
		w.Blobs = append(w.Blobs, archive.Blob{Desc: ocispec.Descriptor{MediaType: cpm.MediaType, Digest: c.Digest, Size: c.Size}, Kind: archive.KindManifest})
		if cpm.IsIndex() {
			k, err := wk.index(ctx, cpm, depth+1)
			if err != nil {
				return 0, err
			}
			n += k
			continue
		}
		if _, err := wk.image(ctx, cpm); err != nil {
			return 0, err
		}
		w.Platforms[oci.FormatPlatform(*c.Platform)] = true
		n++
	}
	return n, nil
}

// image adds the config and layers of an image manifest and returns its
// platform, read from the config (zero when unknown or not read).
func (wk *walker) image(ctx context.Context, pm *oci.Manifest) (ocispec.Platform, error) {
	w := wk.w
	var plat ocispec.Platform
	if pm.Config != nil {
		w.Blobs = append(w.Blobs, archive.Blob{Desc: *pm.Config, Kind: archive.KindConfig})
		if wk.config != nil {
			var err error
			if plat, err = wk.config(ctx, w.Repo, *pm.Config); err != nil {
				return plat, fmt.Errorf("image %s: config %s: %w", w.Ref, pm.Config.Digest, err)
			}
		}
	}
	for _, l := range pm.Layers {
		w.Blobs = append(w.Blobs, archive.Blob{Desc: l, Kind: archive.KindLayer})
	}
	return plat, nil
}

// CacheConfigPlatform reads an image config through the cache, as it
// arrives when it is fetched (verified, before its commit: an export waits
// for every commit at the end), so a cold walk does not wait for an fsync
// per image.
func CacheConfigPlatform(cache *pullthrough.Cache) ConfigPlatform {
	return func(ctx context.Context, repo string, desc ocispec.Descriptor) (ocispec.Platform, error) {
		var p ocispec.Platform
		if desc.Size > oci.MaxConfigSize {
			return p, nil // not an image config we could read cheaply; platform unknown
		}
		rc, err := cache.Open(ctx, repo, desc.Digest, desc.Size)
		if err != nil {
			return p, err
		}
		defer rc.Close()
		body, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
		if err != nil {
			return p, err
		}
		if int64(len(body)) != desc.Size {
			return p, fmt.Errorf("%w: %d bytes, the manifest says %d", cas.ErrSizeMismatch, len(body), desc.Size)
		}
		return ParseConfigPlatform(body), nil
	}
}
