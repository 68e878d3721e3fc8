// Package chart tests `crpe package` against the real helm CLI (v4.3.2,
// built from the module proxy): for the same chart, values and flags,
// crpe's objects equal those `helm template --include-crds --skip-tests`
// prints, from a folder, an archive, a chart repository served over
// loopback and an OCI registry (docker-registry); charts that do not
// render get Helm's own message and no package.
package chart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const helmInstall = "go install helm.sh/helm/v4/cmd/helm@v4.3.2 (test/run.sh does)"

// helm runs the helm CLI with a home of the test's own.
func helm(t *testing.T, home string, args ...string) string {
	t.Helper()
	bin := testenv.Peer(t, "helm", helmInstall)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// crpe runs `crpe package ...` and returns stdout, stderr and the error.
func crpe(t *testing.T, home string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), append([]string{"package"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// objects parses a multi-document YAML stream into objects keyed
// kind/namespace/name.
func objects(t *testing.T, stream string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, doc := range strings.Split(stream, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("helm output: %v\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		out[objectKey(m)] = m
	}
	return out
}

func objectKey(m map[string]any) string {
	meta, _ := m["metadata"].(map[string]any)
	return fmt.Sprintf("%v/%v/%v", m["kind"], meta["namespace"], meta["name"])
}

// pkg is the package crpe printed: its manifests keyed as objects are,
// its images and annotations.
type pkg struct {
	Metadata struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Version   string                    `json:"version"`
		Images    map[string]string         `json:"images"`
		Manifests map[string]map[string]any `json:"manifests"`
	} `json:"spec"`
}

func parsePkg(t *testing.T, y string) (*pkg, map[string]any) {
	t.Helper()
	var p pkg
	if err := yaml.Unmarshal([]byte(y), &p); err != nil {
		t.Fatalf("crpe package output: %v\n%s", err, y)
	}
	objs := map[string]any{}
	for _, m := range p.Spec.Manifests {
		// through JSON and back, as helm's objects were parsed
		b, _ := json.Marshal(m)
		var v map[string]any
		_ = yaml.Unmarshal(b, &v)
		objs[objectKey(v)] = v
	}
	return &p, objs
}

// sameObjects compares crpe's objects with helm's.
func sameObjects(t *testing.T, crpeObjs, helmObjs map[string]any) {
	t.Helper()
	var ck, hk []string
	for k := range crpeObjs {
		ck = append(ck, k)
	}
	for k := range helmObjs {
		hk = append(hk, k)
	}
	sort.Strings(ck)
	sort.Strings(hk)
	if !reflect.DeepEqual(ck, hk) {
		t.Fatalf("objects differ:\ncrpe: %v\nhelm: %v", ck, hk)
	}
	for _, k := range hk {
		if !reflect.DeepEqual(crpeObjs[k], helmObjs[k]) {
			a, _ := json.MarshalIndent(crpeObjs[k], "", " ")
			b, _ := json.MarshalIndent(helmObjs[k], "", " ")
			t.Errorf("%s differs:\ncrpe: %s\nhelm: %s", k, a, b)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHelmCreate: the chart `helm create` writes, with values from a file
// and --set, through a folder and through the archive `helm package`
// writes: crpe's objects are helm template's; the test hook is left out;
// the image is listed in full form with where it was found; the
// provenance annotations are set.
func TestHelmCreate(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	helm(t, home, "create", filepath.Join(dir, "demo"))
	values := filepath.Join(dir, "prod.yaml")
	write(t, values, "replicaCount: 3\nservice:\n  port: 8080\ningress:\n  enabled: true\n")
	flags := []string{"-f", values, "--set", "image.tag=1.27-alpine", "--namespace", "web", "--api-versions", "networking.k8s.io/v1"}
	want := objects(t, helm(t, home, append([]string{"template", "demo", filepath.Join(dir, "demo"), "--include-crds", "--skip-tests"}, flags...)...))

	out, stderr, err := crpe(t, home, append([]string{filepath.Join(dir, "demo")}, flags...)...)
	if err != nil {
		t.Fatalf("crpe package: %v\n%s", err, stderr)
	}
	p, got := parsePkg(t, out)
	sameObjects(t, got, want)
	if p.Metadata.Name != "demo" || p.Spec.Version != "0.1.0" {
		t.Errorf("package %s %s, want demo 0.1.0", p.Metadata.Name, p.Spec.Version)
	}
	if _, ok := p.Spec.Images["docker.io/library/nginx:1.27-alpine"]; !ok || len(p.Spec.Images) != 1 {
		t.Errorf("images %v", p.Spec.Images)
	}
	if !strings.Contains(stderr, "docker.io/library/nginx:1.27-alpine: demo.web.deployment spec.template.spec.containers[0]") || !strings.Contains(stderr, "test hook") {
		t.Errorf("report:\n%s", stderr)
	}
	for _, a := range []string{"octohelm.tech/chart", "octohelm.tech/chart-version", "octohelm.tech/chart-digest", "octohelm.tech/values-digest"} {
		if p.Metadata.Annotations[a] == "" {
			t.Errorf("annotation %s missing: %v", a, p.Metadata.Annotations)
		}
	}

	// the archive helm package writes: the same objects, its digest
	helm(t, home, "package", filepath.Join(dir, "demo"), "-d", dir)
	tgz := filepath.Join(dir, "demo-0.1.0.tgz")
	out, stderr, err = crpe(t, home, append([]string{tgz}, flags...)...)
	if err != nil {
		t.Fatalf("crpe package %s: %v\n%s", tgz, err, stderr)
	}
	p2, got2 := parsePkg(t, out)
	sameObjects(t, got2, want)
	b, _ := os.ReadFile(tgz)
	if d := p2.Metadata.Annotations["octohelm.tech/chart-digest"]; d != digestOf(b) {
		t.Errorf("chart digest %s, want the archive's %s", d, digestOf(b))
	}
	if p2.Metadata.Annotations["octohelm.tech/values-digest"] != p.Metadata.Annotations["octohelm.tech/values-digest"] {
		t.Errorf("the same values give two digests")
	}
}

// TestRepoAndOCI: a chart from a chart repository (a static file server
// holding what `helm package` and `helm repo index` write, with a version
// constraint) and from an OCI registry (`helm push` into docker-registry)
// renders as helm template renders it from there.
func TestRepoAndOCI(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	for _, v := range []string{"1.0.0", "1.1.0", "2.0.0"} {
		c := filepath.Join(dir, "src-"+v, "app")
		if err := os.MkdirAll(filepath.Dir(c), 0o755); err != nil {
			t.Fatal(err)
		}
		helm(t, home, "create", c)
		chartYAML, _ := os.ReadFile(filepath.Join(c, "Chart.yaml"))
		write(t, filepath.Join(c, "Chart.yaml"), strings.Replace(string(chartYAML), "version: 0.1.0", "version: "+v, 1))
		helm(t, home, "package", c, "-d", repo)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
	defer srv.Close()
	helm(t, home, "repo", "index", repo, "--url", srv.URL)

	want := objects(t, helm(t, home, "template", "app", "app", "--repo", srv.URL, "--version", "^1.0", "--include-crds", "--skip-tests"))
	out, stderr, err := crpe(t, home, "app", "--repo", srv.URL, "--version", "^1.0")
	if err != nil {
		t.Fatalf("crpe package --repo: %v\n%s", err, stderr)
	}
	p, got := parsePkg(t, out)
	sameObjects(t, got, want)
	if p.Spec.Version != "1.1.0" {
		t.Errorf("^1.0 picked %s, want 1.1.0", p.Spec.Version)
	}
	if src := p.Metadata.Annotations["octohelm.tech/chart-source"]; !strings.Contains(src, srv.URL) {
		t.Errorf("chart source %q", src)
	}

	reg := testenv.StartDistribution(t)
	helm(t, home, "push", filepath.Join(repo, "app-2.0.0.tgz"), "oci://"+reg.Addr+"/charts", "--plain-http")
	ref := "oci://" + reg.Addr + "/charts/app"
	want = objects(t, helm(t, home, "template", "app", ref, "--version", "2.0.0", "--plain-http", "--include-crds", "--skip-tests"))
	out, stderr, err = crpe(t, home, ref, "--version", "2.0.0", "--plain-http")
	if err != nil {
		t.Fatalf("crpe package oci://: %v\n%s", err, stderr)
	}
	p, got = parsePkg(t, out)
	sameObjects(t, got, want)
	b, _ := os.ReadFile(filepath.Join(repo, "app-2.0.0.tgz"))
	if p.Spec.Version != "2.0.0" || p.Metadata.Annotations["octohelm.tech/chart-digest"] != digestOf(b) {
		t.Errorf("oci chart: version %s, digest %s (want %s)", p.Spec.Version, p.Metadata.Annotations["octohelm.tech/chart-digest"], digestOf(b))
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
