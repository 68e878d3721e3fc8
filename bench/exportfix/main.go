// Command exportfix is a standard-library-only fixture generator used by
// bench/export.sh: it pushes random images straight into a registry over the
// OCI distribution API and writes the KubePkg that lists them.
//
//	exportfix -registry http://127.0.0.1:5000 -pkg pkg.json -tmp DIR [-seed 1] [-big-mib 200]
//	exportfix watch -o FILE -- COMMAND [ARGS...]
//
// It pushes library/a:1, library/b:1 and library/c:1 as OCI indexes of
// linux/amd64 + linux/arm64 (a few gzip layers of random bytes each, 20–40
// MiB per platform), and library/big:1 as a single linux/amd64 OCI manifest
// with one random layer of -big-mib MiB. Content is derived from -seed, so
// two runs with the same seed push the same digests. Every layer is staged
// in a file under -tmp (removed once pushed), never held in memory whole.
//
// It prints one JSON line on stdout: the big layer's digest and size, and
// the total bytes pushed per platform.
//
// watch runs COMMAND (stdio passed through) and samples its
// /proc/PID/status every 5 ms, then writes one JSON line to FILE: the
// kernel's VmHWM and the largest RssAnon (heap, stacks) and RssFile
// (mapped pages of the binary and other files) seen, in KiB. It exits with
// COMMAND's exit code.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType string            `json:"mediaType"`
	Digest    string            `json:"digest"`
	Size      int64             `json:"size"`
	Platform  *platform         `json:"platform,omitempty"`
	Annots    map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type summary struct {
	BigDigest   string           `json:"big_digest"`
	BigSize     int64            `json:"big_size"`
	Images      []string         `json:"images"`
	BytesByPlat map[string]int64 `json:"bytes_by_platform"`
	Seconds     float64          `json:"seconds"`
}

var (
	client = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
	base   string
	tmpDir string
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "watch" {
		os.Exit(watch(os.Args[2:]))
	}
	reg := flag.String("registry", "", "registry base URL (http://127.0.0.1:PORT)")
	pkgOut := flag.String("pkg", "", "KubePkg file to write")
	tmp := flag.String("tmp", os.TempDir(), "folder for staging layer files")
	seed := flag.Uint64("seed", 1, "content seed")
	bigMiB := flag.Int("big-mib", 200, "size of library/big's single layer (MiB)")
	timeout := flag.Duration("timeout", 150*time.Second, "overall timeout")
	flag.Parse()
	if *reg == "" || *pkgOut == "" {
		fmt.Fprintln(os.Stderr, "usage: exportfix -registry URL -pkg FILE [-tmp DIR] [-seed N] [-big-mib 200]")
		os.Exit(2)
	}
	base, tmpDir = strings.TrimRight(*reg, "/"), *tmp
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *seed, *bigMiB, *pkgOut); err != nil {
		fmt.Fprintln(os.Stderr, "exportfix:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, seed uint64, bigMiB int, pkgOut string) error {
	start := time.Now()
	sum := summary{BytesByPlat: map[string]int64{}}
	var mu sync.Mutex
	addBytes := func(p string, n int64) { mu.Lock(); sum.BytesByPlat[p] += n; mu.Unlock() }

	// layer sizes (MiB) per platform, per image: 20–40 MiB per platform
	multi := []struct {
		repo   string
		layers map[string][]int
	}{
		{"library/a", map[string][]int{"amd64": {16, 8, 4, 2}, "arm64": {14, 8, 4, 2}}},
		{"library/b", map[string][]int{"amd64": {20, 10, 6}, "arm64": {18, 10, 6}}},
		{"library/c", map[string][]int{"amd64": {12, 8, 6, 3, 1}, "arm64": {11, 8, 6, 3, 1}}},
	}
	errs := make(chan error, len(multi)+1)
	var wg sync.WaitGroup
	for i, im := range multi {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var children []descriptor
			for j, arch := range []string{"amd64", "arm64"} {
				rng := rand.NewChaCha8(seedBytes(seed, uint64(i*16+j)))
				md, n, err := pushImage(ctx, im.repo, "", arch, im.layers[arch], rng)
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", im.repo, arch, err)
					return
				}
				addBytes("linux/"+arch, n)
				md.Platform = &platform{Architecture: arch, OS: "linux"}
				children = append(children, md)
			}
			idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtIndex, "manifests": children})
			if _, err := putManifest(ctx, im.repo, "1", mtIndex, idx); err != nil {
				errs <- fmt.Errorf("%s index: %w", im.repo, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.NewChaCha8(seedBytes(seed, 999))
		md, n, err := pushImage(ctx, "library/big", "1", "amd64", []int{bigMiB}, rng)
		if err != nil {
			errs <- fmt.Errorf("library/big: %w", err)
			return
		}
		addBytes("linux/amd64", n)
		var m struct {
			Layers []descriptor `json:"layers"`
		}
		body, err := getManifest(ctx, "library/big", md.Digest, mtManifest)
		if err == nil {
			err = json.Unmarshal(body, &m)
		}
		if err != nil || len(m.Layers) != 1 {
			errs <- fmt.Errorf("library/big: reading back the manifest: %v", err)
			return
		}
		mu.Lock()
		sum.BigDigest, sum.BigSize = m.Layers[0].Digest, m.Layers[0].Size
		mu.Unlock()
	}()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	images := map[string]string{}
	for _, n := range []string{"a", "b", "c", "big"} {
		ref := "docker.io/library/" + n + ":1"
		images[ref] = ""
		sum.Images = append(sum.Images, ref)
	}
	pkg := map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1",
		"kind":       "KubePkg",
		"metadata":   map[string]any{"name": "bench"},
		"spec":       map[string]any{"version": "1.0.0", "images": images, "manifests": map[string]any{}},
	}
	b, _ := json.MarshalIndent(pkg, "", "  ")
	if err := os.WriteFile(pkgOut, append(b, '\n'), 0o644); err != nil {
		return err
	}
	sum.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(sum)
}

func seedBytes(seed, n uint64) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
		s[8+i] = byte(n >> (8 * i))
	}
	s[16] = 0xc7
	return s
}

// pushImage pushes the layers (sizes in MiB), a config and an OCI image
// manifest (as tag, or by digest only when tag is empty) and returns the
// manifest's descriptor and the bytes pushed.
func pushImage(ctx context.Context, repo, tag, arch string, sizes []int, rng *rand.ChaCha8) (descriptor, int64, error) {
	var layers []descriptor
	var diffIDs []string
	var total int64
	for i, mib := range sizes {
		d, diff, err := pushLayer(ctx, repo, fmt.Sprintf("layer-%d.bin", i), int64(mib)<<20, rng)
		if err != nil {
			return descriptor{}, 0, err
		}
		layers = append(layers, d)
		diffIDs = append(diffIDs, diff)
		total += d.Size
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cd := descriptor{MediaType: mtConfig, Digest: sha(cfg), Size: int64(len(cfg))}
	if err := pushBlob(ctx, repo, cd.Digest, bytes.NewReader(cfg), cd.Size); err != nil {
		return descriptor{}, 0, err
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtManifest, "config": cd, "layers": layers})
	if tag == "" {
		tag = sha(man)
	}
	md, err := putManifest(ctx, repo, tag, mtManifest, man)
	if err != nil {
		return descriptor{}, 0, err
	}
	return md, total + cd.Size + md.Size, nil
}

// pushLayer stages a gzip'd tar holding one file of n random bytes, then
// pushes it. It returns the layer descriptor and its diff ID.
func pushLayer(ctx context.Context, repo, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error) {
	f, err := os.CreateTemp(tmpDir, "exportfix-layer-*")
	if err != nil {
		return descriptor{}, "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	compressed, diff := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, compressed)}
	// random bytes do not compress: store them (fast), still a valid gzip
	zw, _ := gzip.NewWriterLevel(cw, gzip.NoCompression)
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join("data", name), Size: n, Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
		return descriptor{}, "", err
	}
	if _, err := io.CopyN(tw, rng, n); err != nil {
		return descriptor{}, "", err
	}
	if err := tw.Close(); err != nil {
		return descriptor{}, "", err
	}
	if err := zw.Close(); err != nil {
		return descriptor{}, "", err
	}
	d := descriptor{MediaType: mtLayerGz, Digest: "sha256:" + hex.EncodeToString(compressed.Sum(nil)), Size: cw.n}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return descriptor{}, "", err
	}
	if err := pushBlob(ctx, repo, d.Digest, f, d.Size); err != nil {
		return descriptor{}, "", err
	}
	return d, "sha256:" + hex.EncodeToString(diff.Sum(nil)), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// pushBlob: POST to open an upload, then a monolithic PUT ?digest=.
func pushBlob(ctx context.Context, repo, dgst string, body io.Reader, size int64) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: HTTP %d", resp.StatusCode)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("POST upload: %w", err)
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), io.NopCloser(body))
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT blob %s: HTTP %d: %s", dgst, resp.StatusCode, msg)
	}
	return nil
}

func putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (descriptor, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+url.PathEscape(ref), bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := client.Do(req)
	if err != nil {
		return descriptor{}, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return descriptor{}, fmt.Errorf("PUT manifest %s:%s: HTTP %d: %s", repo, ref, resp.StatusCode, msg)
	}
	d := descriptor{MediaType: mediaType, Digest: sha(body), Size: int64(len(body))}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.Digest {
		return descriptor{}, fmt.Errorf("PUT manifest %s:%s: registry says %s, expected %s", repo, ref, got, d.Digest)
	}
	return d, nil
}

func getManifest(ctx context.Context, repo, dgst, accept string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+dgst, nil)
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", dgst, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && sha(b) != dgst {
		err = errors.New("manifest digest mismatch")
	}
	return b, err
}

// watch: see the package comment.
func watch(args []string) int {
	fs := flag.NewFlagSet("watch", flag.ExitOnError)
	out := fs.String("o", "", "JSON file to write")
	_ = fs.Parse(args)
	if *out == "" || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: exportfix watch -o FILE -- COMMAND [ARGS...]")
		return 2
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "exportfix watch:", err)
		return 1
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	peak := map[string]int64{}
	sample := func() {
		b, err := os.ReadFile(status)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "VmHWM" && k != "RssAnon" && k != "RssFile") {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil && n > peak[k] {
				peak[k] = n
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case <-tick.C:
			sample() // the last samples before exit are racy; VmHWM is the kernel's own peak
		}
	}
	b, _ := json.Marshal(map[string]int64{"vm_hwm_kib": peak["VmHWM"], "rss_anon_kib": peak["RssAnon"], "rss_file_kib": peak["RssFile"]})
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "exportfix watch:", err)
		return 1
	}
	if werr != nil {
		if ee, ok := werr.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}
