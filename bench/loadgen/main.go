// Command loadgen is a tiny, standard-library-only HTTP load generator used by
// bench/registry.sh to compare registries.
//
//	loadgen blobs     -url URL -n 8 [-token T]
//	loadgen manifests -url URL -n 2000 -c 32 [-accept ...] [-token T]
//
// Each subcommand prints exactly one JSON line on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

const defaultAccept = "application/vnd.oci.image.manifest.v1+json," +
	"application/vnd.oci.image.index.v1+json," +
	"application/vnd.docker.distribution.manifest.v2+json," +
	"application/vnd.docker.distribution.manifest.list.v2+json"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "blobs":
		err = blobs(os.Args[2:])
	case "manifests":
		err = manifests(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen blobs -url URL [-n 8] [-token T] [-timeout 120s]")
	fmt.Fprintln(os.Stderr, "       loadgen manifests -url URL [-n 2000] [-c 32] [-accept ...] [-token T] [-timeout 120s]")
	os.Exit(2)
}

func newClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // loopback benchmark: never use a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr}
}

func setAuth(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}

func emit(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

type blobResult struct {
	Mode     string  `json:"mode"`
	URL      string  `json:"url"`
	N        int     `json:"n"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
	MiBps    float64 `json:"mib_per_s"`
	Errors   int64   `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
}

func blobs(args []string) error {
	fs := flag.NewFlagSet("blobs", flag.ExitOnError)
	url := fs.String("url", "", "blob URL")
	n := fs.Int("n", 8, "parallel downloads")
	token := fs.String("token", "", "bearer token (optional)")
	timeout := fs.Duration("timeout", 120*time.Second, "overall timeout")
	_ = fs.Parse(args)
	if *url == "" || *n < 1 {
		return fmt.Errorf("blobs: -url required and -n >= 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := newClient(*n)

	var total, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
			if err != nil {
				fail(err)
				return
			}
			setAuth(req, *token)
			resp, err := client.Do(req)
			if err != nil {
				fail(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fail(fmt.Errorf("status %d", resp.StatusCode))
				return
			}
			buf := make([]byte, 256<<10)
			c, err := io.CopyBuffer(io.Discard, resp.Body, buf)
			total.Add(c)
			if err != nil {
				fail(err)
				return
			}
			if resp.ContentLength >= 0 && c != resp.ContentLength {
				fail(fmt.Errorf("short body: %d of %d", c, resp.ContentLength))
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	r := blobResult{Mode: "blobs", URL: *url, N: *n, Bytes: total.Load(), Seconds: round(secs, 4),
		MiBps: round(float64(total.Load())/(1<<20)/secs, 1), Errors: errs.Load()}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstErr = v
	}
	if err := emit(r); err != nil {
		return err
	}
	if r.Errors > 0 {
		return fmt.Errorf("%d errors (first: %s)", r.Errors, r.FirstErr)
	}
	return nil
}

type manifestResult struct {
	Mode     string  `json:"mode"`
	URL      string  `json:"url"`
	N        int     `json:"n"`
	C        int     `json:"c"`
	OK       int64   `json:"ok"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"req_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	FirstErr string  `json:"first_error,omitempty"`
}

func manifests(args []string) error {
	fs := flag.NewFlagSet("manifests", flag.ExitOnError)
	url := fs.String("url", "", "manifest URL")
	n := fs.Int("n", 2000, "total requests")
	c := fs.Int("c", 32, "concurrency")
	accept := fs.String("accept", defaultAccept, "Accept header")
	token := fs.String("token", "", "bearer token (optional)")
	timeout := fs.Duration("timeout", 120*time.Second, "overall timeout")
	_ = fs.Parse(args)
	if *url == "" || *n < 1 || *c < 1 {
		return fmt.Errorf("manifests: -url required, -n >= 1, -c >= 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := newClient(*c)

	lat := make([]time.Duration, *n)
	var next, okCount, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	buf := make([][]byte, *c)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *c; w++ {
		buf[w] = make([]byte, 32<<10)
		wg.Add(1)
		go func(b []byte) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				t0 := time.Now()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				if err != nil {
					fail(err)
					lat[i] = -1
					continue
				}
				req.Header.Set("Accept", *accept)
				setAuth(req, *token)
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					lat[i] = -1
					continue
				}
				_, err = io.CopyBuffer(io.Discard, resp.Body, b)
				resp.Body.Close()
				lat[i] = time.Since(t0)
				if err != nil {
					fail(err)
				} else if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("status %d", resp.StatusCode))
				} else {
					okCount.Add(1)
				}
			}
		}(buf[w])
	}
	wg.Wait()
	secs := time.Since(start).Seconds()

	good := make([]time.Duration, 0, len(lat))
	for _, d := range lat {
		if d > 0 {
			good = append(good, d)
		}
	}
	sort.Slice(good, func(i, j int) bool { return good[i] < good[j] })
	r := manifestResult{Mode: "manifests", URL: *url, N: *n, C: *c, OK: okCount.Load(), Errors: errs.Load(),
		Seconds: round(secs, 4), RPS: round(float64(okCount.Load())/secs, 1),
		P50ms: round(pct(good, 0.50), 3), P99ms: round(pct(good, 0.99), 3)}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstErr = v
	}
	if err := emit(r); err != nil {
		return err
	}
	if r.Errors > 0 {
		return fmt.Errorf("%d errors (first: %s)", r.Errors, r.FirstErr)
	}
	return nil
}

// pct returns the nearest-rank percentile of sorted durations, in milliseconds.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	idx := int(float64(len(sorted))*p+0.5) - 1
	if idx < 0 {
		idx = 0
	}
	if idx >= len(sorted) {
		idx = len(sorted) - 1
	}
	return float64(sorted[idx]) / float64(time.Millisecond)
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	if v >= 0 {
		return float64(int64(v*p+0.5)) / p
	}
	return float64(int64(v*p-0.5)) / p
}
