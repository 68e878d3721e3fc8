// Package registrypush imports a kubepkg.tgz into a site registry (Harbor,
// CNCF distribution, zot, a cloud registry) instead of crpe's own agent:
// `crpe import FILE --to-registry HOST[/PREFIX]`.
//
// The archive is read once by archive.Read, which verifies every blob as it
// streams. Each config and layer is sent on as it is read: first a HEAD (a
// blob the registry has is skipped), else an upload session, the blob in
// chunks (PATCH with Content-Range) of Options.ChunkSize; a chunk is kept in
// memory until the registry acknowledged it, so a connection broken in
// mid-chunk is resumed where the registry's upload status (GET, Range) says
// it stopped. Several blobs upload at once (Options.Jobs), within
// Options.MaxBuffer bytes of chunks held: nothing is spooled to disk. The
// registry checks the digest on the final PUT too.
//
// From a file (PushAt, archive.ReadAt), the blobs larger than a chunk that
// lie in the file as they are (crpe's stored member, a plain tar) are not
// read by the archive reader: each is uploaded from its place, Jobs at once,
// in PATCHes of Options.MaxPatch (default the whole blob) read straight from
// the file and hashed as they go, and completed only when the hash matches;
// a broken PATCH resumes by reading the file again from where the session
// stands. The reader meanwhile checks everything else.
//
// Once the whole archive is read and valid, every image is checked complete
// for its package's platforms, every blob of an image is put in its
// repository (mounted, `?mount=&from=`, from the repository of the import
// that holds it; copied through crpe when the registry does not mount),
// manifests are put by digest, children first, and only then, when every
// image of the archive is complete in the registry, the tags are set. A
// failure before that moves no tag; a rerun sends only what is missing.
//
// Repositories are named by Target.Repository: PREFIX/docker.io/library/nginx
// (Nested), or PREFIX/docker.io_library_nginx (Flat) for registries that
// limit path depth. A registry that will not create a repository is reported
// as a *RefusedError naming it.
package registrypush

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/semaphore"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/sigverify"
)

// Defaults of Options.
const (
	DefaultChunkSize = 8 << 20
	DefaultJobs      = 4
	DefaultAttempts  = 6
	// DefaultMaxSpool bounds the spooled bytes when Options.SpoolDir is set.
	DefaultMaxSpool = 1 << 30
)

// Options say where and how to push.
type Options struct {
	Target Target
	Naming Naming
	// Auth, when set, is used instead of Keychain (--username/--password,
	// --token).
	Auth authn.Authenticator
	// Keychain resolves credentials by registry host (default
	// authn.DefaultKeychain: Docker's config.json and credential helpers).
	Keychain authn.Keychain
	// CAFile is a PEM bundle trusted besides the system's (a site CA).
	CAFile string
	// PlainHTTP allows plain HTTP (tried after HTTPS fails); loopback hosts
	// always may.
	PlainHTTP bool
	// Transport is the base transport (tests); CAFile is then ignored.
	Transport http.RoundTripper
	// ChunkSize is the size of each PATCH of a blob larger than it (default
	// 8 MiB); smaller blobs go in one PUT.
	ChunkSize int64
	// Verify, when set, checks the cosign signatures carried with every
	// image against it once the archive is read, before any manifest is
	// put (sigverify): a refused image fails the push with nothing tagged.
	Verify *sigverify.Policy
	// MaxPatch bounds the bytes of one PATCH of a blob PushAt reads from
	// the archive file (nothing is held for those: a broken PATCH resumes
	// by reading the file again); 0: the whole blob in one PATCH, as crane
	// and skopeo send it (fewer requests, and each resumed session costs
	// the registry a restored hash state).
	MaxPatch int64
	// Jobs is how many blobs upload at once (default 4); MaxBuffer bounds
	// the bytes of chunks held for them (default Jobs × ChunkSize).
	Jobs      int
	MaxBuffer int64
	// Attempts bounds the tries of each request (default 6); Backoff is the
	// first wait between them, doubled each time up to 5 s (default 250 ms).
	Attempts int
	Backoff  time.Duration
	// UserAgent is sent with every request.
	UserAgent string
	// CheckPackages, when set, is asked about the archive's packages as
	// soon as kubepkg.json is read, before any blob is sent: an error stops
	// the push (the agent's semver gate).
	CheckPackages func([]*kubepkg.KubePkg) error
	// BeforeTags, when set, is asked once every image is complete in the
	// registry, right before the first tag is set: an error stops the push
	// with no tag moved (the agent checks it still holds its import lock).
	BeforeTags func(context.Context) error
	// SpoolDir, when set, lets blobs larger than a chunk be copied to an
	// unlinked temp file there as the archive streams, within MaxSpool
	// bytes, and uploaded from it in the background: the archive is read
	// at disk speed while Jobs uploads run at once, instead of each big
	// layer holding the read up until it is sent. Without it (the
	// default) nothing touches the disk.
	SpoolDir string
	MaxSpool int64
	// Sources are repositories of the registry (as Target.Repository names
	// them) where a blob a partial archive leaves out may be found besides
	// the images' own: it is mounted from there (the agent's delta answers
	// from every package's repositories).
	Sources []string
}

// ImageResult is one image as the registry now holds it.
type ImageResult struct {
	Ref        string `json:"ref"`        // the archive's reference (docker.io/library/nginx:alpine)
	Repository string `json:"repository"` // where it is (HOST/PREFIX/docker.io/library/nginx)
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest"`
}

// Result summarizes a push.
type Result struct {
	Registry string        `json:"registry"`
	Images   []ImageResult `json:"images"`
	// Signatures are the verdicts of the signature check (Options.Verify).
	Signatures []kubepkg.Signature `json:"signatures,omitempty"`
	// Artifacts are the signatures, attestations and SBOMs carried with the
	// images (archive.AnnotationSubject), pushed beside them.
	Artifacts         []ImageResult `json:"artifacts,omitempty"`
	BlobsPushed       int           `json:"blobsPushed"`
	BlobsSkipped      int           `json:"blobsSkipped"`
	BlobsMounted      int           `json:"blobsMounted"`
	BlobsCopied       int           `json:"blobsCopied,omitempty"`
	BytesPushed       int64         `json:"bytesPushed"`
	BytesSkipped      int64         `json:"bytesSkipped"`
	BytesSent         int64         `json:"bytesSent"` // request bodies on the wire, resends included
	ManifestsPushed   int           `json:"manifestsPushed"`
	ManifestsSkipped  int           `json:"manifestsSkipped"`
	TagsSet           []string      `json:"tagsSet"`
	UploadsResumed    int           `json:"uploadsResumed,omitempty"`
	RequestsRetried   int64         `json:"requestsRetried,omitempty"`
	PackageNames      []string      `json:"packages"`
	ArchiveBlobs      int           `json:"archiveBlobs"`
	ArchiveBlobsBytes int64         `json:"archiveBytes"`
}

type image struct {
	ref, src, repo, tag string // src: docker.io/library/nginx; repo: in the registry
	desc                ocispec.Descriptor
	// subject is set for an artifact carried with an image: the manifest
	// it is about
	subject digest.Digest
}

type manifest struct {
	body []byte
	m    *oci.Manifest
}

// pusher is the archive.Handler of one push.
type pusher struct {
	o      Options
	c      *client
	ctx    context.Context // ends at the first failed upload
	cancel context.CancelCauseFunc

	pkgs       []*kubepkg.KubePkg
	refs       map[string]bool
	statusName map[digest.Digest]string // status.digests: blob → source repository
	images     []*image
	srcRepo    map[string]string                 // source repository → registry repository
	owners     map[digest.Digest]map[string]bool // blob → registry repositories that need it (as known so far)
	manifests  map[digest.Digest]*manifest

	jobs chan struct{}
	mem  *semaphore.Weighted
	// spool bounds the bytes of spooled blobs (Options.MaxSpool)
	spool *semaphore.Weighted
	bufs  bufPool
	wg    sync.WaitGroup

	mu      sync.Mutex
	present map[digest.Digest]map[string]bool // blob → registry repositories known to hold it
	res     Result
}

// Push reads the archive from r and pushes it to o.Target.
func Push(ctx context.Context, r io.Reader, o Options) (*Result, error) {
	return push(ctx, o, func(ctx context.Context, h archive.Handler, lim archive.Limits) (*archive.Summary, error) {
		return archive.Read(ctx, r, h, lim)
	})
}

// PushAt pushes the archive of size bytes in ra (a file) to o.Target: as
// Push, but the big layers of crpe's layout or of a plain tar are read from
// their places in the file, Jobs uploads at once, while the rest of the
// archive is read and checked (archive.ReadAt).
func PushAt(ctx context.Context, ra io.ReaderAt, size int64, o Options) (*Result, error) {
	return push(ctx, o, func(ctx context.Context, h archive.Handler, lim archive.Limits) (*archive.Summary, error) {
		return archive.ReadAt(ctx, ra, size, h, lim)
	})
}

func push(ctx context.Context, o Options, read func(context.Context, archive.Handler, archive.Limits) (*archive.Summary, error)) (*Result, error) {
	o = o.withDefaults()
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pusher{o: o, ctx: pctx, cancel: cancel,
		statusName: map[digest.Digest]string{}, srcRepo: map[string]string{},
		owners: map[digest.Digest]map[string]bool{}, manifests: map[digest.Digest]*manifest{},
		present: map[digest.Digest]map[string]bool{},
		jobs:    make(chan struct{}, o.Jobs), mem: semaphore.NewWeighted(o.MaxBuffer), spool: semaphore.NewWeighted(max(o.MaxSpool, 1)),
		bufs: bufPool{size: int(o.ChunkSize)}}
	p.res.Registry = o.Target.String()
	have := func(d digest.Digest) bool { // a partial archive's blob left out
		for repo := range p.owners[d] {
			if ok, _ := p.has(pctx, repo, d); ok {
				return true
			}
		}
		// another package's repository: mounted from there once the
		// archive is read (ensureBlob)
		for _, repo := range p.o.Sources {
			if ok, _ := p.has(pctx, repo, d); ok {
				return true
			}
		}
		return false
	}
	var h archive.Handler = p
	var sigs *sigverify.Collector
	if o.Verify != nil {
		sigs = sigverify.NewCollector(p)
		h = sigs
	}
	sum, err := read(pctx, h, archive.Limits{Have: have})
	if err != nil {
		p.cancel(err) // uploads still running stop
	}
	p.wg.Wait()
	if cerr := context.Cause(pctx); cerr != nil && cerr != context.Canceled && !errors.Is(err, cerr) {
		err = cerr // the failed upload, not the reader's "context canceled"
	} else if err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if p.pkgs == nil {
		return nil, fmt.Errorf("%s: missing", archive.PackageEntry)
	}
	p.res.ArchiveBlobs, p.res.ArchiveBlobsBytes = len(sum.Blobs), sum.Bytes
	if sigs != nil {
		verdicts, err := sigs.Verify(o.Verify, time.Now())
		if err != nil {
			return nil, fmt.Errorf("%w; nothing was tagged", err)
		}
		p.res.Signatures = verdicts
	}
	if err := p.complete(ctx, sum); err != nil {
		return nil, err
	}
	p.res.BytesSent = p.c.sent.Load()
	p.res.RequestsRetried = p.c.retries.Load()
	return &p.res, nil
}

// fail records the first failure of a background upload and stops the rest.
func (p *pusher) fail(err error) { p.cancel(err) }

// failed is the first failure so far.
func (p *pusher) failed() error {
	if p.ctx.Err() != nil {
		return context.Cause(p.ctx)
	}
	return nil
}

// client connects once the repositories are known (after index.json): a
// bearer token is asked for push on all of them at once.
func (p *pusher) client(ctx context.Context) (*client, error) {
	if p.c != nil {
		return p.c, nil
	}
	var repos []string
	for _, im := range p.images {
		repos = append(repos, im.repo)
	}
	for _, r := range p.o.Sources {
		repos = append(repos, r)
	}
	c, err := dial(ctx, p.o, repos, "push,pull")
	if err != nil {
		return nil, err
	}
	p.c = c
	return c, nil
}

// withDefaults fills in the defaults of Options.
func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobs
	}
	if o.MaxBuffer < o.ChunkSize {
		o.MaxBuffer = int64(o.Jobs) * o.ChunkSize
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.SpoolDir != "" && o.MaxSpool <= 0 {
		o.MaxSpool = DefaultMaxSpool
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.UserAgent == "" {
		o.UserAgent = "crpe"
	}
	return o
}

// dial connects to o.Target's registry with a transport that authenticates
// for actions ("push,pull" or "pull") on repos (o is withDefaults'd).
func dial(ctx context.Context, o Options, repos []string, actions string) (*client, error) {
	opts := []name.Option{name.WeakValidation}
	if o.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(o.Target.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", o.Target.Host, err)
	}
	auth := o.Auth
	if auth == nil {
		if auth, err = authn.Resolve(ctx, o.Keychain, reg); err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", reg.RegistryStr(), err)
		}
	}
	base := o.Transport
	if base == nil {
		if base, err = baseTransport(o.CAFile); err != nil {
			return nil, err
		}
	}
	var scopes []string
	seen := map[string]bool{}
	for _, r := range repos {
		if !seen[r] {
			seen[r] = true
			scopes = append(scopes, "repository:"+r+":"+actions)
		}
	}
	sort.Strings(scopes)
	var rt http.RoundTripper
	for i := 1; ; i++ {
		rt, err = transport.NewWithContext(ctx, reg, auth, transport.NewUserAgent(base, o.UserAgent), scopes)
		if err == nil || i >= o.Attempts || ctx.Err() != nil || !retryablePing(err) {
			break
		}
		t := time.NewTimer(o.Backoff << (i - 1))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", reg.RegistryStr(), err)
	}
	return &client{base: reg.Scheme() + "://" + reg.RegistryStr(), hc: &http.Client{Transport: rt},
		attempts: o.Attempts, backoff: o.Backoff}, nil
}

// retryablePing tells whether connecting may be tried again: the ping
// failed on the network or with a 5xx.
func retryablePing(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var ne net.Error
	return errors.As(err, &ne) || strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "EOF")
}

// baseTransport is http.DefaultTransport trusting caFile besides the
// system's CAs.
func baseTransport(caFile string) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 5 * time.Minute
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

func (p *pusher) Package(data []byte) error {
	pkgs, err := kubepkg.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", archive.PackageEntry, err)
	}
	p.refs = map[string]bool{}
	for _, pk := range pkgs {
		if err := pk.Validate(); err != nil {
			return fmt.Errorf("%s: package %s: %w", archive.PackageEntry, pk.Metadata.Name, err)
		}
		for ref := range pk.Spec.Images {
			p.refs[ref] = true
		}
		dms, _ := pk.StatusDigests()
		for _, m := range dms {
			if _, ok := p.statusName[m.Digest]; !ok && m.Repository != "" {
				p.statusName[m.Digest] = m.Repository
			}
		}
		p.res.PackageNames = append(p.res.PackageNames, pk.Metadata.Name+"@"+pk.Spec.Version)
	}
	if p.o.CheckPackages != nil {
		if err := p.o.CheckPackages(pkgs); err != nil {
			return err
		}
	}
	p.pkgs = pkgs
	return nil
}

func (p *pusher) Index(idx ocispec.Index) error {
	flat := map[string]string{} // registry repository → source, for collisions
	for _, m := range idx.Manifests {
		ref := m.Annotations[archive.AnnotationImageName]
		if ref == "" {
			ref = m.Annotations[archive.AnnotationRefName]
		}
		r, err := oci.ParseReference(ref)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", archive.IndexEntry, ref, err)
		}
		repo, err := p.o.Target.Repository(r.Repository, p.o.Naming)
		if err != nil {
			return err
		}
		if other, ok := flat[repo]; ok && other != r.Repository {
			return fmt.Errorf("%s and %s would both be %s in the registry: push them with the nested naming, or under different prefixes", other, r.Repository, repo)
		}
		flat[repo] = r.Repository
		p.srcRepo[r.Repository] = repo
		subject, _ := archive.ArtifactOf(m)
		p.images = append(p.images, &image{ref: ref, src: r.Repository, repo: repo, tag: r.Tag, desc: m, subject: subject})
		p.own(m.Digest, repo)
	}
	// status.digests names repositories too: they must map (they are the
	// images' own, which the reader checks)
	for d, src := range p.statusName {
		if repo, ok := p.srcRepo[src]; ok {
			p.own(d, repo)
		}
	}
	return nil
}

func (p *pusher) own(d digest.Digest, repo string) {
	if p.owners[d] == nil {
		p.owners[d] = map[string]bool{}
	}
	p.owners[d][repo] = true
}

// home is the repository a blob is first pushed to: one that needs it.
func (p *pusher) home(d digest.Digest) string {
	var repos []string
	for r := range p.owners[d] {
		repos = append(repos, r)
	}
	if len(repos) == 0 {
		return p.images[0].repo
	}
	sort.Strings(repos)
	return repos[0]
}

func (p *pusher) markPresent(d digest.Digest, repo string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.present[d] == nil {
		p.present[d] = map[string]bool{}
	}
	p.present[d][repo] = true
}

// has tells whether repo holds blob d (known, else HEAD).
func (p *pusher) has(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	p.mu.Lock()
	ok := p.present[d][repo]
	p.mu.Unlock()
	if ok {
		return true, nil
	}
	c, err := p.client(ctx)
	if err != nil {
		return false, err
	}
	ok, err = c.exists(ctx, repo, "blobs", d)
	if ok {
		p.markPresent(d, repo)
	}
	return ok, err
}

func (p *pusher) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if err := p.failed(); err != nil {
		return err
	}
	if mb, ok := r.(*archive.ManifestBlob); ok && kind == oci.KindManifest {
		p.manifests[desc.Digest] = &manifest{body: mb.Body, m: mb.Manifest}
		for _, ch := range mb.Manifest.Children() {
			for repo := range p.owners[desc.Digest] {
				p.own(ch.Digest, repo)
			}
		}
		return nil
	}
	if kind == oci.KindManifest {
		return fmt.Errorf("manifest %s: the archive reader gave no parsed manifest", desc.Digest)
	}
	repo := p.home(desc.Digest)
	ok, err := p.has(p.ctx, repo, desc.Digest)
	if err != nil {
		return err
	}
	if ok {
		p.mu.Lock()
		p.res.BlobsSkipped++
		p.res.BytesSkipped += desc.Size
		p.mu.Unlock()
		return nil // the reader still reads and verifies the bytes
	}
	if desc.Size > p.o.ChunkSize && p.o.SpoolDir != "" && desc.Size <= p.o.MaxSpool {
		return p.spooled(repo, desc, r)
	}
	select {
	case p.jobs <- struct{}{}:
	case <-p.ctx.Done():
		return p.failed()
	}
	if desc.Size <= p.o.ChunkSize {
		return p.small(repo, desc, r)
	}
	return p.chunked(repo, desc, r)
}

// done ends an upload started by Blob.
func (p *pusher) done(repo string, desc ocispec.Descriptor, err error) {
	defer func() { <-p.jobs }()
	if err != nil {
		p.fail(fmt.Errorf("blob %s (%d bytes) to %s: %w", desc.Digest, desc.Size, repo, err))
		return
	}
	p.markPresent(desc.Digest, repo)
	p.mu.Lock()
	p.res.BlobsPushed++
	p.res.BytesPushed += desc.Size
	p.mu.Unlock()
}

// small reads a blob of at most a chunk, verified, and puts it in one
// request in the background (a new session on each try).
func (p *pusher) small(repo string, desc ocispec.Descriptor, r io.Reader) error {
	if err := p.mem.Acquire(p.ctx, desc.Size); err != nil {
		<-p.jobs
		return p.failed()
	}
	body := p.bufs.get(int(desc.Size))
	_, err := io.ReadFull(r, body)
	if err == nil {
		err = expectEOF(r)
	}
	if err != nil {
		p.bufs.put(body)
		p.mem.Release(desc.Size)
		<-p.jobs
		return err
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.mem.Release(desc.Size)
		var err error
		tries := 0
		defer func() {
			if err == nil && tries == 1 { // acknowledged by the one request that read it
				p.bufs.put(body)
			}
		}()
		for i := 1; ; i++ {
			tries = i
			var loc string
			if loc, _, err = p.c.startUpload(p.ctx, repo, desc.Digest, ""); err == nil {
				if err = p.c.putMonolithic(p.ctx, repo, loc, desc.Digest, body); err == nil {
					break
				}
				p.c.cancel(loc)
			}
			var e *Error
			status := 0
			if errors.As(err, &e) {
				status = e.Status
			}
			var re *RefusedError
			if errors.As(err, &re) || !temporary(errUnlessNet(err, e), status) || i >= p.c.attempts || p.ctx.Err() != nil {
				break
			}
			p.c.retries.Add(1)
			if p.c.wait(p.ctx, i) != nil {
				break
			}
		}
		p.done(repo, desc, err)
	}()
	return nil
}

// errUnlessNet is err when it is not a registry answer (a network error).
func errUnlessNet(err error, e *Error) error {
	if e != nil {
		return nil
	}
	return err
}

// expectEOF reads the end of a verifying reader: io.EOF once every byte was
// read and matched its digest, else its error.
func expectEOF(r io.Reader) error {
	var b [1]byte
	n, err := r.Read(b[:])
	if n > 0 {
		return fmt.Errorf("blob longer than announced")
	}
	if err == io.EOF {
		return nil
	}
	if err == nil {
		return expectEOF(r)
	}
	return err
}

// chunked streams a blob larger than a chunk: the reader side reads chunks
// (each held in memory within MaxBuffer) and hands them to a goroutine
// that PATCHes them in order, resuming a broken one, then PUTs the digest.
// A chunk that fails verification (the last one, at EOF) cancels the
// session: nothing is completed.
func (p *pusher) chunked(repo string, desc ocispec.Descriptor, r io.Reader) error {
	ch := make(chan []byte, int(p.o.MaxBuffer/p.o.ChunkSize)+1)
	abort := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.done(repo, desc, p.sendChunks(repo, desc, ch, abort))
		// after a failure (which stopped the reader side): release what
		// was not sent
		for {
			select {
			case b, ok := <-ch:
				if !ok {
					return
				}
				p.mem.Release(int64(len(b)))
			case <-abort:
				return
			}
		}
	}()
	var off int64
	for off < desc.Size {
		n := min(p.o.ChunkSize, desc.Size-off)
		if err := p.mem.Acquire(p.ctx, n); err != nil {
			close(abort)
			return p.failed()
		}
		buf := p.bufs.get(int(n))
		_, err := io.ReadFull(r, buf)
		if err == nil && off+n == desc.Size {
			err = expectEOF(r)
		}
		if err != nil {
			p.bufs.put(buf)
			p.mem.Release(n)
			close(abort)
			return err
		}
		select {
		case ch <- buf:
		case <-p.ctx.Done():
			p.mem.Release(n)
			close(abort)
			return p.failed()
		}
		off += n
	}
	close(ch)
	return nil
}

// sendChunks uploads the chunks of ch in order.
func (p *pusher) sendChunks(repo string, desc ocispec.Descriptor, ch <-chan []byte, abort <-chan struct{}) (err error) {
	var loc string
	release := func(b []byte) { p.mem.Release(int64(len(b))) }
	defer func() {
		if err != nil {
			p.c.cancel(loc)
		}
	}()
	if loc, _, err = p.c.startUpload(p.ctx, repo, desc.Digest, ""); err != nil {
		return err
	}
	var off int64
	for {
		var buf []byte
		var ok bool
		select {
		case buf, ok = <-ch:
		case <-abort:
			return errors.New("the archive's blob failed verification")
		case <-p.ctx.Done():
			return p.failed()
		}
		if !ok {
			break
		}
		var retried bool
		loc, retried, err = p.sendChunk(repo, desc, loc, off, buf)
		if err == nil && !retried {
			p.bufs.put(buf) // acknowledged by the one request that read it
		}
		release(buf)
		if err != nil {
			return err
		}
		off += int64(len(buf))
	}
	// every byte is there and was verified on the way in
	select {
	case <-abort:
		return errors.New("the archive's blob failed verification")
	default:
	}
	return p.c.finish(p.ctx, repo, loc, desc.Digest)
}

// sendChunk PATCHes buf, the blob's bytes at off, resuming as sendRange
// does. retried tells whether a failed request read buf (its transport may
// still be reading it).
func (p *pusher) sendChunk(repo string, desc ocispec.Descriptor, loc string, off int64, buf []byte) (_ string, retried bool, _ error) {
	return p.sendRange(repo, desc, loc, off, int64(len(buf)), func(from int64) io.Reader {
		return bytes.NewReader(buf[from-off:])
	})
}

// sendRange PATCHes the n bytes of the blob at start, read by open(from)
// from offset from; on a network error or a 5xx it asks the session where
// it stands and sends the rest from there, or (when the session holds
// nothing of worth: start is 0) starts a new one. retried tells whether a
// request failed.
func (p *pusher) sendRange(repo string, desc ocispec.Descriptor, loc string, start, n int64, open func(from int64) io.Reader) (_ string, retried bool, _ error) {
	off := start
	for i := 1; ; i++ {
		next, err := p.c.patch(p.ctx, repo, loc, off, open(off), start+n-off)
		if err == nil {
			return next, i > 1, nil
		}
		var e *Error
		status := 0
		if errors.As(err, &e) {
			status = e.Status
		}
		if !temporary(errUnlessNet(err, e), status) && status != http.StatusRequestedRangeNotSatisfiable || i >= p.c.attempts || p.ctx.Err() != nil {
			return "", true, err
		}
		p.c.retries.Add(1)
		if werr := p.c.wait(p.ctx, i); werr != nil {
			return "", true, werr
		}
		got, nloc, ambiguous, serr := p.c.uploadStatus(p.ctx, repo, loc)
		switch {
		case serr == nil && !ambiguous && got >= start && got <= start+n:
			loc, off = nloc, got
			if off == start+n {
				return loc, true, nil // the registry had it all
			}
		case start == 0:
			// the session holds nothing that is not in this range: a new one
			p.c.cancel(loc)
			nloc, _, err := p.c.startUpload(p.ctx, repo, desc.Digest, "")
			if err != nil {
				return "", true, err
			}
			loc, off = nloc, 0
		default:
			if serr == nil {
				serr = fmt.Errorf("the registry holds %d bytes, the chunk starts at %d", got, start)
			}
			return "", true, fmt.Errorf("resume the upload at %d: %w (rerun the import: what the registry holds is not sent again)", start, serr)
		}
		p.mu.Lock()
		p.res.UploadsResumed++
		p.mu.Unlock()
	}
}

// BlobAt takes a blob larger than a chunk (that the registry lacks) from
// its place in the archive file: it is uploaded in the background, Jobs at
// once, in PATCHes read straight from the file (no buffer held),
// hashed as it is sent, and completed only when its bytes match its digest
// (else its session is cancelled). The archive reader moves on without
// reading it.
func (p *pusher) BlobAt(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, e *archive.Extent) (bool, error) {
	if err := p.failed(); err != nil {
		return false, err
	}
	if desc.Size <= p.o.ChunkSize || kind == oci.KindManifest {
		return false, nil // the stream path (a small blob is read into one request anyway)
	}
	repo := p.home(desc.Digest)
	if ok, err := p.has(p.ctx, repo, desc.Digest); err != nil || ok {
		return false, err // present: Blob counts it, the reader verifies it
	}
	v, err := archive.NewExtentVerifier(e, desc)
	if err != nil {
		return false, err
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case p.jobs <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		p.done(repo, desc, p.sendExtent(repo, desc, v))
	}()
	return true, nil
}

// sendExtent uploads a blob from the archive file through v, in PATCHes of
// at most MaxPatch bytes (default: one), and completes it once v verified
// it.
func (p *pusher) sendExtent(repo string, desc ocispec.Descriptor, v *archive.ExtentVerifier) error {
	return p.sendFrom(repo, desc, p.o.MaxPatch, v.Section, v.Verify)
}

// sendFrom uploads a blob whose bytes open reads from any offset (the
// archive file, a spooled copy), in PATCHes of at most patch bytes (0: one),
// resuming a broken one as sendRange does (reading again from where the
// session stands: nothing is held in memory); check, when set, must pass
// before the upload is completed, else its session is cancelled.
func (p *pusher) sendFrom(repo string, desc ocispec.Descriptor, patch int64, open func(from, end int64) io.Reader, check func() error) (err error) {
	var loc string
	defer func() {
		if err != nil {
			p.c.cancel(loc)
		}
	}()
	if loc, _, err = p.c.startUpload(p.ctx, repo, desc.Digest, ""); err != nil {
		return err
	}
	for off := int64(0); off < desc.Size; {
		n := desc.Size - off
		if patch > 0 {
			n = min(n, patch)
		}
		end := off + n
		if loc, _, err = p.sendRange(repo, desc, loc, off, n, func(from int64) io.Reader { return open(from, end) }); err != nil {
			return err
		}
		off = end
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	return p.c.finish(p.ctx, repo, loc, desc.Digest)
}

// bufPool recycles the chunk buffers (ChunkSize each): a fresh 8 MiB
// buffer per chunk cost zeroing, page faults and a heap twice the chunks
// held until the GC ran. A buffer goes back only once the registry
// acknowledged its bytes (after a failed request, the transport may still
// be reading it: it is left to the GC). At most MaxBuffer bytes are out at
// once (the semaphore), so the pool holds at most that much.
type bufPool struct {
	size int
	mu   sync.Mutex
	free [][]byte
}

// get is a buffer of n bytes (n ≤ size), its content undefined; one of less
// than half a chunk (a config, a small layer) is its own, not recycled.
func (b *bufPool) get(n int) []byte {
	if n < b.size/2 {
		return make([]byte, n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if k := len(b.free); k > 0 {
		buf := b.free[k-1]
		b.free = b.free[:k-1]
		return buf[:n]
	}
	return make([]byte, n, b.size)
}

func (b *bufPool) put(buf []byte) {
	if cap(buf) != b.size {
		return
	}
	b.mu.Lock()
	b.free = append(b.free, buf[:0])
	b.mu.Unlock()
}

// spooled copies a blob larger than a chunk to an unlinked temp file as the
// archive reader verifies it, and uploads it from there in the background
// once an upload slot is free: the reader goes on with the next blob.
func (p *pusher) spooled(repo string, desc ocispec.Descriptor, r io.Reader) error {
	if err := p.spool.Acquire(p.ctx, desc.Size); err != nil {
		return p.failed()
	}
	f, err := os.CreateTemp(p.o.SpoolDir, "crpe-push-*")
	if err != nil {
		p.spool.Release(desc.Size)
		return fmt.Errorf("spooling blob %s: %w", desc.Digest, err)
	}
	_ = os.Remove(f.Name()) // unlinked: gone with the file, whatever happens
	release := func() {
		_ = f.Close()
		p.spool.Release(desc.Size)
	}
	buf := p.bufs.get(int(p.o.ChunkSize))
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, buf)
	p.bufs.put(buf)
	if err == nil && n != desc.Size {
		err = fmt.Errorf("blob %s: %d bytes, want %d", desc.Digest, n, desc.Size)
	}
	if err != nil { // the reader's error (a digest mismatch is found at EOF)
		release()
		return err
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer release()
		select {
		case p.jobs <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		p.done(repo, desc, p.sendFile(repo, desc, f))
	}()
	return nil
}

// sendFile uploads a spooled blob in chunk-sized PATCHes read straight
// from the file (sendFrom).
func (p *pusher) sendFile(repo string, desc ocispec.Descriptor, f *os.File) error {
	return p.sendFrom(repo, desc, p.o.ChunkSize, func(from, end int64) io.Reader { return io.NewSectionReader(f, from, end-from) }, nil)
}
