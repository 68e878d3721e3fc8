package toregistry

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/testenv"
)

// Into distribution v3 with htpasswd and TLS: flags first, then a Docker
// config.json; every image pulls by tag with the archive's digests and
// bytes, and the second import sends no blob (HEAD finds them), counted by
// a TCP proxy.
func TestDistributionV3AuthTLS(t *testing.T) {
	reg := testenv.StartRegistry3(t, testenv.Registry3Options{Auth: true, TLS: true})
	p, file := fixture(t, 11)
	res := push(t, nil, file, "--to-registry", reg.Addr+"/site", "--ca-file", reg.CAFile,
		"--username", reg.User, "--password", reg.Password, "--chunk-size", "1")
	checkImages(t, reg.Client, reg.URL, "site", registrypush.Nested, p)
	if res.BlobsPushed != 7 || res.BlobsMounted != 1 || len(res.TagsSet) != 2 || res.BytesPushed != layerBytes(p) {
		t.Errorf("first import: %+v (want 7 blobs pushed, the shared layer mounted, 2 tags, %d bytes)", res, layerBytes(p))
	}
	// no credentials but Docker's config.json (DOCKER_CONFIG), through a
	// byte-counting proxy
	dc := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(reg.User + ":" + reg.Password))
	px := testenv.StartProxy(t, reg.Addr, 0, 0)
	host := strings.TrimPrefix(px.URL, "http://")
	cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dc, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	res2 := push(t, []string{"DOCKER_CONFIG=" + dc}, file, "--to-registry", host+"/site", "--ca-file", reg.CAFile)
	if res2.BlobsPushed != 0 || res2.BlobsSkipped != 7 || res2.BytesPushed != 0 || len(res2.TagsSet) != 2 {
		t.Errorf("second import: %+v", res2)
	}
	if up := px.Up.Load(); up > 256<<10 {
		t.Errorf("second import put %d bytes on the wire; the blobs are %d bytes", up, layerBytes(p))
	}
	// without credentials the registry says no, and crpe says so
	r := crpe(t, nil, "import", file, "--to-registry", reg.Addr+"/site", "--ca-file", reg.CAFile)
	if r.Err == nil || !strings.Contains(r.Stderr, "401") && !strings.Contains(strings.ToLower(r.Stderr), "unauthorized") {
		t.Errorf("no credentials: %s", r)
	}
}

// Into Debian's docker-registry 2.8 over plain HTTP (loopback), nested and
// flattened names.
func TestDistribution28PlainHTTPAndFlatten(t *testing.T) {
	reg := testenv.StartDistribution(t)
	p, file := fixture(t, 12)
	host := strings.TrimPrefix(reg.URL, "http://")
	res := push(t, nil, file, "--to-registry", host)
	checkImages(t, http.DefaultClient, reg.URL, "", registrypush.Nested, p)
	if len(res.TagsSet) != 2 || res.BlobsMounted != 1 {
		t.Errorf("%+v", res)
	}
	resf := push(t, nil, file, "--to-registry", host+"/proj", "--flatten")
	checkImages(t, http.DefaultClient, reg.URL, "proj", registrypush.Flat, p)
	want := []string{host + "/proj/docker.io_library_nginx:alpine", host + "/proj/ghcr.io_octohelm_app:v1"}
	if strings.Join(resf.TagsSet, " ") != strings.Join(want, " ") {
		t.Errorf("flattened tags %v, want %v", resf.TagsSet, want)
	}
	if n := reg.Requests("PUT", "/v2/proj/docker.io/"); n != 0 {
		t.Errorf("%d nested PUTs under proj/", n)
	}
}

// The connection is cut in the middle of the 5 MiB layer: the upload resumes
// where the registry's Range says and the import completes, with the bytes
// sent bounded by the archive's plus one chunk.
func TestCutMidLayerResumes(t *testing.T) {
	reg := testenv.StartRegistry3(t, testenv.Registry3Options{})
	p, file := fixture(t, 13)
	px := testenv.StartProxy(t, reg.Addr, 3<<20, 0)
	res := push(t, nil, file, "--to-registry", strings.TrimPrefix(px.URL, "http://")+"/site", "--chunk-size", "1", "--jobs", "1")
	if !px.Cut.Load() {
		t.Fatal("the proxy did not cut")
	}
	checkImages(t, reg.Client, reg.URL, "site", registrypush.Nested, p)
	if res.UploadsResumed+int(res.RequestsRetried) == 0 {
		t.Errorf("nothing resumed or retried: %+v", res)
	}
	if up, max := px.Up.Load(), layerBytes(p)+(1<<20)+(256<<10); up > max {
		t.Errorf("%d bytes sent, more than the blobs (%d) and one chunk", up, layerBytes(p))
	}
}

// The same cut with the archive's layers each sent in one request (the
// default from a file): the upload resumes from what the registry kept, or
// in a new session, reading the file again, and the import completes with
// the right bytes.
func TestCutOneRequestLayerResumes(t *testing.T) {
	reg := testenv.StartRegistry3(t, testenv.Registry3Options{})
	p, file := fixture(t, 14)
	px := testenv.StartProxy(t, reg.Addr, 3<<20, 0)
	res := push(t, nil, file, "--to-registry", strings.TrimPrefix(px.URL, "http://")+"/site", "--jobs", "1")
	if !px.Cut.Load() {
		t.Fatal("the proxy did not cut")
	}
	checkImages(t, reg.Client, reg.URL, "site", registrypush.Nested, p)
	if res.UploadsResumed+int(res.RequestsRetried) == 0 {
		t.Errorf("nothing resumed or retried: %+v", res)
	}
	if up, max := px.Up.Load(), layerBytes(p)+(4<<20); up > max {
		t.Errorf("%d bytes sent, more than the blobs (%d) and what the cut lost", up, layerBytes(p))
	}
}

// 5xx for a while: retried, and the import completes.
func TestServerErrorsRetried(t *testing.T) {
	reg := testenv.StartDistribution(t)
	f := startFaults(t, reg.URL)
	var mu sync.Mutex
	n := 0
	f.set(func(r *http.Request) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v2/" && n < 5 {
			n++
			return http.StatusServiceUnavailable, "UNAVAILABLE"
		}
		return 0, ""
	})
	p, file := fixture(t, 14)
	res := push(t, nil, file, "--to-registry", f.Host)
	checkImages(t, http.DefaultClient, reg.URL, "", registrypush.Nested, p)
	if res.RequestsRetried < 5 {
		t.Errorf("%d retries, want at least the 5 answered 503: %+v", res.RequestsRetried, res)
	}
}

// A repository refused (403 DENIED on upload start, as a registry that does
// not create projects answers): the error names it and says what to do, no
// tag of the package moved; once allowed, a rerun completes, skipping what
// the first run committed (the refusal stops the uploads in flight, so how
// much that is depends on their order: OutOfSpace checks the exact rerun).
func TestRefusedRepositoryThenRerun(t *testing.T) {
	reg := testenv.StartDistribution(t)
	f := startFaults(t, reg.URL)
	f.set(func(r *http.Request) (int, string) {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/ghcr.io/") {
			return http.StatusForbidden, "DENIED"
		}
		return 0, ""
	})
	p, file := fixture(t, 15)
	r := crpe(t, nil, "import", file, "--to-registry", f.Host+"/site")
	if r.Err == nil || !strings.Contains(r.Stderr, `"site/ghcr.io/octohelm/app"`) || !strings.Contains(r.Stderr, "create the project") {
		t.Fatalf("want a refusal naming site/ghcr.io/octohelm/app: %s", r)
	}
	if f.count("PUT", "/manifests/alpine")+f.count("PUT", "/manifests/v1") != 0 {
		t.Error("a tag was put")
	}
	for _, im := range p.Images {
		repo, _ := registrypush.Target{Prefix: "site"}.Repository(im.Name, registrypush.Nested)
		if d := tagDigest(t, http.DefaultClient, reg.URL, repo, im.Tag); d != "" {
			t.Errorf("%s:%s is tagged %s after a failed import", repo, im.Tag, d)
		}
	}
	f.set(func(*http.Request) (int, string) { return 0, "" })
	res := push(t, nil, file, "--to-registry", f.Host+"/site")
	checkImages(t, http.DefaultClient, reg.URL, "site", registrypush.Nested, p)
	if res.BlobsSkipped+res.BlobsPushed != 7 || len(res.TagsSet) != 2 {
		t.Errorf("rerun: %+v", res)
	}
}

// Out of space (507 on the final PUT of the big layer): nothing tagged; a
// rerun sends only that layer.
func TestOutOfSpaceThenRerun(t *testing.T) {
	reg := testenv.StartDistribution(t)
	f := startFaults(t, reg.URL)
	p, file := fixture(t, 16)
	big := p.Images[0].Children[0].Layers[1]
	f.set(func(r *http.Request) (int, string) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.RawQuery, big.Desc.Digest.Encoded()) {
			return http.StatusInsufficientStorage, "UNKNOWN"
		}
		return 0, ""
	})
	r := crpe(t, nil, "import", file, "--to-registry", f.Host)
	if r.Err == nil || !strings.Contains(r.Stderr, "507") {
		t.Fatalf("want a failure naming the 507: %s", r)
	}
	for _, im := range p.Images {
		if d := tagDigest(t, http.DefaultClient, reg.URL, strings.ReplaceAll(im.Name, ":", "_"), im.Tag); d != "" {
			t.Errorf("%s:%s tagged after a failed import", im.Name, im.Tag)
		}
	}
	f.set(func(*http.Request) (int, string) { return 0, "" })
	res := push(t, nil, file, "--to-registry", f.Host)
	checkImages(t, http.DefaultClient, reg.URL, "", registrypush.Nested, p)
	if res.BlobsPushed != 1 || res.BytesPushed != big.Desc.Size {
		t.Errorf("rerun pushed %d blobs (%d bytes), want only the big layer (%d): %+v", res.BlobsPushed, res.BytesPushed, big.Desc.Size, res)
	}
}
