// Package inspect reads a kubepkg.tgz in one verifying pass and reports what
// it holds (packages, images with digests and platforms, blobs) and, with
// closure checking, whether every image is complete for the platforms the
// package names. The closure check is shared with the agent's import, which
// also counts blobs already in its store.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/sigverify"
)

// Report is what inspect found.
type Report struct {
	Packages []Package `json:"packages"`
	Images   []Image   `json:"images"`
	// Artifacts are the signatures, attestations and SBOMs carried with
	// the images (archive.AnnotationSubject).
	Artifacts []Artifact `json:"artifacts,omitempty"`
	Blobs     int        `json:"blobs"`
	Bytes     int64      `json:"bytes"`
	Partial   bool       `json:"partial,omitempty"`
	// Package signature (kubepkg.json.sig) and the images' signatures, as
	// checked with the keys given (Options.Keys).
	PackageSignature *PackageSignature   `json:"packageSignature,omitempty"`
	Signatures       []kubepkg.Signature `json:"signatures,omitempty"`
	// Absent lists blobs a partial archive leaves out on purpose.
	Absent   []string `json:"absent,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// Package is one package of the archive.
type Package struct {
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	Platforms []string `json:"platforms"`
}

// Image is one image of index.json.
type Image struct {
	Ref       string   `json:"ref"`
	Digest    string   `json:"digest"`
	MediaType string   `json:"mediaType"`
	Platforms []string `json:"platforms"`
}

// PackageSignature is what inspect found of kubepkg.json.sig.
type PackageSignature struct {
	Signed   bool   `json:"signed"`
	Verified bool   `json:"verified"`
	Key      string `json:"key,omitempty"`
	KeyName  string `json:"keyName,omitempty"`
}

// Options tune Read.
type Options struct {
	// Verify checks every image's closure and spec.images against
	// index.json.
	Verify bool
	// Keys, when set, check the package's signature (kubepkg.json.sig: a
	// problem when it is missing or verifies with none of them) and report
	// the images' cosign signatures (Report.Signatures: what an agent's
	// policy makes of them is its own business).
	Keys []*sigverify.Key
}

// Artifact is one artifact carried with an image.
type Artifact struct {
	Ref          string `json:"ref"`
	Digest       string `json:"digest"`
	Subject      string `json:"subject"`
	ArtifactType string `json:"artifactType"`
	// Kind is signature, attestation, sbom, or the type.
	Kind string `json:"kind"`
}

type collector struct {
	partial   bool
	pkgs      []*kubepkg.KubePkg
	manifests map[digest.Digest][]byte
	present   map[digest.Digest]bool
	// platforms are the platforms image configs name (read as they stream,
	// one at a time, each at most oci.MaxConfigSize; only the platform is kept)
	platforms map[digest.Digest]ocispec.Platform
}

func (c *collector) Package(data []byte) error {
	pkgs, err := kubepkg.Parse(data)
	if err != nil {
		return &archive.EntryError{Entry: archive.PackageEntry, Reason: err.Error()}
	}
	c.pkgs, c.partial = pkgs, kubepkg.Partial(pkgs)
	return nil
}

func (c *collector) Index(ocispec.Index) error { return nil }

func (c *collector) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if mb, ok := r.(*archive.ManifestBlob); ok && kind == oci.KindManifest {
		c.manifests[desc.Digest] = mb.Body // as the reader verified it: no copy
	} else if kind == oci.KindConfig && desc.Size <= oci.MaxConfigSize {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		c.platforms[desc.Digest] = oci.ConfigPlatform(b)
	} else if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	c.present[desc.Digest] = true
	return nil
}

// Read inspects the archive in r (verifying every blob's digest as it
// streams) and, with verify, checks every image's closure.
func Read(ctx context.Context, r io.Reader, o Options) (*Report, error) {
	verify := o.Verify
	c := &collector{manifests: map[digest.Digest][]byte{}, present: map[digest.Digest]bool{}, platforms: map[digest.Digest]ocispec.Platform{}}
	var h archive.Handler = c
	var sigs *sigverify.Collector
	if len(o.Keys) > 0 {
		sigs = sigverify.NewCollector(c)
		h = sigs
	}
	// a partial archive leaves out blobs the receiver holds: the reader lets
	// them be absent, the closure check below lists them
	sum, err := archive.Read(ctx, r, h, archive.Limits{Have: func(digest.Digest) bool { return c.partial }})
	if err != nil {
		return nil, err
	}
	rep := &Report{Blobs: len(sum.Blobs), Bytes: sum.Bytes, Partial: c.partial}
	if sigs != nil {
		ps := &PackageSignature{Signed: sum.PackageSignature != nil}
		var why []string
		for _, k := range o.Keys {
			if !ps.Signed {
				break
			}
			err := k.VerifyBlob(sum.PackageSignature, sum.PackageRaw)
			if err == nil {
				ps.Verified, ps.Key, ps.KeyName = true, k.Fingerprint, k.Name
				break
			}
			why = append(why, err.Error())
		}
		rep.PackageSignature = ps
		switch {
		case !ps.Signed:
			rep.Problems = append(rep.Problems, "the package is not signed (no "+archive.PackageSignatureEntry+")")
		case !ps.Verified:
			rep.Problems = append(rep.Problems, "the package's signature ("+archive.PackageSignatureEntry+") "+strings.Join(why, "; "))
		}
		// the images' signatures, reported (an agent's policy decides)
		p := sigverify.KeysPolicy(o.Keys)
		p.Rules[0].Required = false
		rep.Signatures = sigs.Check(p, time.Now())
	}
	var plats []ocispec.Platform
	refs := map[string]bool{}
	for _, p := range c.pkgs {
		ps, _ := p.Platforms() // validated when the package was read
		plats = append(plats, ps...)
		var names []string
		for _, x := range ps {
			names = append(names, oci.FormatPlatform(x))
		}
		rep.Packages = append(rep.Packages, Package{Namespace: p.Metadata.Namespace, Name: p.Metadata.Name, Version: p.Spec.Version, Platforms: names})
		if verify {
			if err := p.Validate(); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("package %s: %v", p.Metadata.Name, err))
			}
		}
		for ref, d := range p.Spec.Images {
			refs[ref] = true
			if verify && !oci.IsDigest(d) {
				rep.Problems = append(rep.Problems, fmt.Sprintf("package %s: spec.images[%q] is not pinned to a digest", p.Metadata.Name, ref))
			}
		}
	}
	seen := map[string]bool{}
	subjects := Subjects{}
	var artifacts []ocispec.Descriptor
	for _, m := range sum.Index.Manifests {
		ref := m.Annotations[archive.AnnotationImageName]
		if ref == "" {
			ref = m.Annotations[archive.AnnotationRefName]
		}
		if _, ok := archive.ArtifactOf(m); ok {
			artifacts = append(artifacts, m)
			continue
		}
		seen[ref] = true
		if verify {
			for _, p := range c.pkgs {
				if d, ok := p.Spec.Images[ref]; ok && d != string(m.Digest) {
					rep.Problems = append(rep.Problems, fmt.Sprintf("package %s: spec.images[%q] is %s, index.json says %s", p.Metadata.Name, ref, d, m.Digest))
				}
			}
		}
		im := Image{Ref: ref, Digest: string(m.Digest), MediaType: m.MediaType}
		cl := Closure(ctx, m, plats, func(d digest.Digest) ([]byte, bool) { b, ok := c.manifests[d]; return b, ok },
			func(d digest.Digest) bool { return c.present[d] })
		im.Platforms = cl.Platforms
		if cl.Config != "" {
			// a single image: its platform is its config's, named as export
			// names it ("unknown" when the config names none)
			im.Platforms = []string{oci.FormatPlatform(c.platforms[cl.Config])}
		}
		rep.Images = append(rep.Images, im)
		if r, err := oci.ParseReference(ref); err == nil {
			subjects.Add(r.Repository, cl)
		}
		if verify {
			if rep.Partial {
				rep.Absent = append(rep.Absent, cl.Missing...)
			} else {
				for _, d := range cl.Missing {
					rep.Problems = append(rep.Problems, fmt.Sprintf("image %s: blob %s is missing", ref, d))
				}
			}
			rep.Problems = append(rep.Problems, prefix("image "+ref+": ", cl.Problems)...)
		}
	}
	for _, m := range artifacts {
		ref := m.Annotations[archive.AnnotationRefName]
		subject, _ := archive.ArtifactOf(m)
		tag := ""
		var pm *oci.Manifest
		if r, err := oci.ParseReference(ref); err == nil {
			tag = r.Tag
			if verify {
				if err := subjects.Check(ref, r.Repository, subject); err != nil {
					rep.Problems = append(rep.Problems, err.Error())
				}
			}
		}
		if b, ok := c.manifests[m.Digest]; ok {
			pm, _ = oci.ParseManifest(m.MediaType, b)
		}
		at := oci.ArtifactType(tag, pm)
		rep.Artifacts = append(rep.Artifacts, Artifact{Ref: ref, Digest: string(m.Digest), Subject: string(subject), ArtifactType: at, Kind: oci.ArtifactKind(at)})
		if verify {
			cl := Closure(ctx, m, nil, func(d digest.Digest) ([]byte, bool) { b, ok := c.manifests[d]; return b, ok },
				func(d digest.Digest) bool { return c.present[d] })
			for _, d := range cl.Missing {
				if !rep.Partial {
					rep.Problems = append(rep.Problems, fmt.Sprintf("artifact %s: blob %s is missing", ref, d))
				}
			}
			rep.Problems = append(rep.Problems, prefix("artifact "+ref+": ", cl.Problems)...)
		}
	}
	if verify {
		for ref := range refs {
			if !seen[ref] {
				rep.Problems = append(rep.Problems, fmt.Sprintf("spec.images lists %s, index.json does not", ref))
			}
		}
		for ref := range seen {
			if !refs[ref] {
				rep.Problems = append(rep.Problems, fmt.Sprintf("index.json lists %s, spec.images does not", ref))
			}
		}
	}
	sort.Strings(rep.Absent)
	sort.Strings(rep.Problems)
	return rep, nil
}

func prefix(p string, list []string) []string {
	var out []string
	for _, s := range list {
		out = append(out, p+s)
	}
	return out
}

// ClosureResult is what an image's closure check found.
type ClosureResult struct {
	// Platforms are the platforms whose manifests are at hand.
	Platforms []string
	// Missing are blobs the chosen platforms need that are not at hand.
	Missing []string
	// Problems are other defects (unreadable manifests, no matching child).
	Problems []string
	// Config is the config of a single image (top is an image manifest):
	// its platform is there, not in an index.
	Config digest.Digest
	// Manifests are the manifests walked and at hand (top, the chosen
	// children): what an artifact carried with the image may be about.
	Manifests []digest.Digest
}

// RefPlatforms maps each image reference of pkgs to the platforms its
// packages carry it for (octohelm.tech/platform; nil without the
// annotation: every platform of its index), as an importer checks each
// image complete.
func RefPlatforms(pkgs []*kubepkg.KubePkg) (map[string][]ocispec.Platform, error) {
	plats := map[string][]ocispec.Platform{}
	for _, p := range pkgs {
		ps, err := p.Platforms()
		if err != nil {
			return nil, err
		}
		for ref := range p.Spec.Images {
			plats[ref] = append(plats[ref], ps...)
		}
	}
	return plats, nil
}

// MediaTypes maps each manifest index.json lists to its media type: what
// the index a seed layout's reader made learns once the manifest arrives.
func MediaTypes(idx ocispec.Index) map[digest.Digest]string {
	mts := make(map[digest.Digest]string, len(idx.Manifests))
	for _, m := range idx.Manifests {
		if m.MediaType != "" {
			mts[m.Digest] = m.MediaType
		}
	}
	return mts
}

// Subjects are, by repository, the manifests the archive's images hold:
// what the artifacts carried with them (archive.AnnotationSubject) may be
// about.
type Subjects map[string]map[digest.Digest]bool

// Add records the manifests of an image of repository repo.
func (s Subjects) Add(repo string, cl ClosureResult) {
	if s[repo] == nil {
		s[repo] = map[digest.Digest]bool{}
	}
	for _, d := range cl.Manifests {
		s[repo][d] = true
	}
}

// Check tells whether artifact ref (of repository repo) is about a manifest
// an image of its repository holds.
func (s Subjects) Check(ref, repo string, subject digest.Digest) error {
	if !s[repo][subject] {
		return fmt.Errorf("artifact %s is about %s, which no image of %s in the archive holds", ref, subject, repo)
	}
	return nil
}

// errAbsent is what Closure's fetch says of a manifest not at hand.
var errAbsent = errors.New("not at hand")

// Closure checks that top (an index or a manifest) is complete for plats
// (nil: every platform), walking it with oci.Walk: every matching child
// manifest, its config and its layers (except non-distributable ones) are at
// hand; a subject may be absent. manifest returns a manifest's bytes when at
// hand; has tells whether any blob is.
func Closure(ctx context.Context, top ocispec.Descriptor, plats []ocispec.Platform, manifest func(digest.Digest) ([]byte, bool), has func(digest.Digest) bool) ClosureResult {
	var res ClosureResult
	missing := map[string]bool{}
	platSeen := map[string]bool{}
	fetch := func(_ context.Context, d ocispec.Descriptor) ([]byte, error) {
		if b, ok := manifest(d.Digest); ok {
			return b, nil
		}
		return nil, errAbsent
	}
	err := oci.Walk(ctx, top, fetch, func(_ context.Context, n *oci.Node) error {
		switch {
		case n.Kind != oci.KindManifest:
			if len(n.Desc.URLs) == 0 && !has(n.Desc.Digest) {
				missing[string(n.Desc.Digest)] = true
			}
		case errors.Is(n.Err, errAbsent):
			if !n.Subject {
				missing[string(n.Desc.Digest)] = true
			}
		case n.Err != nil:
			res.Problems = append(res.Problems, n.Err.Error())
		case n.Depth == 0 && !n.Manifest.IsIndex():
			res.Manifests = append(res.Manifests, n.Desc.Digest)
			if n.Manifest.Config != nil {
				res.Config = n.Manifest.Config.Digest
			}
		default:
			res.Manifests = append(res.Manifests, n.Desc.Digest)
			if n.Desc.Platform != nil {
				platSeen[oci.FormatPlatform(*n.Desc.Platform)] = true
			}
		}
		return nil
	}, oci.WalkOptions{Platforms: plats})
	if err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	for p := range platSeen {
		res.Platforms = append(res.Platforms, p)
	}
	for d := range missing {
		res.Missing = append(res.Missing, d)
	}
	sort.Strings(res.Platforms)
	sort.Strings(res.Missing)
	return res
}
