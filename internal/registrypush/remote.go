package registrypush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/octohelm/crpe/internal/oci"
)

// manifestAccept is the Accept header of a manifest read.
const manifestAccept = ocispec.MediaTypeImageIndex + ", " + oci.MediaTypeDockerManifestList + ", " +
	ocispec.MediaTypeImageManifest + ", " + oci.MediaTypeDockerManifest

// Remote reads what a site registry holds, for the agent in registry mode:
// which blobs its repositories have (the delta of `crpe import --to`) and
// what of a package's images is there (the inventory of `crpe export
// --since`). Every question is a HEAD or a manifest GET; at most
// Options.Jobs are asked at once.
type Remote struct {
	o Options
	c *client
}

// Open connects to o.Target's registry to read repos.
func Open(ctx context.Context, o Options, repos []string) (*Remote, error) {
	o = o.withDefaults()
	c, err := dial(ctx, o, repos, "pull")
	if err != nil {
		return nil, err
	}
	return &Remote{o: o, c: c}, nil
}

// Missing returns the digests of ds that none of repos holds, in ds's
// order.
func (r *Remote) Missing(ctx context.Context, repos []string, ds []digest.Digest) ([]digest.Digest, error) {
	repos = sortedUnique(repos)
	held := make([]bool, len(ds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Jobs)
	for i, d := range ds {
		g.Go(func() error {
			for _, repo := range repos {
				ok, err := r.c.exists(gctx, repo, "blobs", d)
				if err != nil {
					return err
				}
				if ok {
					held[i] = true
					return nil
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	missing := []digest.Digest{}
	for i, d := range ds {
		if !held[i] {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// Image is one image of a package as the registry holds it: its repository
// (Target.Repository's name), its top digest and the package's platforms
// (nil: every platform).
type Image struct {
	Repo      string
	Digest    digest.Digest
	Platforms []ocispec.Platform
}

// Holdings walks each image in its repository (manifests read by digest and
// verified, only the children of its platforms; a child the registry lacks,
// as a sparse index's, is left out) and returns, sorted, the digests of the
// manifests read and of the configs and layers its repository holds.
func (r *Remote) Holdings(ctx context.Context, ims []Image) ([]digest.Digest, error) {
	var mu sync.Mutex
	held := map[digest.Digest]bool{}
	type blob struct {
		repo string
		d    digest.Digest
	}
	var blobs []blob
	seen := map[blob]bool{}
	for _, im := range ims {
		fetch := func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
			return r.c.getManifest(ctx, im.Repo, desc.Digest)
		}
		root := ocispec.Descriptor{Digest: im.Digest}
		err := oci.Walk(ctx, root, fetch, func(_ context.Context, n *oci.Node) error {
			switch {
			case n.Kind != oci.KindManifest:
				b := blob{im.Repo, n.Desc.Digest}
				if !seen[b] && len(n.Desc.URLs) == 0 {
					seen[b] = true
					blobs = append(blobs, b)
				}
			case errors.Is(n.Err, errAbsent):
				return oci.ErrSkip
			case n.Err != nil:
				return n.Err
			default:
				held[n.Desc.Digest] = true
			}
			return nil
		}, oci.WalkOptions{Platforms: im.Platforms})
		if err != nil {
			return nil, fmt.Errorf("%s@%s: %w", im.Repo, im.Digest, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Jobs)
	for _, b := range blobs {
		g.Go(func() error {
			ok, err := r.c.exists(gctx, b.repo, "blobs", b.d)
			if ok {
				mu.Lock()
				held[b.d] = true
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]digest.Digest, 0, len(held))
	for d := range held {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// getManifest reads manifest d of repo (at most oci.MaxManifestSize bytes);
// errAbsent when the registry does not have it.
func (c *client) getManifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url(repo, "manifests/"+string(d)), http.Header{"Accept": {manifestAccept}}, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		drain(resp)
		return nil, errAbsent
	}
	if resp.StatusCode != http.StatusOK {
		return nil, asError(resp, "get manifest "+string(d)+" from", repo)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > oci.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s of %s: %w", d, repo, oci.ErrManifestTooLarge)
	}
	return b, nil
}

func sortedUnique(ss []string) []string {
	m := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !m[s] {
			m[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
