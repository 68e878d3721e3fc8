package main

// The two fixture sets: export (bench/export.sh) and import (bench/import.sh).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// commonFlags are the flags both fixture sets take.
type commonFlags struct {
	reg, pkgOut, tmp, token *string
	seed                    *uint64
	timeout                 *time.Duration
}

func newCommonFlags(fs *flag.FlagSet) commonFlags {
	return commonFlags{
		reg:     fs.String("registry", "", "registry base URL (http://127.0.0.1:PORT)"),
		pkgOut:  fs.String("pkg", "", "KubePkg file to write"),
		tmp:     fs.String("tmp", os.TempDir(), "folder for staging layer files"),
		token:   fs.String("token", "", "bearer token sent with every request (a crpe agent's writes need it)"),
		seed:    fs.Uint64("seed", 1, "content seed"),
		timeout: fs.Duration("timeout", 150*time.Second, "overall timeout"),
	}
}

// runSet sets the registry up and runs fn under the -timeout; it returns the
// exit code.
func (c commonFlags) runSet(name string, fn func(ctx context.Context) error) int {
	base, tmpDir, authToken = strings.TrimRight(*c.reg, "/"), *c.tmp, *c.token
	ctx, cancel := context.WithTimeout(context.Background(), *c.timeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "imagefix %s: %v\n", name, err)
		return 1
	}
	return 0
}

// ------------------------------------------------------------------ export --

type exportSummary struct {
	BigDigest   string           `json:"big_digest"`
	BigSize     int64            `json:"big_size"`
	Images      []string         `json:"images"`
	BytesByPlat map[string]int64 `json:"bytes_by_platform"`
	Seconds     float64          `json:"seconds"`
}

const exportSalt = 0xc7

func cmdExport(args []string) int {
	fs := flag.NewFlagSet("export", flag.ExitOnError)
	c := newCommonFlags(fs)
	bigMiB := fs.Int("big-mib", 200, "size of library/big's single layer (MiB)")
	_ = fs.Parse(args)
	if *c.reg == "" || *c.pkgOut == "" {
		fmt.Fprintln(os.Stderr, "usage: imagefix export -registry URL -pkg FILE [-tmp DIR] [-seed N] [-big-mib 200]")
		return 2
	}
	return c.runSet("export", func(ctx context.Context) error {
		return runExport(ctx, *c.seed, *bigMiB, *c.pkgOut)
	})
}

func mibs(sizes ...int) []int64 {
	out := make([]int64, len(sizes))
	for i, n := range sizes {
		out[i] = int64(n) << 20
	}
	return out
}

func runExport(ctx context.Context, seed uint64, bigMiB int, pkgOut string) error {
	start := time.Now()
	sum := exportSummary{BytesByPlat: map[string]int64{}}
	var mu sync.Mutex
	addBytes := func(p string, n int64) { mu.Lock(); sum.BytesByPlat[p] += n; mu.Unlock() }

	// layer sizes per platform, per image: 20–40 MiB per platform
	multi := []struct {
		repo   string
		layers map[string][]int64
	}{
		{"library/a", map[string][]int64{"amd64": mibs(16, 8, 4, 2), "arm64": mibs(14, 8, 4, 2)}},
		{"library/b", map[string][]int64{"amd64": mibs(20, 10, 6), "arm64": mibs(18, 10, 6)}},
		{"library/c", map[string][]int64{"amd64": mibs(12, 8, 6, 3, 1), "arm64": mibs(11, 8, 6, 3, 1)}},
	}
	errs := make(chan error, len(multi)+1)
	var wg sync.WaitGroup
	for i, im := range multi {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var children []descriptor
			for j, arch := range []string{"amd64", "arm64"} {
				rng := rand.NewChaCha8(seedBytes(exportSalt, seed, uint64(i*16+j)))
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
		rng := rand.NewChaCha8(seedBytes(exportSalt, seed, 999))
		md, n, err := pushImage(ctx, "library/big", "1", "amd64", mibs(bigMiB), rng)
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

	for _, n := range []string{"a", "b", "c", "big"} {
		sum.Images = append(sum.Images, "docker.io/library/"+n+":1")
	}
	if err := writePkg(pkgOut, map[string]any{"name": "bench"}, sum.Images); err != nil {
		return err
	}
	sum.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(sum)
}

// ------------------------------------------------------------------ import --

type importSummary struct {
	Images  []string `json:"images"`
	Layers  int      `json:"layers"`
	Bytes   int64    `json:"bytes"`
	Seconds float64  `json:"seconds"`
}

const importSalt = 0x1f

func cmdImport(args []string) int {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	c := newCommonFlags(fs)
	mib := fs.Int("mib", 400, "MiB of layers in all (3 images)")
	_ = fs.Parse(args)
	if *c.reg == "" || *c.pkgOut == "" || *mib < 8 {
		fmt.Fprintln(os.Stderr, "usage: imagefix import -registry URL -pkg FILE [-tmp DIR] [-seed N] [-mib 400 (≥ 8)]")
		return 2
	}
	return c.runSet("import", func(ctx context.Context) error {
		return runImport(ctx, *c.seed, *mib, *c.pkgOut)
	})
}

func runImport(ctx context.Context, seed uint64, totalMiB int, pkgOut string) error {
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
		sum importSummary
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
			rng := rand.NewChaCha8(seedBytes(importSalt, seed, uint64(i)))
			_, n, err := pushImage(ctx, im.repo, "1", "amd64", sizes, rng)
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
	for _, im := range images {
		sum.Images = append(sum.Images, "docker.io/"+im.repo+":1")
	}
	metadata := map[string]any{"name": "bench-import", "namespace": "default",
		"annotations": map[string]string{"octohelm.tech/platform": "linux/amd64"}}
	if err := writePkg(pkgOut, metadata, sum.Images); err != nil {
		return err
	}
	sum.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(sum)
}

// -------------------------------------------------------------------- many --

const manySalt = 0x5a

// cmdMany pushes -n single-layer linux/amd64 images, each with one random
// layer of -layer-kib KiB, -jobs at a time (bench/scale.sh: cost as the
// package grows; bench/scale-agent.sh: an agent holding many blobs). By
// default image i is library/img-NNNN:1; with -repos R the images are
// spread over R repositories library/rep-NNN, image i being tag i/R+1 of
// repository i%R. -pkg writes the KubePkg listing them, -refs the
// "repo:tag" of each, one a line; -token sends "Authorization: Bearer T".
func cmdMany(args []string) int {
	fs := flag.NewFlagSet("many", flag.ExitOnError)
	c := newCommonFlags(fs)
	n := fs.Int("n", 10, "how many images")
	kib := fs.Int("layer-kib", 64, "KiB of each image's random layer")
	repos := fs.Int("repos", 0, "spread the images over this many repositories library/rep-NNN (0: one library/img-NNNN per image)")
	jobs := fs.Int("jobs", 8, "images pushed at once")
	refsOut := fs.String("refs", "", "file to write the images' repo:tag to, one a line")
	_ = fs.Parse(args)
	if *c.reg == "" || (*c.pkgOut == "" && *refsOut == "") || *n < 1 || *kib < 1 || *repos < 0 || *jobs < 1 {
		usage()
	}
	if t, ok := client.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = max(16, *jobs)
	}
	width := len(strconv.Itoa(max(*repos-1, 1)))
	name := func(i int) (repo, tag string) {
		if *repos == 0 {
			return fmt.Sprintf("library/img-%04d", i), "1"
		}
		return fmt.Sprintf("library/rep-%0*d", max(width, 3), i%*repos), strconv.Itoa(i / *repos + 1)
	}
	return c.runSet("many", func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		start := time.Now()
		refs := make([]string, *n)
		next := make(chan int)
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			total     int64
			done      int
			firstErr  error
			lastPrint = start
		)
		for range *jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					repo, tag := name(i)
					rng := rand.NewChaCha8(seedBytes(manySalt, *c.seed, uint64(i)))
					_, b, err := pushImage(ctx, repo, tag, "amd64", []int64{int64(*kib) << 10}, rng)
					mu.Lock()
					if err != nil {
						if firstErr == nil {
							firstErr = fmt.Errorf("%s:%s: %w", repo, tag, err)
							cancel()
						}
						mu.Unlock()
						continue
					}
					total += b
					done++
					// progress, sparingly: every 10 s at most
					if now := time.Now(); now.Sub(lastPrint) >= 10*time.Second {
						lastPrint = now
						fmt.Fprintf(os.Stderr, "imagefix many: %d/%d images (%.0f/s)\n", done, *n, float64(done)/now.Sub(start).Seconds())
					}
					mu.Unlock()
				}
			}()
		}
	feed:
		for i := range *n {
			repo, tag := name(i)
			refs[i] = repo + ":" + tag
			select {
			case next <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(next)
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if *refsOut != "" {
			if err := os.WriteFile(*refsOut, []byte(strings.Join(refs, "\n")+"\n"), 0o644); err != nil {
				return err
			}
		}
		if *c.pkgOut != "" {
			images := make([]string, len(refs))
			for i, r := range refs {
				images[i] = "docker.io/" + r
			}
			metadata := map[string]any{"name": "bench-scale", "namespace": "default",
				"annotations": map[string]string{"octohelm.tech/platform": "linux/amd64"}}
			if err := writePkg(*c.pkgOut, metadata, images); err != nil {
				return err
			}
		}
		repoCount := *n
		if *repos > 0 {
			repoCount = min(*repos, *n)
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"images": *n, "repositories": repoCount, "blobs": 3 * *n,
			"bytes": total, "seconds": time.Since(start).Seconds()})
	})
}
