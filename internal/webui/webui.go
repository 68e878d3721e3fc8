// Package webui owns the web UI that crpe serves at /: the pocket's (crpe
// serve) and the agent's (crpe agent). Both are plain HTML, CSS and
// JavaScript with no build step, embedded in the binary and loaded from it
// alone (no CDN: the pocket runs without internet), installable to a
// phone's home screen (web app manifest, icons, service worker). Everything
// they do goes through the JSON API of the server that serves them.
package webui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/octohelm/crpe/internal/httpx"
)

//go:embed assets
var assets embed.FS

// App names one of the two UIs.
type App string

// The UIs.
const (
	Pocket App = "pocket"
	Agent  App = "agent"
)

// csp allows the page to load only from the binary (and QR images made
// from blobs).
const csp = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; " +
	"manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

type asset struct {
	body, gz []byte
	ctype    string
	etag     string
}

func load(name string) *asset {
	b, err := assets.ReadFile("assets/" + name)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	a := &asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	a.ctype = mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".webmanifest":
		a.ctype = "application/manifest+json"
	case ".js":
		a.ctype = "text/javascript; charset=utf-8"
	case ".html":
		a.ctype = "text/html; charset=utf-8"
	case ".css":
		a.ctype = "text/css; charset=utf-8"
	case ".svg":
		a.ctype = "image/svg+xml"
	}
	if !strings.HasSuffix(name, ".png") {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(b)
		_ = zw.Close()
		if buf.Len() < len(b) {
			a.gz = buf.Bytes()
		}
	}
	return a
}

func (a *asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept-Encoding")
	if match := r.Header.Get("If-None-Match"); match != "" && match == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	h.Set("Content-Length", itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Files lists the embedded assets (for size checks).
func Files() map[string]int {
	out := map[string]int{}
	_ = fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				out[strings.TrimPrefix(p, "assets/")] = int(info.Size())
			}
		}
		return nil
	})
	return out
}

// Register serves app's UI on mux: the page at /, its assets under /ui/,
// the web app manifest, the service worker and the favicon.
func Register(mux *http.ServeMux, app App) {
	page := load(string(app) + ".html")
	manifest := load(string(app) + ".webmanifest")
	sw := load("sw.js")
	icon := load("icon-192.png")
	files := map[string]*asset{}
	_ = fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			name := strings.TrimPrefix(p, "assets/")
			files[name] = load(name)
		}
		return nil
	})
	handle := func(pattern, route string, f http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			httpx.SetRoute(r, route)
			f(w, r)
		})
	}
	handle("GET /{$}", "ui", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Frame-Options", "DENY")
		page.serve(w, r)
	})
	handle("GET /ui/{file}", "ui_asset", func(w http.ResponseWriter, r *http.Request) {
		a := files[r.PathValue("file")]
		if a == nil || strings.HasSuffix(r.PathValue("file"), ".html") {
			http.NotFound(w, r)
			return
		}
		a.serve(w, r)
	})
	handle("GET /manifest.webmanifest", "ui_asset", manifest.serve)
	handle("GET /favicon.ico", "ui_asset", icon.serve)
	handle("GET /sw.js", "ui_asset", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Service-Worker-Allowed", "/")
		sw.serve(w, r)
	})
}
