// Package pocket owns the `crpe serve` server of the internet side: a
// read-only OCI registry over the local cache with the pull-through cache in
// front of it, for any number of upstream registries, plus /healthz and
// /metrics. (The package library and its API join it in later steps.)
package pocket

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// Config is what `crpe serve` takes.
type Config struct {
	httpx.Listener
	Data     string
	Upstream upstream.Options
	Offline  bool
	Log      *slog.Logger
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	st, log, reg, err := storage.OpenServer(ctx, cfg.Data, cfg.Log)
	if err != nil {
		return err
	}
	defer st.Close()

	cache := pullthrough.New(st.Store, st.DB, upstream.New(cfg.Upstream), pullthrough.Options{Offline: cfg.Offline})
	registerCacheMetrics(reg, cache)
	rg := registry.New(st.Store, st.DB, registry.Options{})
	v2 := cache.Handler(rg)
	mux := httpx.NewMux(reg)
	mux.Handle("/v2/", v2)
	mux.Handle("/v2", v2)

	return cfg.Listener.Run(ctx, log, reg, mux, "crpe serve listening", "data", cfg.Data, "offline", cfg.Offline)
}

func registerCacheMetrics(reg *prometheus.Registry, c *pullthrough.Cache) {
	counter := func(name, help string, f func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
	}
	counter("crpe_upstream_blob_fetches_total", "Blob fetches started upstream.", c.Stats.BlobFetches.Load)
	counter("crpe_upstream_blob_resumes_total", "Broken blob transfers resumed with a Range request.", c.Stats.BlobResumes.Load)
	counter("crpe_upstream_blob_failures_total", "Blob fetches that failed (network or verification).", c.Stats.BlobFailures.Load)
	counter("crpe_upstream_manifest_fetches_total", "Manifests fetched upstream.", c.Stats.ManifestFetches.Load)
	counter("crpe_upstream_fallbacks_total", "Tags served from the cache because the upstream was unreachable.", c.Stats.Fallbacks.Load)
	counter("crpe_upstream_bytes_total", "Blob bytes received from upstreams.", c.Stats.BytesFetched.Load)
}
