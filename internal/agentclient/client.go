// Package agentclient talks to a crpe agent's API: which blobs it lacks, its
// inventory and packages, and sending an archive with only what it lacks
// (the delta handover), resuming a cut upload with a fresh delta.
package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// Client is an agent's API.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// Error is an error answer of the agent.
type Error struct {
	Status  int
	Code    string
	Message string
	Entry   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent answered %d %s: %s", e.Status, e.Code, e.Message)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	return c.doLen(ctx, method, path, body, -2, contentType)
}

// doLen sends a request whose body has length bytes (-1: unknown, -2: let
// net/http decide).
func (c *Client) doLen(ctx context.Context, method, path string, body io.Reader, length int64, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if length >= -1 {
		req.ContentLength = length
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.http().Do(req)
}

// ParseError makes an *Error of an agent's answer with status: the first of
// its OCI-style errors, or the body itself (at most 500 bytes of it).
func ParseError(status int, body []byte) *Error {
	e := &Error{Status: status, Message: strings.TrimSpace(string(body))}
	var eb struct {
		Errors []struct {
			Code    string            `json:"code"`
			Message string            `json:"message"`
			Detail  map[string]string `json:"detail"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
		e.Code, e.Message, e.Entry = eb.Errors[0].Code, eb.Errors[0].Message, eb.Errors[0].Detail["entry"]
	}
	if len(e.Message) > 500 {
		e.Message = e.Message[:500]
	}
	return e
}

func decode(resp *http.Response, okStatus int, v any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != okStatus {
		return ParseError(resp.StatusCode, body)
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(body, v)
}

// Missing returns which of digests the agent lacks.
func (c *Client) Missing(ctx context.Context, digests []digest.Digest) (map[digest.Digest]bool, error) {
	q, _ := json.Marshal(map[string]any{"digests": digests})
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/blobs/missing", bytes.NewReader(q), "application/json")
	if err != nil {
		return nil, err
	}
	var out struct {
		Missing []digest.Digest `json:"missing"`
	}
	if err := decode(resp, http.StatusOK, &out); err != nil {
		return nil, err
	}
	m := map[digest.Digest]bool{}
	for _, d := range out.Missing {
		m[d] = true
	}
	return m, nil
}

// Inventory is the agent's GET /api/v1/inventory.
type Inventory struct {
	Digests  []digest.Digest `json:"digests"`
	Packages []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Version   string `json:"version"`
	} `json:"packages"`
}

// Inventory fetches what the agent holds.
func (c *Client) Inventory(ctx context.Context) (*Inventory, error) {
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/inventory", nil, "")
	if err != nil {
		return nil, err
	}
	var inv Inventory
	return &inv, decode(resp, http.StatusOK, &inv)
}

// Package fetches the package namespace/name as the agent imported it (the
// object of GET /api/v1/kubepkgs/{namespace}/{name}): its manifests
// and images, at the version installed.
func (c *Client) Package(ctx context.Context, namespace, name string) (*kubepkg.KubePkg, error) {
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/kubepkgs/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, "")
	if err != nil {
		return nil, err
	}
	var rec struct {
		Version string          `json:"version"`
		Object  json.RawMessage `json:"object"`
	}
	if err := decode(resp, http.StatusOK, &rec); err != nil {
		return nil, err
	}
	if len(rec.Object) == 0 {
		return nil, fmt.Errorf("agent holds package %s/%s %s without its object", namespace, name, rec.Version)
	}
	pkgs, err := kubepkg.Parse(rec.Object)
	if err != nil {
		return nil, fmt.Errorf("package %s/%s from the agent: %w", namespace, name, err)
	}
	if len(pkgs) != 1 {
		return nil, fmt.Errorf("package %s/%s from the agent: %d packages in its object", namespace, name, len(pkgs))
	}
	return pkgs[0], nil
}

// SendOptions tune Send.
type SendOptions struct {
	Force bool
	// Progress is told how many bytes went on the wire so far.
	Progress func(sent int64)
	// Attempts bounds tries when the connection breaks (default 3).
	Attempts int
	// Full sends every blob, without asking what the agent lacks.
	Full bool
}

// SendResult is what a Send did.
type SendResult struct {
	// Import is the agent's import summary.
	Import json.RawMessage `json:"import"`
	// BytesSent counts the archive bytes put on the wire (last attempt).
	BytesSent int64 `json:"bytesSent"`
	// BlobsOmitted and BytesOmitted count layers the agent already had.
	BlobsOmitted int   `json:"blobsOmitted"`
	BytesOmitted int64 `json:"bytesOmitted"`
	Attempts     int   `json:"attempts"`
}

// Send hands the archive that open reads to the agent, leaving out the
// layers it already has (the archive then says octohelm.tech/partial). A
// broken connection is retried with a fresh delta, so what the agent
// committed before the break is not sent again.
func (c *Client) Send(ctx context.Context, open func() (io.ReadCloser, error), o SendOptions) (*SendResult, error) {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	layers, err := manifestLayers(ctx, open)
	if errors.Is(err, errChildrenFirst) {
		// the seed's layouts put manifests after their layers: one
		// verifying pass finds them
		layers, err = layerSizes(ctx, open)
	}
	if err != nil {
		// a damaged start: the verifying reader says precisely what is wrong
		if _, verr := layerSizes(ctx, open); verr != nil {
			return nil, verr
		}
		return nil, err
	}
	var last error
	for attempt := 1; attempt <= o.Attempts; attempt++ {
		res, err := c.sendOnce(ctx, open, layers, o)
		if err == nil {
			res.Attempts = attempt
			return res, nil
		}
		last = err
		var ae *Error
		if errors.As(err, &ae) || ctx.Err() != nil {
			return nil, err // the agent answered: no retry
		}
		var re *readError
		if errors.As(err, &re) {
			return nil, re.err // the archive could not be read: no retry either
		}
		if attempt == o.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("sending to %s failed after %d attempts: %w", c.URL, o.Attempts, last)
}

func (c *Client) sendOnce(ctx context.Context, open func() (io.ReadCloser, error), layers map[digest.Digest]int64, o SendOptions) (*SendResult, error) {
	res := &SendResult{}
	omit := map[digest.Digest]bool{}
	if !o.Full && len(layers) > 0 {
		var ds []digest.Digest
		for d := range layers {
			ds = append(ds, d)
		}
		missing, err := c.Missing(ctx, ds)
		if err != nil {
			return nil, err
		}
		for d, size := range layers {
			if !missing[d] {
				omit[d] = true
				res.BlobsOmitted++
				res.BytesOmitted += size
			}
		}
	}
	path := "/api/v1/kubepkgs"
	if o.Force {
		path += "?force=true"
	}
	if len(omit) == 0 {
		// nothing left out: the file's own bytes go as they are, in one pass
		// (the agent verifies every one of them), with their length so that
		// the agent can check its free space first
		src, err := open()
		if err != nil {
			return nil, err
		}
		defer src.Close()
		length := int64(-1)
		if f, ok := src.(*os.File); ok {
			if fi, err := f.Stat(); err == nil {
				length = fi.Size()
			}
		} else if s, ok := src.(interface{ Size() int64 }); ok {
			length = s.Size() // a split archive (parts.Reader), -1 when unknown
		}
		sr := &sourceReader{r: src}
		cr := &countReader{r: sr, progress: o.Progress}
		resp, err := c.doLen(ctx, http.MethodPut, path, cr, length, "application/gzip")
		res.BytesSent = cr.n
		if err != nil {
			return nil, sr.explain(err)
		}
		var raw json.RawMessage
		if err := decode(resp, http.StatusCreated, &raw); err != nil {
			return nil, err
		}
		res.Import = raw
		return res, nil
	}
	// Layers are left out: the archive is re-encoded. Lest a damaged file
	// come out of the re-encoding as a valid one, the file is verified,
	// whole, by the archive reader in the same pass (each byte read once,
	// fed to both), and the re-encoded stream's last bytes (its gzip
	// trailer among them) are held back until the verification passed: a
	// damaged archive breaks the upload before the agent has a complete
	// archive, so it publishes nothing.
	src, err := open()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	sr := &sourceReader{r: src}
	vr, vw := io.Pipe()
	verified := make(chan error, 1)
	go func() {
		// what re-encoding could heal is the archive's structure (its gzip
		// trailer, its tar end, what follows it): that is checked here.
		// Configs and layers are not hashed: those left out are not sent,
		// and the agent verifies every one it receives (their framing is
		// still checked; manifests are verified, they are parsed).
		_, err := readLayers(ctx, vr, false)
		if err != nil {
			err = &readError{err: err}
		}
		vr.CloseWithError(err)
		verified <- err
	}()
	pr, pw := io.Pipe()
	go func() {
		tee := io.TeeReader(sr, vw)
		cw := &countWriter{w: pw, progress: o.Progress}
		tw := &tailWriter{w: cw, hold: 4096}
		err := archive.Filter(ctx, tee, tw, omit, func(b []byte) ([]byte, error) {
			if len(omit) == 0 {
				return b, nil
			}
			return markPartial(b)
		})
		if err == nil {
			// the verifier reads to the file's end (the gzip trailer,
			// anything after the tar's end), past where the filter stops
			_, err = io.Copy(io.Discard, tee)
		}
		vw.CloseWithError(err)
		if verr := <-verified; verr != nil {
			err = verr // the archive is damaged: that is the error to report
		}
		if err == nil {
			err = tw.flush()
		}
		res.BytesSent = cw.n
		pw.CloseWithError(err)
	}()
	resp, err := c.do(ctx, http.MethodPut, path, pr, "application/gzip")
	if err != nil {
		pr.CloseWithError(err)
		var re *readError
		if errors.As(err, &re) {
			return nil, re // the archive is damaged: no retry
		}
		return nil, sr.explain(err)
	}
	var raw json.RawMessage
	if err := decode(resp, http.StatusCreated, &raw); err != nil {
		return nil, err
	}
	res.Import = raw
	return res, nil
}

// markPartial sets octohelm.tech/partial on every package of a kubepkg.json.
func markPartial(b []byte) ([]byte, error) {
	pkgs, err := kubepkg.Parse(b)
	if err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		if p.Metadata.Annotations == nil {
			p.Metadata.Annotations = map[string]string{}
		}
		p.Metadata.Annotations[kubepkg.AnnotationPartial] = "true"
	}
	return kubepkg.Marshal(pkgs)
}

// sourceReader keeps the first error of reading the archive, so that an
// upload that broke because the archive could not be read (a part of a
// split archive refused, a disk error) is not taken for a broken connection
// and retried.
type sourceReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

// explain returns the archive's read error, if reading it failed, as a
// *readError; else err.
func (s *sourceReader) explain(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return &readError{err: s.err}
	}
	return err
}

// readError is a failure to read the archive being sent.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// tailWriter passes writes on but the last hold bytes, which flush writes:
// what a stream's end depends on is sent only once it is known good.
type tailWriter struct {
	w    io.Writer
	hold int
	tail []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	emit := len(t.tail) + len(p) - t.hold
	if emit <= 0 {
		t.tail = append(t.tail, p...)
		return len(p), nil
	}
	if emit <= len(t.tail) {
		if _, err := t.w.Write(t.tail[:emit]); err != nil {
			return 0, err
		}
		t.tail = append(t.tail[:copy(t.tail, t.tail[emit:])], p...)
		return len(p), nil
	}
	if len(t.tail) > 0 {
		if _, err := t.w.Write(t.tail); err != nil {
			return 0, err
		}
	}
	fromP := emit - len(t.tail)
	if _, err := t.w.Write(p[:fromP]); err != nil {
		return 0, err
	}
	t.tail = append(t.tail[:0], p[fromP:]...)
	return len(p), nil
}

// flush writes the bytes held back.
func (t *tailWriter) flush() error {
	_, err := t.w.Write(t.tail)
	t.tail = t.tail[:0]
	return err
}

type countReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

type countWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil {
		c.progress(c.n)
	}
	return n, err
}

// errEnough stops a scan once it has what it needs.
var errEnough = errors.New("enough")

// errChildrenFirst says the archive has no index.json before its blobs: a
// layout of the seed's tools, whose manifests follow their layers.
var errChildrenFirst = errors.New("blobs come before index.json")

// manifestLayers lists the layers the archive's manifests name, reading only
// the archive's start: in crpe's layout manifests come first, before any
// config or layer (errChildrenFirst when the archive is not in crpe's
// layout). Nothing is verified here (the agent verifies everything it takes).
func manifestLayers(ctx context.Context, open func() (io.ReadCloser, error)) (map[digest.Digest]int64, error) {
	src, err := open()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	layers := map[digest.Digest]int64{}
	sawIndex := false
	err = archive.Walk(ctx, src, func(e archive.Entry, body func() ([]byte, error)) error {
		if e.Digest == "" {
			sawIndex = sawIndex || strings.TrimPrefix(e.Name, "./") == archive.IndexEntry
			return nil // kubepkg.json, oci-layout, index.json
		}
		if !sawIndex {
			return errChildrenFirst
		}
		if e.Size > oci.MaxManifestSize {
			return errEnough
		}
		b, err := body()
		if err != nil {
			return err
		}
		pm, err := oci.ParseManifest("", b)
		if err != nil {
			return errEnough // the first config: no manifest follows
		}
		addLayers(layers, pm)
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	return layers, nil
}

// layerSizes checks the archive as the agent will (one verifying pass:
// names, entry kinds, digests, the tar end and the gzip trailer), so that a
// damaged file is refused here rather than healed by the re-encoding, and
// lists the layers of its manifests (only layers are ever left out:
// manifests and configs are small and let the agent check every image).
func layerSizes(ctx context.Context, open func() (io.ReadCloser, error)) (map[digest.Digest]int64, error) {
	src, err := open()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return readLayers(ctx, src, true)
}

// readLayers reads the archive in r with the archive reader and lists the
// layers of its manifests. Blobs the agent holds may be absent from a
// partial archive: the agent checks those against its store. Configs and
// layers are hashed only when hashBlobs is set; their length and framing
// are checked either way.
func readLayers(ctx context.Context, r io.Reader, hashBlobs bool) (map[digest.Digest]int64, error) {
	h := &layerLister{layers: map[digest.Digest]int64{}}
	lim := archive.Limits{Have: func(digest.Digest) bool { return h.partial }}
	if !hashBlobs {
		lim.Unverified = func(digest.Digest) bool { return true }
	}
	if _, err := archive.Read(ctx, r, h, lim); err != nil {
		return nil, err
	}
	return h.layers, nil
}

type layerLister struct {
	layers  map[digest.Digest]int64
	partial bool
}

func (l *layerLister) Package(b []byte) error {
	pkgs, err := kubepkg.Parse(b)
	if err != nil {
		return &archive.EntryError{Entry: archive.PackageEntry, Reason: err.Error()}
	}
	l.partial = kubepkg.Partial(pkgs)
	return nil
}

func (l *layerLister) Index(ocispec.Index) error { return nil }

func (l *layerLister) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if mb, ok := r.(*archive.ManifestBlob); ok && kind == oci.KindManifest {
		addLayers(l.layers, mb.Manifest)
	}
	return nil // the reader verifies what is left unread
}

// addLayers adds the layers m refers to (oci.Manifest.Children).
func addLayers(layers map[digest.Digest]int64, m *oci.Manifest) {
	for _, c := range m.Children() {
		if c.Kind == oci.KindLayer {
			layers[c.Digest] = c.Size
		}
	}
}
