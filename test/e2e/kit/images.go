// Package kit holds what the end-to-end story (test/e2e) and its demo
// (test/e2e/demo.sh) share: the container images, built here from static Go
// binaries with no internet, and the KubePkg of each version.
package kit

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image references of the story, as the manifests name them.
const (
	HelloV1 = "docker.io/library/hello:v1"
	HelloV2 = "docker.io/library/hello:v2"
	// Pause is the pod sandbox image (containerd's sandbox_image): an
	// air-gapped cluster needs it from the agent too.
	Pause = "registry.k8s.io/pause:3.10"
	// Port is where hello answers.
	Port = 8080
	// AppLayerSize is the random payload of the layer each version changes.
	AppLayerSize = 1 << 20
)

// Upstream repositories of the images in the local docker-registry: what
// the pocket asks for with --registry-endpoint docker.io=REG and
// registry.k8s.io=REG.
var upstreamRepo = map[string]string{HelloV1: "library/hello:v1", HelloV2: "library/hello:v2", Pause: "pause:3.10"}

const helloSrc = `package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// hello answers every request with its version (from /etc/hello/version)
// and $GREETING; SIGTERM stops it at once. With $HELLO_EXIT it prints the
// same and ends (a Job).
func main() {
	v, _ := os.ReadFile("/etc/hello/version")
	msg := "hello " + strings.TrimSpace(string(v))
	if g := os.Getenv("GREETING"); g != "" {
		msg += " (" + g + ")"
	}
	if os.Getenv("HELLO_EXIT") != "" { // a one-shot run (a Job): say it and end
		fmt.Println(msg)
		return
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, msg)
	})}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Close()
	}()
	fmt.Println(msg, "listening on", srv.Addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

const pauseSrc = `package main

import (
	"os"
	"os/signal"
	"syscall"
)

// pause holds a pod's namespaces until SIGTERM or SIGINT.
func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	os.Exit(0)
}
`

// Images are the story's images, by reference.
type Images struct {
	Hello map[string]v1.ImageIndex // HelloV1, HelloV2: indexes with one linux/amd64 child, like docker.io's
	Pause v1.Image                 // a single OCI manifest
}

// Refs lists every reference, pause last.
func (im *Images) Refs() []string { return []string{HelloV1, HelloV2, Pause} }

// Build compiles hello and pause (CGO_ENABLED=0, linux/amd64) in dir and
// packs them: hello's binary is a layer both versions share, each version
// adds a layer of its own (its version file and AppLayerSize of random
// bytes seeded by the version, so every build has the same digests).
func Build(ctx context.Context, dir string) (*Images, error) {
	hello, err := buildBinary(ctx, dir, "hello", helloSrc)
	if err != nil {
		return nil, err
	}
	pause, err := buildBinary(ctx, dir, "pause", pauseSrc)
	if err != nil {
		return nil, err
	}
	base, err := layer([]file{{name: "etc/", dir: true}, {name: "etc/hello/", dir: true}, {name: "hello", mode: 0o755, data: hello}})
	if err != nil {
		return nil, err
	}
	im := &Images{Hello: map[string]v1.ImageIndex{}}
	for _, ref := range []string{HelloV1, HelloV2} {
		version := ref[strings.LastIndexByte(ref, ':')+1:]
		app, err := layer([]file{
			{name: "etc/hello/version", mode: 0o644, data: []byte(version + "\n")},
			{name: "srv/", dir: true},
			{name: "srv/payload.bin", mode: 0o644, data: payload(version, AppLayerSize)},
		})
		if err != nil {
			return nil, err
		}
		img, err := image(types.DockerManifestSchema2, types.DockerConfigJSON, v1.Config{
			Entrypoint:   []string{"/hello"},
			Env:          []string{"PORT=8080"},
			ExposedPorts: map[string]struct{}{"8080/tcp": {}},
			Labels:       map[string]string{"org.opencontainers.image.version": version},
		}, base, app)
		if err != nil {
			return nil, err
		}
		idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.DockerManifestSchema2, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
		im.Hello[ref] = idx
	}
	pl, err := layer([]file{{name: "pause", mode: 0o755, data: pause}})
	if err != nil {
		return nil, err
	}
	if im.Pause, err = image(types.OCIManifestSchema1, types.OCIConfigJSON, v1.Config{Entrypoint: []string{"/pause"}}, pl); err != nil {
		return nil, err
	}
	return im, nil
}

// buildBinary compiles one main package, static, for linux/amd64.
func buildBinary(ctx context.Context, dir, name, src string) ([]byte, error) {
	mod := filepath.Join(dir, name+"-src")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module crpe.local/"+name+"\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(src), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %v\n%s", name, err, b)
	}
	return os.ReadFile(out)
}

// payload is n pseudo-random (incompressible) bytes seeded by seed.
func payload(seed string, n int) []byte {
	s := sha256.Sum256([]byte(seed))
	r := rand.NewChaCha8(s)
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

type file struct {
	name string
	mode int64
	dir  bool
	data []byte
}

// layer is a gzipped tar of files, with fixed times and owners.
func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mt, Typeflag: tar.TypeReg, Size: int64(len(f.data)), Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// image is a linux/amd64 image of layers (the platform must be set, or
// containerd matches no image for the node).
func image(mt, cmt types.MediaType, cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), cmt)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = cfg
	cf.Created = v1.Time{Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	return mutate.ConfigFile(img, cf)
}

// Push writes every image into the registry at host (127.0.0.1:PORT, plain
// HTTP) under its upstream repository (library/hello, pause).
func (im *Images) Push(ctx context.Context, host string) error {
	for _, ref := range im.Refs() {
		r, err := name.ParseReference(host+"/"+upstreamRepo[ref], name.Insecure)
		if err != nil {
			return err
		}
		if ref == Pause {
			err = remote.Write(r, im.Pause, remote.WithContext(ctx))
		} else {
			err = remote.WriteIndex(r, im.Hello[ref], remote.WithContext(ctx))
		}
		if err != nil {
			return fmt.Errorf("push %s: %w", r, err)
		}
	}
	return nil
}

// PullThrough pulls every image through a pocket (crpe serve at host), the
// way any client would (/v2/<registry>/<repository>/...): the index, the
// linux/amd64 manifest, its config and layers. The pocket keeps what passed.
// It returns the bytes read.
func PullThrough(ctx context.Context, host string, refs []string) (int64, error) {
	var total int64
	readImage := func(img v1.Image) error {
		if _, err := img.RawConfigFile(); err != nil {
			return err
		}
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			total += n
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, ref := range refs {
		r, err := name.ParseReference(host+"/"+ref, name.Insecure)
		if err != nil {
			return total, err
		}
		desc, err := remote.Get(r, remote.WithContext(ctx))
		if err != nil {
			return total, fmt.Errorf("pull %s through the pocket: %w", r, err)
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			if err != nil {
				return total, err
			}
			img, err := remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
			if err != nil {
				return total, fmt.Errorf("pull %s (linux/amd64) through the pocket: %w", r, err)
			}
			_ = idx
			err = readImage(img)
		} else {
			img, e := desc.Image()
			if e != nil {
				return total, e
			}
			err = readImage(img)
		}
		if err != nil {
			return total, fmt.Errorf("pull %s through the pocket: %w", r, err)
		}
	}
	return total, nil
}

// Digest is the digest a reference resolves to: the index of hello, the
// manifest of pause.
func (im *Images) Digest(ref string) (v1.Hash, error) {
	if ref == Pause {
		return im.Pause.Digest()
	}
	return im.Hello[ref].Digest()
}

// ChangedLayers is the compressed size of the layers of to's linux/amd64
// image that from's does not have: what an upgrade must carry at least.
func (im *Images) ChangedLayers(from, to string) (int64, error) {
	have := map[v1.Hash]bool{}
	sizes := func(ref string, f func(v1.Hash, int64)) error {
		idx := im.Hello[ref]
		m, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			return err
		}
		mf, err := img.Manifest()
		if err != nil {
			return err
		}
		for _, l := range mf.Layers {
			f(l.Digest, l.Size)
		}
		return nil
	}
	if err := sizes(from, func(h v1.Hash, _ int64) { have[h] = true }); err != nil {
		return 0, err
	}
	var n int64
	err := sizes(to, func(h v1.Hash, s int64) {
		if !have[h] {
			n += s
		}
	})
	return n, err
}

// Blobs lists the digest of every blob a pull of the story's images for
// linux/amd64 stores: indexes, manifests, configs, layers.
func (im *Images) Blobs() ([]v1.Hash, error) {
	var out []v1.Hash
	addImage := func(img v1.Image) error {
		d, err := img.Digest()
		if err != nil {
			return err
		}
		m, err := img.Manifest()
		if err != nil {
			return err
		}
		out = append(out, d, m.Config.Digest)
		for _, l := range m.Layers {
			out = append(out, l.Digest)
		}
		return nil
	}
	for _, ref := range []string{HelloV1, HelloV2} {
		idx := im.Hello[ref]
		d, err := idx.Digest()
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			return nil, err
		}
		if err := addImage(img); err != nil {
			return nil, err
		}
	}
	return out, addImage(im.Pause)
}

// WaitCached waits until the pocket's data folder (crpe serve --data) holds
// every blob of the story's images: crpe serve hands a blob to its client
// once verified and commits it to its cache right after, in the background;
// a SIGTERM in between loses that commit (the temp file is dropped at the
// next start), so a pull that ends is not yet a full cache.
func (im *Images) WaitCached(ctx context.Context, data string, d time.Duration) error {
	blobs, err := im.Blobs()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for {
		var missing []string
		for _, h := range blobs {
			if _, err := os.Stat(filepath.Join(data, "blobs", h.Algorithm, h.Hex)); err != nil {
				missing = append(missing, h.String())
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the pocket's cache %s lacks %d blobs after %s: %v", data, len(missing), d, missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
