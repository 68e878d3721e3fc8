package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

type env struct {
	t   *testing.T
	srv *httptest.Server
	db  *repodb.DB
}

func newEnv(t *testing.T, opts Options) *env {
	dir := t.TempDir()
	store, err := casfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := repodb.Open(filepath.Join(dir, "index.db"), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(store, db, opts))
	t.Cleanup(func() { srv.Close(); db.Close() })
	return &env{t: t, srv: srv, db: db}
}

func (e *env) do(method, path string, body []byte, hdr ...string) *http.Response {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// expectErr checks the status and that the body is the spec's JSON error
// with code.
func (e *env) expectErr(resp *http.Response, status int, code string) {
	e.t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, b)
	}
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if resp.Request.Method == http.MethodHead {
		return
	}
	if err := json.Unmarshal(b, &body); err != nil || len(body.Errors) == 0 {
		e.t.Fatalf("%s %s: not a JSON error body: %q", resp.Request.Method, resp.Request.URL, b)
	}
	if body.Errors[0].Code != code {
		e.t.Fatalf("%s %s: code %s, want %s (%s)", resp.Request.Method, resp.Request.URL, body.Errors[0].Code, code, body.Errors[0].Message)
	}
}

func (e *env) expectStatus(resp *http.Response, status int) []byte {
	e.t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, b)
	}
	return b
}

func randBlob(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func (e *env) pushBlob(repo string, b []byte) digest.Digest {
	d := digest.FromBytes(b)
	e.expectStatus(e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), b), http.StatusCreated)
	return d
}

func imageManifest(config, layer []byte, extra string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]%s}`,
		digest.FromBytes(config), len(config), digest.FromBytes(layer), len(layer), extra))
}

const ociManifest = "application/vnd.oci.image.manifest.v1+json"

func (e *env) catalog() []string {
	var c struct{ Repositories []string }
	_ = json.Unmarshal(e.expectStatus(e.do("GET", "/v2/_catalog", nil), 200), &c)
	return c.Repositories
}

func TestBadNamesDigestsReferences(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	e.expectErr(e.do("GET", "/v2/UPPER/manifests/latest", nil), 400, "NAME_INVALID")
	e.expectErr(e.do("GET", "/v2/a//b/manifests/latest", nil), 400, "NAME_INVALID")
	e.expectErr(e.do("GET", "/v2/a/manifests/latest?ns=bad%2Fhost", nil), 400, "NAME_INVALID")
	e.expectErr(e.do("GET", "/v2/a/blobs/sha256:nothex", nil), 400, "DIGEST_INVALID")
	e.expectErr(e.do("GET", "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil), 400, "DIGEST_INVALID")
	e.expectErr(e.do("GET", "/v2/a/manifests/sha256:short", nil), 400, "DIGEST_INVALID")
	e.expectErr(e.do("GET", "/v2/a/manifests/-bad-tag", nil), 404, "MANIFEST_UNKNOWN")
	e.expectErr(e.do("PUT", "/v2/a/manifests/-bad-tag", []byte("{}")), 400, "MANIFEST_INVALID")
	e.expectErr(e.do("GET", "/v2/nope/manifests/latest", nil), 404, "NAME_UNKNOWN")
	e.expectErr(e.do("GET", "/v2/nope/tags/list", nil), 404, "NAME_UNKNOWN")
	e.expectErr(e.do("GET", "/v2/a/tags/list?n=-1", nil), 400, "PAGINATION_NUMBER_INVALID")
	e.expectErr(e.do("GET", "/v2/a/blobs/"+string(digest.FromString("x")), nil), 404, "BLOB_UNKNOWN")
	e.expectErr(e.do("PATCH", "/v2/a/manifests/latest", nil), 405, "UNSUPPORTED")
	e.expectErr(e.do("GET", "/v2/a/referrers/sha256:zz", nil), 400, "DIGEST_INVALID")
}

func TestRanges(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	b := randBlob(1000)
	d := e.pushBlob("r", b)
	got := e.expectStatus(e.do("GET", "/v2/r/blobs/"+string(d), nil, "Range", "bytes=10-19"), http.StatusPartialContent)
	if !bytes.Equal(got, b[10:20]) {
		t.Fatal("range content differs")
	}
	got = e.expectStatus(e.do("GET", "/v2/r/blobs/"+string(d), nil, "Range", "bytes=-5"), http.StatusPartialContent)
	if !bytes.Equal(got, b[995:]) {
		t.Fatal("suffix range content differs")
	}
	for _, bad := range []string{"bytes=2000-", "bytes=abc", "items=0-1", "bytes=9-3", "bytes=-0", "bytes=+1-2"} {
		e.expectErr(e.do("GET", "/v2/r/blobs/"+string(d), nil, "Range", bad), 416, "RANGE_INVALID")
	}
	resp := e.do("HEAD", "/v2/r/blobs/"+string(d), nil)
	e.expectStatus(resp, 200)
	if resp.Header.Get("Content-Length") != "1000" || resp.Header.Get("Docker-Content-Digest") != string(d) {
		t.Fatalf("HEAD headers %v", resp.Header)
	}
}

func TestManifestValidation(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	config, layer := randBlob(100), randBlob(2000)
	m := imageManifest(config, layer, "")

	// naming missing blobs: refused, nothing published
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", m, "Content-Type", ociManifest), 400, "MANIFEST_BLOB_UNKNOWN")
	if len(e.catalog()) != 0 {
		t.Fatal("a refused manifest created a repository")
	}
	e.pushBlob("m", config)
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", m, "Content-Type", ociManifest), 400, "MANIFEST_BLOB_UNKNOWN")
	e.expectErr(e.do("GET", "/v2/m/manifests/v1", nil), 404, "MANIFEST_UNKNOWN")
	e.pushBlob("m", layer)

	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", []byte("{not json"), "Content-Type", ociManifest), 400, "MANIFEST_INVALID")
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", []byte(`{"schemaVersion":1,"fsLayers":[]}`), "Content-Type", "application/vnd.docker.distribution.manifest.v1+json"), 400, "MANIFEST_INVALID")
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`), "Content-Type", ociManifest), 400, "MANIFEST_INVALID")
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", []byte(`{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:bad","size":1}}`), "Content-Type", ociManifest), 400, "MANIFEST_INVALID")
	big := append(append([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"x":"`), bytes.Repeat([]byte("a"), oci.MaxManifestSize)...), []byte(`"}}`)...)
	e.expectErr(e.do("PUT", "/v2/m/manifests/v1", big, "Content-Type", "application/vnd.oci.image.index.v1+json"), 413, "SIZE_INVALID")
	e.expectErr(e.do("PUT", "/v2/m/manifests/"+string(digest.FromString("other")), m, "Content-Type", ociManifest), 400, "DIGEST_INVALID")
	e.expectErr(e.do("GET", "/v2/m/manifests/v1", nil), 404, "MANIFEST_UNKNOWN")

	resp := e.do("PUT", "/v2/m/manifests/v1", m, "Content-Type", ociManifest)
	e.expectStatus(resp, 201)
	d := digest.FromBytes(m)
	if resp.Header.Get("Docker-Content-Digest") != string(d) || resp.Header.Get("Location") != "/v2/m/manifests/"+string(d) {
		t.Fatalf("PUT headers %v", resp.Header)
	}
	got := e.expectStatus(e.do("GET", "/v2/m/manifests/v1", nil, "Accept", ociManifest), 200)
	if !bytes.Equal(got, m) {
		t.Fatal("manifest bytes differ")
	}
	// content negotiation: no conversion between schemas, the manifest is
	// served as stored whatever the client lists
	resp = e.do("GET", "/v2/m/manifests/v1", nil, "Accept", oci.MediaTypeDockerManifest)
	if e.expectStatus(resp, 200); resp.Header.Get("Content-Type") != ociManifest {
		t.Fatalf("content type %s", resp.Header.Get("Content-Type"))
	}
}

func TestSparseIndexAndReferrers(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	config, layer := randBlob(50), randBlob(60)
	e.pushBlob("s", config)
	e.pushBlob("s", layer)
	m := imageManifest(config, layer, "")
	e.expectStatus(e.do("PUT", "/v2/s/manifests/amd64", m, "Content-Type", ociManifest), 201)
	absent := digest.FromString("arm64 child that was not exported")
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+
		`{"mediaType":"%s","digest":"%s","size":%d,"platform":{"os":"linux","architecture":"amd64"}},`+
		`{"mediaType":"%s","digest":"%s","size":123,"platform":{"os":"linux","architecture":"arm64"}}]}`,
		ociManifest, digest.FromBytes(m), len(m), ociManifest, absent))
	e.expectStatus(e.do("PUT", "/v2/s/manifests/multi?tag=also", index, "Content-Type", "application/vnd.oci.image.index.v1+json"), 201)
	e.expectStatus(e.do("GET", "/v2/s/manifests/also", nil), 200)
	// a client that takes no index gets the linux/amd64 image
	got := e.expectStatus(e.do("GET", "/v2/s/manifests/also", nil, "Accept", ociManifest), 200)
	if !bytes.Equal(got, m) {
		t.Fatal("index-less client did not get the linux/amd64 image")
	}

	// an artifact whose subject is absent is accepted and listed
	subject := digest.FromString("absent subject")
	art := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.sig",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":%d},"layers":[],`+
		`"subject":{"mediaType":"%s","digest":"%s","size":10}}`, digest.FromBytes(config), len(config), ociManifest, subject))
	resp := e.do("PUT", "/v2/s/manifests/"+string(digest.FromBytes(art)), art, "Content-Type", ociManifest)
	e.expectStatus(resp, 201)
	if resp.Header.Get("OCI-Subject") != string(subject) {
		t.Fatal("no OCI-Subject header")
	}
	var idx struct {
		Manifests []struct{ ArtifactType string }
	}
	_ = json.Unmarshal(e.expectStatus(e.do("GET", "/v2/s/referrers/"+string(subject), nil), 200), &idx)
	if len(idx.Manifests) != 1 || idx.Manifests[0].ArtifactType != "application/x.sig" {
		t.Fatalf("referrers %+v", idx)
	}
	resp = e.do("GET", "/v2/s/referrers/"+string(subject)+"?artifactType=application/x.other", nil)
	_ = json.Unmarshal(e.expectStatus(resp, 200), &idx)
	if len(idx.Manifests) != 0 || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers %+v %v", idx, resp.Header)
	}
}

func TestUploadsBadInput(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	b := randBlob(4096)
	d := digest.FromBytes(b)

	// bytes that do not match the digest, monolithic and chunked
	e.expectErr(e.do("POST", "/v2/u/blobs/uploads/?digest="+string(digest.FromString("x")), b), 400, "DIGEST_INVALID")
	resp := e.do("POST", "/v2/u/blobs/uploads/", nil)
	e.expectStatus(resp, 202)
	loc := resp.Header.Get("Location")
	e.expectStatus(e.do("PATCH", loc, b[:1000], "Content-Range", "0-999"), 202)
	// out of order chunk
	r2 := e.do("PATCH", loc, b[2000:3000], "Content-Range", "2000-2999")
	if r2.Header.Get("Range") != "0-999" {
		t.Fatalf("416 Range header %q", r2.Header.Get("Range"))
	}
	e.expectErr(r2, 416, "RANGE_INVALID")
	e.expectErr(e.do("PATCH", loc, b[1000:1500], "Content-Range", "1000-1999"), 416, "RANGE_INVALID")
	e.expectErr(e.do("PUT", loc+"?digest="+string(digest.FromString("y")), b[1000:]), 400, "DIGEST_INVALID")
	// the session is gone after a failed close
	e.expectErr(e.do("GET", loc, nil), 404, "BLOB_UPLOAD_UNKNOWN")
	e.expectErr(e.do("PATCH", "/v2/u/blobs/uploads/nonexistent", b), 404, "BLOB_UPLOAD_UNKNOWN")
	e.expectErr(e.do("PUT", "/v2/u/blobs/uploads/nonexistent?digest="+string(d), nil), 404, "BLOB_UPLOAD_UNKNOWN")
	e.expectErr(e.do("DELETE", "/v2/u/blobs/uploads/nonexistent", nil), 404, "BLOB_UPLOAD_UNKNOWN")
	// a session of another repository is not reachable
	resp = e.do("POST", "/v2/u/blobs/uploads/", nil)
	e.expectStatus(resp, 202)
	other := strings.Replace(resp.Header.Get("Location"), "/v2/u/", "/v2/other/", 1)
	e.expectErr(e.do("GET", other, nil), 404, "BLOB_UPLOAD_UNKNOWN")
	e.expectErr(e.do("PUT", resp.Header.Get("Location"), nil), 400, "DIGEST_INVALID")
	e.expectErr(e.do("HEAD", "/v2/u/blobs/"+string(d), nil), 404, "BLOB_UNKNOWN")
}

// TestCutOffUpload sends a body shorter than its Content-Length and hangs up:
// nothing becomes visible, the server stays up.
func TestCutOffUpload(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	b := randBlob(1 << 20)
	d := digest.FromBytes(b)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v2/cut/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", d, len(b))
	_, _ = conn.Write(b[:len(b)/2])
	conn.Close()
	time.Sleep(200 * time.Millisecond)
	e.expectErr(e.do("HEAD", "/v2/cut/blobs/"+string(d), nil), 404, "BLOB_UNKNOWN")

	// a PATCH cut off midway leaves the session where it was
	resp := e.do("POST", "/v2/cut/blobs/uploads/", nil)
	e.expectStatus(resp, 202)
	loc := resp.Header.Get("Location")
	e.expectStatus(e.do("PATCH", loc, b[:1000], "Content-Range", "0-999"), 202)
	conn, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Range: 1000-%d\r\nContent-Length: %d\r\n\r\n", loc, len(b)-1, len(b)-1000)
	_, _ = conn.Write(b[1000:5000])
	conn.Close()
	time.Sleep(200 * time.Millisecond)
	st := e.do("GET", loc, nil)
	e.expectStatus(st, 204)
	if st.Header.Get("Range") != "0-999" {
		t.Fatalf("after a cut-off chunk the upload has range %q, want 0-999", st.Header.Get("Range"))
	}
	e.expectStatus(e.do("PUT", loc+"?digest="+string(d), b[1000:], "Content-Range", fmt.Sprintf("1000-%d", len(b)-1)), 201)
	got := e.expectStatus(e.do("GET", "/v2/cut/blobs/"+string(d), nil), 200)
	if !bytes.Equal(got, b) {
		t.Fatal("resumed blob differs")
	}
}

func TestReadOnlyRefusesPushes(t *testing.T) {
	e := newEnv(t, Options{})
	e.expectErr(e.do("POST", "/v2/x/blobs/uploads/", nil), 405, "UNSUPPORTED")
	e.expectErr(e.do("PUT", "/v2/x/manifests/v1", []byte("{}")), 405, "UNSUPPORTED")
	e.expectErr(e.do("DELETE", "/v2/x/manifests/v1", nil), 405, "UNSUPPORTED")
	e.expectStatus(e.do("GET", "/v2/", nil), 200)
}

func TestNamespaceDialect(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	config, layer := randBlob(10), randBlob(20)
	e.pushBlob("docker.io/library/nginx", config)
	e.pushBlob("docker.io/library/nginx", layer)
	m := imageManifest(config, layer, "")
	e.expectStatus(e.do("PUT", "/v2/docker.io/library/nginx/manifests/alpine", m, "Content-Type", ociManifest), 201)
	resp := e.do("GET", "/v2/library/nginx/manifests/alpine?ns=docker.io", nil)
	if got := e.expectStatus(resp, 200); !bytes.Equal(got, m) || resp.Header.Get("OCI-Namespace") != "docker.io" {
		t.Fatalf("ns request: %v", resp.Header)
	}
	e.expectStatus(e.do("GET", "/v2/library/nginx/blobs/"+string(digest.FromBytes(layer))+"?ns=registry-1.docker.io", nil), 200)
	// without ns the name is literal
	e.expectErr(e.do("GET", "/v2/library/nginx/manifests/alpine", nil), 404, "NAME_UNKNOWN")
}

func TestTagPagination(t *testing.T) {
	e := newEnv(t, Options{AllowPush: true})
	config, layer := randBlob(10), randBlob(20)
	e.pushBlob("p", config)
	e.pushBlob("p", layer)
	m := imageManifest(config, layer, "")
	for _, tag := range []string{"c", "a", "b", "d"} {
		e.expectStatus(e.do("PUT", "/v2/p/manifests/"+tag, m, "Content-Type", ociManifest), 201)
	}
	resp := e.do("GET", "/v2/p/tags/list?n=2", nil)
	var tl struct{ Tags []string }
	_ = json.Unmarshal(e.expectStatus(resp, 200), &tl)
	if strings.Join(tl.Tags, ",") != "a,b" || !strings.Contains(resp.Header.Get("Link"), "last=b") {
		t.Fatalf("page 1: %v %q", tl.Tags, resp.Header.Get("Link"))
	}
	resp = e.do("GET", "/v2/p/tags/list?n=2&last=b", nil)
	_ = json.Unmarshal(e.expectStatus(resp, 200), &tl)
	if strings.Join(tl.Tags, ",") != "c,d" || resp.Header.Get("Link") != "" {
		t.Fatalf("page 2: %v %q", tl.Tags, resp.Header.Get("Link"))
	}
	// deleting the manifest removes its tags
	e.expectStatus(e.do("DELETE", "/v2/p/manifests/"+string(digest.FromBytes(m)), nil), 202)
	_ = json.Unmarshal(e.expectStatus(e.do("GET", "/v2/p/tags/list", nil), 200), &tl)
	if len(tl.Tags) != 0 {
		t.Fatalf("tags after delete: %v", tl.Tags)
	}
}
