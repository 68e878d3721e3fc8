// Package storage owns a crpe data folder as a whole: it opens the blob
// store and the repository index together, clears leftovers of interrupted
// writes at start, and exposes the store's Prometheus metrics. The agent and
// the pocket both start from here.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/repodb"
)

// IndexPath is where the repository index of a data folder lives.
func IndexPath(data string) string { return filepath.Join(data, "index.db") }

// Storage is an open data folder.
type Storage struct {
	Dir   string
	Store *casfs.Store
	DB    *repodb.DB
}

// LockWait is how long Open waits for the lock of a data folder's index
// that another process holds.
const LockWait = 5 * time.Second

// Open opens the data folder dir for a server. It removes leftover temp
// files (no write can be in flight before the server starts) and, when reg
// is set, registers the store's metrics on it. A folder another process
// holds fails after LockWait with an error satisfying
// errors.Is(err, repodb.ErrInUse) that names the pocket holding it, if one
// does (InUse).
func Open(ctx context.Context, dir string, log *slog.Logger, reg prometheus.Registerer) (*Storage, error) {
	return OpenWait(ctx, dir, log, reg, LockWait)
}

// OpenWait is Open waiting at most wait (> 0) for the index's lock.
func OpenWait(ctx context.Context, dir string, log *slog.Logger, reg prometheus.Registerer, wait time.Duration) (*Storage, error) {
	store, err := casfs.Open(dir)
	if err != nil {
		return nil, err
	}
	db, err := repodb.Open(IndexPath(dir), false, wait)
	if err != nil {
		return nil, InUse(dir, err)
	}
	if n, err := store.CleanIngest(); err != nil {
		db.Close()
		return nil, err
	} else if n > 0 && log != nil {
		log.Info("removed leftover temp files of interrupted writes", "count", n)
	}
	if reg != nil {
		blobsStored := prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_blobs_stored_total", Help: "Blobs newly written to the store since start."})
		bytesStored := prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_blob_bytes_stored_total", Help: "Bytes of blobs newly written to the store since start."})
		storeBlobs := prometheus.NewGauge(prometheus.GaugeOpts{Name: "crpe_store_blobs", Help: "Blobs in the store."})
		storeBytes := prometheus.NewGauge(prometheus.GaugeOpts{Name: "crpe_store_bytes", Help: "Bytes of blobs in the store."})
		reg.MustRegister(blobsStored, bytesStored, storeBlobs, storeBytes)
		_ = store.Walk(ctx, func(i cas.Info) error {
			storeBlobs.Inc()
			storeBytes.Add(float64(i.Size))
			return nil
		})
		store.OnCommit = func(i cas.Info) {
			blobsStored.Inc()
			bytesStored.Add(float64(i.Size))
			storeBlobs.Inc()
			storeBytes.Add(float64(i.Size))
		}
		store.OnDelete = func(i cas.Info) {
			storeBlobs.Dec()
			storeBytes.Sub(float64(i.Size))
		}
	}
	return &Storage{Dir: dir, Store: store, DB: db}, nil
}

// Close releases the index.
func (s *Storage) Close() error { return s.DB.Close() }

// OpenReadOnly opens a data folder for reading while no server runs on it
// (or waits briefly for its lock). Nothing is created or cleaned.
func OpenReadOnly(dir string) (*Storage, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("data folder %s: not found", dir)
	}
	db, err := repodb.Open(IndexPath(dir), true, 2*time.Second)
	if err != nil {
		return nil, InUse(dir, err)
	}
	store, err := casfs.Open(dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Storage{Dir: dir, Store: store, DB: db}, nil
}

// OpenServer is how a server starts on a data folder: a logger (a silent
// one if none), a Prometheus registry with the Go, process and store
// metrics, and the folder opened.
func OpenServer(ctx context.Context, dir string, log *slog.Logger) (*Storage, *slog.Logger, *prometheus.Registry, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, nil, nil, errors.New("--data is required")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := Open(ctx, dir, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	return st, log, reg, nil
}
