package pocketapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/upstream"
)

// fetchParallel bounds concurrent blob fetches of one job.
const fetchParallel = 4

// startJob answers 202 with a job, or with the same job already running.
func (a *API) startJob(w http.ResponseWriter, kind, pkg, agent string, fn func(context.Context, *Job) (any, error)) {
	j := a.jobs.Running(kind, pkg, agent)
	if j == nil {
		j = a.jobs.Start(kind, pkg, agent, fn)
	}
	w.Header().Set("Location", "/api/v1/jobs/"+j.view().ID)
	writeJSON(w, http.StatusAccepted, j.view())
}

// SyncResult is what a sync did.
type SyncResult struct {
	Images       int   `json:"images"`
	Blobs        int   `json:"blobs"`
	Bytes        int64 `json:"bytes"`
	FetchedBlobs int   `json:"fetchedBlobs"`
	FetchedBytes int64 `json:"fetchedBytes"`
}

func (a *API) syncPackage(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := a.packageFor(w, r)
	if !ok {
		return
	}
	a.startJob(w, KindSync, rec.Name, "", func(ctx context.Context, j *Job) (any, error) {
		return a.runSync(ctx, j, rec.Name)
	})
}

// runSync resolves every image of the package again and fetches every blob
// of its platforms that the cache lacks. A sync cut off keeps what it
// fetched: the next one starts from there.
func (a *API) runSync(ctx context.Context, j *Job, name string) (any, error) {
	rec, pkg, err := a.loadPackage(name)
	if err != nil {
		return nil, err
	}
	j.SetPhase("resolving")
	pl, err := a.planPackage(ctx, rec, pkg, nil, resolveFresh)
	if err != nil {
		return nil, err
	}
	if err := pl.firstErr(); err != nil {
		return nil, describeFetchError(err, a.ups.Offline())
	}
	res := &SyncResult{Images: len(pl.Images)}
	res.Blobs, _, res.Bytes, _, _ = pl.totals()
	res.FetchedBlobs, res.FetchedBytes, err = a.fetchMissing(ctx, j, pl)
	if err != nil {
		return res, describeFetchError(err, a.ups.Offline())
	}
	now := time.Now().UTC()
	err = a.st.DB.Update(func(tx *repodb.Tx) error {
		cur, ok, err := tx.PocketPackage(name)
		if err != nil || !ok || string(cur.Object) != string(rec.Object) {
			return err // removed or changed meanwhile: nothing to pin
		}
		cur.Resolved = map[string]string{}
		for _, im := range pl.Images {
			cur.Resolved[im.Ref] = string(im.Digest)
		}
		cur.SyncedAt = &now
		return tx.PutPocketPackage(cur)
	})
	a.log.Info("package synced", "kubepkg", name, "blobs", res.Blobs, "fetched_blobs", res.FetchedBlobs, "fetched_bytes", res.FetchedBytes)
	a.changed("kubepkgs")
	return res, err
}

// fetchMissing fetches the blobs pl lacks through the cache, in parallel,
// telling j per image, with the bytes of transfers still on their way.
func (a *API) fetchMissing(ctx context.Context, j *Job, pl *plan) (int, int64, error) {
	byImage := map[string]map[digest.Digest]int64{}
	var images []ImageProgress
	for _, im := range pl.Images {
		ip := ImageProgress{Ref: im.Ref}
		ip.Blobs, ip.BlobsDone, ip.Total, ip.Bytes = im.counts()
		byImage[im.Ref] = map[digest.Digest]int64{}
		for _, b := range im.Blobs {
			if !b.Present {
				byImage[im.Ref][b.Digest] = b.Size
			}
		}
		images = append(images, ip)
	}
	_, _, total, have, _ := pl.totals()
	j.SetImages(images)
	j.SetTotal(total, have)
	missing := pl.missing()
	if len(missing) == 0 {
		return 0, 0, nil
	}
	var mu sync.Mutex
	inflight := map[digest.Digest]bool{}
	meter := a.ups.meter
	j.SetInFlight(func(ref string) int64 {
		mu.Lock()
		defer mu.Unlock()
		var n int64
		for d := range byImage[ref] {
			if inflight[d] {
				n += meter.InFlight(d)
			}
		}
		return n
	}, func() int64 {
		mu.Lock()
		defer mu.Unlock()
		var n int64
		for d := range inflight {
			n += meter.InFlight(d)
		}
		return n
	})
	defer j.SetInFlight(nil, nil)
	j.SetPhase("fetching")
	cache := a.ups.Cache()
	var fetched int
	var fetchedBytes int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchParallel)
	for _, m := range missing {
		g.Go(func() error {
			mu.Lock()
			inflight[m.Digest] = true
			mu.Unlock()
			_, err := cache.Blob(gctx, m.image.Repo, m.Digest, m.Size)
			mu.Lock()
			delete(inflight, m.Digest)
			if err == nil {
				fetched++
				fetchedBytes += m.Size
				for _, im := range pl.Images {
					if _, ok := byImage[im.Ref][m.Digest]; ok {
						j.ImageDone(im.Ref, m.Size)
					}
				}
				j.Add(m.Size)
			}
			mu.Unlock()
			if err != nil {
				return fmt.Errorf("image %s: blob %s: %w", m.image.Ref, m.Digest, err)
			}
			return nil
		})
	}
	err := g.Wait()
	return fetched, fetchedBytes, err
}

// describeFetchError says plainly why content could not be had.
func describeFetchError(err error, offline bool) error {
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("cancelled")
	case offline && (errors.Is(err, pullthrough.ErrNotCached) || errors.Is(err, errNotCached)):
		return fmt.Errorf("not cached, and the pocket is offline: %w", err)
	case upstream.IsTemporary(err):
		return fmt.Errorf("the upstream registry cannot be reached (what was fetched is kept; sync again to resume): %w", err)
	}
	return err
}

// notCachedStatus maps a planning or fetching failure to an HTTP answer.
func notCachedStatus(err error) (int, string) {
	if errors.Is(err, pullthrough.ErrNotCached) || errors.Is(err, errNotCached) {
		return http.StatusConflict, "NOT_CACHED"
	}
	if upstream.IsTemporary(err) {
		return http.StatusBadGateway, "UPSTREAM_UNAVAILABLE"
	}
	var ue *upstream.Error
	if errors.As(err, &ue) || errors.Is(err, upstream.ErrNotFound) {
		return http.StatusBadGateway, "UPSTREAM_ERROR"
	}
	return http.StatusInternalServerError, "UNKNOWN"
}

// prepare plans pkg for an export, makes sure every blob is cached (fetching
// what is missing unless offline) and pins pkg to what was planned.
func (a *API) prepare(ctx context.Context, j *Job, rec *repodb.PocketPackage, pkg *kubepkg.KubePkg, plats []ocispec.Platform) (*plan, int, string, error) {
	j.SetPhase("resolving")
	pl, err := a.planPackage(ctx, rec, pkg, plats, resolvePinned)
	if err != nil {
		return nil, http.StatusBadRequest, "INVALID", err
	}
	if err := pl.firstErr(); err != nil {
		st, code := notCachedStatus(err)
		return nil, st, code, fmt.Errorf("package %s: %w", rec.Name, describeFetchError(err, a.ups.Offline()))
	}
	if missing := pl.missing(); len(missing) > 0 {
		if a.ups.Offline() {
			var n int64
			for _, m := range missing {
				n += m.Size
			}
			return nil, http.StatusConflict, "NOT_CACHED", fmt.Errorf("package %s: %d blobs (%d bytes) of its images are not cached and the pocket is offline: sync it while online", rec.Name, len(missing), n)
		}
		if _, _, err := a.fetchMissing(ctx, j, pl); err != nil {
			st, code := notCachedStatus(err)
			return nil, st, code, fmt.Errorf("package %s: not all of its images are cached and fetching them failed: %w", rec.Name, describeFetchError(err, false))
		}
	}
	pin(pkg, pl)
	return pl, 0, "", nil
}

// downloadPackage streams the package's kubepkg.tgz from the cache. Every
// blob is checked (and fetched, when online) before the first byte, so a
// package that cannot be completed gets a JSON error, never a broken file.
func (a *API) downloadPackage(w http.ResponseWriter, r *http.Request) {
	rec, pkg, ok := a.packageFor(w, r)
	if !ok {
		return
	}
	var plats []ocispec.Platform
	if s := r.URL.Query().Get("platform"); s != "" {
		var err error
		if plats, err = oci.ParsePlatforms(s); err != nil {
			httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "platform: "+err.Error(), map[string]string{"field": "platform"})
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	j := a.jobs.begin(KindExport, rec.Name, "", cancel)
	var jobErr error
	defer func() { a.jobs.finish(j, nil, jobErr) }()
	pl, status, code, err := a.prepare(ctx, j, rec, pkg, plats)
	if err != nil {
		jobErr = err
		httpx.WriteError(w, r, status, code, err.Error(), map[string]string{"package": rec.Name})
		return
	}
	_, _, total, _, _ := pl.totals()
	j.SetImages(nil)
	j.SetTotal(total, 0)
	j.SetPhase("writing")
	filename := fmt.Sprintf("%s-%s.kubepkg.tgz", rec.Name, rec.Version)
	if s := r.URL.Query().Get("platform"); s != "" {
		filename = fmt.Sprintf("%s-%s-%s.kubepkg.tgz", rec.Name, rec.Version, oci.JoinPlatforms(plats))
		filename = sanitizeFilename(filename)
	}
	lw := &lazyWriter{w: w, before: func() {
		h := w.Header()
		h.Set("Content-Type", "application/gzip")
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, filename))
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
	}}
	res, err := export.Export(ctx, a.ups.Cache(), a.st.Store, []*kubepkg.KubePkg{pkg}, lw,
		export.Options{Platforms: plats, Progress: &exportProgress{j: j}, Parallel: fetchParallel})
	if err != nil {
		jobErr = err
		if !lw.wrote {
			st, code := notCachedStatus(err)
			httpx.WriteError(w, r, st, code, err.Error(), map[string]string{"package": rec.Name})
			return
		}
		a.log.Warn("download cut off", "kubepkg", rec.Name, "error", err)
		panic(http.ErrAbortHandler) // the client sees a broken transfer, not a clean end
	}
	a.log.Info("package downloaded", "kubepkg", rec.Name, "version", rec.Version, "blobs", res.Blobs, "bytes", res.Bytes)
}

func sanitizeFilename(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '/' || c == ',' || c == '"' || c == '\\' {
			b[i] = '_'
		}
	}
	return string(b)
}

// lazyWriter sends the response headers with the first byte.
type lazyWriter struct {
	w      io.Writer
	wrote  bool
	before func()
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.wrote {
		l.wrote = true
		l.before()
	}
	return l.w.Write(p)
}

// exportProgress tells a job what an export writes.
type exportProgress struct{ j *Job }

func (e *exportProgress) Plan([]export.ImageResult) {}
func (e *exportProgress) Fetched(string, int64)     {}
func (e *exportProgress) Written(n int64)           { e.j.Add(n) }
