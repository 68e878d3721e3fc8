package pocketapi

import (
	"context"
	"errors"
	"io"
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

// Upstreams owns the pocket's pull-through cache and rebuilds it when the
// registries' settings change: the command line's endpoints and insecure
// hosts, overlaid with the registries stored through the API (endpoint,
// plain HTTP, credentials). A rebuilt cache serves new requests; fetches
// already running finish on the old one.
type Upstreams struct {
	st      *storage.Storage
	base    upstream.Options
	offline bool
	meter   *Meter

	mu  sync.Mutex
	all []*pullthrough.Cache
	cur atomic.Pointer[pullthrough.Cache]
}

// NewUpstreams builds the first cache from base and the stored registries.
func NewUpstreams(st *storage.Storage, base upstream.Options, offline bool) (*Upstreams, error) {
	u := &Upstreams{st: st, base: base, offline: offline, meter: &Meter{active: map[digest.Digest]*atomic.Int64{}}}
	return u, u.Reload()
}

// Cache is the current cache.
func (u *Upstreams) Cache() *pullthrough.Cache { return u.cur.Load() }

// Offline tells whether the pocket never asks an upstream.
func (u *Upstreams) Offline() bool { return u.offline }

// Caches are every cache built so far (for counters that must not go down).
func (u *Upstreams) Caches() []*pullthrough.Cache {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*pullthrough.Cache(nil), u.all...)
}

// Close is for a pocket that stops: every cache lets the fetches whose
// bytes are all in and verified commit (a client may already hold them) and
// cancels the others, waiting until ctx is done.
func (u *Upstreams) Close(ctx context.Context) error {
	var errs []error
	for _, c := range u.Caches() {
		errs = append(errs, c.Close(ctx))
	}
	return errors.Join(errs...)
}

// Handler serves /v2 through the current cache in front of rg.
func (u *Upstreams) Handler(rg http.Handler) http.Handler {
	var mu sync.Mutex
	handlers := map[*pullthrough.Cache]http.Handler{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := u.Cache()
		mu.Lock()
		h := handlers[c]
		if h == nil {
			h = c.Handler(rg)
			handlers = map[*pullthrough.Cache]http.Handler{c: h} // only the current one is kept
		}
		mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// Reload rebuilds the cache from the stored registries.
func (u *Upstreams) Reload() error {
	var regs []*repodb.PocketRegistry
	if err := u.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		regs, err = tx.PocketRegistries()
		return err
	}); err != nil {
		return err
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
	base := o.Transport
	if base == nil {
		base = upstream.DefaultTransport()
	}
	o.Transport = u.meter.wrap(base)
	c := pullthrough.New(u.st.Store, u.st.DB, upstream.New(o), pullthrough.Options{Offline: u.offline})
	u.mu.Lock()
	u.all = append(u.all, c)
	u.cur.Store(c)
	u.mu.Unlock()
	return nil
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
