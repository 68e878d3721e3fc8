package export

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
)

// ManifestSource gives manifest ref (a tag or a digest) of repository repo
// with its descriptor (media type, digest, size): through the pull-through
// cache (CacheManifests), or from the cache alone.
type ManifestSource func(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error)

// CacheManifests reads manifests through the pull-through cache.
func CacheManifests(cache *pullthrough.Cache) ManifestSource {
	return func(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
		m, err := cache.Manifest(ctx, repo, ref)
		if err != nil {
			return ocispec.Descriptor{}, nil, err
		}
		return ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}, m.Body, nil
	}
}

// ConfigPlatform reads the platform an image config names; the zero
// platform means unknown (the image is then taken as it is).
type ConfigPlatform func(ctx context.Context, repo string, desc ocispec.Descriptor) (ocispec.Platform, error)

// Walked is an image resolved and walked for a set of platforms.
type Walked struct {
	Ref  string             // normalized reference
	Repo string             // full repository name (docker.io/library/nginx)
	Top  ocispec.Descriptor // what the reference resolved to
	// Blobs are the top manifest, then, as the walk (oci.Walk) meets them,
	// the chosen children and each image manifest's config and layers
	// (layers with URLs included: non-distributable, the caller decides),
	// each once.
	Blobs []archive.Blob
	// Platforms are the platforms found ("unknown" for an image whose
	// config names none).
	Platforms map[string]bool
}

// Walk resolves ref (to pinned when it is set, checking that it is what
// the reference names) and lists what the platforms plats need, with
// oci.Walk: an index keeps its children of those platforms (an error names
// the platforms it has when none match); a single image is taken when its
// config's platform is among plats or unknown, and is an error otherwise.
// config may be nil (platforms of single images are then not checked).
// Subjects are not followed: an image is exported with what it holds, not
// with what it refers to. Export, and the pocket's sync and readiness, walk
// images this way.
func Walk(ctx context.Context, ref string, pinned digest.Digest, plats []ocispec.Platform, src ManifestSource, config ConfigPlatform) (*Walked, error) {
	r, err := oci.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	w := &Walked{Ref: ref, Repo: r.Repository, Platforms: map[string]bool{}}
	target := r.Identifier()
	if pinned != "" {
		if r.Digest != "" && r.Digest != pinned {
			return nil, fmt.Errorf("image %s: spec.images pins it to %s, the reference names %s", ref, pinned, r.Digest)
		}
		target = string(pinned)
	}
	top, body, err := src(ctx, w.Repo, target)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if pinned != "" && top.Digest != pinned {
		return nil, fmt.Errorf("image %s: resolved to %s, expected %s", ref, top.Digest, pinned)
	}
	fetch := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		if d.Digest == top.Digest {
			return body, nil
		}
		_, b, err := src(ctx, w.Repo, string(d.Digest))
		return b, err
	}
	single := false
	var plat ocispec.Platform // a single image's, from its config
	err = oci.Walk(ctx, top, fetch, func(ctx context.Context, n *oci.Node) error {
		if n.Err != nil {
			return n.Err
		}
		desc := ocispec.Descriptor{MediaType: n.Desc.MediaType, Digest: n.Desc.Digest, Size: n.Desc.Size, URLs: n.Desc.URLs}
		if n.Manifest != nil {
			// a child manifest keeps the platform its index gives it
			desc.MediaType, desc.Platform = n.Manifest.MediaType, n.Desc.Platform
		}
		w.Blobs = append(w.Blobs, archive.Blob{Desc: desc, Kind: n.Kind})
		switch {
		case n.Depth == 0:
			w.Top = desc
			single = !n.Manifest.IsIndex()
		case n.Manifest != nil && !n.Manifest.IsIndex() && n.Desc.Platform != nil:
			w.Platforms[oci.FormatPlatform(*n.Desc.Platform)] = true
		case n.Kind == oci.KindConfig && single && n.Depth == 1 && config != nil:
			var err error
			if plat, err = config(ctx, w.Repo, n.Desc); err != nil {
				return fmt.Errorf("config %s: %w", n.Desc.Digest, err)
			}
		}
		return nil
	}, oci.WalkOptions{Platforms: plats, NoSubject: true})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if !single {
		return w, nil
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
		return oci.ConfigPlatform(body), nil
	}
}
