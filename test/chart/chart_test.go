// Package chart tests `crpe package` against the real helm CLI (v4.3.2,
// built from the module proxy): for the same chart, values and flags,
// crpe's objects equal those `helm template --include-crds --skip-tests`
// prints, from a folder, an archive, a chart repository served over
// loopback and an OCI registry (docker-registry); charts that do not
// render get Helm's own message and no package. And `crpe manifests`
// (manifests_test.go): the package's objects in apply order, from a file,
// an archive (plain, split, on stdin) and a real agent, and as a Helm
// chart whose `helm template` prints exactly the package's objects.
package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
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

	"github.com/octohelm/crpe/internal/chart/charttest"
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
	// the image, and the chart itself (kept in the data folder)
	if _, ok := p.Spec.Images["docker.io/library/nginx:1.27-alpine"]; !ok || len(p.Spec.Images) != 2 || p.Spec.Images["crpe.local/charts/demo:0.1.0"] == "" {
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
	// with a data folder, the chart fetched once packages again when the
	// repository is gone, saying so
	data := filepath.Join(dir, "data")
	first, stderr, err := crpe(t, home, "app", "--repo", srv.URL, "--version", "^1.0", "--data", data)
	if err != nil {
		t.Fatalf("crpe package --data: %v\n%s", err, stderr)
	}

	srv.Close()
	again, stderr, err := crpe(t, home, "app", "--repo", srv.URL, "--version", "^1.0", "--data", data)
	if err != nil || again != first || !strings.Contains(stderr, "cached") {
		t.Errorf("offline, from the data folder: err %v, same package %v, stderr:\n%s", err, again == first, stderr)
	}
	if _, stderr, err := crpe(t, home, "app", "--repo", srv.URL, "--version", "^1.0", "--data", filepath.Join(dir, "empty")); err == nil {
		t.Errorf("offline with a data folder that never fetched it: packaged (%s)", stderr)
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

// richChart writes a chart with what real charts use: a subchart with a
// condition, a library chart, a subchart enabled by a tag, a CRD in crds/,
// a pre-install hook Job, a test hook, a CronJob, a values schema and the
// helm.sh/images annotation.
func richChart(t *testing.T, dir string) string {
	t.Helper()
	c := filepath.Join(dir, "app")
	write(t, filepath.Join(c, "Chart.yaml"), `apiVersion: v2
name: app
version: 1.2.0
appVersion: "2.0"
annotations:
  helm.sh/images: |
    - name: operand
      image: ghcr.io/example/operand:2.0
dependencies:
- name: sub
  version: 0.1.0
  condition: sub.enabled
- name: lib
  version: 0.1.0
- name: extra
  version: 0.1.0
  tags: [extras]
`)
	write(t, filepath.Join(c, "values.yaml"), "replicas: 2\nimage: nginx:1.27\nsub:\n  enabled: true\n  message: hello\ntags:\n  extras: false\n")
	write(t, filepath.Join(c, "values.schema.json"), `{"$schema": "https://json-schema.org/draft-07/schema#", "type": "object",
 "properties": {"replicas": {"type": "integer", "minimum": 1}, "image": {"type": "string"}}, "required": ["replicas"]}`)
	write(t, filepath.Join(c, "crds", "crontab.yaml"), charttest.CronTabCRD)
	write(t, filepath.Join(c, "templates", "deployment.yaml"), `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
{{ include "lib.labels" . | indent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
      - name: init
        image: busybox:1.36
      containers:
      - name: web
        image: {{ .Values.image | quote }}
`)
	write(t, filepath.Join(c, "templates", "cronjob.yaml"), `apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ .Release.Name }}-backup
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: backup
            image: registry.example.com/tools/backup:3
`)
	write(t, filepath.Join(c, "templates", "hook.yaml"), `apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: {{ .Values.image | quote }}
`)
	write(t, filepath.Join(c, "templates", "tests", "test.yaml"), `apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    helm.sh/hook: test
spec:
  containers:
  - name: t
    image: curlimages/curl:8
`)
	write(t, filepath.Join(c, "charts", "sub", "Chart.yaml"), "apiVersion: v2\nname: sub\nversion: 0.1.0\n")
	write(t, filepath.Join(c, "charts", "sub", "values.yaml"), "message: default\n")
	write(t, filepath.Join(c, "charts", "sub", "templates", "cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\ndata:\n  message: {{ .Values.message | quote }}\n")
	write(t, filepath.Join(c, "charts", "lib", "Chart.yaml"), "apiVersion: v2\nname: lib\nversion: 0.1.0\ntype: library\n")
	write(t, filepath.Join(c, "charts", "lib", "templates", "_helpers.tpl"), "{{- define \"lib.labels\" -}}\napp.kubernetes.io/name: {{ .Chart.Name }}\napp.kubernetes.io/instance: {{ .Release.Name }}\n{{- end -}}\n")
	write(t, filepath.Join(c, "charts", "extra", "Chart.yaml"), "apiVersion: v2\nname: extra\nversion: 0.1.0\n")
	write(t, filepath.Join(c, "charts", "extra", "templates", "sa.yaml"), "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}-extra\n")
	return c
}

// TestRichChart: subcharts with a condition and a tag, a library chart,
// CRDs, hooks, a schema: crpe's objects are helm template's for several
// value sets; the test hook is left out, the install hook kept with its
// annotations; every image is found (pod templates of every kind, the
// chart's helm.sh/images, --image), in full form.
func TestRichChart(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	c := richChart(t, dir)
	for _, flags := range [][]string{
		nil,
		{"--set", "sub.enabled=false", "--set", "tags.extras=true", "--set", "sub.message=x"},
		{"--release-name", "prod", "--namespace", "shop", "--set", "replicas=5"},
	} {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			name := "app"
			hf := append([]string(nil), flags...)
			for i, f := range flags {
				if f == "--release-name" {
					name = flags[i+1]
					hf = append(append([]string(nil), flags[:i]...), flags[i+2:]...)
				}
			}
			want := objects(t, helm(t, home, append([]string{"template", name, c, "--include-crds", "--skip-tests"}, hf...)...))
			out, stderr, err := crpe(t, home, append([]string{c, "--image", "quay.io/example/operand-sidecar:1"}, flags...)...)
			if err != nil {
				t.Fatalf("crpe package: %v\n%s", err, stderr)
			}
			p, got := parsePkg(t, out)
			sameObjects(t, got, want)
			for _, img := range []string{"docker.io/library/nginx:1.27", "docker.io/library/busybox:1.36", "registry.example.com/tools/backup:3",
				"ghcr.io/example/operand:2.0", "quay.io/example/operand-sidecar:1"} {
				if _, ok := p.Spec.Images[img]; !ok {
					t.Errorf("image %s not listed: %v", img, p.Spec.Images)
				}
			}
			if _, ok := p.Spec.Images["docker.io/curlimages/curl:8"]; ok {
				t.Errorf("the test hook's image is listed")
			}
			for _, w := range []string{"Chart.yaml helm.sh/images", "--image", "spec.jobTemplate.spec.template.spec.containers[0]", "spec.template.spec.initContainers[0]"} {
				if !strings.Contains(stderr, w) {
					t.Errorf("report does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestChartRefused: a chart that does not render gets Helm's own message
// (the one `helm template` prints) and no package is written; a chart
// archive with a link or a path outside its folder is refused.
func TestChartRefused(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	c := richChart(t, dir)
	outFile := filepath.Join(dir, "out.yaml")
	for _, tc := range []struct {
		name  string
		args  []string
		want  string
		setup func()
	}{
		{name: "schema", args: []string{"--set", "replicas=0"}, want: "minimum"},
		{name: "required", args: nil, want: "msg is required", setup: func() {
			write(t, filepath.Join(c, "templates", "req.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: req\ndata:\n  m: {{ required \"msg is required\" .Values.msg }}\n")
		}},
		{name: "template error", args: nil, want: "req.yaml", setup: func() {
			write(t, filepath.Join(c, "templates", "req.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: req\ndata:\n  m: {{ .Values.msg | nosuchfunction }}\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				defer os.Remove(filepath.Join(c, "templates", "req.yaml"))
			}
			_, stderr, err := crpe(t, home, append([]string{c, "-o", outFile}, tc.args...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("err %v, stderr:\n%s\nwant %q", err, stderr, tc.want)
			}
			if _, err := os.Stat(outFile); err == nil {
				t.Errorf("a package was written")
			}
			// helm says the same
			bin := testenv.Peer(t, "helm", helmInstall)
			hout, _ := exec.Command(bin, append([]string{"template", "app", c}, tc.args...)...).CombinedOutput()
			if !strings.Contains(string(hout), tc.want) {
				t.Errorf("helm template does not say %q either:\n%s", tc.want, hout)
			}
		})
	}

	for _, tc := range []struct {
		name string
		hdr  tar.Header
		want string
	}{
		{"symlink", tar.Header{Name: "app/templates/link.yaml", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, "links are not allowed"},
		{"outside", tar.Header{Name: "app/../../evil.yaml", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644}, "outside"},
		{"device", tar.Header{Name: "app/dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "not allowed"},
	} {
		t.Run("archive/"+tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			tw := tar.NewWriter(zw)
			for _, f := range []struct{ name, body string }{{"app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n"}, {"app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"}} {
				_ = tw.WriteHeader(&tar.Header{Name: f.name, Size: int64(len(f.body)), Mode: 0o644, Typeflag: tar.TypeReg})
				_, _ = tw.Write([]byte(f.body))
			}
			h := tc.hdr
			_ = tw.WriteHeader(&h)
			if h.Size > 0 {
				_, _ = tw.Write(make([]byte, h.Size))
			}
			_ = tw.Close()
			_ = zw.Close()
			tgz := filepath.Join(dir, tc.name+".tgz")
			write(t, tgz, buf.String())
			_, stderr, err := crpe(t, home, tgz, "-o", outFile)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("err %v, stderr:\n%s\nwant %q", err, stderr, tc.want)
			}
			if _, err := os.Stat(outFile); err == nil {
				t.Errorf("a package was written")
			}
		})
	}
}

// TestFoldersAndKustomize: a folder of YAML files gives its objects as
// written; a kustomization gives what `kubectl kustomize` prints.
func TestFoldersAndKustomize(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	write(t, filepath.Join(base, "deploy.yaml"), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.27}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n  selector: {app: web}\n")
	write(t, filepath.Join(base, "sub", "cm.yml"), "# a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata: {a: \"1\"}\n")
	out, stderr, err := crpe(t, home, base, "--name", "web", "--version", "1.0.0")
	if err != nil {
		t.Fatalf("crpe package (folder): %v\n%s", err, stderr)
	}
	p, got := parsePkg(t, out)
	files, _ := os.ReadFile(filepath.Join(base, "deploy.yaml"))
	cm, _ := os.ReadFile(filepath.Join(base, "sub", "cm.yml"))
	sameObjects(t, got, objects(t, string(files)+"\n---\n"+string(cm)))
	if p.Spec.Version != "1.0.0" || p.Metadata.Name != "web" || p.Metadata.Annotations["octohelm.tech/source"] != "yaml" {
		t.Errorf("package %+v", p.Metadata)
	}

	overlay := filepath.Join(dir, "overlay")
	write(t, filepath.Join(base, "kustomization.yaml"), "resources: [deploy.yaml, sub/cm.yml]\n")
	write(t, filepath.Join(overlay, "kustomization.yaml"), "resources: [../base]\nnamePrefix: prod-\nnamespace: shop\nimages:\n- name: nginx\n  newTag: 1.27.1\ncommonLabels:\n  env: prod\n")
	kubectl := testenv.Peer(t, "kubectl", "test/peers/kube.sh builds it")
	kout, err := exec.Command(kubectl, "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, kout)
	}
	out, stderr, err = crpe(t, home, overlay, "--name", "web", "--version", "1.0.1")
	if err != nil {
		t.Fatalf("crpe package (kustomization): %v\n%s", err, stderr)
	}
	p, got = parsePkg(t, out)
	sameObjects(t, got, objects(t, string(kout)))
	if _, ok := p.Spec.Images["docker.io/library/nginx:1.27.1"]; !ok {
		t.Errorf("images %v", p.Spec.Images)
	}
}

// TestChartTravels: the chart itself goes with its package. crpe package
// keeps it in the data folder as an OCI artifact in Helm's layout and pins
// it in spec.images; crpe export --offline puts it in the archive; a real
// agent imports it; and helm pull from the agent gives the very chart
// archive rendered (its digest is the package's chart-digest).
func TestChartTravels(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	c := filepath.Join(dir, "conf")
	write(t, filepath.Join(c, "Chart.yaml"), "apiVersion: v2\nname: conf\nversion: 0.3.0\n")
	write(t, filepath.Join(c, "templates", "cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  a: \"1\"\n")
	helm(t, home, "package", c, "-d", dir)
	tgz := filepath.Join(dir, "conf-0.3.0.tgz")
	data := filepath.Join(dir, "data")
	pkgFile := filepath.Join(dir, "conf.kubepkg.yaml")
	if _, stderr, err := crpe(t, home, tgz, "--data", data, "-o", pkgFile); err != nil {
		t.Fatalf("crpe package: %v\n%s", err, stderr)
	}
	y, _ := os.ReadFile(pkgFile)
	p, _ := parsePkg(t, string(y))
	ref := "crpe.local/charts/conf:0.3.0"
	if p.Spec.Images[ref] == "" || p.Metadata.Annotations["octohelm.tech/chart-artifact"] != ref+"@"+p.Spec.Images[ref] {
		t.Fatalf("the chart is not in the package: %v %v", p.Spec.Images, p.Metadata.Annotations)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	archive := filepath.Join(dir, "conf.kubepkg.tgz")
	if out, err := testenv.Run(ctx, t, "export", "-f", pkgFile, "--data", data, "--offline", "-o", archive); err != nil {
		t.Fatalf("crpe export --offline: %v\n%s", err, out)
	}
	if out, err := testenv.Run(ctx, t, "inspect", archive, "--verify"); err != nil || !strings.Contains(out, ref) {
		t.Fatalf("crpe inspect --verify: %v\n%s", err, out)
	}
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	if out, err := testenv.Run(ctx, t, "import", archive, "--to", ag.URL, "--token", ag.Token); err != nil {
		t.Fatalf("crpe import --to: %v\n%s", err, out)
	}
	// beside a running pocket that holds the data folder: the pocket keeps
	// the chart, and the export through it carries it
	data2 := filepath.Join(dir, "data2")
	addr := testenv.FreeAddr(t)
	pocket := testenv.Start(t, "serve", "--addr", addr, "--data", data2, "--log-format", "text")
	pocket.Addr = addr
	testenv.WaitHealthy(t, pocket)
	pkg2 := filepath.Join(dir, "conf2.kubepkg.yaml")
	if _, stderr, err := crpe(t, home, tgz, "--data", data2, "-o", pkg2); err != nil {
		t.Fatalf("crpe package beside a pocket: %v\n%s", err, stderr)
	}
	y2, _ := os.ReadFile(pkg2)
	if p2, _ := parsePkg(t, string(y2)); p2.Spec.Images[ref] != p.Spec.Images[ref] {
		t.Fatalf("beside a pocket, the chart is pinned to %q, want %q", p2.Spec.Images[ref], p.Spec.Images[ref])
	}
	archive2 := filepath.Join(dir, "conf2.kubepkg.tgz")
	if out, err := testenv.Run(ctx, t, "export", "-f", pkg2, "--data", data2, "--offline", "-o", archive2); err != nil {
		t.Fatalf("crpe export through the pocket: %v\n%s", err, out)
	}
	if out, err := testenv.Run(ctx, t, "inspect", archive2, "--verify"); err != nil || !strings.Contains(out, ref) {
		t.Fatalf("crpe inspect --verify (through the pocket): %v\n%s", err, out)
	}

	pulled := filepath.Join(dir, "pulled")
	if err := os.MkdirAll(pulled, 0o755); err != nil {
		t.Fatal(err)
	}
	agentAddr := strings.TrimPrefix(ag.URL, "http://")
	helm(t, home, "pull", "oci://"+agentAddr+"/crpe.local/charts/conf", "--version", "0.3.0", "--plain-http", "-d", pulled)
	got, err := os.ReadFile(filepath.Join(pulled, "conf-0.3.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(tgz)
	if !bytes.Equal(got, want) || digestOf(got) != p.Metadata.Annotations["octohelm.tech/chart-digest"] {
		t.Errorf("helm pull from the agent gave %s, the chart rendered was %s", digestOf(got), digestOf(want))
	}
}
