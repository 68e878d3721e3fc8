package main

// Pushing random images over the OCI distribution API: shared by the export
// and import fixtures.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
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

var (
	client = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
	base   string
	tmpDir string
	// authToken, when set, goes with every request as "Authorization:
	// Bearer <token>" (a crpe agent's writes need it)
	authToken string
)

// newRequest is http.NewRequestWithContext with the bearer token, if any.
func newRequest(ctx context.Context, method, url string, body io.Reader) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, url, body)
	if authToken != "" {
		req.Header.Set("Authorization", "Bearer "+authToken)
	}
	return req
}

// memLayerMax: layers up to this size are staged in memory, larger ones in
// a file under -tmp
const memLayerMax = 1 << 20

// seedBytes makes a ChaCha8 seed from the content seed, a stream number n
// and a salt that keeps the fixture sets of different benchmarks apart.
func seedBytes(salt byte, seed, n uint64) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
		s[8+i] = byte(n >> (8 * i))
	}
	s[16] = salt
	return s
}

// pushImage pushes the layers (sizes in bytes of payload), a config and an
// OCI image manifest (as tag, or by digest only when tag is empty) and
// returns the manifest's descriptor and the bytes pushed (layers + config +
// manifest).
func pushImage(ctx context.Context, repo, tag, arch string, sizes []int64, rng *rand.ChaCha8) (descriptor, int64, error) {
	return pushImageWith(ctx, repo, tag, arch, sizes, rng, pushLayer)
}

// layerPusher pushes one generated layer (pushLayer stages it in a file,
// pushLayerStream streams it).
type layerPusher func(ctx context.Context, repo, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error)

// pushImageWith is pushImage with the layers pushed by push.
func pushImageWith(ctx context.Context, repo, tag, arch string, sizes []int64, rng *rand.ChaCha8, push layerPusher) (descriptor, int64, error) {
	var layers []descriptor
	var diffIDs []string
	var total int64
	for i, n := range sizes {
		d, diff, err := push(ctx, repo, fmt.Sprintf("layer-%d.bin", i), n, rng)
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

// pushLayer stages a gzip'd tar holding one file of n random bytes (in
// memory up to memLayerMax, else in a file under -tmp), then pushes it. It
// returns the layer descriptor and its diff ID.
func pushLayer(ctx context.Context, repo, name string, n int64, rng *rand.ChaCha8) (descriptor, string, error) {
	var stage io.ReadWriteSeeker
	if n <= memLayerMax {
		stage = &memFile{}
	} else {
		f, err := os.CreateTemp(tmpDir, "imagefix-layer-*")
		if err != nil {
			return descriptor{}, "", err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		stage = f
	}
	d, diff, err := writeLayer(stage, name, n, rng)
	if err != nil {
		return descriptor{}, "", err
	}
	if _, err := stage.Seek(0, io.SeekStart); err != nil {
		return descriptor{}, "", err
	}
	if err := pushBlob(ctx, repo, d.Digest, stage, d.Size); err != nil {
		return descriptor{}, "", err
	}
	return d, diff, nil
}

// memFile is a small layer staged in memory: written once, then read
// from the start after a Seek(0, io.SeekStart).
type memFile struct {
	b []byte
	r *bytes.Reader
}

func (m *memFile) Write(p []byte) (int, error) {
	m.b = append(m.b, p...)
	return len(p), nil
}

func (m *memFile) Read(p []byte) (int, error) {
	if m.r == nil {
		m.r = bytes.NewReader(m.b)
	}
	return m.r.Read(p)
}

func (m *memFile) Seek(off int64, whence int) (int64, error) {
	if m.r == nil {
		m.r = bytes.NewReader(m.b)
	}
	return m.r.Seek(off, whence)
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
	req := newRequest(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
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
	req = newRequest(ctx, http.MethodPut, loc.String(), io.NopCloser(body))
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
	req := newRequest(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+url.PathEscape(ref), bytes.NewReader(body))
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
	req := newRequest(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+dgst, nil)
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

// writePkg writes a KubePkg listing images (references) to path.
func writePkg(path string, metadata map[string]any, images []string) error {
	refs := map[string]string{}
	for _, ref := range images {
		refs[ref] = ""
	}
	pkg := map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1",
		"kind":       "KubePkg",
		"metadata":   metadata,
		"spec":       map[string]any{"version": "1.0.0", "images": refs, "manifests": map[string]any{}},
	}
	b, _ := json.MarshalIndent(pkg, "", "  ")
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
