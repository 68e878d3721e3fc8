// Command importfix is a standard-library-only fixture generator used by
// bench/import.sh: it pushes random single-platform (linux/amd64) OCI images
// straight into a registry over the OCI distribution API and writes the
// KubePkg that lists them.
//
//	importfix -registry http://127.0.0.1:5000 -pkg pkg.json -tmp DIR [-mib 400] [-seed 1]
//
// It pushes library/a:1, library/b:1 and library/c:1, each an OCI image
// manifest with a few gzip layers of random bytes (stored, not compressed:
// random bytes do not compress), about -mib MiB of layers in all, split
// a ≈ 34%, b ≈ 33%, c ≈ 33% over 3–5 layers per image. Content is derived
// from -seed. Every layer is staged in a file under -tmp (removed once
// pushed), never held in memory whole.
//
// It prints one JSON line on stdout: the images, the layer count and the
// bytes pushed (layers + configs + manifests).
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type summary struct {
	Images  []string `json:"images"`
	Layers  int      `json:"layers"`
	Bytes   int64    `json:"bytes"`
	Seconds float64  `json:"seconds"`
}

var (
	client = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
		DisableCompression:  true,
	}}
	base   string
	tmpDir string
)

func main() {
	reg := flag.String("registry", "", "registry base URL (http://127.0.0.1:PORT)")
	pkgOut := flag.String("pkg", "", "KubePkg file to write")
	tmp := flag.String("tmp", os.TempDir(), "folder for staging layer files")
	seed := flag.Uint64("seed", 1, "content seed")
	mib := flag.Int("mib", 400, "MiB of layers in all (3 images)")
	timeout := flag.Duration("timeout", 150*time.Second, "overall timeout")
	flag.Parse()
	if *reg == "" || *pkgOut == "" || *mib < 8 {
		fmt.Fprintln(os.Stderr, "usage: importfix -registry URL -pkg FILE [-tmp DIR] [-seed N] [-mib 400 (≥ 8)]")
		os.Exit(2)
	}
	base, tmpDir = strings.TrimRight(*reg, "/"), *tmp
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *seed, *mib, *pkgOut); err != nil {
		fmt.Fprintln(os.Stderr, "importfix:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, seed uint64, totalMiB int, pkgOut string) error {
	start := time.Now()
	// layer sizes as parts per 1000 of the total
	images := []struct {
		repo  string
		parts []int
	}{
		{"library/a", []int{240, 80, 20}},         // 340
		{"library/b", []int{200, 80, 40, 10}},     // 330
		{"library/c", []int{180, 80, 40, 20, 10}}, // 330
	}
	var (
		mu  sync.Mutex
		sum summary
		wg  sync.WaitGroup
	)
	errs := make(chan error, len(images))
	for i, im := range images {
		var sizes []int64
		for _, p := range im.parts {
			n := int64(totalMiB) * int64(p) << 20 / 1000
			if n < 4096 {
				n = 4096
			}
			sizes = append(sizes, n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.NewChaCha8(seedBytes(seed, uint64(i)))
			n, err := pushImage(ctx, im.repo, "1", sizes, rng)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", im.repo, err)
				return
			}
			mu.Lock()
			sum.Bytes += n
			sum.Layers += len(sizes)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	refs := map[string]string{}
	for _, im := range images {
		ref := "docker.io/" + im.repo + ":1"
		refs[ref] = ""
		sum.Images = append(sum.Images, ref)
	}
	pkg := map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1",
		"kind":       "KubePkg",
		"metadata": map[string]any{"name": "bench-import", "namespace": "default",
			"annotations": map[string]string{"octohelm.tech/platform": "linux/amd64"}},
		"spec": map[string]any{"version": "1.0.0", "images": refs, "manifests": map[string]any{}},
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
	s[16] = 0x1f
	return s
}

// pushImage pushes the layers (sizes in bytes of payload), a config and an
// OCI image manifest tagged tag; it returns the bytes pushed.
func pushImage(ctx context.Context, repo, tag string, sizes []int64, rng *rand.ChaCha8) (int64, error) {
	var layers []descriptor
	var diffIDs []string
	var total int64
	for i, n := range sizes {
		d, diff, err := pushLayer(ctx, repo, fmt.Sprintf("layer-%d.bin", i), n, rng)
		if err != nil {
			return 0, err
		}
		layers = append(layers, d)
		diffIDs = append(diffIDs, diff)
		total += d.Size
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cd := descriptor{MediaType: mtConfig, Digest: sha(cfg), Size: int64(len(cfg))}
	if err := pushBlob(ctx, repo, cd.Digest, bytes.NewReader(cfg), cd.Size); err != nil {
		return 0, err
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtManifest, "config": cd, "layers": layers})
	if err := putManifest(ctx, repo, tag, mtManifest, man); err != nil {
		return 0, err
	}
	return total + cd.Size + int64(len(man)), nil
}

// pushLayer stages a gzip'd tar holding one file of n random bytes, then
// pushes it. It returns the layer descriptor and its diff ID.
func pushLayer(ctx context.Context, repo, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error) {
	f, err := os.CreateTemp(tmpDir, "importfix-layer-*")
	if err != nil {
		return descriptor{}, "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	compressed, diff := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, compressed)}
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

func putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+url.PathEscape(ref), bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT manifest %s:%s: HTTP %d: %s", repo, ref, resp.StatusCode, msg)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != sha(body) {
		return fmt.Errorf("PUT manifest %s:%s: registry says %s, expected %s", repo, ref, got, sha(body))
	}
	return nil
}
