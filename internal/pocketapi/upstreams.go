package pocketapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// Upstreams owns the pocket's pull-through cache, one for the pocket's
// life, and keeps its upstream resolution in step with the registries'
// settings: the command line's endpoints and insecure hosts, overlaid with
// the registries stored through the API (endpoint, plain HTTP,
// credentials). A change of settings gives the cache a new upstream client
// (pullthrough.Cache.SetUpstream): requests that start afterwards use it,
// transfers already running finish with the one they started with, and a
// miss of a blob being fetched joins that fetch.
type Upstreams struct {
	st      *storage.Storage
	base    upstream.Options
	offline bool
	meter   *Meter
	// transport is every client's base transport (metered), so that a change
	// of settings leaves no connection pool behind
	transport http.RoundTripper
	cache     *pullthrough.Cache
	// offlineCache reads the same cache and never asks an upstream (an
	// export asked to be offline)
	offlineCache *pullthrough.Cache

	mu sync.Mutex // one Reload at a time: the last settings stored win

	fbMu      sync.Mutex
	fbWatches map[*fallbackWatch]struct{}
}

type fallbackWatch struct{ fn func(pullthrough.Fallback) }

// NewUpstreams builds the cache from base and the stored registries.
// Fallbacks (tags served from the cache because the upstream could not be
// reached) are logged to log when it is set.
func NewUpstreams(st *storage.Storage, base upstream.Options, offline bool, log *slog.Logger) (*Upstreams, error) {
	u := &Upstreams{st: st, base: base, offline: offline, meter: &Meter{active: map[digest.Digest]*atomic.Int64{}},
		fbWatches: map[*fallbackWatch]struct{}{}}
	t := base.Transport
	if t == nil {
		t = upstream.DefaultTransport()
	}
	u.transport = u.meter.wrap(t)
	up, err := u.client()
	if err != nil {
		return nil, err
	}
	logFallback := pullthrough.LogFallback(log)
	u.cache = pullthrough.New(st.Store, st.DB, up, pullthrough.Options{Offline: offline, OnFallback: func(f pullthrough.Fallback) {
		if logFallback != nil {
			logFallback(f)
		}
		u.tellFallback(f)
	}})
	u.offlineCache = pullthrough.New(st.Store, st.DB, up, pullthrough.Options{Offline: true})
	return u, nil
}

// Cache is the pocket's cache.
func (u *Upstreams) Cache() *pullthrough.Cache { return u.cache }

// CacheFor is the pocket's cache, or, for offline, a view of it that never
// asks an upstream.
func (u *Upstreams) CacheFor(offline bool) *pullthrough.Cache {
	if offline {
		return u.offlineCache
	}
	return u.cache
}

// WatchFallbacks tells fn of every tag the cache serves from what it holds
// because the upstream cannot be reached, until stop is called.
func (u *Upstreams) WatchFallbacks(fn func(pullthrough.Fallback)) (stop func()) {
	w := &fallbackWatch{fn: fn}
	u.fbMu.Lock()
	u.fbWatches[w] = struct{}{}
	u.fbMu.Unlock()
	return func() {
		u.fbMu.Lock()
		delete(u.fbWatches, w)
		u.fbMu.Unlock()
	}
}

func (u *Upstreams) tellFallback(f pullthrough.Fallback) {
	u.fbMu.Lock()
	defer u.fbMu.Unlock()
	for w := range u.fbWatches {
		w.fn(f)
	}
}

// Offline tells whether the pocket never asks an upstream.
func (u *Upstreams) Offline() bool { return u.offline }

// Close is for a pocket that stops: the cache lets the fetches whose bytes
// are all in and verified commit (a client may already hold them) and
// cancels the others, waiting until ctx is done.
func (u *Upstreams) Close(ctx context.Context) error { return u.cache.Close(ctx) }

// Reload brings the cache's upstream resolution in step with the stored
// registries.
func (u *Upstreams) Reload() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	up, err := u.client()
	if err != nil {
		return err
	}
	u.cache.SetUpstream(up)
	return nil
}

// client builds an upstream client from base and the stored registries.
func (u *Upstreams) client() (*upstream.Client, error) {
	var regs []*repodb.PocketRegistry
	if err := u.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		regs, err = tx.PocketRegistries()
		return err
	}); err != nil {
		return nil, err
	}
	o := u.base
	o.Endpoints = map[string]string{}
	for h, e := range u.base.Endpoints {
		o.Endpoints[h] = e
	}
	o.Insecure = append([]string(nil), u.base.Insecure...)
	kc := &keychain{creds: map[string]authn.AuthConfig{}, next: u.base.Keychain}
	if kc.next == nil {
		kc.next = authn.DefaultKeychain
	}
	for _, r := range regs {
		if r.Endpoint != "" {
			o.Endpoints[r.Host] = r.Endpoint
		}
		if r.Insecure {
			o.Insecure = append(o.Insecure, r.Host)
		}
		if r.Username != "" || r.Password != "" {
			cfg := authn.AuthConfig{Username: r.Username, Password: r.Password}
			kc.creds[r.Host] = cfg
			if r.Endpoint != "" {
				if eu, err := url.Parse(r.Endpoint); err == nil {
					kc.creds[strings.ToLower(eu.Host)] = cfg
				}
			}
		}
	}
	o.Keychain = kc
	o.Transport = u.transport
	return upstream.New(o), nil
}

// keychain answers the stored credentials of a registry, else asks next
// (Docker's config.json and credential helpers).
type keychain struct {
	creds map[string]authn.AuthConfig
	next  authn.Keychain
}

func (k *keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := oci.CanonicalHost(r.RegistryStr())
	if c, ok := k.creds[host]; ok {
		return authn.FromConfig(c), nil
	}
	return k.next.Resolve(r)
}

// Meter counts the bytes of upstream blob bodies as they arrive, per digest,
// so that progress can be told while a blob is still on its way.
type Meter struct {
	mu     sync.Mutex
	active map[digest.Digest]*atomic.Int64
}

// InFlight returns how many bytes of blob d have arrived from an upstream
// transfer that is still open (0 when none is).
func (m *Meter) InFlight(d digest.Digest) int64 {
	m.mu.Lock()
	c := m.active[d]
	m.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Load()
}

func (m *Meter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil || req.Method != http.MethodGet || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent) {
			return resp, err
		}
		i := strings.LastIndex(req.URL.Path, "/blobs/")
		if i < 0 {
			return resp, err
		}
		d := digest.Digest(req.URL.Path[i+len("/blobs/"):])
		if d.Validate() != nil {
			return resp, err
		}
		c := &atomic.Int64{}
		if cr := resp.Header.Get("Content-Range"); resp.StatusCode == http.StatusPartialContent && cr != "" {
			// bytes START-END/TOTAL: the transfer resumes at START
			if s, _, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-"); ok {
				if n, err := strconv.ParseInt(s, 10, 64); err == nil {
					c.Store(n)
				}
			}
		}
		m.mu.Lock()
		m.active[d] = c
		m.mu.Unlock()
		resp.Body = &meteredBody{ReadCloser: resp.Body, n: c, done: func() {
			m.mu.Lock()
			if m.active[d] == c {
				delete(m.active, d)
			}
			m.mu.Unlock()
		}}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type meteredBody struct {
	io.ReadCloser
	n    *atomic.Int64
	once sync.Once
	done func()
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *meteredBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}
