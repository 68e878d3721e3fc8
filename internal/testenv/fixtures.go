package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of Docker's schema 2.
const (
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerConfig       = "application/vnd.docker.container.image.v1+json"
	DockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Blob is generated content.
type Blob struct {
	Desc ocispec.Descriptor
	Data []byte
}

// RandomLayer is a gzipped tar holding one file of size random bytes.
func RandomLayer(t testing.TB, size int, docker bool) Blob {
	t.Helper()
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(gz)
	_ = tw.WriteHeader(&tar.Header{Name: "data.bin", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg})
	_, _ = tw.Write(payload)
	_ = tw.Close()
	_ = gz.Close()
	mt := ocispec.MediaTypeImageLayerGzip
	if docker {
		mt = DockerLayer
	}
	b := buf.Bytes()
	return Blob{Desc: ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}, Data: b}
}

// Image is a generated single-platform image.
type Image struct {
	Manifest Blob
	Config   Blob
	Layers   []Blob
	Platform ocispec.Platform
}

// NewImage builds an image for plat from layers (Docker or OCI media types).
func NewImage(t testing.TB, plat ocispec.Platform, layers []Blob, docker bool) Image {
	t.Helper()
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, string(l.Desc.Digest)) // not real diff IDs; registries do not check
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	cfg, _ := json.Marshal(map[string]any{
		"architecture": plat.Architecture, "os": plat.OS, "variant": plat.Variant,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{"Labels": map[string]string{"nonce": fmt.Sprintf("%x", nonce)}},
	})
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if docker {
		cmt, mmt = DockerConfig, DockerManifest
	}
	config := Blob{Desc: ocispec.Descriptor{MediaType: cmt, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}, Data: cfg}
	var lds []ocispec.Descriptor
	for _, l := range layers {
		lds = append(lds, l.Desc)
	}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mmt, "config": config.Desc, "layers": lds})
	return Image{
		Manifest: Blob{Desc: ocispec.Descriptor{MediaType: mmt, Digest: digest.FromBytes(m), Size: int64(len(m))}, Data: m},
		Config:   config, Layers: layers, Platform: plat,
	}
}

// NewIndex builds an OCI index (or a Docker manifest list) of images.
func NewIndex(images []Image, docker bool) Blob {
	mt := ocispec.MediaTypeImageIndex
	if docker {
		mt = DockerManifestList
	}
	var ms []ocispec.Descriptor
	for _, im := range images {
		d := im.Manifest.Desc
		p := im.Platform
		d.Platform = &p
		ms = append(ms, d)
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mt, "manifests": ms})
	return Blob{Desc: ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}, Data: b}
}

// PushBlob uploads a blob with POST then PUT (plain HTTP, no auth).
func PushBlob(t testing.TB, base, repo string, b Blob) {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload to %s: %s", repo, resp.Status)
	}
	loc := resp.Header.Get("Location")
	if strings.HasPrefix(loc, "/") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+string(b.Desc.Digest), bytes.NewReader(b.Data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put blob %s to %s: %s %s", b.Desc.Digest, repo, resp.Status, body)
	}
}

// PushManifest puts a manifest under ref (tag or digest).
func PushManifest(t testing.TB, base, repo, ref string, m Blob) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(m.Data))
	req.Header.Set("Content-Type", m.Desc.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: %s %s", repo, ref, resp.Status, body)
	}
}

// PushImage pushes an image's blobs and manifest; tag may be empty.
func PushImage(t testing.TB, base, repo, tag string, im Image) {
	t.Helper()
	for _, l := range im.Layers {
		PushBlob(t, base, repo, l)
	}
	PushBlob(t, base, repo, im.Config)
	ref := string(im.Manifest.Desc.Digest)
	if tag != "" {
		ref = tag
	}
	PushManifest(t, base, repo, ref, im.Manifest)
}

// PushIndex pushes every image of an index by digest, then the index
// under tag.
func PushIndex(t testing.TB, base, repo, tag string, images []Image, index Blob) {
	t.Helper()
	for _, im := range images {
		PushImage(t, base, repo, "", im)
	}
	PushManifest(t, base, repo, tag, index)
}

// ArchivePackage returns the kubepkg.json of an archive, which must be its
// first entry.
func ArchivePackage(t testing.TB, file string) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != "kubepkg.json" {
		t.Fatalf("%s: first entry %v %v, want kubepkg.json", file, h, err)
	}
	b, err := io.ReadAll(io.LimitReader(tr, 4<<20))
	if err != nil {
		t.Fatalf("%s: kubepkg.json: %v", file, err)
	}
	return b
}
