// Package upstream fetches from real registries: manifests by tag or digest,
// blob HEADs, and blob bodies that resume with a Range request when a
// transfer breaks. It is a thin layer over go-containerregistry's transport
// (the ping, the bearer-token flow and credentials from Docker's
// config.json and credential helpers via authn.DefaultKeychain), plus:
// --registry-endpoint HOST=URL to send a registry's traffic to a mirror,
// plain HTTP for loopback and --insecure-registry hosts, and bounded retries
// with backoff on 5xx, 429 and network errors.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
)

// ManifestAccept is the Accept header sent for manifests.
var ManifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// Options configure a Client.
type Options struct {
	// Endpoints sends a registry host's traffic to another base URL
	// (scheme://host[:port]), e.g. docker.io → http://127.0.0.1:5000.
	Endpoints map[string]string
	// Insecure lists hosts reached over plain HTTP. Loopback hosts always are.
	Insecure []string
	// Keychain resolves credentials; default authn.DefaultKeychain (Docker's
	// config.json and credential helpers).
	Keychain authn.Keychain
	// Transport is the base transport (default: a clone of
	// http.DefaultTransport with timeouts).
	Transport http.RoundTripper
	// Attempts bounds tries per request (default 4); Backoff is the first
	// wait between them, doubled each time (default 250ms).
	Attempts int
	Backoff  time.Duration
	// UserAgent is sent with every request.
	UserAgent string
}

// ParseEndpoint parses "HOST=URL".
func ParseEndpoint(s string) (host, base string, err error) {
	host, base, ok := strings.Cut(s, "=")
	if !ok || host == "" || base == "" {
		return "", "", fmt.Errorf("registry endpoint %q: want HOST=URL", s)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", "", fmt.Errorf("registry endpoint %q: want HOST=http(s)://host[:port]", s)
	}
	return oci.CanonicalHost(host), u.Scheme + "://" + u.Host, nil
}

// Client talks to upstream registries.
type Client struct {
	o    Options
	base http.RoundTripper

	mu         sync.Mutex
	transports map[string]http.RoundTripper // per registry+repo (token scope)
}

// New returns a client.
func New(o Options) *Client {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.UserAgent == "" {
		o.UserAgent = "crpe"
	}
	base := o.Transport
	if base == nil {
		base = DefaultTransport()
	}
	return &Client{o: o, base: base, transports: map[string]http.RoundTripper{}}
}

// Repo is an upstream repository: the registry host as named in image
// references (docker.io, ghcr.io, 127.0.0.1:5000) and the path within it.
type Repo struct {
	Host string
	Path string
}

// SplitRepo splits a full repository name ("docker.io/library/nginx") into
// host and path. ok is false when the first component is not a host.
func SplitRepo(full string) (Repo, bool) {
	host, path, ok := oci.SplitRepository(full)
	return Repo{Host: host, Path: path}, ok
}

func (r Repo) String() string { return r.Host + "/" + r.Path }

// target is where a repo's requests go.
func (c *Client) target(r Repo) (name.Registry, string, error) {
	host := r.Host
	if host == "docker.io" {
		host = name.DefaultRegistry
	}
	opts := []name.Option{name.StrictValidation}
	scheme := ""
	if ep, ok := c.o.Endpoints[r.Host]; ok {
		u, _ := url.Parse(ep)
		host, scheme = u.Host, u.Scheme
	}
	for _, h := range c.o.Insecure {
		if oci.CanonicalHost(h) == r.Host || h == host {
			scheme = "http"
		}
	}
	if scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return name.Registry{}, "", err
	}
	if scheme == "" {
		scheme = reg.Scheme()
	}
	return reg, scheme, nil
}

func (c *Client) transport(ctx context.Context, r Repo) (http.RoundTripper, string, string, error) {
	reg, scheme, err := c.target(r)
	if err != nil {
		return nil, "", "", err
	}
	key := reg.Name() + "/" + r.Path
	c.mu.Lock()
	t, ok := c.transports[key]
	c.mu.Unlock()
	if ok {
		return t, scheme, reg.RegistryStr(), nil
	}
	repo, err := name.NewRepository(reg.Name()+"/"+r.Path, name.WeakValidation, insecureOpt(scheme))
	if err != nil {
		return nil, "", "", fmt.Errorf("repository %s: %w", r, err)
	}
	auth, err := authn.Resolve(ctx, c.o.Keychain, repo)
	if err != nil {
		return nil, "", "", fmt.Errorf("credentials for %s: %w", r.Host, err)
	}
	base := transport.NewUserAgent(c.base, c.o.UserAgent)
	t, err = transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, "", "", &Error{Op: "connect", Repo: r, Err: err, Temporary: isTemporary(err)}
	}
	c.mu.Lock()
	c.transports[key] = t
	c.mu.Unlock()
	return t, scheme, reg.RegistryStr(), nil
}

func insecureOpt(scheme string) name.Option {
	if scheme == "http" {
		return name.Insecure
	}
	return name.WeakValidation
}

// Error is an upstream failure. Temporary tells whether the upstream could
// not be reached or answered 5xx/429 (a cache may fall back to what it has),
// as opposed to an authoritative answer such as 404.
type Error struct {
	Op        string
	Repo      Repo
	Ref       string
	Status    int
	Temporary bool
	Err       error
}

func (e *Error) Error() string {
	what := e.Repo.String()
	if e.Ref != "" {
		what += ":" + e.Ref
		if oci.IsDigestRef(e.Ref) {
			what = e.Repo.String() + "@" + e.Ref
		}
	}
	if e.Status != 0 {
		return fmt.Sprintf("upstream %s %s: HTTP %d: %v", e.Op, what, e.Status, e.Err)
	}
	return fmt.Sprintf("upstream %s %s: %v", e.Op, what, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNotFound is wrapped by errors for content the upstream says it lacks.
var ErrNotFound = errors.New("not found upstream")

// IsTemporary reports whether err means the upstream could not be reached.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}

func isTemporary(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode == 0 || te.StatusCode >= 500 || te.StatusCode == 429
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "connection reset")
}

// hostUnknown reports whether err is a DNS answer that the host does not
// exist: still an unreachable upstream (the cache falls back on what it
// holds), but not worth the retries' backoff (an air-gapped machine asking
// for docker.io waited 1.75 s for nothing).
func hostUnknown(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// do sends a request built by mk, retrying temporary failures.
func (c *Client) do(ctx context.Context, r Repo, op, ref string, mk func(scheme, host string) (*http.Request, error)) (*http.Response, error) {
	var last error
	wait := c.o.Backoff
	for attempt := 0; attempt < c.o.Attempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		t, scheme, host, err := c.transport(ctx, r)
		if err != nil {
			last = err
			if IsTemporary(err) && !hostUnknown(err) {
				continue
			}
			return nil, err
		}
		req, err := mk(scheme, host)
		if err != nil {
			return nil, err
		}
		resp, err := t.RoundTrip(req.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = &Error{Op: op, Repo: r, Ref: ref, Err: err, Temporary: true}
			if hostUnknown(err) {
				return nil, last // the name does not resolve: asking again in a second will not help
			}
			continue
		}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			last = &Error{Op: op, Repo: r, Ref: ref, Status: resp.StatusCode, Temporary: true, Err: errors.New(strings.TrimSpace(string(body)))}
			continue
		}
		return resp, nil
	}
	return nil, last
}

func statusErr(resp *http.Response, op string, r Repo, ref string) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	err := errors.New(strings.TrimSpace(string(body)))
	if resp.StatusCode == http.StatusNotFound {
		err = fmt.Errorf("%w: %s", ErrNotFound, strings.TrimSpace(string(body)))
	}
	return &Error{Op: op, Repo: r, Ref: ref, Status: resp.StatusCode, Err: err}
}

// Manifest is a manifest as an upstream served it.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Descriptor is what a HEAD tells.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

func manifestURL(scheme, host string, r Repo, ref string) string {
	return scheme + "://" + host + "/v2/" + r.Path + "/manifests/" + ref
}

// HeadManifest resolves ref (tag or digest) without fetching the body.
// Digest is empty when the upstream sends no Docker-Content-Digest.
func (c *Client) HeadManifest(ctx context.Context, r Repo, ref string) (Descriptor, error) {
	resp, err := c.do(ctx, r, "resolve", ref, func(scheme, host string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodHead, manifestURL(scheme, host, r, ref), nil)
		if err == nil {
			req.Header.Set("Accept", ManifestAccept)
		}
		return req, err
	})
	if err != nil {
		return Descriptor{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, &Error{Op: "resolve", Repo: r, Ref: ref, Status: resp.StatusCode, Err: statusText(resp.StatusCode)}
	}
	d := Descriptor{MediaType: mediaType(resp.Header.Get("Content-Type")), Size: resp.ContentLength}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		if pd, err := digest.Parse(h); err == nil {
			d.Digest = pd
		}
	}
	return d, nil
}

func statusText(code int) error {
	if code == http.StatusNotFound {
		return ErrNotFound
	}
	return errors.New(http.StatusText(code))
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(mt)
}

// GetManifest fetches a manifest by tag or digest, bounded to
// oci.MaxManifestSize. When ref is a digest the body must hash to it; when it
// is a tag the body is checked against Docker-Content-Digest if sent.
func (c *Client) GetManifest(ctx context.Context, r Repo, ref string) (*Manifest, error) {
	resp, err := c.do(ctx, r, "fetch manifest", ref, func(scheme, host string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, manifestURL(scheme, host, r, ref), nil)
		if err == nil {
			req.Header.Set("Accept", ManifestAccept)
		}
		return req, err
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusErr(resp, "fetch manifest", r, ref)
	}
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, &Error{Op: "fetch manifest", Repo: r, Ref: ref, Err: fmt.Errorf("manifest of %d bytes exceeds %d", resp.ContentLength, oci.MaxManifestSize)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, &Error{Op: "fetch manifest", Repo: r, Ref: ref, Err: err, Temporary: true}
	}
	if len(body) > oci.MaxManifestSize {
		return nil, &Error{Op: "fetch manifest", Repo: r, Ref: ref, Err: fmt.Errorf("manifest exceeds %d bytes", oci.MaxManifestSize)}
	}
	m := &Manifest{Body: body, MediaType: mediaType(resp.Header.Get("Content-Type"))}
	want := digest.Digest("")
	if d, err := digest.Parse(ref); err == nil {
		want = d
	} else if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		if d, err := digest.Parse(h); err == nil {
			want = d
		}
	}
	if want != "" {
		if got := want.Algorithm().FromBytes(body); got != want {
			return nil, &Error{Op: "fetch manifest", Repo: r, Ref: ref, Err: fmt.Errorf("%w: body hashes to %s, expected %s", cas.ErrDigestMismatch, got, want)}
		}
		m.Digest = want
	} else {
		m.Digest = digest.FromBytes(body)
	}
	return m, nil
}

func blobURL(scheme, host string, r Repo, d digest.Digest) string {
	return scheme + "://" + host + "/v2/" + r.Path + "/blobs/" + string(d)
}

// HeadBlob returns a blob's size as the upstream reports it.
func (c *Client) HeadBlob(ctx context.Context, r Repo, d digest.Digest) (int64, error) {
	resp, err := c.do(ctx, r, "stat blob", string(d), func(scheme, host string) (*http.Request, error) {
		return http.NewRequest(http.MethodHead, blobURL(scheme, host, r, d), nil)
	})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, &Error{Op: "stat blob", Repo: r, Ref: string(d), Status: resp.StatusCode, Err: statusText(resp.StatusCode)}
	}
	return resp.ContentLength, nil
}

// OpenBlob opens blob d at offset. size is the blob's total size when the
// upstream tells it (-1 otherwise).
func (c *Client) OpenBlob(ctx context.Context, r Repo, d digest.Digest, offset int64) (body io.ReadCloser, size int64, err error) {
	resp, err := c.do(ctx, r, "fetch blob", string(d), func(scheme, host string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, blobURL(scheme, host, r, d), nil)
		if err == nil && offset > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		}
		return req, err
	})
	if err != nil {
		return nil, 0, err
	}
	switch {
	case offset == 0 && resp.StatusCode == http.StatusOK:
		return resp.Body, resp.ContentLength, nil
	case offset > 0 && resp.StatusCode == http.StatusPartialContent:
		size = -1
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			if _, total, ok := strings.Cut(cr, "/"); ok {
				if n, err := strconv.ParseInt(total, 10, 64); err == nil {
					size = n
				}
			}
		}
		return resp.Body, size, nil
	case offset > 0 && resp.StatusCode == http.StatusOK:
		// no range support: skip what we have
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			resp.Body.Close()
			return nil, 0, &Error{Op: "fetch blob", Repo: r, Ref: string(d), Err: err, Temporary: true}
		}
		return resp.Body, resp.ContentLength, nil
	}
	return nil, 0, statusErr(resp, "fetch blob", r, string(d))
}

// MaxTags bounds how many tags are read from an upstream's listing.
const MaxTags = 100000

// Tags lists all tags of r, following Link pagination, sorted.
func (c *Client) Tags(ctx context.Context, r Repo) ([]string, error) {
	var all []string
	next := ""
	for page := 0; page < 1000; page++ {
		resp, err := c.do(ctx, r, "list tags", "", func(scheme, host string) (*http.Request, error) {
			u := scheme + "://" + host + "/v2/" + r.Path + "/tags/list?n=1000"
			if next != "" {
				u = scheme + "://" + host + next
			}
			return http.NewRequest(http.MethodGet, u, nil)
		})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, statusErr(resp, "list tags", r, "")
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body)
		resp.Body.Close()
		if err != nil {
			return nil, &Error{Op: "list tags", Repo: r, Err: err}
		}
		all = append(all, body.Tags...)
		if len(all) > MaxTags {
			return nil, &Error{Op: "list tags", Repo: r, Err: fmt.Errorf("more than %d tags", MaxTags)}
		}
		link := resp.Header.Get("Link")
		if link == "" {
			break
		}
		start, end := strings.Index(link, "<"), strings.Index(link, ">")
		if start < 0 || end <= start+1 || !strings.HasPrefix(link[start+1:end], "/v2/") {
			break
		}
		next = link[start+1 : end]
	}
	sort.Strings(all)
	return all, nil
}

// DefaultTransport is the HTTP transport upstream clients use unless told
// otherwise: a minute for response headers, 16 idle connections per host.
func DefaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 16
	return t
}

// ErrNoReferrersAPI is returned by Referrers when the upstream does not
// serve the OCI 1.1 referrers API (404): its referrers, if any, are listed
// by the fallback tag (oci.ReferrersTag).
var ErrNoReferrersAPI = errors.New("the upstream has no referrers API")

// Referrers lists the manifests of r whose subject is d (GET
// /v2/<name>/referrers/<digest>, OCI 1.1), bounded to oci.MaxIndexSize.
func (c *Client) Referrers(ctx context.Context, r Repo, d digest.Digest) (*ocispec.Index, error) {
	resp, err := c.do(ctx, r, "list referrers", string(d), func(scheme, host string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+host+"/v2/"+r.Path+"/referrers/"+string(d), nil)
		if err == nil {
			req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
		}
		return req, err
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		// a registry with the API answers an empty index for a digest
		// without referrers; 404 is a registry without it
		return nil, &Error{Op: "list referrers", Repo: r, Ref: string(d), Status: resp.StatusCode, Err: ErrNoReferrersAPI}
	case resp.StatusCode != http.StatusOK:
		return nil, statusErr(resp, "list referrers", r, string(d))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxIndexSize+1))
	if err != nil {
		return nil, &Error{Op: "list referrers", Repo: r, Ref: string(d), Err: err, Temporary: true}
	}
	if len(body) > oci.MaxIndexSize {
		return nil, &Error{Op: "list referrers", Repo: r, Ref: string(d), Err: fmt.Errorf("referrers list exceeds %d bytes", oci.MaxIndexSize)}
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, &Error{Op: "list referrers", Repo: r, Ref: string(d), Err: fmt.Errorf("not an image index: %w", err)}
	}
	return &idx, nil
}
