// Package crash kills a real `crpe agent` with SIGKILL in the middle of a
// mixed write workload, again and again on the same data folder, and checks
// the requirement:
//
//	`crpe fsck --data DIR` runs on the data folder of a process that was just
//	killed (no restart first) and must find it clean after a kill -9 at any
//	moment; leftover temp or upload files are reported as information, not as
//	problems. A failed operation leaves stores exactly as they were apart from
//	verified content-addressed blobs.
//
// Every worker owns one repository and keeps a model of it: for each tag,
// manifest and loose blob the set of states it may be in (a request that got
// a status is known to have happened or not; one cut off by the kill may
// have happened or not). After every restart the agent must serve a state the
// model allows, and the model is narrowed to what was observed. Everything
// talks to 127.0.0.1 only.
//
// Tests:
//   - TestKillDuringWrites: 10+ kill cycles of a 3-worker workload
//     (monolithic and chunked uploads, blobs of several MiB, OCI manifests and
//     indexes by tag, tag overwrites, manifest, tag and blob DELETEs, and
//     operations that must be refused), fsck right after each kill, a full
//     re-hash of everything acknowledged at the end, fsck --repair.
//   - TestKillMidBody: kill while a 64 MiB body (POST or PATCH) is stalled
//     halfway.
//   - TestKillDuringFirstStart: kill within the first milliseconds of a
//     start on a fresh data folder; fsck must find whatever is left clean.
//   - TestFsckRepairOnLiveAgent: fsck --repair on a running agent's folder
//     fails and changes nothing (an upload in progress completes).
//
// The seed is logged; CRPE_CRASH_SEED=<n> replays a run's choices (the kill
// moments still depend on timing).
package crash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

const (
	token = "test-token"

	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociIndex    = "application/vnd.oci.image.index.v1+json"
	ociConfig   = "application/vnd.oci.image.config.v1+json"
	ociLayer    = "application/vnd.oci.image.layer.v1.tar"

	absent = "" // the "no such tag" state in a tag's set of possible digests

	nWorkers  = 3
	nCycles   = 10 // kill cycles at least
	maxCycles = 30 // at most, while the workload has not covered every kind of write
	tagPool   = 5
)

// errGone marks a request that got no HTTP status: its outcome is unknown.
var errGone = errors.New("no reply from the agent")

// ---------------------------------------------------------------- client

type client struct {
	base  string
	basic bool // token as the Basic password instead of a Bearer token
	tr    *http.Transport
	hc    *http.Client
}

func newClient(p *testenv.Proc, basic bool) *client {
	tr := &http.Transport{
		Proxy:                 nil, // loopback only, never through a proxy
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   4,
		ResponseHeaderTimeout: 20 * time.Second,
		DisableCompression:    true,
	}
	if !strings.HasPrefix(p.URL, "http://127.0.0.1:") {
		panic("agent not on loopback: " + p.URL)
	}
	return &client{base: p.URL, basic: basic, tr: tr, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *client) close() { c.tr.CloseIdleConnections() }

type reply struct {
	status int
	hdr    http.Header
	body   []byte
}

func (r *reply) String() string {
	b := r.body
	if len(b) > 300 {
		b = b[:300]
	}
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(b))
}

// code is the first error code of a spec error body.
func (r *reply) code() string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// do sends one request; ref is a path ("/v2/...") or an absolute URL. A
// transport error wraps errGone.
func (c *client) do(method, ref string, hdr map[string]string, body io.Reader, n int64) (*reply, error) {
	u := ref
	if strings.HasPrefix(ref, "/") {
		u = c.base + ref
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = n
	}
	if c.basic {
		req.SetBasicAuth("crash", token)
	} else {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", errGone, method, ref, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the reply to %s %s: %v", errGone, method, ref, err)
	}
	return &reply{status: resp.StatusCode, hdr: resp.Header, body: b}, nil
}

func expect(what string, r *reply, status int, code string) error {
	if r.status != status || (code != "" && r.code() != code) {
		want := strconv.Itoa(status)
		if code != "" {
			want += " " + code
		}
		return fmt.Errorf("%s: got %s, want %s", what, r, want)
	}
	return nil
}

func withQuery(loc, k, v string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func human(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

var octet = map[string]string{"Content-Type": "application/octet-stream"}

func octetRange(start, end int) map[string]string {
	return map[string]string{"Content-Type": "application/octet-stream", "Content-Range": fmt.Sprintf("%d-%d", start, end)}
}

// abortReader yields its bytes, then fails: the client gives up mid-body.
type abortReader struct{ r io.Reader }

var errAbort = errors.New("client gave up mid-body (on purpose)")

func (a *abortReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF {
		return n, errAbort
	}
	return n, err
}

// ---------------------------------------------------------------- fsck

type fsckReport struct {
	Summary struct {
		Blobs     int `json:"blobs"`
		Repos     int `json:"repositories"`
		Manifests int `json:"manifests"`
		Tags      int `json:"tags"`
		Problems  int `json:"problems"`
		Info      int `json:"info"`
	} `json:"summary"`
	Findings []struct {
		Problem  bool   `json:"problem"`
		Where    string `json:"where"`
		Message  string `json:"message"`
		Repaired bool   `json:"repaired"`
	} `json:"findings"`
}

// runFsck runs `crpe fsck --data data --json [extra]` and returns its report
// and exit code; it fails the test if the report is not JSON.
func runFsck(t *testing.T, data string, extra ...string) (fsckReport, int) {
	t.Helper()
	rep, code, err := tryFsck(t, data, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return rep, code
}

// tryFsck is runFsck returning a missing or broken report as an error.
func tryFsck(t *testing.T, data string, extra ...string) (fsckReport, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"fsck", "--data", data, "--json"}, extra...)
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("crpe %v: %v", args, err)
	}
	var rep fsckReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return rep, code, fmt.Errorf("crpe %v (exit %d): report is not JSON: %v\nstdout: %s\nstderr: %s", args, code, err, bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(stderr.Bytes()))
	}
	return rep, code, nil
}

// requireClean fails unless fsck exited 0 with no problem, and every info
// finding is a leftover file in <data>/ingest. It returns the info findings.
func requireClean(t *testing.T, label, data string, rep fsckReport, code int) []string {
	t.Helper()
	var info []string
	ingest := filepath.Join(data, "ingest") + string(filepath.Separator)
	problems := 0
	for _, f := range rep.Findings {
		if f.Problem {
			problems++
			t.Errorf("%s: fsck PROBLEM %s: %s", label, f.Where, f.Message)
			continue
		}
		if !strings.HasPrefix(f.Where, ingest) {
			t.Errorf("%s: fsck info finding outside the ingest folder: %s: %s", label, f.Where, f.Message)
		}
		info = append(info, fmt.Sprintf("%s (%s)", filepath.Base(f.Where), f.Message))
	}
	if code != 0 || rep.Summary.Problems != 0 || problems != 0 {
		t.Errorf("%s: fsck exit %d, summary %+v, %d problem findings: want exit 0 and no problem", label, code, rep.Summary, problems)
	}
	if rep.Summary.Info != len(info) {
		t.Errorf("%s: fsck summary counts %d info findings, the list has %d", label, rep.Summary.Info, len(info))
	}
	return info
}

func ingestEntries(t *testing.T, data string) []os.DirEntry {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(data, "ingest"))
	if err != nil {
		t.Fatalf("reading the ingest folder: %v", err)
	}
	return es
}

func kill(t *testing.T, p *testenv.Proc) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	select {
	case <-p.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not die within 10 s of SIGKILL")
	}
}

// ---------------------------------------------------------------- the model

type desc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type manifestRec struct {
	body      []byte
	mediaType string
	blobs     []desc // config and layers of an image manifest
	// possible states
	present, absent bool
}

type blobRec struct {
	size             int64
	linked, unlinked bool // possible states
}

type worker struct {
	t    *testing.T
	id   int
	repo string
	data string
	rng  *rand.Rand
	src  *rand.ChaCha8
	seq  int

	tags      map[string]map[string]bool // tag -> possible digests (absent = no tag)
	manifests map[string]*manifestRec
	mOrder    []string
	layers    []desc // layers and configs pushed with a 201 (never deleted)
	loose     map[string]*blobRec
	lOrder    []string
	// digests claimed by uploads that had to fail: never a file, never linked
	bogusClaimed []string
	// digests of the bytes of those failed uploads: never linked
	failedReal []string
	// manifests that had to be refused (a blob missing): never served
	bogusManifests []string

	ops         map[string]int // acknowledged operations by kind
	interrupted string         // what this cycle's kill cut off

	// per cycle
	c      *client
	killed *atomic.Bool
	doing  string
}

func newWorker(t *testing.T, id int, data string, seed uint64) *worker {
	var cs [32]byte
	binary.LittleEndian.PutUint64(cs[:], seed)
	binary.LittleEndian.PutUint64(cs[8:], uint64(id)+1)
	w := &worker{
		t: t, id: id, repo: fmt.Sprintf("crash/w%d", id), data: data,
		rng: rand.New(rand.NewPCG(seed, uint64(id)+1)), src: rand.NewChaCha8(cs),
		tags: map[string]map[string]bool{}, manifests: map[string]*manifestRec{},
		loose: map[string]*blobRec{}, ops: map[string]int{},
	}
	for i := 0; i < tagPool; i++ {
		w.tags[fmt.Sprintf("t%d", i)] = map[string]bool{absent: true}
	}
	return w
}

func (w *worker) randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = w.src.Read(b)
	return b
}

// blobSize: mostly small, a quarter of them 1-6 MiB.
func (w *worker) blobSize() int {
	if w.rng.IntN(4) == 0 {
		return 1<<20 + w.rng.IntN(5<<20)
	}
	return 1 + w.rng.IntN(256<<10)
}

func (w *worker) randTag() string { return fmt.Sprintf("t%d", w.rng.IntN(tagPool)) }

func (w *worker) fakeDigest() string { return digestOf(w.randBytes(32)) }

func (w *worker) run(wg *sync.WaitGroup, stop <-chan struct{}) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		err := w.step()
		if err == nil {
			continue
		}
		if errors.Is(err, errGone) {
			if !w.killed.Load() {
				w.t.Errorf("worker %d: request failed while the agent was alive: %v", w.id, err)
			}
			w.interrupted = w.doing
			return
		}
		w.t.Errorf("worker %d (%s): %v", w.id, w.doing, err)
		return
	}
}

func (w *worker) step() error {
	x := w.rng.IntN(100)
	switch {
	case len(w.mOrder) == 0 || x < 22:
		return w.pushImage()
	case x < 32:
		return w.pushIndex()
	case x < 43:
		return w.pushLoose(false)
	case x < 54:
		return w.pushLoose(true)
	case x < 61:
		return w.deleteTag()
	case x < 68:
		return w.deleteManifest()
	case x < 76:
		return w.deleteLoose()
	case x < 88:
		return w.badDigestUpload()
	default:
		return w.missingBlobManifest()
	}
}

func (w *worker) uploadMono(data []byte, claimed string) (*reply, error) {
	w.doing = fmt.Sprintf("monolithic upload of %s", human(len(data)))
	return w.c.do(http.MethodPost, "/v2/"+w.repo+"/blobs/uploads/?digest="+url.QueryEscape(claimed), octet, bytes.NewReader(data), int64(len(data)))
}

// uploadChunked pushes data as POST, PATCH "start-end"... and a closing PUT
// ?digest=claimed, sometimes with a rejected out-of-order chunk or a chunk
// the client gives up on halfway, both of which must leave the upload as it
// was. It returns the reply to the closing PUT.
func (w *worker) uploadChunked(data []byte, claimed string) (*reply, error) {
	w.doing = "chunked upload: POST"
	r, err := w.c.do(http.MethodPost, "/v2/"+w.repo+"/blobs/uploads/", nil, nil, 0)
	if err != nil {
		return nil, err
	}
	if err := expect("POST upload", r, http.StatusAccepted, ""); err != nil {
		return nil, err
	}
	loc := r.hdr.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("POST upload: no Location")
	}
	n := min(1+w.rng.IntN(4), len(data))
	lastInPut := w.rng.IntN(3) == 0
	variant := w.rng.IntN(5) // 0: an out-of-order chunk first, 1: an abandoned chunk first
	off := 0
	for i := 0; i < n; i++ {
		end := len(data) * (i + 1) / n
		part := data[off:end]
		if i == n-1 && lastInPut {
			break
		}
		if i > 0 && variant == 0 {
			variant = -1
			w.doing = "chunked upload: out-of-order PATCH"
			small := part[:min(len(part), 1024)]
			r, err := w.c.do(http.MethodPatch, loc, octetRange(off+1, off+len(small)), bytes.NewReader(small), int64(len(small)))
			if err != nil {
				return nil, err
			}
			if err := expect("out-of-order PATCH", r, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID"); err != nil {
				return nil, err
			}
			if got, want := r.hdr.Get("Range"), fmt.Sprintf("0-%d", off-1); got != want {
				return nil, fmt.Errorf("out-of-order PATCH: Range %q, want %q", got, want)
			}
			w.ops["rejected out-of-order chunk"]++
		}
		if i > 0 && variant == 1 {
			variant = -1
			w.doing = "chunked upload: abandoned PATCH"
			half := part[:len(part)/2]
			if r, err := w.c.do(http.MethodPatch, loc, octetRange(off, end-1), &abortReader{bytes.NewReader(half)}, int64(len(part))); err == nil {
				return nil, fmt.Errorf("abandoned PATCH got a reply: %s", r)
			}
			// the half chunk must have been rolled back
			w.doing = "chunked upload: status after an abandoned PATCH"
			r, err := w.c.do(http.MethodGet, loc, nil, nil, 0)
			if err != nil {
				return nil, err
			}
			if err := expect("upload status", r, http.StatusNoContent, ""); err != nil {
				return nil, err
			}
			if got, want := r.hdr.Get("Range"), fmt.Sprintf("0-%d", off-1); got != want {
				return nil, fmt.Errorf("upload status after an abandoned chunk: Range %q, want %q (not rolled back)", got, want)
			}
			w.ops["abandoned chunk rolled back"]++
		}
		w.doing = fmt.Sprintf("chunked upload: PATCH %s", human(len(part)))
		r, err := w.c.do(http.MethodPatch, loc, octetRange(off, end-1), bytes.NewReader(part), int64(len(part)))
		if err != nil {
			return nil, err
		}
		if err := expect("PATCH", r, http.StatusAccepted, ""); err != nil {
			return nil, err
		}
		if got, want := r.hdr.Get("Range"), fmt.Sprintf("0-%d", end-1); got != want {
			return nil, fmt.Errorf("PATCH: Range %q, want %q", got, want)
		}
		if l := r.hdr.Get("Location"); l != "" {
			loc = l
		}
		off = end
	}
	rest := data[off:]
	w.doing = fmt.Sprintf("chunked upload: closing PUT with %s", human(len(rest)))
	var hdr map[string]string
	if len(rest) > 0 {
		hdr = octetRange(off, len(data)-1)
	}
	return w.c.do(http.MethodPut, withQuery(loc, "digest", claimed), hdr, bytes.NewReader(rest), int64(len(rest)))
}

// uploadBlob pushes data one way or the other and requires a 201.
func (w *worker) uploadBlob(data []byte, d string) (chunked bool, err error) {
	chunked = w.rng.IntN(2) == 0
	var r *reply
	if chunked {
		r, err = w.uploadChunked(data, d)
	} else {
		r, err = w.uploadMono(data, d)
	}
	if err != nil {
		return chunked, err
	}
	if err := expect("blob upload", r, http.StatusCreated, ""); err != nil {
		return chunked, err
	}
	if got := r.hdr.Get("Docker-Content-Digest"); got != d {
		return chunked, fmt.Errorf("blob upload: Docker-Content-Digest %q, want %s", got, d)
	}
	if chunked {
		w.ops["chunked blob upload"]++
	} else {
		w.ops["monolithic blob upload"]++
	}
	if len(data) >= 1<<20 {
		w.ops["blob of >= 1 MiB"]++
	}
	return chunked, nil
}

func (w *worker) pushImage() error {
	w.seq++
	var layers []desc
	for i, n := 0, 1+w.rng.IntN(3); i < n; i++ {
		if len(w.layers) > 0 && w.rng.IntN(4) == 0 {
			layers = append(layers, w.layers[w.rng.IntN(len(w.layers))])
			continue
		}
		data := w.randBytes(w.blobSize())
		d := digestOf(data)
		if _, err := w.uploadBlob(data, d); err != nil {
			return err
		}
		l := desc{MediaType: ociLayer, Digest: d, Size: int64(len(data))}
		w.layers = append(w.layers, l)
		layers = append(layers, l)
	}
	cfgBody := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"crash":"w%d-%d-%x"}}}`, w.id, w.seq, w.randBytes(8)))
	cfg := desc{MediaType: ociConfig, Digest: digestOf(cfgBody), Size: int64(len(cfgBody))}
	if _, err := w.uploadBlob(cfgBody, cfg.Digest); err != nil {
		return err
	}
	w.layers = append(w.layers, desc{MediaType: ociLayer, Digest: cfg.Digest, Size: cfg.Size})
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifest, "config": cfg, "layers": layers})
	return w.putManifest(body, ociManifest, append([]desc{cfg}, layers...))
}

func (w *worker) pushIndex() error {
	w.seq++
	var children []desc
	for i, n := 0, 1+w.rng.IntN(3); i < n; i++ {
		d := w.mOrder[w.rng.IntN(len(w.mOrder))]
		m := w.manifests[d]
		children = append(children, desc{MediaType: m.mediaType, Digest: d, Size: int64(len(m.body))})
	}
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociIndex, "manifests": children,
		"annotations": map[string]string{"crash": fmt.Sprintf("w%d-%d-%x", w.id, w.seq, w.randBytes(8))}})
	return w.putManifest(body, ociIndex, nil)
}

// putManifest PUTs body by a tag of the pool (often overwriting it).
func (w *worker) putManifest(body []byte, mediaType string, blobs []desc) error {
	d := digestOf(body)
	tag := w.randTag()
	rec := &manifestRec{body: body, mediaType: mediaType, blobs: blobs, absent: true}
	w.manifests[d] = rec
	w.mOrder = append(w.mOrder, d)
	set := w.tags[tag]
	overwrite := !set[absent]
	w.doing = "PUT " + mediaType + " by tag"
	r, err := w.c.do(http.MethodPut, "/v2/"+w.repo+"/manifests/"+tag, map[string]string{"Content-Type": mediaType}, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		rec.present = true // may have happened
		set[d] = true
		return err
	}
	if err := expect("PUT manifest", r, http.StatusCreated, ""); err != nil {
		return err
	}
	if got := r.hdr.Get("Docker-Content-Digest"); got != d {
		return fmt.Errorf("PUT manifest: Docker-Content-Digest %q, want %s", got, d)
	}
	rec.present, rec.absent = true, false
	w.tags[tag] = map[string]bool{d: true}
	if mediaType == ociIndex {
		w.ops["index PUT"]++
	} else {
		w.ops["image manifest PUT"]++
	}
	if overwrite {
		w.ops["tag overwrite"]++
	}
	return nil
}

func (w *worker) pushLoose(chunked bool) error {
	data := w.randBytes(w.blobSize())
	d := digestOf(data)
	rec := &blobRec{size: int64(len(data)), unlinked: true}
	w.loose[d] = rec
	w.lOrder = append(w.lOrder, d)
	var r *reply
	var err error
	if chunked {
		r, err = w.uploadChunked(data, d)
	} else {
		r, err = w.uploadMono(data, d)
	}
	if err != nil {
		// a PATCH cut off leaves the blob unlinked; only the last request
		// can have linked it
		rec.linked = true
		return err
	}
	if err := expect("blob upload", r, http.StatusCreated, ""); err != nil {
		return err
	}
	rec.linked, rec.unlinked = true, false
	if chunked {
		w.ops["chunked blob upload"]++
	} else {
		w.ops["monolithic blob upload"]++
	}
	if len(data) >= 1<<20 {
		w.ops["blob of >= 1 MiB"]++
	}
	return nil
}

func (w *worker) deleteTag() error {
	tag := w.randTag()
	set := w.tags[tag]
	w.doing = "DELETE tag"
	r, err := w.c.do(http.MethodDelete, "/v2/"+w.repo+"/manifests/"+tag, nil, nil, 0)
	if err != nil {
		set[absent] = true
		return err
	}
	switch r.status {
	case http.StatusAccepted:
		if len(set) == 1 && set[absent] {
			return fmt.Errorf("DELETE tag %s: 202 for a tag that does not exist", tag)
		}
		w.ops["tag DELETE"]++
	case http.StatusNotFound:
		if !set[absent] {
			return fmt.Errorf("DELETE tag %s: %s for a tag that exists", tag, r)
		}
	default:
		return fmt.Errorf("DELETE tag %s: %s", tag, r)
	}
	w.tags[tag] = map[string]bool{absent: true}
	return nil
}

func (w *worker) deleteManifest() error {
	// mostly one that may be present; now and then any (a 404 then)
	var cands []string
	for _, d := range w.mOrder {
		if w.manifests[d].present || w.rng.IntN(8) == 0 {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	d := cands[w.rng.IntN(len(cands))]
	m := w.manifests[d]
	w.doing = "DELETE manifest by digest"
	r, err := w.c.do(http.MethodDelete, "/v2/"+w.repo+"/manifests/"+d, nil, nil, 0)
	if err != nil {
		m.absent = true
		for _, set := range w.tags {
			if set[d] {
				set[absent] = true
			}
		}
		return err
	}
	switch r.status {
	case http.StatusAccepted:
		if !m.present {
			return fmt.Errorf("DELETE manifest %s: 202 for a manifest that is not there", d)
		}
		w.ops["manifest DELETE"]++
	case http.StatusNotFound:
		if !m.absent {
			return fmt.Errorf("DELETE manifest %s: %s for a manifest that is there", d, r)
		}
	default:
		return fmt.Errorf("DELETE manifest %s: %s", d, r)
	}
	m.present, m.absent = false, true
	// the tags that pointed at it went with it
	for _, set := range w.tags {
		if set[d] {
			delete(set, d)
			set[absent] = true
		}
	}
	return nil
}

func (w *worker) deleteLoose() error {
	var cands []string
	for _, d := range w.lOrder {
		if w.loose[d].linked {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	d := cands[w.rng.IntN(len(cands))]
	b := w.loose[d]
	w.doing = "DELETE blob"
	r, err := w.c.do(http.MethodDelete, "/v2/"+w.repo+"/blobs/"+d, nil, nil, 0)
	if err != nil {
		b.unlinked = true
		return err
	}
	switch r.status {
	case http.StatusAccepted:
		if !b.linked {
			return fmt.Errorf("DELETE blob %s: 202 for a blob that is not linked", d)
		}
		w.ops["blob DELETE"]++
	case http.StatusNotFound:
		if !b.unlinked {
			return fmt.Errorf("DELETE blob %s: %s for a linked blob", d, r)
		}
	default:
		return fmt.Errorf("DELETE blob %s: %s", d, r)
	}
	b.linked, b.unlinked = false, true
	return nil
}

// badDigestUpload pushes bytes under a digest they do not have: it must fail
// and leave neither a blob file for that digest nor a link to either digest.
func (w *worker) badDigestUpload() error {
	data := w.randBytes(w.blobSize())
	real, claimed := digestOf(data), w.fakeDigest()
	w.bogusClaimed = append(w.bogusClaimed, claimed)
	w.failedReal = append(w.failedReal, real)
	var r *reply
	var err error
	chunked := w.rng.IntN(2) == 0
	if chunked {
		r, err = w.uploadChunked(data, claimed)
	} else {
		r, err = w.uploadMono(data, claimed)
	}
	if err != nil {
		return err
	}
	if err := expect("upload under a wrong digest", r, http.StatusBadRequest, "DIGEST_INVALID"); err != nil {
		return err
	}
	w.doing = "checks after a refused upload"
	for _, d := range []string{claimed, real} {
		r, err := w.c.do(http.MethodHead, "/v2/"+w.repo+"/blobs/"+d, nil, nil, 0)
		if err != nil {
			return err
		}
		if r.status != http.StatusNotFound {
			return fmt.Errorf("HEAD %s after a refused upload: %d, want 404", d, r.status)
		}
	}
	if _, err := os.Stat(blobPath(w.data, claimed)); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("a refused upload left a blob file for the digest it claimed (%v)", err)
	}
	if chunked {
		w.ops["refused chunked upload (wrong digest)"]++
	} else {
		w.ops["refused monolithic upload (wrong digest)"]++
	}
	return nil
}

// missingBlobManifest PUTs a manifest with a layer that was never pushed: it
// must be refused and leave the tag as it was.
func (w *worker) missingBlobManifest() error {
	cfg := desc{MediaType: ociConfig, Digest: w.fakeDigest(), Size: 100}
	var layers []desc
	if len(w.layers) > 0 {
		l := w.layers[w.rng.IntN(len(w.layers))]
		cfg = desc{MediaType: ociConfig, Digest: l.Digest, Size: l.Size}
		layers = append(layers, w.layers[w.rng.IntN(len(w.layers))])
	}
	layers = append(layers, desc{MediaType: ociLayer, Digest: w.fakeDigest(), Size: 1234})
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifest, "config": cfg, "layers": layers})
	d := digestOf(body)
	w.bogusManifests = append(w.bogusManifests, d)
	tag := w.randTag()
	w.doing = "PUT manifest with a missing blob"
	r, err := w.c.do(http.MethodPut, "/v2/"+w.repo+"/manifests/"+tag, map[string]string{"Content-Type": ociManifest}, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return err
	}
	if err := expect("PUT manifest with a missing blob", r, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"); err != nil {
		return err
	}
	w.doing = "checks after a refused manifest"
	r, err = w.c.do(http.MethodGet, "/v2/"+w.repo+"/manifests/"+tag, map[string]string{"Accept": ociManifest + ", " + ociIndex}, nil, 0)
	if err != nil {
		return err
	}
	set := w.tags[tag]
	switch r.status {
	case http.StatusOK:
		if got := r.hdr.Get("Docker-Content-Digest"); !set[got] {
			return fmt.Errorf("after a refused PUT, tag %s points at %s (allowed: %v)", tag, got, keys(set))
		}
	case http.StatusNotFound:
		if !set[absent] {
			return fmt.Errorf("after a refused PUT, tag %s is gone (allowed: %v)", tag, keys(set))
		}
	default:
		return fmt.Errorf("GET tag %s after a refused PUT: %s", tag, r)
	}
	w.ops["refused manifest (missing blob)"]++
	return nil
}

func blobPath(data, d string) string {
	alg, hexPart, _ := strings.Cut(d, ":")
	return filepath.Join(data, "blobs", alg, hexPart)
}

func keys(set map[string]bool) []string {
	var out []string
	for k := range set {
		if k == absent {
			k = "<absent>"
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// certain counts the manifests and tags the model knows are there.
func (w *worker) certain() (manifests, tags int) {
	for _, m := range w.manifests {
		if m.present && !m.absent {
			manifests++
		}
	}
	for _, set := range w.tags {
		if !set[absent] {
			tags++
		}
	}
	return
}

// verify checks what the agent serves against the model, then narrows the
// model to what it saw. full downloads and re-hashes every blob; otherwise a
// HEAD with the right length will do.
func (w *worker) verify(t *testing.T, c *client, full bool) {
	t.Helper()
	accept := map[string]string{"Accept": ociManifest + ", " + ociIndex}
	served := map[string]bool{}
	for _, d := range w.mOrder {
		m := w.manifests[d]
		r, err := c.do(http.MethodGet, "/v2/"+w.repo+"/manifests/"+d, accept, nil, 0)
		if err != nil {
			t.Errorf("%s: %v", w.repo, err)
			return
		}
		switch r.status {
		case http.StatusOK:
			if !m.present {
				t.Errorf("%s@%s is served, but it was deleted (acknowledged) or never stored", w.repo, d)
			}
			if !bytes.Equal(r.body, m.body) || r.hdr.Get("Docker-Content-Digest") != d || r.hdr.Get("Content-Type") != m.mediaType {
				t.Errorf("%s@%s is served with other bytes or headers (digest %q, type %q, %d bytes)", w.repo, d, r.hdr.Get("Docker-Content-Digest"), r.hdr.Get("Content-Type"), len(r.body))
			}
			m.present, m.absent = true, false
			served[d] = true
		case http.StatusNotFound:
			if !m.absent {
				t.Errorf("LOST: %s@%s got 201 and was never deleted, but GET answers %s", w.repo, d, r)
			}
			m.present, m.absent = false, true
		default:
			t.Errorf("GET %s@%s: %s", w.repo, d, r)
		}
	}
	for _, tag := range sortedKeys(w.tags) {
		set := w.tags[tag]
		r, err := c.do(http.MethodGet, "/v2/"+w.repo+"/manifests/"+tag, accept, nil, 0)
		if err != nil {
			t.Errorf("%s: %v", w.repo, err)
			return
		}
		switch r.status {
		case http.StatusOK:
			d := r.hdr.Get("Docker-Content-Digest")
			if !set[d] {
				t.Errorf("%s:%s serves %s; allowed: %v", w.repo, tag, d, keys(set))
			}
			if m := w.manifests[d]; m == nil || !bytes.Equal(r.body, m.body) || digestOf(r.body) != d {
				t.Errorf("%s:%s serves bytes that are not manifest %s", w.repo, tag, d)
			}
			if !served[d] {
				t.Errorf("%s:%s points at %s, which is not served by digest", w.repo, tag, d)
			}
			w.tags[tag] = map[string]bool{d: true}
		case http.StatusNotFound:
			if !set[absent] {
				t.Errorf("LOST: tag %s:%s (allowed: %v) answers %s", w.repo, tag, keys(set), r)
			}
			w.tags[tag] = map[string]bool{absent: true}
		default:
			t.Errorf("GET %s:%s: %s", w.repo, tag, r)
		}
	}
	seen := map[string]bool{}
	for _, d := range w.mOrder {
		if !served[d] {
			continue
		}
		for _, b := range w.manifests[d].blobs {
			if seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			if status := w.checkBlob(t, c, b.Digest, b.Size, full); status != http.StatusOK {
				t.Errorf("LOST: blob %s of served manifest %s@%s answers %d", b.Digest, w.repo, d, status)
			}
		}
	}
	for _, d := range w.lOrder {
		b := w.loose[d]
		switch status := w.checkBlob(t, c, d, b.size, full); status {
		case http.StatusOK:
			if !b.linked {
				t.Errorf("%s: blob %s is served but was unlinked (acknowledged) or never pushed", w.repo, d)
			}
			b.linked, b.unlinked = true, false
		case http.StatusNotFound:
			if !b.unlinked {
				t.Errorf("LOST: blob %s got 201 in %s and was not deleted, but answers 404", d, w.repo)
			}
			b.linked, b.unlinked = false, true
		}
	}
	for _, d := range append(append([]string(nil), w.bogusClaimed...), w.failedReal...) {
		if r, err := c.do(http.MethodHead, "/v2/"+w.repo+"/blobs/"+d, nil, nil, 0); err != nil || r.status != http.StatusNotFound {
			t.Errorf("%s: blob %s of a refused upload: %v %v, want 404", w.repo, d, r, err)
		}
	}
	for _, d := range w.bogusClaimed {
		if _, err := os.Stat(blobPath(w.data, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused upload left a blob file for the digest it claimed, %s (%v)", d, err)
		}
	}
	for _, d := range w.bogusManifests {
		if r, err := c.do(http.MethodGet, "/v2/"+w.repo+"/manifests/"+d, accept, nil, 0); err != nil || r.status != http.StatusNotFound {
			t.Errorf("%s: refused manifest %s: %v %v, want 404", w.repo, d, r, err)
		}
	}
}

// checkBlob GETs (full) or HEADs blob d in the worker's repository; a 200
// must carry exactly size bytes hashing to d.
func (w *worker) checkBlob(t *testing.T, c *client, d string, size int64, full bool) int {
	t.Helper()
	method := http.MethodHead
	if full {
		method = http.MethodGet
	}
	r, err := c.do(method, "/v2/"+w.repo+"/blobs/"+d, nil, nil, 0)
	if err != nil {
		t.Errorf("%s: %v", w.repo, err)
		return 0
	}
	switch r.status {
	case http.StatusOK:
		if got := r.hdr.Get("Content-Length"); got != strconv.FormatInt(size, 10) {
			t.Errorf("%s blob %s: Content-Length %s, want %d", w.repo, d, got, size)
		}
		if full && (int64(len(r.body)) != size || digestOf(r.body) != d) {
			t.Errorf("%s blob %s: served %d bytes hashing to %s", w.repo, d, len(r.body), digestOf(r.body))
		}
	case http.StatusNotFound:
	default:
		t.Errorf("%s %s blob %s: %s", method, w.repo, d, r)
	}
	return r.status
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func seedFromEnv(t *testing.T) uint64 {
	if s := os.Getenv("CRPE_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CRPE_CRASH_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// ---------------------------------------------------------------- tests

// TestKillDuringWrites: nCycles times (more if the workload has not yet
// covered every kind of write), start an agent on the same data folder, check
// it cleaned the ingest folder and serves what the model allows, run the
// workload, kill -9 it 20-400 ms in, and run fsck on the folder right away.
func TestKillDuringWrites(t *testing.T) {
	seed := seedFromEnv(t)
	t.Logf("seed %d (CRPE_CRASH_SEED=%d replays the choices)", seed, seed)
	built := time.Now()
	testenv.Crpe(t) // build first, outside the timed cycles
	t.Logf("crpe binary ready in %s", time.Since(built).Round(time.Millisecond))
	began := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0))
	data := t.TempDir()
	agentOpts := testenv.AgentOptions{Data: data, Token: token, Args: []string{"--allow-push"}}

	ws := make([]*worker, nWorkers)
	for i := range ws {
		ws[i] = newWorker(t, i, data, seed)
	}
	// the workload must really exercise what the requirement names; on a
	// slow machine a few more kill cycles get there
	mustSee := []string{"monolithic blob upload", "chunked blob upload", "blob of >= 1 MiB", "image manifest PUT", "index PUT", "tag overwrite"}
	ops := func() map[string]int {
		all := map[string]int{}
		for _, w := range ws {
			for k, v := range w.ops {
				all[k] += v
			}
		}
		return all
	}
	thin := func() (missing []string) {
		all := ops()
		for _, k := range mustSee {
			if all[k] == 0 {
				missing = append(missing, k)
			}
		}
		return missing
	}
	totalInfo := 0
	for cycle := 1; cycle <= nCycles || (len(thin()) > 0 && cycle <= maxCycles && time.Since(began) < 35*time.Second); cycle++ {
		p := testenv.StartAgent(t, agentOpts)
		if es := ingestEntries(t, data); len(es) != 0 {
			t.Errorf("cycle %d: %d leftover files in ingest after the agent started (it must clean them first)", cycle, len(es))
		}
		if cycle > 1 {
			c := newClient(p, false)
			for _, w := range ws {
				w.verify(t, c, false)
			}
			c.close()
			if t.Failed() {
				t.Fatalf("cycle %d: the restarted agent does not serve what was acknowledged before the kill", cycle)
			}
		}

		killed := &atomic.Bool{}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, w := range ws {
			w.c, w.killed, w.doing, w.interrupted = newClient(p, w.id%2 == 1), killed, "", "(nothing)"
			wg.Add(1)
			go w.run(&wg, stop)
		}
		delay := time.Duration(20+rng.IntN(381)) * time.Millisecond
		time.Sleep(delay)
		killed.Store(true)
		kill(t, p)
		close(stop)
		all := make(chan struct{})
		go func() { wg.Wait(); close(all) }()
		select {
		case <-all:
		case <-time.After(30 * time.Second):
			t.Fatalf("cycle %d: workers still running 30 s after the kill", cycle)
		}
		var interrupted []string
		for _, w := range ws {
			w.c.close()
			interrupted = append(interrupted, fmt.Sprintf("w%d: %s", w.id, w.interrupted))
		}

		// fsck on the folder of the process just killed, no restart first
		rep, code := runFsck(t, data)
		info := requireClean(t, fmt.Sprintf("cycle %d", cycle), data, rep, code)
		totalInfo += len(info)
		wantM, wantT := 0, 0
		for _, w := range ws {
			m, tg := w.certain()
			wantM += m
			wantT += tg
		}
		if rep.Summary.Manifests < wantM || rep.Summary.Tags < wantT {
			t.Errorf("cycle %d: fsck saw %d manifests and %d tags; at least %d and %d were acknowledged", cycle, rep.Summary.Manifests, rep.Summary.Tags, wantM, wantT)
		}
		t.Logf("cycle %2d: kill -9 after %3d ms; interrupted %s", cycle, delay.Milliseconds(), strings.Join(interrupted, "; "))
		t.Logf("          fsck exit %d: %d blobs, %d repos, %d manifests, %d tags, %d problems, %d info %v",
			code, rep.Summary.Blobs, rep.Summary.Repos, rep.Summary.Manifests, rep.Summary.Tags, rep.Summary.Problems, rep.Summary.Info, info)
		if t.Failed() {
			t.FailNow()
		}
	}

	// --repair on the folder of the last kill, then a plain fsck: clean and
	// without leftovers
	rep, code := runFsck(t, data, "--repair")
	info := requireClean(t, "fsck --repair", data, rep, code)
	for _, f := range rep.Findings {
		if !f.Repaired {
			t.Errorf("fsck --repair did not repair %s (%s)", f.Where, f.Message)
		}
	}
	t.Logf("fsck --repair: exit %d, %d info %v", code, len(info), info)
	rep, code = runFsck(t, data)
	if info := requireClean(t, "fsck after --repair", data, rep, code); len(info) != 0 {
		t.Errorf("fsck after --repair still reports %v", info)
	}

	// a last start: everything acknowledged and not deleted is served, bytes
	// re-hashed
	p := testenv.StartAgent(t, agentOpts)
	c := newClient(p, true)
	for _, w := range ws {
		w.verify(t, c, true)
	}
	c.close()
	kill(t, p)
	rep, code = runFsck(t, data)
	requireClean(t, "final fsck", data, rep, code)

	all := ops()
	var lines []string
	for _, k := range sortedKeys(all) {
		lines = append(lines, fmt.Sprintf("%s=%d", k, all[k]))
	}
	t.Logf("acknowledged operations: %s; leftover temp files reported as info over all cycles: %d", strings.Join(lines, ", "), totalInfo)
	if missing := thin(); len(missing) > 0 {
		t.Errorf("workload too thin: nothing acknowledged of %v", missing)
	}
	t.Logf("fsck final: %d blobs, %d manifests, %d tags; whole test %s", rep.Summary.Blobs, rep.Summary.Manifests, rep.Summary.Tags, time.Since(began).Round(time.Millisecond))
}

// stallReader yields data up to stallAt, then blocks until released and
// fails.
type stallReader struct {
	data    []byte
	off     int
	stallAt int
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.off >= s.stallAt {
		s.once.Do(func() { close(s.reached) })
		<-s.release
		return 0, errors.New("stalled body given up")
	}
	n := copy(p, s.data[s.off:s.stallAt])
	s.off += n
	return n, nil
}

// TestKillMidBody: a 64 MiB blob sent in one request whose body stalls
// halfway; kill -9 while the agent waits for the rest. fsck must be clean
// with the partial temp file as the only (info) finding; after a restart the
// temp file is gone, the blob is not visible, and the same blob then uploads
// normally.
func TestKillMidBody(t *testing.T) {
	testenv.Crpe(t)
	for _, mode := range []string{"monolithic POST", "chunked PATCH"} {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			const size, half = 64 << 20, 32 << 20
			data := t.TempDir()
			opts := testenv.AgentOptions{Data: data, Token: token, Args: []string{"--allow-push"}}
			p := testenv.StartAgent(t, opts)
			c := newClient(p, false)
			defer c.close()
			var seed [32]byte
			binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
			blob := make([]byte, size)
			_, _ = rand.NewChaCha8(seed).Read(blob)
			d := digestOf(blob)
			repo := "crash/big"

			method, ref, hdr := http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d, octet
			var loc string
			if mode == "chunked PATCH" {
				r, err := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := expect("POST upload", r, http.StatusAccepted, ""); err != nil {
					t.Fatal(err)
				}
				loc = r.hdr.Get("Location")
				method, ref, hdr = http.MethodPatch, loc, octetRange(0, size-1)
			}
			sr := &stallReader{data: blob, stallAt: half, reached: make(chan struct{}), release: make(chan struct{})}
			finished := make(chan struct{}) // closed when the request has ended, with reqErr set
			var reqErr error
			go func() {
				defer close(finished)
				r, err := c.do(method, ref, hdr, sr, size)
				if err == nil && r.status < 400 {
					err = fmt.Errorf("got a success reply to a request whose body never completed: %s", r)
				}
				reqErr = err
			}()
			var releaseOnce sync.Once
			release := func() { releaseOnce.Do(func() { close(sr.release) }) }
			defer func() {
				release()
				select {
				case <-finished:
				case <-time.After(15 * time.Second):
					t.Error("the stalled request did not end")
				}
			}()
			select {
			case <-sr.reached:
			case <-finished:
				t.Fatalf("the request ended before its body stalled: %v", reqErr)
			case <-time.After(20 * time.Second):
				t.Fatal("the body did not reach its halfway point in 20 s")
			}
			// wait until the agent has written a good part of it to disk
			var tmp string
			var tmpSize int64
			deadline := time.Now().Add(10 * time.Second)
			for tmpSize < 16<<20 {
				if time.Now().After(deadline) {
					t.Fatalf("the agent wrote only %d bytes of the body to %s", tmpSize, filepath.Join(data, "ingest"))
				}
				time.Sleep(20 * time.Millisecond)
				for _, e := range ingestEntries(t, data) {
					if fi, err := e.Info(); err == nil && fi.Size() > tmpSize {
						tmp, tmpSize = filepath.Join(data, "ingest", e.Name()), fi.Size()
					}
				}
			}
			kill(t, p)
			t.Logf("killed with %s of %s written to %s", human(int(tmpSize)), human(size), filepath.Base(tmp))

			rep, code := runFsck(t, data)
			info := requireClean(t, "fsck after the kill", data, rep, code)
			if len(rep.Findings) != 1 || rep.Findings[0].Where != tmp {
				t.Errorf("fsck findings %v: want exactly one info finding, for %s", info, tmp)
			}
			if _, err := os.Stat(blobPath(data, d)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the half-sent blob is in the store (%v)", err)
			}
			t.Logf("fsck: exit %d, %d problems, info %v", code, rep.Summary.Problems, info)
			release()
			select {
			case <-finished:
				if reqErr != nil && !errors.Is(reqErr, errGone) {
					t.Errorf("the cut-off request: %v", reqErr)
				}
				t.Logf("the cut-off request ended with: %v", reqErr)
			case <-time.After(15 * time.Second):
				t.Fatal("the stalled request did not end after the kill")
			}

			p = testenv.StartAgent(t, opts)
			if es := ingestEntries(t, data); len(es) != 0 {
				t.Errorf("%d files left in ingest after a restart", len(es))
			}
			c2 := newClient(p, true)
			defer c2.close()
			r, err := c2.do(http.MethodHead, "/v2/"+repo+"/blobs/"+d, nil, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != http.StatusNotFound {
				t.Errorf("HEAD of the half-sent blob after a restart: %d, want 404", r.status)
			}
			if loc != "" {
				r, err := c2.do(http.MethodGet, loc, nil, nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := expect("status of the upload of the killed agent", r, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN"); err != nil {
					t.Error(err)
				}
			}
			// the failed attempt must not get in the way of a normal one
			r, err = c2.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d, octet, bytes.NewReader(blob), size)
			if err != nil {
				t.Fatal(err)
			}
			if err := expect("upload after the restart", r, http.StatusCreated, ""); err != nil {
				t.Fatal(err)
			}
			r, err = c2.do(http.MethodHead, "/v2/"+repo+"/blobs/"+d, nil, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != http.StatusOK || r.hdr.Get("Content-Length") != strconv.Itoa(size) {
				t.Errorf("HEAD after the upload: %d, Content-Length %s", r.status, r.hdr.Get("Content-Length"))
			}
			kill(t, p)
			rep, code = runFsck(t, data)
			if info := requireClean(t, "final fsck", data, rep, code); len(info) != 0 || rep.Summary.Blobs != 1 {
				t.Errorf("final fsck: %d blobs, info %v; want 1 blob and no info", rep.Summary.Blobs, info)
			}
		})
	}
}

// TestKillDuringFirstStart kills `crpe agent` within its first milliseconds
// on a fresh data folder: half the time after a random 0-12 ms, half the time
// as soon as the blob store's folders appear (the index is created right
// after). Whatever the kill left, fsck must find it clean. A kill before the
// data folder exists leaves nothing to check.
func TestKillDuringFirstStart(t *testing.T) {
	testenv.Crpe(t)
	rng := rand.New(rand.NewPCG(seedFromEnv(t), 7))
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for i := 0; i < 40; i++ {
		data := filepath.Join(t.TempDir(), "data")
		p := testenv.Start(t, "agent", "--addr", "127.0.0.1:0", "--data", data, "--token-file", tok, "--allow-push", "--log-format", "text")
		if i%2 == 0 {
			time.Sleep(time.Duration(rng.IntN(12000)) * time.Microsecond)
		} else {
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
				if _, err := os.Stat(filepath.Join(data, "ingest")); err == nil {
					break
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
		kill(t, p)
		state := "index written"
		if _, err := os.Stat(data); err != nil {
			states["no data folder yet"]++
			continue
		}
		if fi, err := os.Stat(filepath.Join(data, "index.db")); err != nil {
			state = "no index.db"
		} else if fi.Size() == 0 {
			state = "0-byte index.db"
		}
		states[state]++
		rep, code, err := tryFsck(t, data)
		if err != nil {
			t.Errorf("kill %d (%s): %v", i, state, err)
			continue
		}
		if code != 0 || rep.Summary.Problems != 0 {
			t.Errorf("kill %d (%s): fsck exit %d, %+v", i, state, code, rep.Findings)
		}
	}
	t.Logf("what the kills left: %v", states)
}

// TestFsckRepairOnLiveAgent: fsck on the folder of a running agent must fail
// (the agent holds the index) without changing anything: an upload in
// progress survives it and completes.
func TestFsckRepairOnLiveAgent(t *testing.T) {
	p := testenv.StartAgent(t, testenv.AgentOptions{Token: token, Args: []string{"--allow-push"}})
	c := newClient(p, false)
	defer c.close()
	body := []byte("an upload in progress")
	r, err := c.do(http.MethodPost, "/v2/crash/live/blobs/uploads/", nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := expect("POST upload", r, http.StatusAccepted, ""); err != nil {
		t.Fatal(err)
	}
	loc := r.hdr.Get("Location")
	r, err = c.do(http.MethodPatch, loc, octetRange(0, len(body)-1), bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := expect("PATCH", r, http.StatusAccepted, ""); err != nil {
		t.Fatal(err)
	}
	before := ingestEntries(t, p.Data)
	rep, code, ferr := tryFsck(t, p.Data, "--repair")
	if code == 0 {
		t.Errorf("fsck --repair on the folder of a running agent exited 0 (%+v)", rep.Summary)
	}
	t.Logf("fsck --repair: exit %d, %v", code, ferr)
	if after := ingestEntries(t, p.Data); len(after) != len(before) {
		t.Errorf("fsck --repair, which failed, removed %d of the %d temp files of uploads in progress", len(before)-len(after), len(before))
	}
	r, err = c.do(http.MethodPut, withQuery(loc, "digest", digestOf(body)), nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := expect("closing PUT after fsck", r, http.StatusCreated, ""); err != nil {
		t.Error(err)
	}
}
