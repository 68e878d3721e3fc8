package registrypush_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/testenv"
)

// fullDemo is seedtest's demo package without the platform it leaves out
// (registries check an index's every child is there).
func fullDemo(name string, seed uint64) *seedtest.Package {
	p := seedtest.Demo(name, "1.0.0", false, seed)
	idx := p.Images[0]
	idx.Top = seedtest.NewIndex(false, idx.Children)
	return p
}

// counting is an in-process registry (go-containerregistry's) that counts
// requests and can answer some itself.
type counting struct {
	mu     sync.Mutex
	reqs   []string // "METHOD path"
	answer func(r *http.Request) int
	h      http.Handler
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.Path)
	ans := c.answer
	c.mu.Unlock()
	if ans != nil {
		if code := ans(r); code != 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"errors":[{"code":"DENIED","message":"answered %d by the test"}]}`, code)
			return
		}
	}
	c.h.ServeHTTP(w, r)
}

func (c *counting) count(method, part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if strings.HasPrefix(r, method+" ") && strings.Contains(r, part) {
			n++
		}
	}
	return n
}

func (c *counting) reset() {
	c.mu.Lock()
	c.reqs = nil
	c.mu.Unlock()
}

func start(t *testing.T) (*counting, registrypush.Target) {
	c := &counting{h: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	tg, err := registrypush.ParseTarget(strings.TrimPrefix(srv.URL, "http://") + "/site")
	if err != nil {
		t.Fatal(err)
	}
	return c, tg
}

func manifestDigest(t *testing.T, base, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

func TestPushThenNothingToSend(t *testing.T) {
	reg, tg := start(t)
	p := fullDemo("demo", 1)
	arc := testenv.CrpeArchive(t, p)
	o := registrypush.Options{Target: tg, ChunkSize: 1 << 20, Backoff: 1}
	res, err := registrypush.Push(context.Background(), bytes.NewReader(arc), o)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + tg.Host
	for _, im := range p.Images {
		repo, _ := tg.Repository(im.Name, registrypush.Nested)
		if got := manifestDigest(t, base, repo, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("%s:%s is %q, want %s", repo, im.Tag, got, im.Top.Desc.Digest)
		}
	}
	// the 5 MiB layer went in chunks; the layer both images share was pushed
	// once (go-containerregistry's registry holds blobs for every
	// repository: HEAD finds it in the other, no mount is needed)
	if n := reg.count("PATCH", "/blobs/uploads/"); n < 5 {
		t.Errorf("%d PATCH requests, want the big layer in chunks of 1 MiB", n)
	}
	if res.BlobsPushed != 7 || reg.count("POST", "/blobs/uploads/") != 7 || res.ManifestsPushed != 4 {
		t.Errorf("result %+v", res)
	}
	if len(res.TagsSet) != 2 {
		t.Errorf("tags set %v", res.TagsSet)
	}
	reg.reset()
	res2, err := registrypush.Push(context.Background(), bytes.NewReader(arc), o)
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.count("PATCH", "") + reg.count("POST", ""); n != 0 || res2.BlobsPushed != 0 || res2.BytesPushed != 0 {
		t.Errorf("second push: %d uploads, result %+v", n, res2)
	}
	if res2.BlobsSkipped != res.BlobsPushed {
		t.Errorf("second push skipped %d blobs, the first pushed %d", res2.BlobsSkipped, res.BlobsPushed)
	}
}

func TestRefusedRepositoryTagsNothing(t *testing.T) {
	reg, tg := start(t)
	reg.answer = func(r *http.Request) int {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/ghcr.io/") {
			return http.StatusForbidden
		}
		return 0
	}
	p := fullDemo("demo", 2)
	_, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), registrypush.Options{Target: tg, Backoff: 1})
	var re *registrypush.RefusedError
	if !errors.As(err, &re) || re.Repo != "site/ghcr.io/octohelm/app" || !strings.Contains(err.Error(), "create the project") {
		t.Fatalf("err = %v, want a refusal naming site/ghcr.io/octohelm/app", err)
	}
	for _, im := range p.Images {
		if n := reg.count("PUT", "/manifests/"+im.Tag); n != 0 {
			t.Errorf("tag %s was put", im.Tag)
		}
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	reg, tg := start(t)
	var mu sync.Mutex
	failed := 0
	reg.answer = func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v2/" && failed < 4 && (r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost) {
			failed++
			return http.StatusServiceUnavailable
		}
		return 0
	}
	p := fullDemo("demo", 3)
	res, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), registrypush.Options{Target: tg, ChunkSize: 1 << 20, Backoff: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequestsRetried < 4 || len(res.TagsSet) != 2 {
		t.Errorf("result %+v", res)
	}
}

func TestFlatNames(t *testing.T) {
	_, tg := start(t)
	p := fullDemo("demo", 4)
	res, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), registrypush.Options{Target: tg, Naming: registrypush.Flat, Backoff: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{tg.Host + "/site/docker.io_library_nginx:alpine": true, tg.Host + "/site/ghcr.io_octohelm_app:v1": true}
	for _, s := range res.TagsSet {
		if !want[s] {
			t.Errorf("tag %s", s)
		}
	}
	if got := manifestDigest(t, "http://"+tg.Host, "site/docker.io_library_nginx", "alpine"); got != string(p.Images[0].Top.Desc.Digest) {
		t.Errorf("flat nginx: %q", got)
	}
}

// TestSpooledPush: with a spool folder, big layers wait there for an upload
// slot (unlinked temp files: the folder stays empty), and the push gives
// the same registry content, the big layer in chunks.
func TestSpooledPush(t *testing.T) {
	reg, tg := start(t)
	p := fullDemo("demo", 2)
	spool := t.TempDir()
	o := registrypush.Options{Target: tg, ChunkSize: 1 << 20, Backoff: 1, SpoolDir: spool, MaxSpool: 64 << 20}
	res, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), o)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + tg.Host
	for _, im := range p.Images {
		repo, _ := tg.Repository(im.Name, registrypush.Nested)
		if got := manifestDigest(t, base, repo, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("%s:%s is %q, want %s", repo, im.Tag, got, im.Top.Desc.Digest)
		}
	}
	if n := reg.count("PATCH", "/blobs/uploads/"); n < 5 || res.BlobsPushed != 7 {
		t.Errorf("%d PATCH requests, result %+v", n, res)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("the spool folder holds %d files after the push", len(left))
	}
}

// TestBeforeTags: BeforeTags is asked once every image is complete in the
// registry (every manifest put by digest), before the first tag; its error
// stops the push with no tag set.
func TestBeforeTags(t *testing.T) {
	reg, tg := start(t)
	p := fullDemo("demo", 4)
	stop := errors.New("the lock is lost (the test)")
	asked := 0
	o := registrypush.Options{Target: tg, Backoff: 1, BeforeTags: func(context.Context) error {
		asked++
		if n := reg.count("PUT", "/manifests/sha256:"); n != 4 {
			t.Errorf("BeforeTags asked after %d manifests put by digest, want all 4", n)
		}
		return stop
	}}
	_, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), o)
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "nothing was tagged") || asked != 1 {
		t.Fatalf("err = %v (asked %d times), want BeforeTags' error, once", err, asked)
	}
	for _, im := range p.Images {
		if n := reg.count("PUT", "/manifests/"+im.Tag); n != 0 {
			t.Errorf("tag %s was put", im.Tag)
		}
	}
	// a nil answer lets the tags be set
	o.BeforeTags = func(context.Context) error { return nil }
	res, err := registrypush.Push(context.Background(), bytes.NewReader(testenv.CrpeArchive(t, p)), o)
	if err != nil || len(res.TagsSet) != 2 {
		t.Fatalf("err = %v, tags %v", err, res)
	}
}
