package pocketapi

import (
	"context"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/diskfree"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/repodb"
)

// CacheInfo is the cache's size, and how much of it the library needs.
type CacheInfo struct {
	Blobs         int   `json:"blobs"`
	Bytes         int64 `json:"bytes"`
	NeededBlobs   int   `json:"neededBlobs"`
	NeededBytes   int64 `json:"neededBytes"`
	UnneededBlobs int   `json:"unneededBlobs"`
	UnneededBytes int64 `json:"unneededBytes"`
	// Free is the free space of the data folder's disk (-1: unknown).
	Free int64 `json:"free"`
}

// CleanResult is what a clean-up removed.
type CleanResult struct {
	BlobsRemoved     int   `json:"blobsRemoved"`
	BytesFreed       int64 `json:"bytesFreed"`
	ManifestsDropped int   `json:"manifestsDropped"`
	// Young counts unneeded blobs left because they were written less
	// than the grace period ago (a pull may be using them).
	Young int `json:"young"`
}

// needed is every cached blob some package of the library needs (for its
// platforms, as resolved by its last sync or the cache's tags).
func (a *API) needed(ctx context.Context) (map[digest.Digest]bool, error) {
	recs, err := a.allPackages()
	if err != nil {
		return nil, err
	}
	keep := map[digest.Digest]bool{}
	for _, rec := range recs {
		pkg, err := decodePackage(rec)
		if err != nil {
			continue
		}
		pl, err := a.planPackage(ctx, rec, pkg, nil, resolveLocal)
		if err != nil {
			continue
		}
		for _, im := range pl.Images {
			for _, b := range im.Blobs {
				if b.Present {
					keep[b.Digest] = true
				}
			}
		}
	}
	return keep, nil
}

func (a *API) cacheInfo(w http.ResponseWriter, r *http.Request) {
	keep, err := a.needed(r.Context())
	if err != nil {
		internal(w, r, err)
		return
	}
	info := CacheInfo{Free: diskfree.Available(a.st.Dir)}
	err = a.st.Store.Walk(r.Context(), func(i cas.Info) error {
		info.Blobs++
		info.Bytes += i.Size
		if keep[i.Digest] {
			info.NeededBlobs++
			info.NeededBytes += i.Size
		} else {
			info.UnneededBlobs++
			info.UnneededBytes += i.Size
		}
		return nil
	})
	if err != nil {
		internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// cleanCache removes every blob no package of the library needs (and the
// index records of the manifests among them). ?grace= (default 1m) spares
// blobs written more recently.
func (a *API) cleanCache(w http.ResponseWriter, r *http.Request) {
	grace := time.Minute
	if s := r.URL.Query().Get("grace"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "grace: want a duration such as 1m or 0s", map[string]string{"field": "grace"})
			return
		}
		grace = d
	}
	if !a.cleanMu.TryLock() {
		httpx.WriteError(w, r, http.StatusConflict, "BUSY", "a clean-up is already running", nil)
		return
	}
	defer a.cleanMu.Unlock()
	if a.jobs.AnyRunning() {
		httpx.WriteError(w, r, http.StatusConflict, "BUSY", "a sync, download or send is running: clean up once it is over", nil)
		return
	}
	res, err := a.clean(r.Context(), grace)
	if err != nil {
		internal(w, r, err)
		return
	}
	a.log.Info("cache cleaned", "blobs_removed", res.BlobsRemoved, "bytes_freed", res.BytesFreed, "manifests_dropped", res.ManifestsDropped)
	a.changed("cache")
	writeJSON(w, http.StatusOK, res)
}

func (a *API) clean(ctx context.Context, grace time.Duration) (*CleanResult, error) {
	res := &CleanResult{}
	keep, err := a.needed(ctx)
	if err != nil {
		return nil, err
	}
	type link struct {
		repo string
		d    digest.Digest
	}
	var manifests, blobs []link
	if err := a.st.DB.View(func(tx *repodb.Tx) error {
		return tx.ForEachRepo(func(repo string) error {
			if err := tx.ForEachManifest(repo, func(d digest.Digest, _ repodb.Manifest) error {
				if !keep[d] {
					manifests = append(manifests, link{repo, d})
				}
				return nil
			}); err != nil {
				return err
			}
			return tx.ForEachBlob(repo, func(d digest.Digest, _ int64) error {
				if !keep[d] {
					blobs = append(blobs, link{repo, d})
				}
				return nil
			})
		})
	}); err != nil {
		return nil, err
	}
	if err := a.st.DB.Update(func(tx *repodb.Tx) error {
		for _, l := range blobs {
			_ = tx.UnlinkBlob(l.repo, l.d)
		}
		for _, l := range manifests {
			if tx.DeleteManifest(l.repo, l.d) == nil {
				res.ManifestsDropped++
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var victims []cas.Info
	if err := a.st.Store.Walk(ctx, func(i cas.Info) error {
		if !keep[i.Digest] {
			victims = append(victims, i)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, v := range victims {
		if grace > 0 {
			if fi, err := os.Stat(a.st.Store.Path(v.Digest)); err == nil && time.Since(fi.ModTime()) < grace {
				res.Young++
				continue
			}
		}
		if err := a.st.Store.Delete(ctx, v.Digest); err == nil {
			res.BlobsRemoved++
			res.BytesFreed += v.Size
		}
	}
	return res, nil
}

// countingWriter counts what goes through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
