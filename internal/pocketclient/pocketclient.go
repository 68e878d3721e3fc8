// Package pocketclient talks to the `crpe serve` that holds a data folder:
// it reaches the pocket its pocket.json names (checking that the pocket
// answering is that one), streams an export of packages through it
// (POST /api/v1/export) and follows the export's job on the pocket's event
// stream. `crpe export` uses it when the pocket holds the folder's index.
package pocketclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/storage"
)

// The headers of the pocket's export answer (pocketapi's).
const (
	headerJob      = "X-Crpe-Job"
	headerSummary  = "X-Crpe-Export-Summary"
	headerWarnings = "X-Crpe-Export-Warnings"
)

// probeTimeout bounds the question "are you the pocket of this folder?".
const probeTimeout = 5 * time.Second

// Pocket is a running pocket, reached.
type Pocket struct {
	// URL is the pocket's base URL (http://127.0.0.1:6060).
	URL string
	// PID is the pocket's process, from its pocket.json.
	PID    int
	token  string
	client *http.Client
}

// Reach finds the pocket that pf (a data folder's pocket.json) names: the
// first of its URLs that answers GET /api/v1/pocket with pf's instance.
// The error says what each URL answered.
func Reach(ctx context.Context, pf *storage.PocketFile) (*Pocket, error) {
	if len(pf.URLs) == 0 {
		return nil, errors.New("it names no address")
	}
	client, err := newClient(pf)
	if err != nil {
		return nil, err
	}
	var token string
	var fails []string
	for _, u := range pf.URLs {
		base, err := url.Parse(u)
		if err != nil || base.Host == "" {
			fails = append(fails, fmt.Sprintf("%s: not a URL", u))
			continue
		}
		tok := ""
		if !isLoopback(base.Hostname()) {
			// only a client naming the pocket by a loopback address may
			// change it without the token
			if token == "" && pf.TokenFile != "" {
				toks, err := auth.LoadTokens(pf.TokenFile)
				if err != nil {
					fails = append(fails, fmt.Sprintf("%s: needs the pocket's token: %v", u, err))
					continue
				}
				token = toks.First()
			}
			tok = token
		}
		p := &Pocket{URL: strings.TrimRight(u, "/"), PID: pf.PID, token: tok, client: client}
		if err := p.probe(ctx, pf.Instance); err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		return p, nil
	}
	return nil, errors.New(strings.Join(fails, "; "))
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newClient is a client of this host's pocket: no proxy, and, for https,
// exactly the pocket's certificate (its name need not be the address).
func newClient(pf *storage.PocketFile) (*http.Client, error) {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: probeTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: probeTimeout,
		IdleConnTimeout:     90 * time.Second,
	}
	if pf.TLSCert != "" {
		pemBytes, err := os.ReadFile(pf.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("the pocket's certificate: %w", err)
		}
		block, _ := pem.Decode(pemBytes)
		if block == nil {
			return nil, fmt.Errorf("the pocket's certificate %s: no PEM block", pf.TLSCert)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("the pocket's certificate %s: %w", pf.TLSCert, err)
		}
		want := block.Bytes
		t.TLSClientConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			// pinned: the certificate of the pocket's file, whatever names it holds
			InsecureSkipVerify: true, //nolint:gosec // VerifyPeerCertificate pins it
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || !bytes.Equal(raw[0], want) {
					return errors.New("the pocket presented another certificate than its pocket.json names")
				}
				return nil
			},
		}
	}
	return &http.Client{Transport: t}, nil
}

func (p *Pocket) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, body)
	if err != nil {
		return nil, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	return req, nil
}

// get sends GET path and returns the answer, an error unless it is 200 OK;
// the caller closes its body.
func (p *Pocket) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := p.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

// probe checks that p answers as the pocket instance.
func (p *Pocket) probe(ctx context.Context, instance string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := p.get(ctx, "/api/v1/pocket")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var info struct {
		Instance string `json:"instance"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return fmt.Errorf("not a crpe pocket: %w", err)
	}
	if info.Instance != instance {
		return errors.New("another pocket answers there (not the one of this data folder)")
	}
	return nil
}

// Error is an error the pocket answered.
type Error struct {
	Status int
	Code   string
	Msg    string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg)
}

func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Errors []httpx.ErrorEntry `json:"errors"`
	}
	if json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		var msgs []string
		for _, e := range body.Errors {
			msgs = append(msgs, e.Message)
		}
		return &Error{Status: resp.StatusCode, Code: body.Errors[0].Code, Msg: strings.Join(msgs, "; ")}
	}
	return &Error{Status: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
}

// ExportRequest is what POST /api/v1/export takes (pocketapi.ExportRequest).
type ExportRequest struct {
	KubePkg         json.RawMessage `json:"kubepkg"`
	Platform        string          `json:"platform,omitempty"`
	SourceDateEpoch *int64          `json:"sourceDateEpoch,omitempty"`
	Offline         *bool           `json:"offline,omitempty"`
	Parallel        int             `json:"parallel,omitempty"`
	Exclude         []string        `json:"exclude,omitempty"`
	Artifacts       string          `json:"artifacts,omitempty"`
}

// Fallback is a tag the pocket served from its cache because the upstream
// could not be reached.
type Fallback struct {
	Repo   string     `json:"repo"`
	Tag    string     `json:"tag"`
	Digest string     `json:"digest"`
	Cached *time.Time `json:"cached,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// Head is what the pocket says of an export before its first byte.
type Head struct {
	// Job is the export's job on the pocket.
	Job string
	// Summary is the export's summary (export.Result as JSON).
	Summary   json.RawMessage
	Warnings  []string
	Fallbacks []Fallback
}

// ErrCutOff is an export whose transfer broke after its first byte.
var ErrCutOff = errors.New("the export was cut off")

// Export posts req and copies the archive to w. head is called once the
// pocket answered 200, before the first byte is copied. An error before
// the first byte is the pocket's (*Error); a transfer that breaks after it
// wraps ErrCutOff, with the reason the pocket's job gives.
func (p *Pocket) Export(ctx context.Context, req *ExportRequest, w io.Writer, head func(*Head)) (*Head, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := p.newRequest(ctx, http.MethodPost, "/api/v1/export", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, responseError(resp)
	}
	h := &Head{Job: resp.Header.Get(headerJob)}
	if s := resp.Header.Get(headerSummary); s != "" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || !json.Valid(b) {
			return nil, fmt.Errorf("the pocket's %s header is not base64 of JSON", headerSummary)
		}
		h.Summary = b
	} else {
		return nil, fmt.Errorf("the pocket sent no %s header (is it an older crpe?)", headerSummary)
	}
	if s := resp.Header.Get(headerWarnings); s != "" {
		var ws struct {
			Warnings  []string   `json:"warnings"`
			Fallbacks []Fallback `json:"fallbacks"`
		}
		if b, err := base64.StdEncoding.DecodeString(s); err == nil && json.Unmarshal(b, &ws) == nil {
			h.Warnings, h.Fallbacks = ws.Warnings, ws.Fallbacks
		}
	}
	if head != nil {
		head(h)
	}
	br := &bodyReader{r: resp.Body}
	if _, err := io.Copy(w, br); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if br.err == nil {
			return nil, err // writing the output failed
		}
		return nil, p.cutOff(h.Job, br.err)
	}
	return h, nil
}

// bodyReader keeps the error reading the response body gave, to tell it
// from the output's.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// cutOff explains a broken transfer with the pocket's job, which ended
// before the pocket closed the connection.
func (p *Pocket) cutOff(job string, cause error) error {
	if job != "" {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		if j, err := p.Job(ctx, job); err == nil && j.Error != "" {
			return fmt.Errorf("%w by the pocket at %s: %s", ErrCutOff, p.URL, j.Error)
		}
	}
	return fmt.Errorf("%w: the transfer from the pocket at %s broke: %v", ErrCutOff, p.URL, cause)
}

// Job is the part of a pocket job (pocketapi.JobView) a client follows.
type Job struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Phase  string `json:"phase"`
	Error  string `json:"error"`
	Bytes  int64  `json:"bytes"`
	Total  int64  `json:"total"`
	Images []struct {
		Ref   string `json:"ref"`
		Bytes int64  `json:"bytes"`
		Total int64  `json:"total"`
	} `json:"images"`
}

// Job reads job id.
func (p *Pocket) Job(ctx context.Context, id string) (*Job, error) {
	resp, err := p.get(ctx, "/api/v1/jobs/"+url.PathEscape(id))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j Job
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&j); err != nil {
		return nil, err
	}
	return &j, nil
}

// KeepChart has the pocket keep a chart archive as the artifact a package
// made from it lists (POST /api/v1/charts/artifacts); it returns the
// artifact's reference and digest.
func (p *Pocket) KeepChart(ctx context.Context, archive []byte) (ref, digest string, err error) {
	req, err := p.newRequest(ctx, http.MethodPost, "/api/v1/charts/artifacts", bytes.NewReader(archive))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", "", responseError(resp)
	}
	var out struct{ Ref, Digest string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return "", "", err
	}
	return out.Ref, out.Digest, nil
}

// WatchJobs calls fn with every job state the pocket's event stream
// (GET /api/v1/events) tells, until ctx is done or the stream ends. ready,
// if set, is called once the stream is open.
func (p *Pocket) WatchJobs(ctx context.Context, ready func(), fn func(*Job)) error {
	resp, err := p.get(ctx, "/api/v1/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ready != nil {
		ready()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			event = ""
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "job":
			var j Job
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &j) == nil {
				fn(&j)
			}
		}
	}
	return sc.Err()
}
