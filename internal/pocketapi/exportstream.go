package pocketapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/upstream"
)

// Headers of POST /api/v1/export's answer.
const (
	// HeaderJob names the export's job (GET /api/v1/jobs/{id}, and the
	// event stream): its progress, and why a transfer was cut off.
	HeaderJob = "X-Crpe-Job"
	// HeaderExportSummary is the export's summary (what `crpe export
	// --json` prints but "output"), as base64 of its JSON, sent with the
	// archive's first byte: it is known before the archive is written.
	HeaderExportSummary = "X-Crpe-Export-Summary"
	// HeaderExportWarnings, when the export has warnings, is base64 of the
	// JSON of ExportWarnings.
	HeaderExportWarnings = "X-Crpe-Export-Warnings"
)

// maxExportRequest bounds POST /api/v1/export's body: a package document
// and an agent's inventory of digests to leave out.
const maxExportRequest = oci.MaxPackageSize + 8<<20

// maxExportParallel bounds an export's blob fetches at once.
const maxExportParallel = 16

// ExportRequest is the JSON form of POST /api/v1/export's body: the
// packages with the export's options (each one, when set, overrides the
// query parameter of the same name).
type ExportRequest struct {
	// KubePkg is a KubePkg or KubePkgList.
	KubePkg json.RawMessage `json:"kubepkg"`
	// Platform overrides the packages' platforms: os/arch[/variant],...
	Platform string `json:"platform,omitempty"`
	// SourceDateEpoch is the entries' time, in seconds since the Unix
	// epoch (default 0).
	SourceDateEpoch *int64 `json:"sourceDateEpoch,omitempty"`
	// Offline serves only what the cache holds, never asking an upstream.
	Offline *bool `json:"offline,omitempty"`
	// Parallel bounds the blob fetches at once (default 4, at most 16).
	Parallel int `json:"parallel,omitempty"`
	// Exclude lists layers to leave out (an agent's inventory): the
	// archive is then partial.
	Exclude []string `json:"exclude,omitempty"`
	// Artifacts are the signatures, attestations and SBOMs carried with
	// each image: all (default), none, or kinds and types
	// (export.ParseArtifacts).
	Artifacts string `json:"artifacts,omitempty"`
}

// ExportWarnings are the warnings of an export: images added from the
// manifests' pod templates, and tags served from the cache because the
// upstream could not be reached.
type ExportWarnings struct {
	Warnings  []string         `json:"warnings,omitempty"`
	Fallbacks []ExportFallback `json:"fallbacks,omitempty"`
}

// ExportFallback is a tag served from the cache because its upstream could
// not be reached (pullthrough.Fallback).
type ExportFallback struct {
	Repo   string     `json:"repo"`
	Tag    string     `json:"tag"`
	Digest string     `json:"digest"`
	Cached *time.Time `json:"cached,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// exportStream streams the kubepkg.tgz of the packages of the request's
// body, without adding them to the library, through the pocket's cache and
// with its registries' settings: what `crpe export` asks a pocket that
// holds its data folder. A failure before the archive's first byte is a
// JSON error (400 for the request, 409 NOT_CACHED, 502 for an upstream);
// a failure after it cuts the transfer off (the client sees a broken
// transfer, never a clean end) and the job says why.
func (a *API) exportStream(w http.ResponseWriter, r *http.Request) {
	req, ok := readExportRequest(w, r)
	if !ok {
		return
	}
	pkgs, err := kubepkg.Parse(req.KubePkg)
	if err != nil {
		httpx.WriteErrors(w, r, http.StatusBadRequest, fieldErrors(err, "")...)
		return
	}
	var warn ExportWarnings
	var errs []apiError
	var names []string
	refs := map[string]bool{}
	for i, p := range pkgs {
		label := p.Metadata.Name
		if label == "" {
			label = fmt.Sprintf("#%d", i+1)
		}
		export.AddManifestImages([]*kubepkg.KubePkg{p}, func(msg string) { warn.Warnings = append(warn.Warnings, msg) })
		if err := p.Validate(); err != nil {
			errs = append(errs, fieldErrors(err, label)...)
			continue
		}
		names = append(names, p.Metadata.Name)
		for _, key := range p.ImageRefs() {
			if ref, err := oci.NormalizeReference(key); err == nil {
				refs[ref] = true
			}
		}
	}
	if len(errs) > 0 {
		httpx.WriteErrors(w, r, http.StatusBadRequest, errs...)
		return
	}
	if len(pkgs) == 0 {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "no package to export", nil)
		return
	}
	opts, offline, ok := exportRequestOptions(w, r, req)
	if !ok {
		return
	}
	offline = offline || a.ups.Offline()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	j := a.jobs.begin(KindStream, strings.Join(names, ","), "", cancel)
	w.Header().Set(HeaderJob, j.view().ID)
	var res *export.Result
	var jobErr error
	defer func() { a.jobs.finish(j, res, jobErr) }()
	j.SetPhase("resolving")

	var mu sync.Mutex
	stop := a.ups.WatchFallbacks(func(f pullthrough.Fallback) {
		if !refs[f.Repo+":"+f.Tag] {
			return
		}
		fb := ExportFallback{Repo: f.Repo, Tag: f.Tag, Digest: string(f.Digest)}
		if !f.Cached.IsZero() {
			t := f.Cached.UTC()
			fb.Cached = &t
		}
		if f.Err != nil {
			fb.Error = f.Err.Error()
		}
		mu.Lock()
		warn.Fallbacks = append(warn.Fallbacks, fb)
		mu.Unlock()
	})
	defer stop()

	var summary *export.Result
	opts.Progress = &streamProgress{j: j}
	opts.Summary = func(s *export.Result) {
		summary = s
		j.SetTotal(s.Bytes, 0)
		j.SetPhase("writing")
	}
	filename := sanitizeFilename(fmt.Sprintf("%s-%s.kubepkg.tgz", pkgs[0].Metadata.Name, pkgs[0].Spec.Version))
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), before: func() {
		h := w.Header()
		h.Set("Content-Type", "application/gzip")
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, filename))
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if summary != nil {
			h.Set(HeaderExportSummary, base64JSON(summary))
		}
		mu.Lock()
		if len(warn.Warnings) > 0 || len(warn.Fallbacks) > 0 {
			h.Set(HeaderExportWarnings, base64JSON(warn))
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}}
	res, err = export.Export(ctx, a.ups.CacheFor(offline), a.st.Store, pkgs, sw, opts)
	if err != nil {
		jobErr = describeExportError(err, offline)
		if !sw.wrote {
			st, code := http.StatusBadRequest, "INVALID"
			var ie *export.InvalidError
			if !errors.As(err, &ie) {
				st, code = notCachedStatus(err)
			}
			httpx.WriteError(w, r, st, code, jobErr.Error(), map[string]string{"package": strings.Join(names, ",")})
			return
		}
		a.log.Warn("export cut off", "kubepkg", strings.Join(names, ","), "error", err)
		panic(http.ErrAbortHandler) // the client sees a broken transfer, not a clean end
	}
	if !sw.wrote { // archive.Write always writes; were it not to, the client still gets its headers
		sw.before()
	}
	a.log.Info("package exported", "kubepkg", strings.Join(names, ","), "blobs", res.Blobs, "bytes", res.Bytes)
}

// readExportRequest reads the body: a KubePkg or KubePkgList (JSON or
// YAML), or an ExportRequest.
func readExportRequest(w http.ResponseWriter, r *http.Request) (*ExportRequest, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxExportRequest))
	if err != nil {
		httpx.WriteError(w, r, http.StatusRequestEntityTooLarge, "TOO_LARGE", fmt.Sprintf("the request is over %d bytes", maxExportRequest), nil)
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", `empty body: send a KubePkg or KubePkgList (JSON or YAML), or {"kubepkg": ..., "platform": ...}`, nil)
		return nil, false
	}
	req := &ExportRequest{}
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) == nil {
		_, wrapped := probe["kubepkg"]
		_, isPkg := probe["apiVersion"]
		if wrapped && !isPkg {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(req); err != nil {
				httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "invalid export request: "+err.Error(), nil)
				return nil, false
			}
			return req, true
		}
	}
	req.KubePkg = body
	return req, true
}

// exportRequestOptions reads the export's options: the query's, overridden
// by the JSON request's.
func exportRequestOptions(w http.ResponseWriter, r *http.Request, req *ExportRequest) (export.Options, bool, bool) {
	q := r.URL.Query()
	o := export.Options{Parallel: fetchParallel, ModTime: time.Unix(0, 0).UTC()}
	bad := func(field, msg string) (export.Options, bool, bool) {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", field+": "+msg, map[string]string{"field": field})
		return o, false, false
	}
	platform := q.Get("platform")
	if req.Platform != "" {
		platform = req.Platform
	}
	if platform != "" {
		var err error
		if o.Platforms, err = oci.ParsePlatforms(platform); err != nil {
			return bad("platform", err.Error())
		}
	}
	if s := q.Get("sourceDateEpoch"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return bad("sourceDateEpoch", "not a number of seconds")
		}
		o.ModTime = time.Unix(n, 0).UTC()
	}
	if req.SourceDateEpoch != nil {
		o.ModTime = time.Unix(*req.SourceDateEpoch, 0).UTC()
	}
	offline := false
	if s := q.Get("offline"); s != "" {
		var err error
		if offline, err = strconv.ParseBool(s); err != nil {
			return bad("offline", "want true or false")
		}
	}
	if req.Offline != nil {
		offline = *req.Offline
	}
	if s := q.Get("parallel"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return bad("parallel", "want a number of blobs, 1 or more")
		}
		o.Parallel = n
	}
	if req.Parallel > 0 {
		o.Parallel = req.Parallel
	}
	o.Parallel = min(o.Parallel, maxExportParallel)
	exclude := req.Exclude
	if exclude == nil {
		for _, v := range q["exclude"] {
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					exclude = append(exclude, s)
				}
			}
		}
	}
	arts := q.Get("artifacts")
	if req.Artifacts != "" {
		arts = req.Artifacts
	}
	var err error
	if o.Artifacts, err = export.ParseArtifacts(arts); err != nil {
		return bad("artifacts", err.Error())
	}
	if len(exclude) > 0 {
		o.Exclude = map[digest.Digest]bool{}
		for _, s := range exclude {
			d, err := oci.ParseDigest(s)
			if err != nil {
				return bad("exclude", err.Error())
			}
			o.Exclude[d] = true
		}
	}
	return o, offline, true
}

// describeExportError says plainly why an export failed.
func describeExportError(err error, offline bool) error {
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("cancelled: %w", err)
	case offline && (errors.Is(err, pullthrough.ErrNotCached) || errors.Is(err, errNotCached)):
		return fmt.Errorf("not cached, and the export is offline: %w", err)
	case upstream.IsTemporary(err):
		return fmt.Errorf("the upstream registry cannot be reached (what was fetched is kept in the pocket's cache: export again to resume): %w", err)
	}
	return err
}

func base64JSON(v any) string {
	b, _ := json.Marshal(v)
	return base64.StdEncoding.EncodeToString(b)
}

// streamWriter sends the response headers with the first byte, and
// flushes that first write: the client learns at once that the archive
// comes, with its summary.
type streamWriter struct {
	w      io.Writer
	rc     *http.ResponseController
	wrote  bool
	before func()
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if s.wrote {
		return s.w.Write(p)
	}
	s.wrote = true
	s.before()
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

// streamProgress tells an export's job what it fetches (per image) and
// writes.
type streamProgress struct{ j *Job }

func (p *streamProgress) Plan(images []export.ImageResult) {
	ips := make([]ImageProgress, 0, len(images))
	for _, im := range images {
		ips = append(ips, ImageProgress{Ref: im.Ref, Total: im.Bytes, Blobs: im.Blobs})
	}
	p.j.SetImages(ips)
}
func (p *streamProgress) Fetched(ref string, n int64) { p.j.ImageDone(ref, n) }
func (p *streamProgress) Written(n int64)             { p.j.Add(n) }
