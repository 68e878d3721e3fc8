package registrypush

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/inspect"
	"github.com/octohelm/crpe/internal/oci"
)

// errAbsent is a manifest the archive does not hold (a platform not chosen,
// an absent subject).
var errAbsent = errors.New("not in the archive (or the registry)")

// plan is what one image needs in its repository.
type plan struct {
	im        *image
	blobs     []ocispec.Descriptor
	manifests []ocispec.Descriptor // parents before children
	absent    []digest.Digest      // children the archive leaves out
}

// complete runs once the archive is read and every upload finished: it
// checks each image, puts every blob each image needs in its repository,
// the manifests by digest (children first), and last the tags.
func (p *pusher) complete(ctx context.Context, sum *archive.Summary) error {
	c, err := p.client(ctx)
	if err != nil {
		return err
	}
	mts := inspect.MediaTypes(sum.Index)
	for _, im := range p.images {
		if im.desc.MediaType == "" {
			im.desc.MediaType = mts[im.desc.Digest]
		}
	}
	plats, err := inspect.RefPlatforms(p.pkgs)
	if err != nil {
		return fmt.Errorf("%s: %w", archive.PackageEntry, err)
	}
	getManifest := func(d digest.Digest) ([]byte, bool) {
		m, ok := p.manifests[d]
		if !ok {
			return nil, false
		}
		return m.body, true
	}
	// the images, then the artifacts carried with them (a referrer's
	// manifest goes after its subject's)
	ordered := make([]*image, 0, len(p.images))
	for _, im := range p.images {
		if im.subject == "" {
			ordered = append(ordered, im)
		}
	}
	for _, im := range p.images {
		if im.subject != "" {
			ordered = append(ordered, im)
		}
	}
	subjects := inspect.Subjects{}
	var plans []*plan
	for _, im := range ordered {
		has := func(d digest.Digest) bool {
			ok, _ := p.has(ctx, im.repo, d)
			return ok || p.anywhere(d) != ""
		}
		ps := plats[im.ref]
		if im.subject != "" {
			ps = nil // an artifact is carried whole
			if err := subjects.Check(im.ref, im.src, im.subject); err != nil {
				return fmt.Errorf("%s: %w; nothing was tagged", archive.IndexEntry, err)
			}
		}
		cl := inspect.Closure(ctx, im.desc, ps, getManifest, has)
		if len(cl.Missing) > 0 {
			return fmt.Errorf("image %s is incomplete for %s: %s is neither in the archive nor in the registry; nothing was tagged", im.ref, platformsText(ps), strings.Join(cl.Missing, ", "))
		}
		if len(cl.Problems) > 0 {
			return fmt.Errorf("image %s: %s; nothing was tagged", im.ref, strings.Join(cl.Problems, "; "))
		}
		if im.subject == "" {
			subjects.Add(im.src, cl)
		}
		pl := &plan{im: im}
		fetch := func(_ context.Context, d ocispec.Descriptor) ([]byte, error) {
			if b, ok := getManifest(d.Digest); ok {
				return b, nil
			}
			return nil, errAbsent
		}
		err := oci.Walk(ctx, im.desc, fetch, func(_ context.Context, n *oci.Node) error {
			switch {
			case n.Kind != oci.KindManifest:
				if len(n.Desc.URLs) == 0 {
					pl.blobs = append(pl.blobs, n.Desc)
				}
			case n.Err != nil && n.Depth > 0 && errors.Is(n.Err, errAbsent):
				pl.absent = append(pl.absent, n.Desc.Digest)
				return oci.ErrSkip
			case n.Err != nil:
				return n.Err
			default:
				d := n.Desc
				d.MediaType = n.Manifest.MediaType
				pl.manifests = append(pl.manifests, d)
			}
			return nil
		}, oci.WalkOptions{})
		if err != nil {
			return fmt.Errorf("image %s: %w; nothing was tagged", im.ref, err)
		}
		plans = append(plans, pl)
	}

	// every blob in the repository of every image that needs it
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.Jobs)
	type key struct {
		repo string
		d    digest.Digest
	}
	seen := map[key]bool{}
	for _, pl := range plans {
		for _, b := range pl.blobs {
			k := key{pl.im.repo, b.Digest}
			if seen[k] {
				continue
			}
			seen[k] = true
			g.Go(func() error { return p.ensureBlob(gctx, k.repo, b) })
		}
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("%w; nothing was tagged", err)
	}

	// manifests by digest, children first
	put := map[key]bool{}
	for _, pl := range plans {
		for i := len(pl.manifests) - 1; i >= 0; i-- {
			d := pl.manifests[i]
			k := key{pl.im.repo, d.Digest}
			if put[k] {
				continue
			}
			put[k] = true
			if ok, err := c.exists(ctx, pl.im.repo, "manifests", d.Digest); err == nil && ok {
				p.res.ManifestsSkipped++
				continue
			}
			if err := c.putManifest(ctx, pl.im.repo, string(d.Digest), d.MediaType, p.manifests[d.Digest].body); err != nil {
				return fmt.Errorf("image %s: %w%s; nothing was tagged", pl.im.ref, err, sparseHint(err, pl, d.Digest))
			}
			p.res.ManifestsPushed++
		}
	}

	// every image is complete in the registry: the tags, last
	if p.o.BeforeTags != nil {
		if err := p.o.BeforeTags(ctx); err != nil {
			return fmt.Errorf("%w; nothing was tagged", err)
		}
	}
	for _, pl := range plans {
		im := pl.im
		full := p.o.Target.Host + "/" + im.repo
		if im.tag != "" {
			mt := im.desc.MediaType
			if m := p.manifests[im.desc.Digest]; m != nil && m.m.MediaType != "" {
				mt = m.m.MediaType
			}
			if err := c.putManifest(ctx, im.repo, im.tag, mt, p.manifests[im.desc.Digest].body); err != nil {
				return fmt.Errorf("tag %s:%s (tags set before it: %s): %w", full, im.tag, strings.Join(p.res.TagsSet, ", "), err)
			}
			p.res.TagsSet = append(p.res.TagsSet, full+":"+im.tag)
		}
		ir := ImageResult{Ref: im.ref, Repository: full, Tag: im.tag, Digest: string(im.desc.Digest)}
		if im.subject != "" {
			p.res.Artifacts = append(p.res.Artifacts, ir)
			continue
		}
		p.res.Images = append(p.res.Images, ir)
	}
	return nil
}

func platformsText(ps []ocispec.Platform) string {
	if ps == nil {
		return "every platform"
	}
	return oci.JoinPlatforms(ps)
}

// sparseHint explains a registry refusing an index whose children of other
// platforms the archive leaves out: distribution (and Harbor) check by
// default that an index's every child is there.
func sparseHint(err error, pl *plan, d digest.Digest) string {
	var e *Error
	if !errors.As(err, &e) || len(pl.absent) == 0 || d != pl.im.desc.Digest || !strings.Contains(e.Code, "BLOB_UNKNOWN") && e.Code != "MANIFEST_INVALID" {
		return ""
	}
	return fmt.Sprintf(" (the archive holds only some platforms of this index, and the registry wants every child of an index: export every platform of the image, or let the registry take partial indexes: distribution's validation.manifests.indexes.platforms: none)")
}

// anywhere is a repository of the registry known to hold d, or "".
func (p *pusher) anywhere(d digest.Digest) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := ""
	for r := range p.present[d] {
		if best == "" || r < best {
			best = r
		}
	}
	return best
}

// ensureBlob puts blob desc in repo: there already, mounted from a
// repository that holds it, or copied from it through crpe.
func (p *pusher) ensureBlob(ctx context.Context, repo string, desc ocispec.Descriptor) error {
	if ok, err := p.has(ctx, repo, desc.Digest); err != nil || ok {
		return err
	}
	from := p.anywhere(desc.Digest)
	if from == "" {
		return fmt.Errorf("blob %s is not in the registry", desc.Digest)
	}
	loc, mounted, err := p.c.startUpload(ctx, repo, desc.Digest, from)
	if err != nil {
		return err
	}
	if mounted {
		p.markPresent(desc.Digest, repo)
		p.mu.Lock()
		p.res.BlobsMounted++
		p.mu.Unlock()
		return nil
	}
	// no mount: copy, streaming, one try per session
	for i := 1; ; i++ {
		err = p.copyBlob(ctx, from, repo, loc, desc)
		if err == nil {
			break
		}
		p.c.cancel(loc)
		var re *RefusedError
		if i >= p.c.attempts || ctx.Err() != nil || errors.As(err, &re) {
			return err
		}
		p.c.retries.Add(1)
		if werr := p.c.wait(ctx, i); werr != nil {
			return werr
		}
		if loc, _, err = p.c.startUpload(ctx, repo, desc.Digest, ""); err != nil {
			return err
		}
	}
	p.markPresent(desc.Digest, repo)
	p.mu.Lock()
	p.res.BlobsCopied++
	p.mu.Unlock()
	return nil
}

// copyBlob streams blob desc of repository from into the session loc of
// repo (the registry checks the digest).
func (p *pusher) copyBlob(ctx context.Context, from, repo, loc string, desc ocispec.Descriptor) error {
	src, err := p.c.getBlob(ctx, from, desc.Digest)
	if err != nil {
		return err
	}
	defer src.Body.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withQuery(loc, "digest", string(desc.Digest)), src.Body)
	if err != nil {
		return err
	}
	req.ContentLength = desc.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := p.c.hc.Do(req)
	if err != nil {
		return err
	}
	p.c.sent.Add(desc.Size)
	if resp.StatusCode != http.StatusCreated {
		return asError(resp, "copy blob "+string(desc.Digest)+" to", repo)
	}
	drain(resp)
	return nil
}
