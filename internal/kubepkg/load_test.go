package kubepkg_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	for name, doc := range map[string]string{"demo.json": demoJSON, "demo.yaml": demoYAML} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs, err := kubepkg.Load(context.Background(), path, kubepkg.LoadOptions{})
		if err != nil {
			t.Fatalf("Load(%s): %v", name, err)
		}
		checkDemo(t, pkgs[0])
	}

	if _, err := kubepkg.Load(context.Background(), filepath.Join(dir, "missing.json"), kubepkg.LoadOptions{}); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"kind":"Nope"}`), 0o644)
	if _, err := kubepkg.Load(context.Background(), bad, kubepkg.LoadOptions{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("parse error does not name the file: %v", err)
	}
	if _, err := kubepkg.Load(context.Background(), "", kubepkg.LoadOptions{}); err == nil {
		t.Error("Load of an empty source succeeded")
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		if next := u.Unwrap(); next != nil {
			err = next
		} else {
			return err
		}
	}
}

func TestLoadFileSizeCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(demoJSON)
	if err := f.Truncate(oci.MaxPackageSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := kubepkg.Load(context.Background(), path, kubepkg.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a big file: %v", err)
	}
}

func TestLoadStdin(t *testing.T) {
	pkgs, err := kubepkg.Load(context.Background(), "-", kubepkg.LoadOptions{Stdin: strings.NewReader(demoYAML)})
	if err != nil {
		t.Fatal(err)
	}
	checkDemo(t, pkgs[0])

	_, err = kubepkg.Load(context.Background(), "-", kubepkg.LoadOptions{Stdin: strings.NewReader("{}")})
	if err == nil || !strings.HasPrefix(err.Error(), "stdin: ") {
		t.Errorf("error does not name stdin: %v", err)
	}

	big := bytes.NewReader(bytes.Repeat([]byte(" "), oci.MaxPackageSize+10))
	if _, err := kubepkg.Load(context.Background(), "-", kubepkg.LoadOptions{Stdin: big}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a big stdin: %v", err)
	}
}

// center is a fake deployments center.
type center struct {
	mu       sync.Mutex
	requests []*http.Request
	body     string
	etag     string
	status   int
}

func (c *center) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, r.Clone(context.Background()))
	if r.Header.Get("Authorization") != "Bearer s3cret" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/pkgs/demo":
		if c.status != 0 {
			http.Error(w, "broken", c.status)
			return
		}
		if c.etag != "" {
			w.Header().Set("ETag", c.etag)
			if r.Header.Get("If-None-Match") == c.etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write([]byte(c.body))
	case "/big":
		w.Write(bytes.Repeat([]byte(" "), oci.MaxPackageSize+1))
	case "/big-declared":
		w.Header().Set("Content-Length", strconv.Itoa(oci.MaxPackageSize+1))
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func (c *center) last() *http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests[len(c.requests)-1]
}

func TestLoadURL(t *testing.T) {
	c := &center{body: demoYAML, etag: `"v1"`}
	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx := context.Background()
	cache := t.TempDir()
	o := kubepkg.LoadOptions{Token: "s3cret", Client: srv.Client(), CacheDir: cache}

	// first load: full answer, cached
	pkgs, err := kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o)
	if err != nil {
		t.Fatal(err)
	}
	checkDemo(t, pkgs[0])
	r := c.last()
	if r.Header.Get("Authorization") != "Bearer s3cret" {
		t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
	}
	if r.Header.Get("If-None-Match") != "" {
		t.Errorf("first request sent If-None-Match %q", r.Header.Get("If-None-Match"))
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 1 {
		t.Errorf("cache holds %d entries, want 1", len(entries))
	}

	// second load: If-None-Match sent, 304 served from the cache
	c.mu.Lock()
	c.body = "this would not parse"
	c.mu.Unlock()
	pkgs, err = kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o)
	if err != nil {
		t.Fatal(err)
	}
	checkDemo(t, pkgs[0])
	if got := c.last().Header.Get("If-None-Match"); got != `"v1"` {
		t.Errorf("If-None-Match = %q", got)
	}

	// the document changed: new ETag, new body, cache updated
	c.mu.Lock()
	c.etag, c.body = `"v2"`, strings.Replace(demoJSON, `"0.0.1"`, `"0.0.2"`, 1)
	c.mu.Unlock()
	pkgs, err = kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o)
	if err != nil || pkgs[0].Spec.Version != "0.0.2" {
		t.Fatalf("changed document: %v %v", pkgs, err)
	}
	pkgs, err = kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o)
	if err != nil || pkgs[0].Spec.Version != "0.0.2" || c.last().Header.Get("If-None-Match") != `"v2"` {
		t.Fatalf("after change: %v %v %q", pkgs, err, c.last().Header.Get("If-None-Match"))
	}

	// another token does not see the cached answer
	o2 := o
	o2.Token = "other"
	if _, err := kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o2); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("other token: %v", err)
	}
	if c.last().Header.Get("If-None-Match") != "" {
		t.Errorf("If-None-Match sent with another token")
	}

	// without a cache dir no If-None-Match is sent
	o3 := o
	o3.CacheDir = ""
	if _, err := kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o3); err != nil {
		t.Fatal(err)
	}
	if c.last().Header.Get("If-None-Match") != "" {
		t.Errorf("If-None-Match sent without a cache")
	}

	// without an ETag nothing is cached, and a stale entry is dropped
	c.mu.Lock()
	c.etag = ""
	c.mu.Unlock()
	if _, err := kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache holds %d entries, want 0", len(entries))
	}
}

func TestLoadURLErrors(t *testing.T) {
	c := &center{body: demoYAML}
	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx := context.Background()
	o := kubepkg.LoadOptions{Token: "s3cret", Client: srv.Client()}

	_, err := kubepkg.Load(ctx, srv.URL+"/nothing", o)
	if err == nil || !strings.Contains(err.Error(), srv.URL+"/nothing") || !strings.Contains(err.Error(), "404 Not Found") {
		t.Errorf("404: %v", err)
	}

	c.status = http.StatusInternalServerError
	_, err = kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("500: %v", err)
	}
	c.status = 0

	for _, path := range []string{"/big", "/big-declared"} {
		if _, err := kubepkg.Load(ctx, srv.URL+path, o); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("%s: %v", path, err)
		}
	}

	// credentials in the URL are not shown
	u := strings.Replace(srv.URL, "http://", "http://user:pw@", 1) + "/nothing"
	if _, err := kubepkg.Load(ctx, u, o); err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("error shows the password: %v", err)
	}

	// a parse error names the URL
	c.body = "kind: Nope\n"
	if _, err := kubepkg.Load(ctx, srv.URL+"/pkgs/demo", o); err == nil || !strings.Contains(err.Error(), srv.URL+"/pkgs/demo") {
		t.Errorf("parse error: %v", err)
	}

	// a canceled context stops the request
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := kubepkg.Load(cctx, srv.URL+"/pkgs/demo", o); err == nil {
		t.Error("canceled load succeeded")
	}
}
