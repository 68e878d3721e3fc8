// Package agent owns the `crpe agent` server of the intranet side: it wires
// the blob store, the repository index, the OCI registry, token auth,
// /healthz and /metrics into one HTTP server. (Import, inventory and mirror
// configuration join it in later steps.)
package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/repodb"
)

// Config is what `crpe agent` takes.
type Config struct {
	Addr              string
	Data              string
	TokenFile         string
	AllowPush         bool
	AllowSparse       bool
	PullTokenRequired bool
	TLSCert, TLSKey   string
	ShutdownGrace     time.Duration
	Log               *slog.Logger
	// Ready, if set, is called with the listening address.
	Ready func(net.Addr)
}

// IndexPath is where the repository index of a data folder lives.
func IndexPath(data string) string { return filepath.Join(data, "index.db") }

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Data == "" {
		return errors.New("--data is required")
	}
	store, err := casfs.Open(cfg.Data)
	if err != nil {
		return err
	}
	db, err := repodb.Open(IndexPath(cfg.Data), false, 5*time.Second)
	if err != nil {
		return err
	}
	defer db.Close()
	// no write can be in flight before we serve: leftovers are from a crash
	if n, err := store.CleanIngest(); err != nil {
		return err
	} else if n > 0 {
		log.Info("removed leftover temp files of interrupted writes", "count", n)
	}

	tokenPath, created, err := auth.EnsureTokenFile(cfg.TokenFile, cfg.Data)
	if err != nil {
		return err
	}
	if created {
		log.Warn("no --token-file given: created a random token; writes need it", "token_file", tokenPath)
	}
	tokens, err := auth.LoadTokens(tokenPath)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := httpx.NewMetrics(reg)
	blobsStored := prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_blobs_stored_total", Help: "Blobs newly written to the store since start."})
	bytesStored := prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_blob_bytes_stored_total", Help: "Bytes of blobs newly written to the store since start."})
	storeBlobs := prometheus.NewGauge(prometheus.GaugeOpts{Name: "crpe_store_blobs", Help: "Blobs in the store."})
	storeBytes := prometheus.NewGauge(prometheus.GaugeOpts{Name: "crpe_store_bytes", Help: "Bytes of blobs in the store."})
	reg.MustRegister(blobsStored, bytesStored, storeBlobs, storeBytes)
	_ = store.Walk(ctx, func(i cas.Info) error {
		storeBlobs.Inc()
		storeBytes.Add(float64(i.Size))
		return nil
	})
	store.OnCommit = func(i cas.Info) {
		blobsStored.Inc()
		bytesStored.Add(float64(i.Size))
		storeBlobs.Inc()
		storeBytes.Add(float64(i.Size))
	}

	rg := registry.New(store, db, registry.Options{AllowPush: cfg.AllowPush, AllowSparseManifests: cfg.AllowSparse})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go rg.Run(rctx)

	guard := &auth.Guard{Tokens: tokens, PullTokenRequired: cfg.PullTokenRequired}
	deny := func(w http.ResponseWriter, r *http.Request, err error) {
		httpx.SetRoute(r, "unauthorized")
		httpx.SetError(r, err)
		registry.WriteError(w, r, registry.ErrUnauthorized(err.Error()))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", httpx.Healthz)
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.SetRoute(r, "metrics")
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	v2 := guard.Middleware(registry.IsWrite, deny, rg)
	mux.Handle("/v2/", v2)
	mux.Handle("/v2", v2)

	srv := &http.Server{
		Handler:           httpx.Middleware(log, metrics, mux),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	grace := cfg.ShutdownGrace
	if grace <= 0 {
		grace = 20 * time.Second
	}
	return httpx.Serve(ctx, log, srv, cfg.Addr, cfg.TLSCert, cfg.TLSKey, grace, func(a net.Addr) {
		log.Info("crpe agent listening", "addr", a.String(), "data", cfg.Data, "allow_push", cfg.AllowPush, "tls", cfg.TLSCert != "")
		if cfg.Ready != nil {
			cfg.Ready(a)
		}
	})
}

