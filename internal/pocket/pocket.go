// Package pocket owns the `crpe serve` server of the internet side: a
// read-only OCI registry over the local cache with the pull-through cache in
// front of it, for any number of upstream registries, the package library's
// JSON API (/api/v1, see pocketapi), the web UI at /, /healthz and /metrics.
package pocket

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/pocketapi"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
	"github.com/octohelm/crpe/internal/version"
	"github.com/octohelm/crpe/internal/webui"
)

// Config is what `crpe serve` takes.
type Config struct {
	httpx.Listener
	Data string
	// TokenFile holds the tokens that mutating API calls from other hosts
	// need (default: <data>/token, created on first start).
	TokenFile string
	Upstream  upstream.Options
	Offline   bool
	// DefaultRegistry is the registry of a /v2 request that names none and
	// has no ?ns= (Docker's registry-mirrors, for Docker Hub): docker.io by
	// default, "" for none (such a name is then a repository of its own).
	DefaultRegistry string
	Log             *slog.Logger
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	st, log, reg, err := storage.OpenServer(ctx, cfg.Data, cfg.Log)
	if err != nil {
		return err
	}
	defer st.Close()
	// the index holds agent tokens and registry credentials
	_ = os.Chmod(storage.IndexPath(cfg.Data), 0o600)

	tokenPath, created, err := auth.EnsureTokenFile(cfg.TokenFile, cfg.Data)
	if err != nil {
		return err
	}
	if created {
		log.Info("created the pocket's token; other devices need it to change the pocket (the web UI's QR code carries it)", "token_file", tokenPath)
	}
	tokens, err := auth.LoadTokens(tokenPath)
	if err != nil {
		return err
	}

	instance, err := newInstance()
	if err != nil {
		return err
	}
	api, err := pocketapi.New(ctx, pocketapi.Config{Storage: st, Upstream: cfg.Upstream, Offline: cfg.Offline,
		Tokens: tokens, Log: log, Version: version.Get().Version, Instance: instance})
	if err != nil {
		return err
	}
	registerCacheMetrics(reg, api.Upstreams())
	rg := registry.New(st.Store, st.DB, registry.Options{})
	// /v2: the registry over the local cache, the pull-through cache in
	// front of it (the JSON API only keeps the cache's settings)
	v2 := registry.DefaultNamespace(cfg.DefaultRegistry, api.Upstreams().Cache().Handler(rg))
	mux := httpx.NewMux(reg)
	mux.Handle("/v2/", v2)
	mux.Handle("/v2", v2)
	api.Routes(mux)
	webui.Register(mux, webui.Pocket)

	l := cfg.Listener
	ready := l.Ready
	l.Ready = func(a net.Addr) {
		api.SetListener(a, cfg.TLSCert != "")
		// tell the other crpe commands on this data folder how to reach
		// the pocket (crpe export goes through it)
		pf := &storage.PocketFile{PID: os.Getpid(), Instance: instance, URLs: localURLs(a, cfg.TLSCert != ""),
			TokenFile: absPath(tokenPath), Version: version.Get().Version, StartedAt: time.Now().UTC()}
		if cfg.TLSCert != "" {
			pf.TLSCert = absPath(cfg.TLSCert)
		}
		if err := storage.WritePocketFile(cfg.Data, pf); err != nil {
			log.Warn("cannot write the pocket file: crpe export on this data folder cannot reach the pocket", "file", storage.PocketFilePath(cfg.Data), "error", err)
		}
		if ready != nil {
			ready(a)
		}
	}
	err = l.Run(ctx, log, reg, mux, "crpe serve listening", "data", cfg.Data, "offline", cfg.Offline)
	if rerr := storage.RemovePocketFile(cfg.Data, instance); rerr != nil {
		log.Warn("cannot remove the pocket file", "file", storage.PocketFilePath(cfg.Data), "error", rerr)
	}
	// what a client was handed is kept: verified fetches commit before the
	// index closes
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := api.Upstreams().Close(cctx); cerr != nil {
		log.Warn("upstream fetches not all finished at shutdown", "error", cerr)
	}
	return err
}

func newInstance() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// localURLs are the URLs that reach a pocket listening on a from this
// host: loopback ones first (a client naming the pocket so needs no token),
// else the address it listens on.
func localURLs(a net.Addr, tls bool) []string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	u := func(ip net.IP) string {
		return scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
	}
	switch {
	case tcp.IP == nil || tcp.IP.IsUnspecified():
		if tcp.IP != nil && tcp.IP.To4() != nil {
			return []string{u(net.IPv4(127, 0, 0, 1))}
		}
		return []string{u(net.IPv4(127, 0, 0, 1)), u(net.IPv6loopback)}
	default:
		return []string{u(tcp.IP)}
	}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func registerCacheMetrics(reg *prometheus.Registry, u *pocketapi.Upstreams) {
	counter := func(name, help string, f func(*pullthrough.Cache) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			return float64(f(u.Cache()))
		}))
	}
	counter("crpe_upstream_blob_fetches_total", "Blob fetches started upstream.", func(c *pullthrough.Cache) int64 { return c.Stats.BlobFetches.Load() })
	counter("crpe_upstream_blob_resumes_total", "Broken blob transfers resumed with a Range request.", func(c *pullthrough.Cache) int64 { return c.Stats.BlobResumes.Load() })
	counter("crpe_upstream_blob_failures_total", "Blob fetches that failed (network or verification).", func(c *pullthrough.Cache) int64 { return c.Stats.BlobFailures.Load() })
	counter("crpe_upstream_manifest_fetches_total", "Manifests fetched upstream.", func(c *pullthrough.Cache) int64 { return c.Stats.ManifestFetches.Load() })
	counter("crpe_upstream_fallbacks_total", "Tags served from the cache because the upstream was unreachable.", func(c *pullthrough.Cache) int64 { return c.Stats.Fallbacks.Load() })
	counter("crpe_upstream_bytes_total", "Blob bytes received from upstreams.", func(c *pullthrough.Cache) int64 { return c.Stats.BytesFetched.Load() })
}
