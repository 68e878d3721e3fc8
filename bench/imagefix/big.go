package main

// big (bench/scale-archive.sh): an archive of a given size, half in one big
// layer and half in many small ones, pushed without staging any layer on
// disk (the registry's copy is the only one).

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"
)

const bigSalt = 0xb1

// smallLayer is the size of each of the small layers; smallPerImage how
// many of them an image has at most.
const (
	smallLayer    = 4 << 20
	smallPerImage = 32
)

// cmdBig pushes library/big:1, one linux/amd64 image whose one random layer
// is half of -mib, and library/small-NNN:1 images of up to 32 random 4 MiB
// layers each, the other half, then writes the KubePkg listing them. Each
// layer is streamed to the registry (POST, one PATCH, PUT ?digest=) as it
// is generated. It prints one JSON line: images, layers, bytes, seconds.
func cmdBig(args []string) int {
	fs := flag.NewFlagSet("big", flag.ExitOnError)
	c := newCommonFlags(fs)
	mib := fs.Int64("mib", 1024, "MiB of layers in all (≥ 16)")
	prefix := fs.String("repo-prefix", "", `prefix of the repositories pushed to ("docker.io/" for a crpe agent, which names them in full)`)
	_ = fs.Parse(args)
	if *c.reg == "" || *c.pkgOut == "" || *mib < 16 {
		fmt.Fprintln(os.Stderr, "usage: imagefix big -registry URL -pkg FILE -mib N (≥ 16) [-token T] [-repo-prefix docker.io/] [-seed N] [-timeout D]")
		return 2
	}
	return c.runSet("big", func(ctx context.Context) error {
		start := time.Now()
		total := *mib << 20
		type job struct {
			repo  string
			sizes []int64
		}
		jobs := []job{{"library/big", []int64{total / 2}}}
		var small []int64
		for left := total - total/2; left > 0; left -= smallLayer {
			small = append(small, min(left, smallLayer))
		}
		for i := 0; i < len(small); i += smallPerImage {
			jobs = append(jobs, job{fmt.Sprintf("library/small-%03d", len(jobs)-1), small[i:min(i+smallPerImage, len(small))]})
		}
		var (
			mu     sync.Mutex
			bytes  int64
			layers int
			wg     sync.WaitGroup
		)
		sem := make(chan struct{}, 2)
		errs := make(chan error, len(jobs))
		refs := make([]string, len(jobs))
		for i, j := range jobs {
			refs[i] = "docker.io/" + j.repo + ":1"
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				rng := rand.NewChaCha8(seedBytes(bigSalt, *c.seed, uint64(i)))
				_, n, err := pushImageWith(ctx, *prefix+j.repo, "1", "amd64", j.sizes, rng, pushLayerStream)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", j.repo, err)
					return
				}
				mu.Lock()
				bytes += n
				layers += len(j.sizes)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		metadata := map[string]any{"name": "bench-big", "namespace": "default",
			"annotations": map[string]string{"octohelm.tech/platform": "linux/amd64"}}
		if err := writePkg(*c.pkgOut, metadata, refs); err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"images": len(jobs), "layers": layers, "bytes": bytes,
			"seconds": time.Since(start).Seconds()})
	})
}

// writeLayer writes a gzip'd tar (stored: random bytes do not compress)
// holding one file of n random bytes to w, and returns its descriptor and
// diff ID.
func writeLayer(w io.Writer, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error) {
	compressed, diff := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, compressed)}
	zw, _ := gzip.NewWriterLevel(cw, gzip.NoCompression)
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data/" + name, Size: n, Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
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
	return descriptor{MediaType: mtLayerGz, Digest: "sha256:" + hex.EncodeToString(compressed.Sum(nil)), Size: cw.n},
		"sha256:" + hex.EncodeToString(diff.Sum(nil)), nil
}

// pushLayerStream streams a generated layer to the registry: POST, one
// PATCH whose body is the layer as it is generated, then PUT ?digest=.
func pushLayerStream(ctx context.Context, repo, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error) {
	req := newRequest(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := client.Do(req)
	if err != nil {
		return descriptor{}, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusAccepted || err != nil {
		return descriptor{}, "", fmt.Errorf("POST upload: HTTP %d %v", resp.StatusCode, err)
	}
	pr, pw := io.Pipe()
	type result struct {
		d    descriptor
		diff string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		d, diff, err := writeLayer(pw, name, n, rng)
		pw.CloseWithError(err)
		done <- result{d, diff, err}
	}()
	req = newRequest(ctx, http.MethodPatch, loc.String(), pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	pr.CloseWithError(io.ErrClosedPipe)
	res := <-done
	if err != nil {
		return descriptor{}, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if res.err != nil {
		return descriptor{}, "", res.err
	}
	if resp.StatusCode != http.StatusAccepted {
		return descriptor{}, "", fmt.Errorf("PATCH layer: HTTP %d", resp.StatusCode)
	}
	if loc, err = resp.Location(); err != nil {
		return descriptor{}, "", fmt.Errorf("PATCH layer: %w", err)
	}
	q := loc.Query()
	q.Set("digest", res.d.Digest)
	loc.RawQuery = q.Encode()
	req = newRequest(ctx, http.MethodPut, loc.String(), nil)
	resp, err = client.Do(req)
	if err != nil {
		return descriptor{}, "", err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return descriptor{}, "", fmt.Errorf("PUT blob %s: HTTP %d: %s", res.d.Digest, resp.StatusCode, msg)
	}
	return res.d, res.diff, nil
}
