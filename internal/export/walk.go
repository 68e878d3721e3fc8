package export

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

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
	// Subject is set for an artifact carried with an image (WalkArtifacts):
	// the manifest it is about; ArtifactType is its type
	// (oci.ArtifactType).
	Subject      digest.Digest
	ArtifactType string
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
	fetch := fetchFrom(src, w.Repo, top, body)
	single := false
	var plat ocispec.Platform // a single image's, from its config
	err = oci.Walk(ctx, top, fetch, func(ctx context.Context, n *oci.Node) error {
		if n.Err != nil {
			return n.Err
		}
		desc := nodeDescriptor(n)
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

// fetchFrom is the fetch of oci.Walk from src in repo, the top manifest
// (body) already at hand.
func fetchFrom(src ManifestSource, repo string, top ocispec.Descriptor, body []byte) func(context.Context, ocispec.Descriptor) ([]byte, error) {
	return func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		if d.Digest == top.Digest {
			return body, nil
		}
		_, b, err := src(ctx, repo, string(d.Digest))
		return b, err
	}
}

// nodeDescriptor is how the archive describes a node of the walk: a child
// manifest keeps the platform its index gives it, with its own media type.
func nodeDescriptor(n *oci.Node) ocispec.Descriptor {
	desc := ocispec.Descriptor{MediaType: n.Desc.MediaType, Digest: n.Desc.Digest, Size: n.Desc.Size, URLs: n.Desc.URLs}
	if n.Manifest != nil {
		desc.MediaType, desc.Platform = n.Manifest.MediaType, n.Desc.Platform
	}
	return desc
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

// ReferrersSource lists the referrers (OCI 1.1) of manifest d of
// repository repo.
type ReferrersSource func(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error)

// CacheReferrers lists referrers through the pull-through cache.
func CacheReferrers(cache *pullthrough.Cache) ReferrersSource {
	return cache.Referrers
}

// Artifacts choose what an export carries with each image besides its own
// graph: its signatures, attestations and SBOMs.
type Artifacts struct {
	// None carries none.
	None bool
	// Types keeps only the artifacts of these types or kinds
	// (oci.MatchArtifactType: "signature", "attestation", "sbom", or a full
	// artifact type); empty keeps all.
	Types []string
}

// ParseArtifacts reads the artifacts to carry as the --artifacts flag and
// the pocket's export request give them: "all" (or ""), "none", or a
// comma-separated list of kinds (signature, attestation, sbom; sig, att) or
// artifact types.
func ParseArtifacts(s string) (Artifacts, error) {
	switch strings.TrimSpace(s) {
	case "", "all":
		return Artifacts{}, nil
	case "none":
		return Artifacts{None: true}, nil
	}
	var a Artifacts
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
		case t == "sig", t == "signature", t == "att", t == "attestation", t == "sbom", strings.Contains(t, "/"):
			a.Types = append(a.Types, t)
		default:
			return a, fmt.Errorf("artifacts: %q is neither all, none, a kind (signature, attestation, sbom) nor a media type", t)
		}
	}
	return a, nil
}

// String is the value ParseArtifacts reads back.
func (a Artifacts) String() string {
	switch {
	case a.None:
		return "none"
	case len(a.Types) == 0:
		return "all"
	}
	return strings.Join(a.Types, ",")
}

// maxArtifacts bounds the artifacts carried for one manifest.
const maxArtifacts = 64

// WalkArtifacts finds what is carried with the manifests subjects of
// repository repo: their OCI 1.1 referrers (refs) and the artifacts of
// cosign's tag scheme (sha256-<hex>.sig, .att, .sbom, read through src),
// keeps those sel chooses, and walks each whole (an artifact has no
// platform: all of it goes). A tag the upstream lacks is no artifact; any
// other failure is an error: an export does not leave out a signature it
// could not look for. Each artifact is named as index.json names it:
// REPO:TAG for a tag, REPO@DIGEST for an untagged referrer.
func WalkArtifacts(ctx context.Context, repo string, subjects []digest.Digest, src ManifestSource, refs ReferrersSource, sel Artifacts) ([]*Walked, error) {
	if sel.None {
		return nil, nil
	}
	var out []*Walked
	seen := map[digest.Digest]bool{}
	take := func(ref string, subject digest.Digest, top ocispec.Descriptor, body []byte, tag string) error {
		if seen[top.Digest] {
			return nil
		}
		pm, err := oci.ParseManifest(top.MediaType, body)
		if err != nil {
			return fmt.Errorf("artifact %s: %w", ref, err)
		}
		at := oci.ArtifactType(tag, pm)
		if !oci.MatchArtifactType(at, sel.Types) {
			return nil
		}
		seen[top.Digest] = true
		w := &Walked{Ref: ref, Repo: repo, Subject: subject, ArtifactType: at, Platforms: map[string]bool{}}
		err = oci.Walk(ctx, top, fetchFrom(src, repo, top, body), func(ctx context.Context, n *oci.Node) error {
			if n.Err != nil {
				return n.Err
			}
			desc := nodeDescriptor(n)
			if n.Depth == 0 {
				desc.ArtifactType = pm.ArtifactType
				w.Top = desc
			}
			w.Blobs = append(w.Blobs, archive.Blob{Desc: desc, Kind: n.Kind})
			return nil
		}, oci.WalkOptions{NoSubject: true})
		if err != nil {
			return fmt.Errorf("artifact %s: %w", ref, err)
		}
		out = append(out, w)
		return nil
	}
	// the lookups of every subject at once (a round trip each, most of
	// them answered 404), then taken in a fixed order
	type probe struct {
		list []ocispec.Descriptor // the referrers
		tags [3]struct {
			top   ocispec.Descriptor
			body  []byte
			found bool
		}
	}
	probes := make([]probe, len(subjects))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, subject := range subjects {
		g.Go(func() error {
			list, err := refs(gctx, repo, subject)
			if err != nil {
				return fmt.Errorf("referrers of %s@%s: %w", repo, subject, err)
			}
			probes[i].list = list
			return nil
		})
		for j, suffix := range oci.CosignSuffixes {
			g.Go(func() error {
				tag := oci.CosignTag(subject, suffix)
				top, body, err := src(gctx, repo, tag)
				if pullthrough.IsNotFound(err) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("artifact %s:%s: %w", repo, tag, err)
				}
				probes[i].tags[j].top, probes[i].tags[j].body, probes[i].tags[j].found = top, body, true
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, subject := range subjects {
		list := probes[i].list
		if len(list) > maxArtifacts {
			return nil, fmt.Errorf("referrers of %s@%s: %d, more than the %d an export carries", repo, subject, len(list), maxArtifacts)
		}
		for _, r := range list {
			if r.ArtifactType != "" && r.ArtifactType != ocispec.MediaTypeEmptyJSON && !oci.MatchArtifactType(r.ArtifactType, sel.Types) {
				continue // told by the list: not fetched (the empty type, a config's, tells nothing)
			}
			if _, err := oci.ParseDigest(string(r.Digest)); err != nil {
				return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject, err)
			}
			top, body, err := src(ctx, repo, string(r.Digest))
			if err != nil {
				return nil, fmt.Errorf("referrer %s@%s: %w", repo, r.Digest, err)
			}
			if err := take(repo+"@"+string(top.Digest), subject, top, body, ""); err != nil {
				return nil, err
			}
		}
		for j, suffix := range oci.CosignSuffixes {
			t := probes[i].tags[j]
			if !t.found {
				continue
			}
			tag := oci.CosignTag(subject, suffix)
			if err := take(repo+":"+tag, subject, t.top, t.body, tag); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
