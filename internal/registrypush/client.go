package registrypush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// Error is an answer of the registry that is not what the protocol expects.
type Error struct {
	Op      string // "start upload", "put manifest", ...
	Repo    string // the repository in the site registry
	Status  int
	Code    string // the first OCI error code, if the body had one
	Message string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Op, e.Repo, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// RefusedError is a repository the registry will not let crpe push to (on
// upload start or manifest put: 401, 403, or 404 NAME_UNKNOWN, DENIED):
// most often a registry that does not create projects or repositories on
// push (Harbor, Nexus, cloud registries), or credentials without the right.
type RefusedError struct {
	Repo string
	Err  *Error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the registry refused repository %q (%d %s%s): create the project or repository %q on the registry first (registries such as Harbor do not create them on push), or give credentials allowed to push to it",
		e.Repo, e.Err.Status, e.Err.Code, msgSuffix(e.Err.Message), e.Repo)
}

func (e *RefusedError) Unwrap() error { return e.Err }

func msgSuffix(m string) string {
	if m == "" {
		return ""
	}
	return ": " + m
}

// client speaks the distribution protocol to one registry over a transport
// that authenticates (go-containerregistry's).
type client struct {
	base     string // scheme://host
	hc       *http.Client
	attempts int
	backoff  time.Duration

	sent    atomic.Int64 // bytes of request bodies put on the wire
	retries atomic.Int64
}

func (c *client) url(repo, rest string) string {
	return c.base + "/v2/" + repo + "/" + rest
}

// temporary tells whether a failed request may be tried again.
func temporary(err error, status int) bool {
	if err != nil {
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// wait sleeps before attempt i (1-based retries), or returns ctx's error.
func (c *client) wait(ctx context.Context, i int) error {
	d := c.backoff << (i - 1)
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// once sends one request; body may be nil.
func (c *client) once(ctx context.Context, method, u string, hdr http.Header, body []byte) (*http.Response, error) {
	if body == nil {
		return c.send(ctx, method, u, hdr, nil, 0)
	}
	return c.send(ctx, method, u, hdr, bytes.NewReader(body), int64(len(body)))
}

// send sends one request whose body (nil: none) is n bytes.
func (c *client) send(ctx context.Context, method, u string, hdr http.Header, body io.Reader, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = n
		c.sent.Add(n)
	}
	return c.hc.Do(req)
}

// do sends a request again on network errors, 5xx and 429 (its body is
// bytes, so it can be), and returns the first other answer; the caller
// closes its body.
func (c *client) do(ctx context.Context, method, u string, hdr http.Header, body []byte) (*http.Response, error) {
	for i := 1; ; i++ {
		resp, err := c.once(ctx, method, u, hdr, body)
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		if !temporary(err, status) || i >= c.attempts || ctx.Err() != nil {
			return resp, err
		}
		if resp != nil {
			drain(resp)
		}
		c.retries.Add(1)
		if werr := c.wait(ctx, i); werr != nil {
			return nil, werr
		}
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// asError reads an error answer (and closes its body).
func asError(resp *http.Response, op, repo string) *Error {
	defer drain(resp)
	e := &Error{Op: op, Repo: repo, Status: resp.StatusCode}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
	}
	return e
}

// refused tells whether an answer to an upload start or a manifest put
// means the repository is not there for crpe to push to.
func refused(e *Error) bool {
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return true
	case http.StatusNotFound:
		return e.Code == "" || e.Code == "NAME_UNKNOWN" || e.Code == "DENIED" || e.Code == "NAME_INVALID"
	}
	return e.Code == "DENIED" || e.Code == "NAME_UNKNOWN"
}

// exists tells whether HEAD of /v2/repo/{blobs,manifests}/d answers 200.
// Only 200 and 404 are answers; 401/403 count as absent (the upload start
// then says why), anything else is an error.
func (c *client) exists(ctx context.Context, repo, kind string, d digest.Digest) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, c.url(repo, kind+"/"+string(d)), nil, nil)
	if err != nil {
		return false, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return false, nil
	}
	return false, &Error{Op: "head " + strings.TrimSuffix(kind, "s") + " " + string(d) + " in", Repo: repo, Status: resp.StatusCode}
}

// location resolves an upload's Location against the request that got it.
func location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("the registry gave no upload location")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload location %q: %w", loc, err)
	}
	return u.String(), nil
}

// withQuery adds k=v to u's query.
func withQuery(u, k, v string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := pu.Query()
	q.Set(k, v)
	pu.RawQuery = q.Encode()
	return pu.String()
}

// startUpload opens an upload session in repo; with from, it first asks the
// registry to mount d from that repository. mounted is true when it did
// (201), else loc is the session to upload to.
func (c *client) startUpload(ctx context.Context, repo string, d digest.Digest, from string) (loc string, mounted bool, err error) {
	u := c.url(repo, "blobs/uploads/")
	if from != "" {
		u += "?mount=" + url.QueryEscape(string(d)) + "&from=" + url.QueryEscape(from)
	}
	resp, err := c.do(ctx, http.MethodPost, u, nil, nil)
	if err != nil {
		return "", false, fmt.Errorf("start upload to %s: %w", repo, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		drain(resp)
		return "", true, nil
	case http.StatusAccepted:
		defer drain(resp)
		loc, err := location(resp)
		return loc, false, err
	}
	e := asError(resp, "start upload to", repo)
	if refused(e) {
		return "", false, &RefusedError{Repo: repo, Err: e}
	}
	return "", false, e
}

// putMonolithic finishes the session loc with the whole blob as its body
// (one try: the caller starts a new session for the next).
func (c *client) putMonolithic(ctx context.Context, repo, loc string, d digest.Digest, body []byte) error {
	return c.putDigest(ctx, c.once, repo, loc, d, body)
}

// putDigest completes the session loc with PUT ?digest=d, body its last
// bytes, sent by send (once, or do).
func (c *client) putDigest(ctx context.Context, send func(context.Context, string, string, http.Header, []byte) (*http.Response, error), repo, loc string, d digest.Digest, body []byte) error {
	resp, err := send(ctx, http.MethodPut, withQuery(loc, "digest", string(d)), http.Header{"Content-Type": {"application/octet-stream"}}, body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusCreated {
		drain(resp)
		return nil
	}
	return asError(resp, "put blob "+string(d)+" to", repo)
}

// uploadStatus asks how many bytes the session loc holds (GET, 204 with
// Range: 0-<last>) and returns a fresh location. ambiguous is set when the
// registry answered 0-0 (no byte, or one).
func (c *client) uploadStatus(ctx context.Context, repo, loc string) (offset int64, next string, ambiguous bool, err error) {
	resp, err := c.do(ctx, http.MethodGet, loc, nil, nil)
	if err != nil {
		return 0, "", false, err
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return 0, "", false, asError(resp, "upload status in", repo)
	}
	defer drain(resp)
	next = loc
	if resp.Header.Get("Location") != "" {
		if next, err = location(resp); err != nil {
			return 0, "", false, err
		}
	}
	rg := resp.Header.Get("Range")
	if rg == "" {
		return 0, next, false, nil
	}
	_, end, ok := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
	last, perr := strconv.ParseInt(end, 10, 64)
	if !ok || perr != nil || last < 0 {
		return 0, "", false, fmt.Errorf("upload status in %s: bad Range %q", repo, rg)
	}
	if last == 0 {
		return 0, next, true, nil
	}
	return last + 1, next, false, nil
}

// patch sends chunk as the bytes from offset of the session loc, once, and
// returns the next location.
func (c *client) patch(ctx context.Context, repo, loc string, offset int64, body io.Reader, n int64) (string, error) {
	hdr := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("%d-%d", offset, offset+n-1)},
	}
	resp, err := c.send(ctx, http.MethodPatch, loc, hdr, body, n)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", asError(resp, "patch upload in", repo)
	}
	defer drain(resp)
	return location(resp)
}

// finish closes the session loc, whose bytes are all sent, naming d.
func (c *client) finish(ctx context.Context, repo, loc string, d digest.Digest) error {
	return c.putDigest(ctx, c.do, repo, loc, d, []byte{})
}

// cancel drops the session loc (best effort).
func (c *client) cancel(loc string) {
	if loc == "" {
		return
	}
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if resp, err := c.once(ctx, http.MethodDelete, loc, nil, nil); err == nil {
		drain(resp)
	}
}

// putManifest puts body under ref (a digest or a tag).
func (c *client) putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	resp, err := c.do(ctx, http.MethodPut, c.url(repo, "manifests/"+ref), http.Header{"Content-Type": {mediaType}}, body)
	if err != nil {
		return fmt.Errorf("put manifest %s:%s: %w", repo, ref, err)
	}
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		drain(resp)
		return nil
	}
	e := asError(resp, "put manifest "+ref+" to", repo)
	if refused(e) {
		return &RefusedError{Repo: repo, Err: e}
	}
	return e
}

// getBlob opens blob d of repo (for a copy between repositories when the
// registry does not mount).
func (c *client) getBlob(ctx context.Context, repo string, d digest.Digest) (*http.Response, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url(repo, "blobs/"+string(d)), nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, asError(resp, "get blob "+string(d)+" from", repo)
	}
	return resp, nil
}
