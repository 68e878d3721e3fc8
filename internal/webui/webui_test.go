package webui

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestAssetsSmall: everything the UIs load is embedded and well under
// 300 KB before compression.
func TestAssetsSmall(t *testing.T) {
	total := 0
	for name, n := range Files() {
		total += n
		if n == 0 {
			t.Errorf("%s is empty", name)
		}
	}
	t.Logf("%d bytes of assets", total)
	if total > 150<<10 {
		t.Fatalf("assets weigh %d bytes, want well under 300 KB", total)
	}
}

func serve(t *testing.T, app App) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux, app)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestPagesServeEverythingTheyReference: each page's scripts, styles,
// icons and manifest are served from the binary (no other origin), with a
// CSP that allows nothing else; text is gzipped; ETags revalidate.
func TestPagesServeEverythingTheyReference(t *testing.T) {
	ref := regexp.MustCompile(`(?:src|href)="([^"#]+)"`)
	for _, app := range []App{Pocket, Agent} {
		srv := serve(t, app)
		resp, page := get(t, srv.URL+"/")
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Fatalf("%s page: %d %v", app, resp.StatusCode, resp.Header)
		}
		if !strings.Contains(string(page), `data-app="`+string(app)+`"`) {
			t.Fatalf("%s: wrong page", app)
		}
		for _, m := range ref.FindAllStringSubmatch(string(page), -1) {
			u := m[1]
			if !strings.HasPrefix(u, "/") || strings.HasPrefix(u, "//") {
				t.Errorf("%s references %s: not from the binary", app, u)
				continue
			}
			r, _ := get(t, srv.URL+u)
			if r.StatusCode != 200 {
				t.Errorf("%s: %s answered %d", app, u, r.StatusCode)
			}
		}
		var man struct {
			Name    string `json:"name"`
			Display string `json:"display"`
			Start   string `json:"start_url"`
			Icons   []struct {
				Src, Sizes, Type string
			} `json:"icons"`
		}
		r, b := get(t, srv.URL+"/manifest.webmanifest")
		if err := json.Unmarshal(b, &man); err != nil || r.Header.Get("Content-Type") != "application/manifest+json" {
			t.Fatalf("%s manifest: %v %s", app, err, b)
		}
		if !strings.Contains(man.Name, string(app)) || man.Display != "standalone" || man.Start != "/" {
			t.Errorf("%s manifest: %+v", app, man)
		}
		sizes := map[string]bool{}
		for _, ic := range man.Icons {
			r, b := get(t, srv.URL+ic.Src)
			if r.StatusCode != 200 {
				t.Fatalf("icon %s: %d", ic.Src, r.StatusCode)
			}
			if ic.Type == "image/png" {
				cfg, err := png.DecodeConfig(bytes.NewReader(b))
				if err != nil || ic.Sizes != itoa(cfg.Width)+"x"+itoa(cfg.Height) {
					t.Errorf("icon %s: %v %dx%d, manifest says %s", ic.Src, err, cfg.Width, cfg.Height, ic.Sizes)
				}
				sizes[ic.Sizes] = true
			}
		}
		if !sizes["192x192"] || !sizes["512x512"] {
			t.Errorf("%s manifest lacks 192 and 512 px icons: %v", app, sizes)
		}
		r, _ = get(t, srv.URL+"/sw.js")
		if r.StatusCode != 200 || r.Header.Get("Service-Worker-Allowed") != "/" {
			t.Errorf("service worker: %d %v", r.StatusCode, r.Header)
		}
		r, _ = get(t, srv.URL+"/favicon.ico")
		if r.StatusCode != 200 {
			t.Errorf("favicon: %d", r.StatusCode)
		}
		// gzip and revalidation
		r, gz := get(t, srv.URL+"/ui/common.js", "Accept-Encoding", "gzip")
		if r.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("common.js not gzipped: %v", r.Header)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		if plain, _ := io.ReadAll(zr); !bytes.Contains(plain, []byte("const crpe")) {
			t.Fatal("gzipped common.js is not common.js")
		}
		r, _ = get(t, srv.URL+"/ui/common.js", "If-None-Match", r.Header.Get("ETag"))
		if r.StatusCode != http.StatusNotModified {
			t.Errorf("revalidation: %d", r.StatusCode)
		}
		r, _ = get(t, srv.URL+"/ui/nope.js")
		if r.StatusCode != 404 {
			t.Errorf("unknown asset: %d", r.StatusCode)
		}
	}
}

// TestNoNetworkReferences: no asset names another origin (it runs with no
// internet).
func TestNoNetworkReferences(t *testing.T) {
	bad := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.(com|net|org|io|dev|cloud)/`)
	for name := range Files() {
		if strings.HasSuffix(name, ".png") {
			continue
		}
		b, _ := assets.ReadFile("assets/" + name)
		for _, m := range bad.FindAllString(string(b), -1) {
			if strings.Contains(m, "//www.w3.org/") { // the SVG namespace name, never fetched
				continue
			}
			t.Errorf("%s references %s", name, m)
		}
	}
}
