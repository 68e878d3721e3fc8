// Package pocketapi owns the pocket's JSON API (crpe serve, /api/v1): the
// package library (add from JSON/YAML, a deployments center URL or a Helm
// chart rendered here, list, get, delete, refresh), chart repositories'
// charts, sync into the cache, kubepkg.tgz download, the
// agents and the delta handover to them, the upstream registries and their
// credentials, the cache's size and clean-up, the pocket's own addresses
// with a QR code, and live progress as Server-Sent Events.
//
// Reads are anonymous. Mutating calls need the pocket's token (Bearer, or
// the password of Basic auth), except from loopback clients that address
// the pocket by a loopback name; a request that carries a token must carry
// a valid one; a mutating call from a page of another origin is refused.
package pocketapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// Config is what the API needs.
type Config struct {
	Storage  *storage.Storage
	Upstream upstream.Options
	Offline  bool
	Tokens   *auth.Tokens
	Log      *slog.Logger
	Version  string
	// Instance names this run of the pocket (GET /api/v1/pocket answers
	// it): a client that read the data folder's pocket.json tells by it
	// that it reached that pocket.
	Instance string
	// HTTPClient reaches agents and deployments centers (default: one with
	// timeouts suited to each call).
	HTTPClient *http.Client
}

// API is the pocket's /api/v1.
type API struct {
	ctx      context.Context
	st       *storage.Storage
	ups      *Upstreams
	tokens   *auth.Tokens
	log      *slog.Logger
	hub      *Hub
	jobs     *Jobs
	ver      string
	instance string
	client   *http.Client

	mu     sync.Mutex
	listen net.Addr
	tls    bool

	cleanMu sync.Mutex // one clean-up at a time
	chartMu sync.Mutex // one chart render at a time
}

// New returns the API; ctx bounds its background jobs and event streams.
func New(ctx context.Context, cfg Config) (*API, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ups, err := NewUpstreams(cfg.Storage, cfg.Upstream, cfg.Offline, cfg.Log)
	if err != nil {
		return nil, err
	}
	hub := NewHub()
	a := &API{ctx: ctx, st: cfg.Storage, ups: ups, tokens: cfg.Tokens, log: cfg.Log, hub: hub,
		jobs: &Jobs{hub: hub, ctx: ctx}, ver: cfg.Version, instance: cfg.Instance, client: cfg.HTTPClient}
	if a.client == nil {
		a.client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 10 * time.Minute, // an agent answers an import once it is all in
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
		}}
	}
	return a, nil
}

// Upstreams is the pull-through cache the API (and /v2) use.
func (a *API) Upstreams() *Upstreams { return a.ups }

// Hub is the event hub.
func (a *API) Hub() *Hub { return a.hub }

// SetListener tells the API where the pocket listens (for its addresses).
func (a *API) SetListener(addr net.Addr, tls bool) {
	a.mu.Lock()
	a.listen, a.tls = addr, tls
	a.mu.Unlock()
}

// Routes registers /api/v1 on mux.
func (a *API) Routes(mux *http.ServeMux) {
	h := func(pattern, route string, write bool, f http.HandlerFunc) {
		mux.Handle(pattern, a.guard(route, write, f))
	}
	h("GET /api/v1/pocket", "pocket", false, a.pocketInfo)
	h("GET /api/v1/pocket/qr", "pocket_qr", false, a.pocketQR)
	h("GET /api/v1/events", "events", false, a.events)
	h("GET /api/v1/jobs", "jobs", false, a.listJobs)
	h("GET /api/v1/jobs/{id}", "job", false, a.getJob)
	h("DELETE /api/v1/jobs/{id}", "job_cancel", true, a.cancelJob)

	h("POST /api/v1/kubepkgs", "kubepkgs_add", true, a.addPackages)
	h("GET /api/v1/kubepkgs", "kubepkgs", false, a.listPackages)
	h("GET /api/v1/kubepkgs/{name}", "kubepkg", false, a.getPackage)
	h("DELETE /api/v1/kubepkgs/{name}", "kubepkg_delete", true, a.deletePackage)
	h("POST /api/v1/kubepkgs/{name}/refresh", "kubepkg_refresh", true, a.refreshPackage)
	h("POST /api/v1/kubepkgs/{name}/sync", "kubepkg_sync", true, a.syncPackage)
	h("GET /api/v1/kubepkgs/{name}/kubepkg.tgz", "kubepkg_download", false, a.downloadPackage)
	h("POST /api/v1/kubepkgs/{name}/send", "kubepkg_send", true, a.sendPackage)
	// an export of packages posted with the request, not kept: a change
	// only in that it fills the cache, but it takes a body (refused to
	// other origins) and costs the pocket upstream traffic
	h("POST /api/v1/export", "export", true, a.exportStream)

	// charts: listing a repository makes the pocket reach the URL given,
	// so it asks for what a change asks for
	h("GET /api/v1/charts", "charts", true, a.listCharts)
	h("POST /api/v1/charts/render", "charts_render", true, a.renderChart)
	h("POST /api/v1/charts/artifacts", "charts_artifacts", true, a.keepChartArtifact)

	h("GET /api/v1/agents", "agents", false, a.listAgents)
	h("POST /api/v1/agents", "agents_add", true, a.addAgent)
	h("GET /api/v1/agents/{name}", "agent", false, a.getAgent)
	h("DELETE /api/v1/agents/{name}", "agent_delete", true, a.deleteAgent)

	h("GET /api/v1/registries", "registries", false, a.listRegistries)
	h("PUT /api/v1/registries/{host}", "registry_put", true, a.putRegistry)
	h("DELETE /api/v1/registries/{host}", "registry_delete", true, a.deleteRegistry)

	h("GET /api/v1/cache", "cache", false, a.cacheInfo)
	h("POST /api/v1/cache/clean", "cache_clean", true, a.cleanCache)

	mux.Handle("/api/", a.guard("api_unknown", false, func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path), nil)
	}))
}

// guard labels the route and applies the token rules.
func (a *API) guard(route string, write bool, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.SetRoute(r, route)
		if write && crossOrigin(r) {
			httpx.WriteError(w, r, http.StatusForbidden, "DENIED", "a page of another origin may not change the pocket", nil)
			return
		}
		if err := a.check(r, write); err != nil {
			httpx.WriteError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", err.Error(), nil)
			return
		}
		next(w, r)
	})
}

// check applies the agent's token rules, with loopback clients trusted for
// writes.
func (a *API) check(r *http.Request, write bool) error {
	tok, present := auth.FromRequest(r)
	if present {
		if a.tokens == nil || !a.tokens.Valid(tok) {
			return auth.ErrBadToken
		}
		return nil
	}
	if !write || trusted(r) {
		return nil
	}
	return auth.ErrNoToken
}

// authorized tells whether r may see secrets (the token): a loopback
// client, or one that sent the token.
func (a *API) authorized(r *http.Request) bool {
	if tok, present := auth.FromRequest(r); present {
		return a.tokens != nil && a.tokens.Valid(tok)
	}
	return trusted(r)
}

// trusted reports whether r comes from this host and names it by a
// loopback name (so a DNS name rebound to 127.0.0.1 is not trusted).
func trusted(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return false
	}
	return isLoopbackHost(r.Host)
}

func isLoopbackHost(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// crossOrigin reports whether a browser sent r from a page of another
// origin.
func crossOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return true // "null" and the like
	}
	return !strings.EqualFold(u.Host, r.Host)
}

// apiError is an entry of the error body (httpx.WriteErrors).
type apiError = httpx.ErrorEntry

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// internal answers an unexpected error.
func internal(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error(), nil)
}

// decodeBody reads a small JSON body into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "invalid JSON body: "+err.Error(), nil)
		return false
	}
	return true
}

func (a *API) listJobs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"items": a.jobs.List()})
}

func (a *API) getJob(w http.ResponseWriter, r *http.Request) {
	j := a.jobs.Get(r.PathValue("id"))
	if j == nil {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", "no job "+r.PathValue("id"), nil)
		return
	}
	writeJSON(w, http.StatusOK, j.view())
}

func (a *API) cancelJob(w http.ResponseWriter, r *http.Request) {
	j := a.jobs.Get(r.PathValue("id"))
	if j == nil {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", "no job "+r.PathValue("id"), nil)
		return
	}
	if j.cancel != nil {
		j.cancel()
	}
	select {
	case <-j.done:
	case <-time.After(5 * time.Second):
	}
	writeJSON(w, http.StatusOK, j.view())
}

// changed tells event subscribers that what is listed at what changed.
func (a *API) changed(what string) {
	a.hub.Publish("change:"+what, "change", map[string]string{"what": what})
}
