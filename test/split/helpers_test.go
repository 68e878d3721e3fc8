// Package split tests archives for removable media end to end with real
// processes: `crpe export --split` from Debian's docker-registry, the parts
// read back by `crpe inspect`, `crpe import --data` and `crpe import --to`
// (a running `crpe agent`, through a byte-counting TCP proxy that can cut
// the upload), the agent's multipart upload (what its web page sends), and
// parts that are missing, swapped, truncated, corrupt, from another export,
// or described by a lying parts file.
package split

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
)

var amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// client bounds every request of these tests in time.
var client = &http.Client{Timeout: 30 * time.Second}

// ctxFor bounds a test's commands in time; the crpe binary is built first,
// outside the bound.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	testenv.Crpe(t)
	return testenv.WaitCtx(t, d)
}

type result = testenv.Result

// crpe runs the binary to completion with env added to the test's
// environment, less its SOURCE_DATE_EPOCH and CRPE_* variables.
func crpe(ctx context.Context, t *testing.T, env []string, args ...string) result {
	t.Helper()
	return testenv.RunCrpe(ctx, t, testenv.CrpeOptions{Drop: []string{"SOURCE_DATE_EPOCH"}, Env: env}, args...)
}

func mustCrpe(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	r := crpe(ctx, t, nil, args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r
}

// appYAML is a KubePkg of one linux/amd64 image pinned by digest.
func appYAML(name, version, ref string, d digest.Digest) string {
	return fmt.Sprintf("apiVersion: octohelm.tech/v1alpha1\nkind: KubePkg\nmetadata:\n  name: %s\n  namespace: default\n"+
		"  annotations:\n    octohelm.tech/platform: linux/amd64\nspec:\n  version: %s\n  images:\n    %q: %q\n", name, version, ref, d)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// app is an image pushed to the registry and its package.
type app struct {
	name, version, ref string
	image              testenv.Image
	src                string // the package file
}

// pushApp pushes an image of n random layers of size bytes as
// library/NAME:1.0 and writes its package.
func pushApp(t *testing.T, reg *testenv.Distribution, name string, n, size int) app {
	t.Helper()
	var layers []testenv.Blob
	for range n {
		layers = append(layers, testenv.RandomLayer(t, size, false))
	}
	im := testenv.NewImage(t, amd64, layers, false)
	testenv.PushImage(t, reg.URL, "library/"+name, "1.0", im)
	a := app{name: name, version: "1.0.0", ref: "docker.io/library/" + name + ":1.0", image: im}
	a.src = writeFile(t, t.TempDir(), name+".yaml", appYAML(a.name, a.version, a.ref, im.Manifest.Desc.Digest))
	return a
}

// export runs `crpe export` of a's package to out with data as the cache.
func export(ctx context.Context, t *testing.T, reg *testenv.Distribution, a app, out, data string, extra ...string) result {
	t.Helper()
	args := append([]string{"export", "-f", a.src, "-o", out, "--data", data, "--registry-endpoint", "docker.io=" + reg.URL}, extra...)
	return crpe(ctx, t, nil, args...)
}

// partsFile is the parts file's JSON, as the tests read it (not through
// the parts package: the format is what is tested).
type partsFile struct {
	MediaType string `json:"mediaType"`
	Archive   part   `json:"archive"`
	Parts     []part `json:"parts"`
}

type part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}

func readParts(t *testing.T, path string) partsFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var p partsFile
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return p
}

func writeParts(t *testing.T, path string, p partsFile) {
	t.Helper()
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the files of src into a new temp folder.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/MiB) }

// getJSON GETs url (with the agent's token) and decodes a 200 answer.
func getJSON(t *testing.T, url, token string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// published lists what an agent publishes: its packages (ns/name@version)
// and its repositories with their tags.
func published(t *testing.T, a *testenv.Proc) []string {
	t.Helper()
	var pkgs struct {
		Items []struct{ Namespace, Name, Version string } `json:"items"`
	}
	if code := getJSON(t, a.URL+"/api/v1/kubepkgs", a.Token, &pkgs); code != http.StatusOK {
		t.Fatalf("GET /api/v1/kubepkgs: %d", code)
	}
	var out []string
	for _, p := range pkgs.Items {
		out = append(out, "package "+p.Namespace+"/"+p.Name+"@"+p.Version)
	}
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if code := getJSON(t, a.URL+"/v2/_catalog", a.Token, &cat); code != http.StatusOK {
		t.Fatalf("GET /v2/_catalog: %d", code)
	}
	for _, r := range cat.Repositories {
		var tags struct {
			Tags []string `json:"tags"`
		}
		getJSON(t, a.URL+"/v2/"+r+"/tags/list", a.Token, &tags)
		out = append(out, fmt.Sprintf("repository %s %v", r, tags.Tags))
	}
	sort.Strings(out)
	return out
}
