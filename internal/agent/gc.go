package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/octohelm/crpe/internal/importer"
)

// collector runs garbage collection in the background: after an import
// expired versions, and every interval.
type collector struct {
	log   *slog.Logger
	imp   *importer.Importer
	grace time.Duration
	kick  chan struct{}

	runs, removed, freed prometheus.Counter
	last                 prometheus.Gauge
}

func newCollector(log *slog.Logger, imp *importer.Importer, grace time.Duration, reg prometheus.Registerer) *collector {
	c := &collector{log: log, imp: imp, grace: grace, kick: make(chan struct{}, 1),
		runs:    prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_gc_runs_total", Help: "Garbage collections run."}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_gc_blobs_removed_total", Help: "Blobs removed by garbage collection."}),
		freed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_gc_bytes_freed_total", Help: "Bytes freed by garbage collection."}),
		last:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "crpe_gc_last_run_timestamp_seconds", Help: "When garbage collection last ran."}),
	}
	reg.MustRegister(c.runs, c.removed, c.freed, c.last)
	return c
}

func (c *collector) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *collector) run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 24 * time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		res, err := c.imp.GC(ctx, c.grace)
		c.runs.Inc()
		c.last.SetToCurrentTime()
		if err != nil {
			c.log.Error("garbage collection failed", "error", err)
			continue
		}
		c.removed.Add(float64(res.BlobsRemoved))
		c.freed.Add(float64(res.BytesFreed))
		c.log.Info("garbage collection", "manifests_dropped", res.ManifestsDropped, "links_dropped", res.LinksDropped,
			"blobs_removed", res.BlobsRemoved, "bytes_freed", res.BytesFreed, "duration", res.Duration.String())
	}
}
