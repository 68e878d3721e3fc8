package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

// run runs crpe with args (no CRPE_ variable of the developer's leaks in)
// and returns stdout, stderr and the error.
func run(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Crpe(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRPE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func mustRun(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, stderr, err := run(t, nil, args...)
	if err != nil {
		t.Fatalf("crpe %v: %v\n%s", args, err, stderr)
	}
	return out, stderr
}

// templated is a value Helm would render if it were not escaped.
const templated = `Hello {{ .Release.Name }}, {{- "x" }} {{ include "nothing" . }} }} {{`

func meta(name, ns string, annotations map[string]string) map[string]any {
	m := map[string]any{"name": name}
	if ns != "" {
		m["namespace"] = ns
	}
	if annotations != nil {
		m["annotations"] = annotations
	}
	return m
}

func job(name string, annotations map[string]string) map[string]any {
	return map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(name, "apps", annotations),
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"restartPolicy": "Never",
			"containers": []any{map[string]any{"name": "run", "image": "web:1.0", "command": []any{"/bin/true"}}}}}}}
}

// demoManifests are a package's objects: a CRD and an object of its kind,
// a Namespace and objects in it, RBAC with a ':' in a name, a value that
// looks like a template, and Helm hooks of every kind of place.
func demoManifests() []map[string]any {
	hook := func(events, weight string) map[string]string {
		a := map[string]string{"helm.sh/hook": events}
		if weight != "" {
			a["helm.sh/hook-weight"] = weight
		}
		return a
	}
	return []map[string]any{
		{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta("widgets.example.com", "", nil),
			"spec": map[string]any{"group": "example.com", "scope": "Namespaced",
				"names":    map[string]any{"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true, "schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}},
		{"apiVersion": "v1", "kind": "Namespace", "metadata": meta("apps", "", nil)},
		{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w1", "apps", nil), "spec": map[string]any{"size": 3}},
		{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("tmpl", "apps", map[string]string{"note": "{{ not a template }}"}),
			"data": map[string]any{"greeting": templated, "multi": "line one {{\nline two }}\n---\nline four\n", "n": "42"}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta("system:widget-reader", "", nil),
			"rules": []any{map[string]any{"apiGroups": []any{"example.com"}, "resources": []any{"widgets"}, "verbs": []any{"get"}}}},
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("web", "apps", nil)},
		{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", "", nil),
			"spec": map[string]any{"replicas": 2, "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
				"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
					"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "web:1.0"}}}}}},
		{"apiVersion": "v1", "kind": "Service", "metadata": meta("web", "", nil),
			"spec": map[string]any{"selector": map[string]any{"app": "web"}, "ports": []any{map[string]any{"port": 80}}}},
		job("migrate", hook("pre-install,pre-upgrade", "5")),
		job("setup", hook("pre-install", "-1")),
		job("notify", hook("post-install", "")),
		job("cleanup", hook("pre-delete", "")),
	}
}

// demoPackage writes the package of demoManifests as YAML and returns its
// path and its manifests keyed as objects are.
func demoPackage(t *testing.T, dir string) (string, map[string]any) {
	t.Helper()
	manifests := map[string]any{}
	want := map[string]any{}
	for _, m := range demoManifests() {
		md := m["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		if ns == "" {
			ns = "default"
		}
		key := md["name"].(string) + "." + ns + "." + strings.ToLower(m["kind"].(string))
		manifests[key] = m
		want[objectKey(reparse(t, m))] = reparse(t, m)
	}
	p := map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": "demo", "namespace": "default", "annotations": map[string]any{"octohelm.tech/platform": "linux/amd64"}},
		"spec":     map[string]any{"version": "1.2.3", "images": map[string]any{"docker.io/library/web:1.0": ""}, "manifests": manifests}}
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "demo.kubepkg.yaml")
	write(t, path, string(b))
	return path, want
}

// reparse is v through JSON and YAML, as objects parsed from helm's output
// are.
func reparse(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// docs parses crpe manifests' output: the objects in order, each with the
// manifest key its comment names.
func docs(t *testing.T, stream string) (keys []string, objs []map[string]any) {
	t.Helper()
	for i, doc := range strings.Split(stream, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		if m == nil {
			if i != 0 {
				t.Errorf("document %d is empty", i)
			}
			continue
		}
		first, _, _ := strings.Cut(doc, "\n")
		keys = append(keys, strings.TrimPrefix(first, "# "))
		objs = append(objs, m)
	}
	return keys, objs
}

func without(m map[string]any, drop ...string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for _, k := range drop {
		delete(out, k)
	}
	return out
}

// TestManifestsOrder: `crpe manifests` prints every object of the package
// exactly, in the operator's order with Helm's hooks in Helm's place: the
// CRD and the Namespace before everything, pre-install hooks (by weight)
// next, the kind the CRD defines and the objects in the namespace after
// them, post-install hooks last; a pre-delete hook is left out and named.
// --no-hooks leaves every hook out.
func TestManifestsOrder(t *testing.T) {
	dir := t.TempDir()
	src, want := demoPackage(t, dir)
	out, stderr := mustRun(t, "manifests", src)
	keys, objs := docs(t, out)
	if !strings.HasPrefix(out, "# KubePkg demo 1.2.3: 11 objects in apply order") || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "kubectl apply -n default") {
		t.Errorf("header: %s", strings.SplitN(out, "\n", 2)[0])
	}
	got := map[string]any{}
	for _, m := range objs {
		got[objectKey(m)] = m
	}
	sameObjects(t, got, without(want, "Job/apps/cleanup"))
	if !strings.Contains(stderr, "left out: package demo: cleanup.apps.job (hook pre-delete)") {
		t.Errorf("stderr does not name the pre-delete hook left out:\n%s", stderr)
	}
	pos := map[string]int{}
	for i, k := range keys {
		pos[k] = i
	}
	before := func(a, b string) {
		t.Helper()
		pa, oka := pos[a]
		pb, okb := pos[b]
		if !oka || !okb || pa >= pb {
			t.Errorf("%s (at %d, %v) must come before %s (at %d, %v): %v", a, pa, oka, b, pb, okb, keys)
		}
	}
	crd, ns := "widgets.example.com.default.customresourcedefinition", "apps.default.namespace"
	before(crd, ns)
	before(crd, "w1.apps.widget")
	for _, k := range keys {
		if strings.Contains(k, ".apps.") {
			before(ns, k)
		}
	}
	before(ns, "setup.apps.job")
	before("setup.apps.job", "migrate.apps.job") // weight -1 before 5
	for _, k := range []string{"system:widget-reader.default.clusterrole", "web.apps.serviceaccount", "tmpl.apps.configmap", "web.default.service", "web.default.deployment", "w1.apps.widget"} {
		before("migrate.apps.job", k)
		before(k, "notify.apps.job")
	}
	before("web.apps.serviceaccount", "web.default.deployment")
	before("web.default.service", "web.default.deployment")
	if keys[len(keys)-1] != "notify.apps.job" {
		t.Errorf("the post-install hook is not last: %v", keys)
	}

	out, stderr = mustRun(t, "manifests", src, "--no-hooks")
	_, objs = docs(t, out)
	got = map[string]any{}
	for _, m := range objs {
		got[objectKey(m)] = m
	}
	sameObjects(t, got, without(want, "Job/apps/cleanup", "Job/apps/migrate", "Job/apps/setup", "Job/apps/notify"))
	for _, k := range []string{"cleanup", "migrate", "setup", "notify"} {
		if !strings.Contains(stderr, "left out: package demo: "+k+".apps.job") {
			t.Errorf("--no-hooks: %s not named as left out:\n%s", k, stderr)
		}
	}

	// from stdin, to a file
	b, _ := os.ReadFile(src)
	outFile := filepath.Join(dir, "out.yaml")
	if _, stderr, err := run(t, b, "manifests", "-", "-o", outFile); err != nil {
		t.Fatalf("crpe manifests -: %v\n%s", err, stderr)
	}
	fromStdin, _ := os.ReadFile(outFile)
	if first, _ := mustRun(t, "manifests", src); string(fromStdin) != first {
		t.Errorf("stdin to -o differs from the file to stdout")
	}
}

// TestManifestsHelmChart: --helm-chart writes a chart folder and a chart
// archive whose `helm template` prints exactly the package's objects,
// hooks included (values that look like templates too); Chart.yaml names
// the package's name and version; with --no-hooks the hooks are left out.
func TestManifestsHelmChart(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	src, want := demoPackage(t, dir)

	folder := filepath.Join(dir, "chart")
	if _, stderr := mustRun(t, "manifests", src, "--helm-chart", folder); !strings.Contains(stderr, "wrote chart demo 1.2.3 (12 templates)") {
		t.Errorf("stderr: %s", stderr)
	}
	sameObjects(t, objects(t, helm(t, home, "template", "rel", folder, "--namespace", "other")), want)
	if _, err := os.Stat(filepath.Join(folder, "templates", "system-widget-reader.default.clusterrole.yaml")); err != nil {
		t.Errorf("template named from its key: %v", err)
	}

	tgz := filepath.Join(dir, "demo-chart.tgz")
	mustRun(t, "manifests", src, "--helm-chart", tgz)
	sameObjects(t, objects(t, helm(t, home, "template", "rel", tgz)), want)
	var ch struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Version    string `json:"version"`
	}
	if err := yaml.Unmarshal([]byte(helm(t, home, "show", "chart", tgz)), &ch); err != nil {
		t.Fatal(err)
	}
	if ch != (struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Version    string `json:"version"`
	}{"v2", "demo", "1.2.3"}) {
		t.Errorf("Chart.yaml: %+v", ch)
	}
	helm(t, home, "lint", tgz)
	// the same package gives the same archive
	again := filepath.Join(dir, "again.tgz")
	mustRun(t, "manifests", src, "--helm-chart", again)
	a, _ := os.ReadFile(tgz)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Errorf("two chart archives of one package differ")
	}

	noHooks := filepath.Join(dir, "nohooks.tgz")
	mustRun(t, "manifests", src, "--helm-chart", noHooks, "--no-hooks")
	sameObjects(t, objects(t, helm(t, home, "template", "rel", noHooks)), without(want, "Job/apps/cleanup", "Job/apps/migrate", "Job/apps/setup", "Job/apps/notify"))

	// a folder that is there and not empty is refused, and left as it was
	if _, stderr, err := run(t, nil, "manifests", src, "--helm-chart", folder); err == nil || !strings.Contains(stderr, "not empty") {
		t.Errorf("a second chart into %s: %v\n%s", folder, err, stderr)
	}
	sameObjects(t, objects(t, helm(t, home, "template", "rel", folder)), want)
}

// TestManifestsFromArchiveAndAgent: the same manifests from the package
// file, from its kubepkg.tgz (a file, stdin, a split archive by its parts
// file, its first part or all its parts) and from a real agent the archive
// was imported to; an unknown package on the agent is an error naming it.
func TestManifestsFromArchiveAndAgent(t *testing.T) {
	dir := t.TempDir()
	src, _ := demoPackage(t, dir)
	reg := testenv.StartDistribution(t)
	im := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, []testenv.Blob{testenv.RandomLayer(t, 4096, false)}, false)
	testenv.PushImage(t, reg.URL, "library/web", "1.0", im)
	archive := filepath.Join(dir, "demo-1.2.3.kubepkg.tgz")
	data := filepath.Join(dir, "data")
	mustRun(t, "export", "-f", src, "-o", archive, "--data", data, "--registry-endpoint", "docker.io="+reg.URL)
	split := filepath.Join(dir, "split", "demo.kubepkg.tgz")
	if err := os.MkdirAll(filepath.Dir(split), 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "export", "-f", src, "-o", split, "--data", data, "--registry-endpoint", "docker.io="+reg.URL, "--split", "1KiB")

	want, _ := mustRun(t, "manifests", src)
	check := func(what string, got string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: manifests differ from the package file's:\n%s\nwant:\n%s", what, got, want)
		}
	}
	out, _ := mustRun(t, "manifests", archive)
	check("archive", out)
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(t, b, "manifests", "-")
	if err != nil {
		t.Fatalf("manifests - < archive: %v\n%s", err, stderr)
	}
	check("archive on stdin", out)
	out, _ = mustRun(t, "manifests", split+".parts")
	check("parts file", out)
	out, _ = mustRun(t, "manifests", split+".000")
	check("first part", out)
	allParts, _ := filepath.Glob(split + ".0*")
	sort.Sort(sort.Reverse(sort.StringSlice(allParts)))
	if len(allParts) < 2 {
		t.Fatalf("the split archive has %d parts", len(allParts))
	}
	out, _ = mustRun(t, append([]string{"manifests"}, allParts...)...)
	check("all parts, in any order", out)

	agent := testenv.StartAgent(t, testenv.AgentOptions{})
	mustRun(t, "import", archive, "--to", agent.URL, "--token", agent.Token)
	out, _ = mustRun(t, "manifests", "--agent", agent.URL, "--token", agent.Token, "default/demo")
	check("agent", out)
	tokFile := filepath.Join(dir, "token")
	write(t, tokFile, agent.Token+"\n")
	out, _ = mustRun(t, "manifests", "--agent", agent.URL, "--token-file", tokFile, "default/demo", "--no-hooks")
	noHooks, _ := mustRun(t, "manifests", src, "--no-hooks")
	if out != noHooks {
		t.Errorf("agent --no-hooks differs from the file's")
	}
	chartDir := filepath.Join(dir, "from-agent")
	mustRun(t, "manifests", "--agent", agent.URL, "default/demo", "--helm-chart", chartDir)
	if _, err := os.Stat(filepath.Join(chartDir, "Chart.yaml")); err != nil {
		t.Errorf("chart from the agent: %v", err)
	}
	_, stderr, err = run(t, nil, "manifests", "--agent", agent.URL, "default/nothere")
	if err == nil || !strings.Contains(stderr, "NOT_FOUND") || !strings.Contains(stderr, "default/nothere") {
		t.Errorf("unknown package: %v\n%s", err, stderr)
	}
}

// TestManifestsSeedLayouts: the archives of the seed's tools (the crpe
// phone app's, octohelm/kubepkg v0.1's gzip tar and its later plain tar)
// give their package's manifests, read as the importer reads them.
func TestManifestsSeedLayouts(t *testing.T) {
	dir := t.TempDir()
	for _, l := range seedtest.Layouts {
		p := seedtest.Demo("seed", "1.0.0", l != seedtest.PhoneApp, 7)
		f := filepath.Join(dir, string(l)+".kubepkg.tgz")
		if err := os.WriteFile(f, seedtest.Write(l, p), 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := run(t, nil, "manifests", f)
		if err != nil {
			t.Errorf("%s: %v\n%s", l, err, stderr)
			continue
		}
		keys, objs := docs(t, out)
		if l == seedtest.Kubepkg2023 {
			// its spec (spec.deploy) is not the seed's: no manifests
			if len(keys) != 0 || !strings.Contains(out, "KubePkg seed 1.0.0: 0 objects") {
				t.Errorf("%s: %s", l, out)
			}
			continue
		}
		if len(keys) != 1 || keys[0] != "seed.default.deployment" || objs[0]["kind"] != "Deployment" {
			t.Errorf("%s: %v\n%s", l, keys, out)
		}
	}
}
