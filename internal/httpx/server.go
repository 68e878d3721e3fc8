package httpx

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewMux returns a mux with /healthz and /metrics (for reg).
func NewMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", Healthz)
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r, "metrics")
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	return mux
}

// NewServer wraps h in the request-log and metrics middleware, with sane
// timeouts for a registry (no write timeout: blobs can be large).
func NewServer(log *slog.Logger, m *Metrics, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           Middleware(log, m, h),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// Listener is how every crpe server listens.
type Listener struct {
	Addr            string
	TLSCert, TLSKey string
	// ShutdownGrace is given to in-flight requests on shutdown (default 20s).
	ShutdownGrace time.Duration
	// Ready, if set, is called with the listening address.
	Ready func(net.Addr)
}

// Run serves h, behind the request-log and metrics middleware (metrics in
// reg), until ctx is done; once listening it logs msg with attrs and the
// address.
func (l Listener) Run(ctx context.Context, log *slog.Logger, reg *prometheus.Registry, h http.Handler, msg string, attrs ...any) error {
	srv := NewServer(log, NewMetrics(reg), h)
	grace := l.ShutdownGrace
	if grace <= 0 {
		grace = 20 * time.Second
	}
	return Serve(ctx, log, srv, l.Addr, l.TLSCert, l.TLSKey, grace, func(a net.Addr) {
		log.Info(msg, append([]any{"addr", a.String(), "tls", l.TLSCert != ""}, attrs...)...)
		if l.Ready != nil {
			l.Ready(a)
		}
	})
}
