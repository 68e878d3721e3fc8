package main

// Probes of a running registry (bench/scale-agent.sh): manifest latency,
// paged listings, and how long a server takes to answer after its start.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// manifestAccept is what a container runtime sends when it pulls.
var manifestAccept = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// probeClient talks to one server over at most one connection, kept alive.
func probeClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}, Timeout: 60 * time.Second}
}

func probeRequest(ctx context.Context, method, u, token string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// pct is the nearest-rank percentile p (0..1) of sorted, in the unit given.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// --------------------------------------------------------------------- lat --

// cmdLat asks -n manifests of refs drawn at random (fixed -seed) from the
// -refs file (lines "repo:tag"), one after another over one keep-alive
// connection, with a runtime's Accept headers, after -warmup requests that
// are not counted. It prints one JSON line: count, distinct refs, p50_ms,
// p99_ms, max_ms, mean_ms, errors (answers other than 200; any makes the
// exit code 1) and new_conns (connections opened for the counted requests:
// 0 when the warm-up's one was kept).
func cmdLat(args []string) int {
	fs := flag.NewFlagSet("lat", flag.ExitOnError)
	base := fs.String("url", "", "registry base URL (http://127.0.0.1:PORT)")
	token := fs.String("token", "", "bearer token sent with every request")
	refsFile := fs.String("refs", "", "file of repo:tag lines")
	n := fs.Int("n", 2000, "requests counted")
	warmup := fs.Int("warmup", 20, "requests before, not counted")
	method := fs.String("method", http.MethodGet, "GET or HEAD")
	seed := fs.Uint64("seed", 1, "seed of the draw")
	timeout := fs.Duration("timeout", 300*time.Second, "overall timeout")
	_ = fs.Parse(args)
	*method = strings.ToUpper(*method)
	if *base == "" || *refsFile == "" || *n < 1 || *warmup < 0 || (*method != http.MethodGet && *method != http.MethodHead) {
		usage()
	}
	refs, err := readRefs(*refsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagefix lat:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cl := probeClient()
	rng := rand.New(rand.NewPCG(*seed, 0x1a7))
	newConns := 0
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			newConns++
		}
	}}
	tctx := httptrace.WithClientTrace(ctx, trace)
	var lat []time.Duration
	errs, distinct := 0, map[int]bool{}
	var firstErr string
	start := time.Now()
	for k := range *warmup + *n {
		if k == *warmup {
			newConns, start = 0, time.Now()
		}
		i := rng.IntN(len(refs))
		repo, tag, _ := strings.Cut(refs[i], ":")
		req := probeRequest(tctx, *method, strings.TrimRight(*base, "/")+"/v2/"+repo+"/manifests/"+url.PathEscape(tag), *token)
		req.Header.Set("Accept", strings.Join(manifestAccept, ", "))
		t0 := time.Now()
		resp, err := cl.Do(req)
		status := 0
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		dt := time.Since(t0)
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "imagefix lat: timed out")
			return 1
		}
		if k < *warmup {
			continue
		}
		lat = append(lat, dt)
		distinct[i] = true
		if err != nil || status != http.StatusOK {
			errs++
			if firstErr == "" {
				firstErr = fmt.Sprintf("%s %s:%s: HTTP %d %v", *method, repo, tag, status, err)
			}
		}
	}
	secs := time.Since(start).Seconds()
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	slices.Sort(lat)
	out := map[string]any{"method": *method, "count": len(lat), "distinct": len(distinct),
		"p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99), "max_ms": ms(lat[len(lat)-1]),
		"mean_ms": ms(sum / time.Duration(len(lat))), "seconds": secs, "errors": errs, "new_conns": newConns}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	if errs > 0 {
		fmt.Fprintf(os.Stderr, "imagefix lat: %d errors, the first: %s\n", errs, firstErr)
		return 1
	}
	return 0
}

func readRefs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var refs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			if !strings.Contains(l, ":") {
				return nil, fmt.Errorf("%s: %q is not repo:tag", path, l)
			}
			refs = append(refs, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s: no refs", path)
	}
	return refs, nil
}

// ------------------------------------------------------------------- pages --

var linkNext = regexp.MustCompile(`<([^>]*)>\s*;\s*rel="?next"?`)

// cmdPages lists -path (/v2/_catalog, /v2/REPO/tags/list) -n entries a page,
// following each answer's Link: <...>; rel="next" (RFC 5988) until there is
// none, over one keep-alive connection. It prints one JSON line: pages,
// entries (the repositories or tags arrays' lengths, summed), seconds,
// bytes (the bodies) and max_page_ms.
func cmdPages(args []string) int {
	fs := flag.NewFlagSet("pages", flag.ExitOnError)
	base := fs.String("url", "", "registry base URL (http://127.0.0.1:PORT)")
	token := fs.String("token", "", "bearer token sent with every request")
	path := fs.String("path", "/v2/_catalog", "listing to page through")
	n := fs.Int("n", 100, "entries asked per page")
	maxPages := fs.Int("max-pages", 1000000, "give up after this many pages")
	timeout := fs.Duration("timeout", 300*time.Second, "overall timeout")
	_ = fs.Parse(args)
	if *base == "" || *n < 1 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	b, err := url.Parse(strings.TrimRight(*base, "/"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagefix pages:", err)
		return 2
	}
	next, err := b.Parse(*path + "?n=" + strconv.Itoa(*n))
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagefix pages:", err)
		return 2
	}
	cl := probeClient()
	pages, entries, bytes := 0, 0, 0
	var slowest time.Duration
	start := time.Now()
	for next != nil {
		if pages >= *maxPages {
			fmt.Fprintf(os.Stderr, "imagefix pages: more than %d pages\n", *maxPages)
			return 1
		}
		t0 := time.Now()
		resp, err := cl.Do(probeRequest(ctx, http.MethodGet, next.String(), *token))
		if err != nil {
			fmt.Fprintln(os.Stderr, "imagefix pages:", err)
			return 1
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		slowest = max(slowest, time.Since(t0))
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
		}
		var page struct {
			Repositories []string `json:"repositories"`
			Tags         []string `json:"tags"`
		}
		if err == nil {
			err = json.Unmarshal(body, &page)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefix pages: GET %s: %v\n", next, err)
			return 1
		}
		pages++
		bytes += len(body)
		entries += len(page.Repositories) + len(page.Tags)
		cur := next
		next = nil
		for _, l := range resp.Header.Values("Link") {
			if m := linkNext.FindStringSubmatch(l); m != nil {
				if next, err = cur.Parse(m[1]); err != nil {
					fmt.Fprintf(os.Stderr, "imagefix pages: Link %q: %v\n", l, err)
					return 1
				}
				break
			}
		}
		if next != nil && next.String() == cur.String() {
			fmt.Fprintf(os.Stderr, "imagefix pages: Link points back at %s\n", cur)
			return 1
		}
	}
	out := map[string]any{"path": *path, "n": *n, "pages": pages, "entries": entries,
		"seconds": time.Since(start).Seconds(), "bytes": bytes, "max_page_ms": ms(slowest)}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// ---------------------------------------------------------------------- up --

// cmdUp polls -url (a server's /healthz) every -every until it answers 200
// and prints one JSON line: seconds from -since (a Unix time in seconds,
// such as bash's $EPOCHREALTIME taken just before the server was started)
// to that answer, and polls. It fails after -timeout.
func cmdUp(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	u := fs.String("url", "", "URL that answers 200 once the server is up")
	since := fs.String("since", "", "Unix time (seconds, fractional) the server was started at (default: now)")
	every := fs.Duration("every", 2*time.Millisecond, "poll interval")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if *u == "" {
		usage()
	}
	t0 := time.Now()
	if *since != "" {
		f, err := strconv.ParseFloat(strings.Replace(*since, ",", ".", 1), 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "imagefix up: -since:", err)
			return 2
		}
		t0 = time.Unix(0, int64(f*1e9))
	}
	cl := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for polls := 1; ; polls++ {
		resp, err := cl.Get(*u)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"seconds": time.Since(t0).Seconds(), "polls": polls})
				return 0
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "imagefix up: %s did not answer 200 within %s: %v\n", *u, *timeout, err)
			return 1
		}
		time.Sleep(*every)
	}
}
