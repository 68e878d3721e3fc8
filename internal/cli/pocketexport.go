package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pocketclient"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
)

// lockRetry is how often export looks again at a data folder in use.
const lockRetry = 100 * time.Millisecond

// openExportData opens data for an export, or, when a running crpe serve
// holds it, reaches that pocket (named by data's pocket.json). A pocket
// file left by a pocket that crashed does not matter while the folder is
// free; a folder held by a process whose pocket file names no pocket that
// answers is an error that says so. The folder is looked at again for
// storage.LockWait: a pocket that starts writes its file once it listens.
func openExportData(ctx context.Context, data string, log *slog.Logger) (*storage.Storage, *pocketclient.Pocket, error) {
	deadline := time.Now().Add(storage.LockWait)
	for {
		st, err := storage.OpenWait(ctx, data, log, nil, lockRetry)
		if err == nil {
			return st, nil, nil
		}
		if !errors.Is(err, repodb.ErrInUse) {
			return nil, nil, err
		}
		pf, ferr := storage.ReadPocketFile(data)
		var reachErr error
		if ferr == nil {
			p, rerr := pocketclient.Reach(ctx, pf)
			if rerr == nil {
				return nil, p, nil
			}
			reachErr = rerr
		} else if !errors.Is(ferr, os.ErrNotExist) {
			reachErr = ferr
		}
		if time.Now().After(deadline) {
			switch {
			case pf != nil:
				return nil, nil, fmt.Errorf("data folder %s is in use by another process (%w), and the crpe serve its %s names (pid %d, %s) does not answer: %v; if that pocket is gone (its file is left from a crash), another crpe command holds the folder: wait for it to end, or give export another --data",
					data, repodb.ErrInUse, storage.PocketFileName, pf.PID, strings.Join(pf.URLs, " "), reachErr)
			case reachErr != nil:
				return nil, nil, fmt.Errorf("data folder %s is in use by another process (%w), and its %s cannot be read: %v", data, repodb.ErrInUse, storage.PocketFileName, reachErr)
			}
			return nil, nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(lockRetry):
		}
	}
}

// exportThroughPocket has the pocket p export pkgs with opts into w, and
// returns the summary it sent; warnings and tags served from the pocket's
// cache are logged as a local export logs them.
func exportThroughPocket(ctx context.Context, g *globals, p *pocketclient.Pocket, pkgs []*kubepkg.KubePkg, w io.Writer, opts export.Options, offline bool, bars *barProgress) (*export.Result, error) {
	// images of the pod templates are added here, with the warnings a local
	// export gives: the pocket then has none to add
	export.AddManifestImages(pkgs, func(msg string) { g.log.Warn(msg) })
	doc, err := kubepkg.Marshal(pkgs)
	if err != nil {
		return nil, err
	}
	epoch := opts.ModTime.Unix()
	req := &pocketclient.ExportRequest{KubePkg: doc, SourceDateEpoch: &epoch, Offline: &offline, Parallel: opts.Parallel, Artifacts: opts.Artifacts.String()}
	if len(opts.Platforms) > 0 {
		req.Platform = oci.JoinPlatforms(opts.Platforms)
	}
	for d := range opts.Exclude {
		req.Exclude = append(req.Exclude, string(d))
	}
	sort.Strings(req.Exclude)

	var rp *remoteProgress
	if bars != nil {
		rp = &remoteProgress{bars: bars, pending: map[string]*pocketclient.Job{}, fetched: map[string]int64{}}
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() { _ = p.WatchJobs(wctx, nil, rp.job) }()
	}
	var res export.Result
	var headErr error
	_, err = p.Export(ctx, req, w, func(h *pocketclient.Head) {
		if headErr = json.Unmarshal(h.Summary, &res); headErr != nil {
			return
		}
		for _, msg := range h.Warnings {
			g.log.Warn(msg)
		}
		logFallback := pullthrough.LogFallback(g.log)
		for _, f := range h.Fallbacks {
			pf := pullthrough.Fallback{Repo: f.Repo, Tag: f.Tag, Digest: digest.Digest(f.Digest)}
			if f.Cached != nil {
				pf.Cached = *f.Cached
			}
			if f.Error != "" {
				pf.Err = errors.New(f.Error)
			}
			logFallback(pf)
		}
		if rp != nil {
			rp.start(h.Job, res.Images)
		}
	})
	if err != nil {
		var pe *pocketclient.Error
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("the pocket at %s (crpe serve, pid %d) refused the export: %w", p.URL, p.PID, err)
		}
		return nil, err
	}
	if headErr != nil {
		return nil, fmt.Errorf("the pocket's export summary: %w", headErr)
	}
	if rp != nil {
		rp.finish(res.Images)
	}
	return &res, nil
}

// remoteProgress draws a pocket's export job on the export's bars: the
// per-image fetch bars from the job's images, the write bar from its bytes.
type remoteProgress struct {
	bars *barProgress

	mu      sync.Mutex
	id      string
	pending map[string]*pocketclient.Job // latest states before the job's id is known
	fetched map[string]int64
	written int64
}

func (r *remoteProgress) start(id string, images []export.ImageResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.id = id
	r.bars.Plan(images)
	if j := r.pending[id]; j != nil {
		r.apply(j)
	}
	r.pending = nil
}

func (r *remoteProgress) job(j *pocketclient.Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.id == "" {
		if r.pending != nil {
			r.pending[j.ID] = j
		}
		return
	}
	if j.ID == r.id {
		r.apply(j)
	}
}

// finish fills the bars of an export that ended well: the job's last
// states may still be on their way.
func (r *remoteProgress) finish(images []export.ImageResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sum int64
	for _, im := range images {
		if d := im.Bytes - r.fetched[im.Ref]; d > 0 {
			r.bars.Fetched(im.Ref, d)
			r.fetched[im.Ref] = im.Bytes
		}
		sum += im.Bytes
	}
	if d := sum - r.written; d > 0 {
		r.bars.Written(d)
		r.written = sum
	}
	r.id = "done" // no more updates
}

func (r *remoteProgress) apply(j *pocketclient.Job) {
	for _, im := range j.Images {
		if d := im.Bytes - r.fetched[im.Ref]; d > 0 {
			r.bars.Fetched(im.Ref, d)
			r.fetched[im.Ref] = im.Bytes
		}
	}
	if d := j.Bytes - r.written; d > 0 {
		r.bars.Written(d)
		r.written = j.Bytes
	}
}
