package oci

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Kind tells what a blob is to the manifest that refers to it.
type Kind int

const (
	// KindManifest is an image manifest or an index (Docker lists included),
	// or an artifact manifest: anything stored under /manifests/.
	KindManifest Kind = iota
	// KindConfig is an image config (or an artifact's config).
	KindConfig
	// KindLayer is a layer (or an artifact's blob).
	KindLayer
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindManifest:
		return "manifest"
	case KindConfig:
		return "config"
	case KindLayer:
		return "layer"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Child is a descriptor a manifest refers to, with what it is to it.
type Child struct {
	ocispec.Descriptor
	Kind Kind
	// Subject marks the manifest's subject (the image an artifact refers
	// to), which a registry may lack.
	Subject bool
}

// Children lists what m refers to, in document order: an index's
// manifests, an image manifest's config then layers, and last the subject.
// This is the one definition of an image graph's edges in crpe (as
// containerd's ChildrenHandler and oras-go's Successors).
func (m *Manifest) Children() []Child {
	out := make([]Child, 0, len(m.Manifests)+len(m.Layers)+2)
	for _, c := range m.Manifests {
		out = append(out, Child{Descriptor: c, Kind: KindManifest})
	}
	if m.Config != nil {
		out = append(out, Child{Descriptor: *m.Config, Kind: KindConfig})
	}
	for _, l := range m.Layers {
		out = append(out, Child{Descriptor: l, Kind: KindLayer})
	}
	if m.Subject != nil {
		out = append(out, Child{Descriptor: *m.Subject, Kind: KindManifest, Subject: true})
	}
	return out
}

// Walk errors.
var (
	// ErrNoPlatform: a platform filter left an index with no image.
	ErrNoPlatform = errors.New("no manifest for the chosen platforms")
	// ErrTooDeep: indexes nest deeper than MaxDepth.
	ErrTooDeep = errors.New("indexes nested too deep")
	// ErrSkip, returned by a Visit function for a manifest, skips what it
	// refers to (as fs.SkipDir). It is not an error of the walk.
	ErrSkip = errors.New("skip this manifest's children")
)

// Node is what Walk visits: one descriptor of the graph.
type Node struct {
	Desc  ocispec.Descriptor
	Kind  Kind
	Depth int // 0 for the root; the children of a node at depth d are at d+1
	// Subject marks a manifest reached as its parent's subject.
	Subject bool
	// For a manifest (Kind == KindManifest): its bytes and what they parse
	// to, or Err when they could not be had (Fetch failed: the Visit function
	// decides whether that stops the walk; its children are then skipped).
	Body     []byte
	Manifest *Manifest
	Err      error
}

// Fetch returns the bytes of the manifest or index desc names (desc.Size may
// be unknown, 0 or -1, for a root found by tag; its digest may be empty).
type Fetch func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)

// Visit is called once per node, parents before children. Returning ErrSkip
// for a manifest skips its children; any other error stops the walk.
type Visit func(ctx context.Context, n *Node) error

// WalkOptions choose what Walk follows.
type WalkOptions struct {
	// Platforms, when set, keep only the children of an index whose platform
	// is among them (a child index without a platform is followed); an index
	// that keeps no image of them gives ErrNoPlatform. Nil keeps all.
	Platforms []ocispec.Platform
	// NoSubject leaves subjects out (by default a manifest's subject is a
	// child like the others).
	NoSubject bool
	// NoBlobs visits manifests and indexes only, not configs and layers.
	NoBlobs bool
}

// Walk visits the image graph under root: root first, then, depth first in
// document order (Children), what each manifest refers to, each digest once.
// Manifests are read with fetch, checked against their descriptor (size and
// digest, when known) and parsed; configs and layers are visited, not read.
// Indexes nested deeper than MaxDepth stop the walk with ErrTooDeep. Errors
// name the digest they are about.
func Walk(ctx context.Context, root ocispec.Descriptor, fetch Fetch, visit Visit, o WalkOptions) error {
	w := &walker{fetch: fetch, visit: visit, o: o, seen: map[digest.Digest]bool{}}
	_, err := w.node(ctx, &Node{Desc: root, Kind: KindManifest})
	return err
}

type walker struct {
	fetch Fetch
	visit Visit
	o     WalkOptions
	seen  map[digest.Digest]bool
}

// node visits n and what it refers to; images counts the image manifests
// visited (for the platform check of an index).
func (w *walker) node(ctx context.Context, n *Node) (images int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if w.seen[n.Desc.Digest] {
		return 0, nil
	}
	w.seen[n.Desc.Digest] = true
	if n.Kind != KindManifest {
		if err := w.visit(ctx, n); err != nil && !errors.Is(err, ErrSkip) {
			return 0, err
		}
		return 0, nil
	}
	n.Body, n.Err = w.fetch(ctx, n.Desc)
	if n.Err == nil {
		n.Manifest, n.Err = check(n.Desc, n.Body)
	}
	if n.Err != nil {
		n.Err = fmt.Errorf("manifest %s: %w", n.Desc.Digest, n.Err)
	}
	if err := w.visit(ctx, n); err != nil {
		if errors.Is(err, ErrSkip) {
			return 0, nil
		}
		return 0, err
	}
	m := n.Manifest
	if m == nil {
		return 0, nil
	}
	if !m.IsIndex() {
		images = 1
		if !IsImageManifest(m.MediaType) {
			images = 0
		}
	} else if n.Depth > MaxDepth {
		return 0, fmt.Errorf("index %s: %w (more than %d levels)", n.Desc.Digest, ErrTooDeep, MaxDepth)
	}
	for _, c := range m.Children() {
		if c.Subject && w.o.NoSubject || c.Kind != KindManifest && w.o.NoBlobs {
			continue
		}
		if m.IsIndex() && w.o.Platforms != nil && !w.keep(c.Descriptor) {
			continue
		}
		k, err := w.node(ctx, &Node{Desc: c.Descriptor, Kind: c.Kind, Depth: n.Depth + 1, Subject: c.Subject})
		if err != nil {
			return 0, err
		}
		if !c.Subject {
			images += k
		}
	}
	if m.IsIndex() && w.o.Platforms != nil && images == 0 && n.Depth == 0 {
		return 0, fmt.Errorf("index %s: %w %s (it has %s)", n.Desc.Digest, ErrNoPlatform, JoinPlatforms(w.o.Platforms), strings.Join(m.Platforms(), ", "))
	}
	return images, nil
}

// keep reports whether the platform filter keeps an index's child: an image
// of a chosen platform, or an index without a platform or of a chosen one.
func (w *walker) keep(c ocispec.Descriptor) bool {
	if IsIndex(c.MediaType) && c.Platform == nil {
		return true
	}
	return c.Platform != nil && MatchAnyPlatform(w.o.Platforms, *c.Platform)
}

// check verifies body against desc (size and digest when known) and parses it.
func check(desc ocispec.Descriptor, body []byte) (*Manifest, error) {
	if desc.Size > 0 && int64(len(body)) != desc.Size {
		return nil, fmt.Errorf("%w: %d bytes, its descriptor says %d", ErrManifestInvalid, len(body), desc.Size)
	}
	if desc.Digest != "" {
		if _, err := ParseDigest(string(desc.Digest)); err != nil {
			return nil, err
		}
		if got := desc.Digest.Algorithm().FromBytes(body); got != desc.Digest {
			return nil, fmt.Errorf("%w: content hashes to %s", ErrManifestInvalid, got)
		}
	}
	mt := desc.MediaType
	if !IsManifest(mt) {
		mt = ""
	}
	return ParseManifest(mt, body)
}
