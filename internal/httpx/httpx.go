// Package httpx owns what every crpe HTTP server shares: the one request-log
// and metrics middleware, route labels set by handlers, /healthz, and a
// server runner with graceful shutdown.
package httpx

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type ctxKey struct{}

// reqInfo is what handlers tell the middleware about a request.
type reqInfo struct {
	route string
	err   error
}

// SetRoute labels the request with a low-cardinality route name for logs and
// metrics.
func SetRoute(r *http.Request, route string) {
	if ri, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		ri.route = route
	}
}

// SetError records the error a handler answered with, for the request log.
func SetError(r *http.Request, err error) {
	if ri, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		ri.err = err
	}
}

// Metrics are the HTTP metrics of one server.
type Metrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crpe_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crpe_http_response_bytes_total", Help: "Bytes of response bodies served, by route.",
		}, []string{"route"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "crpe_http_request_duration_seconds", Help: "Time to serve a request, by route.",
			Buckets: []float64{.001, .005, .02, .1, .5, 2, 10, 60},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.bytes, m.duration)
	return m
}

// Middleware logs every request once and counts it in m.
func Middleware(log *slog.Logger, m *Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{route: "other"}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri))
		rw := &responseWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("panic serving request", "path", r.URL.Path, "panic", p)
				if !rw.wrote {
					WriteErrors(rw, r, http.StatusInternalServerError, ErrorEntry{Code: "UNKNOWN", Message: "internal error"})
				}
			}
			d := time.Since(start)
			if m != nil {
				m.requests.WithLabelValues(ri.route, r.Method, strconv.Itoa(rw.status)).Inc()
				m.bytes.WithLabelValues(ri.route).Add(float64(rw.n))
				m.duration.WithLabelValues(ri.route).Observe(d.Seconds())
			}
			level := slog.LevelDebug
			if rw.status >= 500 {
				level = slog.LevelError
			} else if rw.status >= 400 && rw.status != 401 && rw.status != 404 {
				level = slog.LevelInfo
			}
			if ri.route != "healthz" && ri.route != "metrics" && level == slog.LevelDebug && !log.Enabled(r.Context(), slog.LevelDebug) {
				return
			}
			attrs := []any{"method", r.Method, "path", r.URL.RequestURI(), "route", ri.route, "status", rw.status,
				"bytes", rw.n, "duration", d.Round(time.Microsecond).String(), "remote", r.RemoteAddr}
			if ri.err != nil {
				attrs = append(attrs, "error", ri.err.Error())
			}
			log.Log(r.Context(), level, "request", attrs...)
		}()
		next.ServeHTTP(rw, r)
	})
}

// responseWriter records status and bytes. It implements io.ReaderFrom so
// that copying an *os.File into the response still uses sendfile.
type responseWriter struct {
	http.ResponseWriter
	status int
	n      int64
	wrote  bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status = code
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.n += n
		return n, err
	}
	n, err := io.Copy(w.ResponseWriter, r)
	w.n += n
	return n, err
}

func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Healthz answers liveness probes.
func Healthz(w http.ResponseWriter, r *http.Request) {
	SetRoute(r, "healthz")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

// Serve runs srv on addr (TLS when cert and key are set) until ctx is done,
// then shuts it down gracefully, giving in-flight requests up to grace.
// ready, if not nil, is called with the bound address once listening.
func Serve(ctx context.Context, log *slog.Logger, srv *http.Server, addr, cert, key string, grace time.Duration, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if cert != "" || key != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("graceful shutdown incomplete", "error", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
