// Package importer takes a kubepkg.tgz into a data folder: one verifying pass
// over the stream (every blob hashed and committed only when it matches its
// name), then, only when the whole stream was read and checked (tar end and
// gzip trailer included), every image's completeness for its platforms
// (blobs already in the store count), and finally one index transaction that
// publishes tags, manifests and the package record all at once. An error
// anywhere publishes nothing; blobs committed before it are verified and
// content-addressed, so a retry does not send them again.
//
// It also owns the semver gate (a lower version is refused unless forced),
// --keep-versions, and the garbage collection of what no kept version or tag
// needs, which never runs during an import.
package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/diskfree"
	"github.com/octohelm/crpe/internal/inspect"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/sigverify"
)

// Error is an import failure with the HTTP status it deserves.
type Error struct {
	Status int
	Code   string
	Entry  string
	Reason string
}

func (e *Error) Error() string {
	if e.Entry != "" {
		return e.Entry + ": " + e.Reason
	}
	return e.Reason
}

func badRequest(entry, format string, a ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "IMPORT_INVALID", Entry: entry, Reason: fmt.Sprintf(format, a...)}
}

// AsError maps any import failure to an *Error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ee *archive.EntryError
	if errors.As(err, &ee) {
		return &Error{Status: http.StatusBadRequest, Code: "IMPORT_INVALID", Entry: ee.Entry, Reason: ee.Reason}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Status: 499, Code: "CANCELED", Reason: "the upload was canceled"}
	}
	if errors.Is(err, syscall.ENOSPC) {
		return &Error{Status: http.StatusInsufficientStorage, Code: "INSUFFICIENT_STORAGE", Reason: "the agent's data folder is full"}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// the agent's own storage failed: not the client's fault, and its
		// paths are not the client's business
		return &Error{Status: http.StatusInternalServerError, Code: "STORAGE_ERROR", Reason: "the agent could not store the blob: " + pe.Err.Error()}
	}
	return &Error{Status: http.StatusBadRequest, Code: "IMPORT_INVALID", Reason: err.Error()}
}

// Options tune an Importer.
type Options struct {
	// Namespace is where packages without metadata.namespace go (default
	// "default").
	Namespace string
	// KeepVersions is how many versions of each package are kept (default 3).
	KeepVersions int
	// Dir is the data folder, whose free space is checked before blobs are
	// written.
	Dir string
	// Verify, when set, checks the cosign signatures carried with every
	// image against it before anything is published (sigverify): an image
	// refused refuses the whole import (403 SIGNATURE_REFUSED), and the
	// verdicts are recorded in each package's status.signatures and in its
	// import history.
	Verify *sigverify.Policy
}

// Importer imports archives into a store and index.
type Importer struct {
	store cas.Store
	db    *repodb.DB
	o     Options
	// lock: imports share it, garbage collection takes it alone.
	lock sync.RWMutex
	// OnExpired is called (outside any lock) after an import expired
	// versions, so that garbage collection can be scheduled.
	OnExpired func()
}

// New returns an importer.
func New(store cas.Store, db *repodb.DB, o Options) *Importer {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.KeepVersions <= 0 {
		o.KeepVersions = 3
	}
	return &Importer{store: store, db: db, o: o}
}

// ImportOptions tune one import.
type ImportOptions struct {
	// Force imports a lower version than the one recorded.
	Force bool
}

// PackageResult is one package of an import.
type PackageResult struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Previous  string `json:"previous,omitempty"`
	Forced    bool   `json:"forced,omitempty"`
	Unchanged bool   `json:"unchanged,omitempty"`
	// Object is the imported KubePkg (for the cluster side).
	Object json.RawMessage `json:"-"`
}

// Result summarizes an import.
type Result struct {
	Packages []PackageResult   `json:"packages"`
	Images   map[string]string `json:"images"`
	// Artifacts are the signatures, attestations and SBOMs carried with
	// the images (archive.AnnotationSubject): reference → digest.
	Artifacts map[string]string `json:"artifacts,omitempty"`
	// Signatures are the verdicts of the signature check (Options.Verify).
	Signatures    []kubepkg.Signature `json:"signatures,omitempty"`
	BlobsReceived int                 `json:"blobsReceived"`
	BlobsPresent  int                 `json:"blobsPresent"`
	BytesReceived int64               `json:"bytesReceived"`
	BytesPresent  int64               `json:"bytesPresent"`
	Partial       bool                `json:"partial,omitempty"`
	Expired       []string            `json:"expired,omitempty"`
}

type image struct {
	ref       string
	repo      string
	tag       string
	desc      ocispec.Descriptor
	platforms []ocispec.Platform
	// subject is set for an artifact carried with an image: the manifest
	// it is about
	subject digest.Digest
}

// publishBatch is how many bytes of staged blobs an import publishes at
// once: one sync per batch, so that a crash loses at most one batch.
const publishBatch = 256 << 20

// stager is a store that can verify a blob now and publish it later, in
// one batch (casfs.Store).
type stager interface {
	Stage(ctx context.Context, expected cas.Info, r io.Reader) (*casfs.Staged, error)
	Publish(staged []*casfs.Staged) error
}

type handler struct {
	// stager is the store when it can stage and publish in batches
	stager stager
	// staged are the blobs verified into temp files, published together
	// (one sync for each publishBatch bytes, and one at the end)
	staged      []*casfs.Staged
	stagedBytes int64
	// needed are the blobs the archive's manifests announce, with their
	// sizes; checked against free space before the first config or layer
	needed  map[digest.Digest]int64
	checked bool
	im      *Importer
	o       ImportOptions
	pkgs    []*kubepkg.KubePkg
	refs    map[string]bool
	images  []*image
	res     *Result
	// manifests are the manifests of this import: as the archive reader
	// parsed them, or read once from the store
	manifests map[digest.Digest][]byte
}

// manifest returns manifest d: as the archive carried it, or read once from
// the store (a partial archive leaves out what the store holds).
func (h *handler) manifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	if b, ok := h.manifests[d]; ok {
		return b, nil
	}
	b, err := cas.ReadAll(ctx, h.im.store, d, oci.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	h.manifests[d] = b
	return b, nil
}

func (h *handler) Package(data []byte) error {
	pkgs, err := kubepkg.Parse(data)
	if err != nil {
		return badRequest(archive.PackageEntry, "%v", err)
	}
	h.refs = map[string]bool{}
	for _, p := range pkgs {
		if err := p.Validate(); err != nil {
			return badRequest(archive.PackageEntry, "package %s: %v", p.Metadata.Name, err)
		}
		for ref, d := range p.Spec.Images {
			if !oci.IsDigest(d) {
				return badRequest(archive.PackageEntry, "package %s: spec.images[%q] is not pinned to a digest", p.Metadata.Name, ref)
			}
			h.refs[ref] = true
		}
		// refuse a downgrade before any byte of a blob is read
		if err := h.im.gate(p, h.o.Force); err != nil {
			return err
		}
		// status.digests sizes the blobs of a seed layout, whose layers
		// come before the manifests that name them (the reader checks it)
		dms, _ := p.StatusDigests()
		for _, m := range dms {
			h.needed[m.Digest] = m.Size
		}
	}
	h.pkgs, h.res.Partial = pkgs, kubepkg.Partial(pkgs)
	return nil
}

func (h *handler) Index(idx ocispec.Index) error {
	seen := map[string]bool{}
	for _, m := range idx.Manifests {
		ref := m.Annotations[archive.AnnotationImageName]
		if ref == "" {
			ref = m.Annotations[archive.AnnotationRefName]
		}
		// an artifact (a signature, attestation or SBOM of an image) is
		// checked once the images are (importLocked)
		subject, artifact := archive.ArtifactOf(m)
		if !artifact && !h.refs[ref] {
			return badRequest(archive.IndexEntry, "index.json lists %s, which spec.images does not", ref)
		}
		if seen[ref] {
			return badRequest(archive.IndexEntry, "index.json lists %s twice", ref)
		}
		seen[ref] = true
		im, err := parseRef(ref)
		if err != nil {
			return badRequest(archive.IndexEntry, "%s: %v", ref, err)
		}
		im.desc, im.subject = m, subject
		h.images = append(h.images, im)
	}
	for ref := range h.refs {
		if !seen[ref] {
			return badRequest(archive.IndexEntry, "spec.images lists %s, which index.json does not", ref)
		}
	}
	for _, p := range h.pkgs {
		for ref, d := range p.Spec.Images {
			for _, im := range h.images {
				if im.subject == "" && im.ref == ref && string(im.desc.Digest) != d {
					return badRequest(archive.IndexEntry, "%s is %s in index.json but %s in spec.images", ref, im.desc.Digest, d)
				}
			}
		}
	}
	return nil
}

func (h *handler) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if mb, ok := r.(*archive.ManifestBlob); ok && kind == oci.KindManifest {
		h.keepManifest(desc.Digest, mb)
	}
	if kind != oci.KindManifest && !h.checked {
		h.checked = true
		if err := h.im.checkSpace(ctx, h.needed); err != nil {
			return err
		}
	}
	if _, err := h.im.store.Stat(ctx, desc.Digest); err == nil {
		h.res.BlobsPresent++
		h.res.BytesPresent += desc.Size
		return nil // the archive reader still reads and verifies the bytes
	}
	if st := h.stager; st != nil {
		// verified into a temp file now (the kernel starts writing it out),
		// made durable and published with the others at the end
		staged, err := st.Stage(ctx, cas.Info{Digest: desc.Digest, Size: desc.Size}, r)
		if err != nil {
			return err
		}
		h.staged = append(h.staged, staged)
		h.stagedBytes += desc.Size
		if h.stagedBytes >= publishBatch {
			// a big archive's blobs are kept in batches, so that a rerun
			// after a crash sends only what the last batch lost
			if err := st.Publish(h.staged); err != nil {
				return err
			}
			h.staged, h.stagedBytes = h.staged[:0], 0
		}
	} else if _, err := h.im.store.Put(ctx, cas.Info{Digest: desc.Digest, Size: desc.Size}, r); err != nil {
		return err
	}
	h.res.BlobsReceived++
	h.res.BytesReceived += desc.Size
	return nil
}

// keepManifest keeps a manifest of the archive as the archive reader
// verified and parsed it (the closure check and the publish walk read it
// from here, never back from the store while it is being committed), and
// counts what it refers to for the space check.
func (h *handler) keepManifest(d digest.Digest, mb *archive.ManifestBlob) {
	h.manifests[d] = mb.Body
	for _, c := range mb.Manifest.Children() {
		if len(c.URLs) == 0 {
			h.needed[c.Digest] = c.Size
		}
	}
}

// checkSpace refuses an import whose missing blobs cannot fit.
func (im *Importer) checkSpace(ctx context.Context, needed map[digest.Digest]int64) error {
	if im.o.Dir == "" {
		return nil
	}
	var need int64
	for d, size := range needed {
		if _, err := im.store.Stat(ctx, d); err != nil {
			need += size
		}
	}
	if free := diskfree.Available(im.o.Dir); free >= 0 && need > free {
		return &Error{Status: http.StatusInsufficientStorage, Code: "INSUFFICIENT_STORAGE",
			Reason: fmt.Sprintf("the archive's blobs need %d bytes, the agent's data folder has %d free", need, free)}
	}
	return nil
}

// parseRef splits a full reference into repository and tag (oci.ParseReference).
func parseRef(ref string) (*image, error) {
	r, err := oci.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if !oci.ValidName(r.Repository) {
		return nil, fmt.Errorf("repository %q is not a valid name", r.Repository)
	}
	return &image{ref: ref, repo: r.Repository, tag: r.Tag}, nil
}

// gate refuses a version lower than the recorded one unless forced.
func (im *Importer) gate(p *kubepkg.KubePkg, force bool) error {
	var cur *repodb.Package
	_ = im.db.View(func(tx *repodb.Tx) error {
		cur, _, _ = tx.Package(p.Namespace(im.o.Namespace), p.Metadata.Name)
		return nil
	})
	return checkGate(cur, p, force)
}

func checkGate(cur *repodb.Package, p *kubepkg.KubePkg, force bool) error {
	if cur == nil {
		return nil
	}
	return CheckVersion(cur.Namespace, cur.Name, cur.Version, p, force)
}

// CheckVersion is the semver gate of an import: p may replace version
// current of namespace/name unless it is lower and not forced (a
// VERSION_CONFLICT *Error). The agent's registry mode asks it with the
// version of the KubePkg object.
func CheckVersion(namespace, name, current string, p *kubepkg.KubePkg, force bool) error {
	if current == "" || force || !kubepkg.IsDowngrade(current, p.Spec.Version) {
		return nil
	}
	return &Error{Status: http.StatusConflict, Code: "VERSION_CONFLICT",
		Reason: fmt.Sprintf("package %s/%s: version %s is lower than the imported %s (force to downgrade)", namespace, name, p.Spec.Version, current)}
}

// Import reads an archive from r and publishes it.
func (im *Importer) Import(ctx context.Context, r io.Reader, o ImportOptions) (*Result, error) {
	im.lock.RLock()
	res, expired, err := im.importLocked(ctx, r, o)
	im.lock.RUnlock()
	if err == nil && expired && im.OnExpired != nil {
		im.OnExpired()
	}
	return res, err
}

func (im *Importer) importLocked(ctx context.Context, r io.Reader, o ImportOptions) (*Result, bool, error) {
	st, _ := im.store.(stager)
	h := &handler{im: im, o: o, stager: st, res: &Result{Images: map[string]string{}},
		manifests: map[digest.Digest][]byte{}, needed: map[digest.Digest]int64{}}
	have := func(d digest.Digest) bool {
		_, err := im.store.Stat(ctx, d)
		return err == nil
	}
	var rh archive.Handler = h
	var sigs *sigverify.Collector
	if im.o.Verify != nil {
		sigs = sigverify.NewCollector(h)
		rh = sigs
	}
	sum, err := archive.Read(ctx, r, rh, archive.Limits{Have: have})
	// blobs staged before an error are verified: they are published too
	if h.stager != nil {
		if perr := h.stager.Publish(h.staged); err == nil {
			err = perr
		}
	}
	if err != nil {
		return nil, false, err
	}
	if h.pkgs == nil {
		return nil, false, badRequest(archive.PackageEntry, "missing")
	}
	// the index the reader made for a seed layout learns each image's media
	// type when its manifest arrives
	mts := inspect.MediaTypes(sum.Index)
	for _, img := range h.images {
		if img.desc.MediaType == "" {
			img.desc.MediaType = mts[img.desc.Digest]
		}
	}
	// every image complete for its package's platforms
	plats, err := inspect.RefPlatforms(h.pkgs)
	if err != nil {
		return nil, false, badRequest(archive.PackageEntry, "%v", err)
	}
	ctxBG := context.WithoutCancel(ctx)
	getManifest := func(d digest.Digest) ([]byte, bool) {
		b, err := h.manifest(ctxBG, d)
		return b, err == nil
	}
	has := func(d digest.Digest) bool {
		_, err := im.store.Stat(ctxBG, d)
		return err == nil
	}
	subjects := inspect.Subjects{}
	for _, img := range h.images {
		ps := plats[img.ref]
		if img.subject != "" {
			ps = nil // an artifact is carried whole
		}
		cl := inspect.Closure(ctxBG, img.desc, ps, getManifest, has)
		if len(cl.Missing) > 0 {
			what := oci.JoinPlatforms(ps)
			if ps == nil {
				what = "every platform"
			}
			return nil, false, badRequest("", "image %s is incomplete for %s: %s is neither in the archive nor in the store", img.ref, what, strings.Join(cl.Missing, ", "))
		}
		if len(cl.Problems) > 0 {
			return nil, false, badRequest("", "image %s: %s", img.ref, strings.Join(cl.Problems, "; "))
		}
		if img.subject != "" {
			continue
		}
		subjects.Add(img.repo, cl)
		h.res.Images[img.ref] = string(img.desc.Digest)
	}
	for _, img := range h.images {
		if img.subject == "" {
			continue
		}
		if err := subjects.Check(img.ref, img.repo, img.subject); err != nil {
			return nil, false, badRequest(archive.IndexEntry, "%v", err)
		}
		if h.res.Artifacts == nil {
			h.res.Artifacts = map[string]string{}
		}
		h.res.Artifacts[img.ref] = string(img.desc.Digest)
	}
	if sigs != nil {
		verdicts, err := sigs.Verify(im.o.Verify, time.Now())
		if err != nil {
			return nil, false, &Error{Status: http.StatusForbidden, Code: "SIGNATURE_REFUSED", Reason: err.Error() + "; nothing was published"}
		}
		h.res.Signatures = verdicts
		for _, p := range h.pkgs {
			var mine []kubepkg.Signature
			for _, v := range verdicts {
				if _, ok := p.Spec.Images[v.Image]; ok {
					mine = append(mine, v)
				}
			}
			p.SetStatusSignatures(mine)
		}
	}
	expired, err := im.publish(ctxBG, h, o)
	if err != nil {
		return nil, false, err
	}
	return h.res, len(expired) > 0, nil
}

// manifestRec is a manifest to record in a repository.
type manifestRec struct {
	repo string
	d    digest.Digest
	m    repodb.Manifest
}

// blobLink is a blob to link to a repository.
type blobLink struct {
	repo string
	info cas.Info
}

// records walks every image of the import (oci.Walk) and lists the
// manifests to record and the blobs to link: every manifest at hand under
// an image (an index's children of other platforms are left out of the
// archive, a subject may be absent) and the blobs each needs.
func (im *Importer) records(ctx context.Context, h *handler) ([]manifestRec, []blobLink, error) {
	var recs []manifestRec
	var links []blobLink
	for _, img := range h.images {
		fetch := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) { return h.manifest(ctx, d.Digest) }
		err := oci.Walk(ctx, img.desc, fetch, func(ctx context.Context, n *oci.Node) error {
			switch {
			case n.Kind != oci.KindManifest:
				if len(n.Desc.URLs) > 0 {
					return nil // non-distributable: not required
				}
				info, err := im.store.Stat(ctx, n.Desc.Digest)
				if err != nil {
					return badRequest("", "image %s: blob %s is missing", img.ref, n.Desc.Digest)
				}
				links = append(links, blobLink{img.repo, info})
			case n.Err != nil && n.Depth > 0 && errors.Is(n.Err, cas.ErrNotFound):
				return oci.ErrSkip // a child left out (another platform), or an absent subject
			case n.Err != nil:
				return badRequest(archive.BlobEntry(n.Desc.Digest), "%v", n.Err)
			default:
				recs = append(recs, manifestRec{img.repo, n.Desc.Digest, repodb.ManifestRecord(n.Manifest, n.Body)})
			}
			return nil
		}, oci.WalkOptions{})
		if err != nil {
			return nil, nil, err
		}
	}
	return recs, links, nil
}

// publish records every image and package in one transaction.
func (im *Importer) publish(ctx context.Context, h *handler, o ImportOptions) ([]string, error) {
	recs, links, err := im.records(ctx, h)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	var expired []string
	err = im.db.Update(func(tx *repodb.Tx) error {
		for _, l := range links {
			if err := tx.LinkBlob(l.repo, l.info.Digest, l.info.Size); err != nil {
				return err
			}
		}
		for _, r := range recs {
			if err := tx.PutManifest(r.repo, r.d, r.m); err != nil {
				return err
			}
		}
		for _, img := range h.images {
			if img.tag != "" {
				if err := tx.SetTag(img.repo, img.tag, img.desc.Digest); err != nil {
					return err
				}
			}
		}
		for _, p := range h.pkgs {
			pr, exp, err := im.recordPackage(tx, p, o.Force, now)
			if err != nil {
				return err
			}
			expired = append(expired, exp...)
			h.res.Packages = append(h.res.Packages, pr)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(expired)
	h.res.Expired = expired
	return expired, nil
}

// recordPackage records p as imported now, in its history, and expires the
// versions beyond the newest KeepVersions; it returns what it did and the
// versions it expired.
func (im *Importer) recordPackage(tx *repodb.Tx, p *kubepkg.KubePkg, force bool, now time.Time) (PackageResult, []string, error) {
	var expired []string
	ns := p.Namespace(im.o.Namespace)
	cur, _, err := tx.Package(ns, p.Metadata.Name)
	if err != nil {
		return PackageResult{}, nil, err
	}
	if err := checkGate(cur, p, force); err != nil {
		return PackageResult{}, nil, err // a concurrent import got there first
	}
	obj, _ := json.Marshal(p)
	pr := PackageResult{Namespace: ns, Name: p.Metadata.Name, Version: p.Spec.Version, Object: obj}
	np := &repodb.Package{Namespace: ns, Name: p.Metadata.Name, Version: p.Spec.Version, Images: p.Spec.Images,
		Platforms: p.Metadata.Annotations[kubepkg.AnnotationPlatform], ImportedAt: now, Object: obj}
	if cur != nil {
		pr.Previous = cur.Version
		np.History = cur.History
		if cur.Version == p.Spec.Version && sameImages(cur.Images, p.Spec.Images) {
			pr.Unchanged = true
			np.ImportedAt = cur.ImportedAt
		}
	}
	if !pr.Unchanged {
		pr.Forced = force && cur != nil && kubepkg.IsDowngrade(cur.Version, p.Spec.Version)
		// the same version imported again with other content replaces it
		kept := np.History[:0:0]
		for _, v := range np.History {
			if v.Version != p.Spec.Version {
				kept = append(kept, v)
			}
		}
		pv := repodb.PackageVersion{Version: p.Spec.Version, Images: p.Spec.Images, Platforms: np.Platforms, ImportedAt: now, Forced: pr.Forced}
		if sigs, _ := p.StatusSignatures(); sigs != nil {
			pv.Signatures, _ = json.Marshal(sigs)
		}
		np.History = append(kept, pv)
		// keep the newest versions (by import order)
		live := 0
		for i := len(np.History) - 1; i >= 0; i-- {
			if np.History[i].Expired {
				continue
			}
			live++
			if live > im.o.KeepVersions {
				np.History[i].Expired = true
				expired = append(expired, ns+"/"+p.Metadata.Name+"@"+np.History[i].Version)
			}
		}
	}
	if err := tx.PutPackage(np); err != nil {
		return PackageResult{}, nil, err
	}
	return pr, expired, nil
}

func sameImages(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
