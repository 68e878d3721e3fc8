// Package agentimport tests the agent side end to end with real processes:
// archives made by `crpe export` from Debian's docker-registry, handed to
// `crpe agent` by `crpe import --to` (through byte-counting TCP proxies),
// pulled by a real containerd through `crpe mirror-config`, and the storage
// lifecycle (keep-versions, background GC, /metrics, fsck).
package agentimport

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

const MiB = 1 << 20

var (
	amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = ocispec.Platform{OS: "linux", Architecture: "arm64"}
)

// client bounds every request of these tests in time.
var client = &http.Client{Timeout: 20 * time.Second}

// ctxFor bounds a test's commands in time. The crpe binary is built first
// (once per test process; slow after a dependency change), outside the
// bound.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	testenv.Crpe(t)
	return testenv.WaitCtx(t, d)
}

type result = testenv.Result

// crpe runs the crpe binary to completion with stdout and stderr apart,
// none of the test's CRPE_ variables reaching it.
func crpe(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	return testenv.RunCrpe(ctx, t, testenv.CrpeOptions{}, args...)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// mustCrpe is crpe that fails the test unless the command exits 0.
func mustCrpe(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	r := crpe(ctx, t, args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// exportPkg runs `crpe export -f SRC -o OUT --data DATA --registry-endpoint
// docker.io=REG --json` (plus extra) and returns the archive's path.
func exportPkg(ctx context.Context, t *testing.T, reg *testenv.Distribution, yaml, data string, extra ...string) string {
	t.Helper()
	src := writeFile(t, "pkg.yaml", yaml)
	out := filepath.Join(t.TempDir(), "pkg.kubepkg.tgz")
	args := append([]string{"export", "-f", src, "-o", out, "--data", data,
		"--registry-endpoint", "docker.io=" + reg.URL, "--json"}, extra...)
	mustCrpe(ctx, t, args...)
	return out
}

// importSummary is `crpe import --to --json`'s output.
type importSummary struct {
	Import struct {
		Packages []struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
			Version   string `json:"version"`
			Previous  string `json:"previous"`
			Unchanged bool   `json:"unchanged"`
		} `json:"packages"`
		Images        map[string]string `json:"images"`
		BlobsReceived int               `json:"blobsReceived"`
		BlobsPresent  int               `json:"blobsPresent"`
		BytesReceived int64             `json:"bytesReceived"`
		BytesPresent  int64             `json:"bytesPresent"`
		Partial       bool              `json:"partial"`
		Expired       []string          `json:"expired"`
	} `json:"import"`
	BytesSent    int64 `json:"bytesSent"`
	BlobsOmitted int   `json:"blobsOmitted"`
	BytesOmitted int64 `json:"bytesOmitted"`
	Attempts     int   `json:"attempts"`
}

// importTo runs `crpe import FILE --to URL --token T --json` and decodes the
// summary; it fails the test unless the command exits 0.
func importTo(ctx context.Context, t *testing.T, file, url, token string, extra ...string) importSummary {
	t.Helper()
	args := append([]string{"import", file, "--to", url, "--token", token, "--json"}, extra...)
	r := mustCrpe(ctx, t, args...)
	var s importSummary
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("import --json output: %v\n%s", err, r)
	}
	return s
}

// layerOf is a gzipped tar holding one file (name, content) and its diff ID,
// so that containerd can unpack it.
func layerOf(t *testing.T, name string, content []byte) (testenv.Blob, digest.Digest) {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(content)
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tarBuf.Bytes())
	_ = zw.Close()
	return testenv.Blob{Data: gz.Bytes(), Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}}, digest.FromBytes(tarBuf.Bytes())
}

// realImage is an image for p whose config carries the true diff IDs of its
// layers, so that containerd unpacks it (ctr images pull always unpacks).
func realImage(t *testing.T, p ocispec.Platform, files map[string][]byte) testenv.Image {
	t.Helper()
	var layers []testenv.Blob
	var diffIDs []string
	var names []string
	for n := range files {
		names = append(names, n)
	}
	// deterministic layer order
	for i := 0; i < len(names); i++ {
		for j := i + 1; j < len(names); j++ {
			if names[j] < names[i] {
				names[i], names[j] = names[j], names[i]
			}
		}
	}
	for _, n := range names {
		l, diff := layerOf(t, n, files[n])
		layers = append(layers, l)
		diffIDs = append(diffIDs, string(diff))
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": p.Architecture, "os": p.OS,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
	})
	config := testenv.Blob{Data: cfg, Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}}
	var lds []ocispec.Descriptor
	for _, l := range layers {
		lds = append(lds, l.Desc)
	}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest, "config": config.Desc, "layers": lds})
	return testenv.Image{Manifest: testenv.Blob{Data: m, Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
		Digest: digest.FromBytes(m), Size: int64(len(m))}}, Config: config, Layers: layers, Platform: p}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// get fetches url anonymously and returns status and body.
func get(t *testing.T, url string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		testenv.DockerManifest, testenv.DockerManifestList}, ", "))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b, resp.Header
}

// metric reads an unlabelled sample of the agent's /metrics.
func metric(t *testing.T, a *testenv.Proc, name string) (float64, bool) {
	t.Helper()
	code, body, _ := get(t, a.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

func mustMetric(t *testing.T, a *testenv.Proc, name string) float64 {
	t.Helper()
	v, ok := metric(t, a, name)
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	return v
}

// stopAgent SIGTERMs the agent and waits for it to exit.
func stopAgent(t *testing.T, a *testenv.Proc) {
	t.Helper()
	_ = a.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.Stopped():
	case <-time.After(15 * time.Second):
		_ = a.Cmd.Process.Kill()
		<-a.Stopped()
		t.Fatalf("agent did not stop in 15s after SIGINT:\n%s", a.Logs())
	}
}

func blobPath(data string, d digest.Digest) string {
	return filepath.Join(data, "blobs", string(d.Algorithm()), d.Encoded())
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/MiB) }
