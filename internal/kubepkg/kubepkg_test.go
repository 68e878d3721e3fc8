package kubepkg_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

const demoJSON = `{
  "apiVersion": "octohelm.tech/v1alpha1",
  "kind": "KubePkg",
  "metadata": {
    "name": "demo",
    "namespace": "default",
    "labels": {"app": "demo"},
    "annotations": {"octohelm.tech/platform": "linux/amd64,linux/arm64"}
  },
  "spec": {
    "version": "0.0.1",
    "images": {"docker.io/library/nginx:alpine": ""},
    "manifests": {
      "web.default.deployment": {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
          "replicas": 2,
          "template": {"spec": {"containers": [{"name": "web", "image": "nginx:alpine"}]}}
        }
      }
    }
  }
}`

const demoYAML = `# a comment
apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: demo
  namespace: default
  labels:
    app: demo
  annotations:
    octohelm.tech/platform: linux/amd64,linux/arm64
spec:
  version: 0.0.1
  images:
    docker.io/library/nginx:alpine: ""
  manifests:
    web.default.deployment:
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: web
      spec:
        replicas: 2
        template:
          spec:
            containers:
              - name: web
                image: nginx:alpine
`

func mustParse(t *testing.T, data string) []*kubepkg.KubePkg {
	t.Helper()
	pkgs, err := kubepkg.Parse([]byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return pkgs
}

func mustParseOne(t *testing.T, data string) *kubepkg.KubePkg {
	t.Helper()
	pkgs := mustParse(t, data)
	if len(pkgs) != 1 {
		t.Fatalf("Parse returned %d packages, want 1", len(pkgs))
	}
	return pkgs[0]
}

func mustMarshal(t *testing.T, pkgs ...*kubepkg.KubePkg) []byte {
	t.Helper()
	b, err := kubepkg.Marshal(pkgs)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return b
}

// decode decodes JSON into plain values for comparisons that ignore key order
// and formatting.
func decode(t *testing.T, b []byte) any {
	t.Helper()
	v, err := kubepkg.DecodeValue(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func checkDemo(t *testing.T, p *kubepkg.KubePkg) {
	t.Helper()
	if p.APIVersion != kubepkg.APIVersion || p.Kind != kubepkg.KindKubePkg {
		t.Errorf("apiVersion/kind = %q/%q", p.APIVersion, p.Kind)
	}
	if p.Metadata.Name != "demo" || p.Metadata.Namespace != "default" {
		t.Errorf("metadata = %+v", p.Metadata)
	}
	if p.Metadata.Labels["app"] != "demo" {
		t.Errorf("labels = %v", p.Metadata.Labels)
	}
	if p.Metadata.Annotations[kubepkg.AnnotationPlatform] != "linux/amd64,linux/arm64" {
		t.Errorf("annotations = %v", p.Metadata.Annotations)
	}
	if p.Spec.Version != "0.0.1" {
		t.Errorf("version = %q", p.Spec.Version)
	}
	if got := p.ImageRefs(); !slices.Equal(got, []string{"docker.io/library/nginx:alpine"}) {
		t.Errorf("ImageRefs = %v", got)
	}
	m := p.Spec.Manifests["web.default.deployment"]
	if m == nil || m["kind"] != "Deployment" {
		t.Fatalf("manifest = %v", m)
	}
	replicas := m["spec"].(map[string]any)["replicas"]
	if replicas != json.Number("2") {
		t.Errorf("replicas = %#v, want json.Number(\"2\")", replicas)
	}
	if p.Status != nil || p.Extra != nil || p.Metadata.Extra != nil || p.Spec.Extra != nil {
		t.Errorf("unexpected status/extra: %v %v %v %v", p.Status, p.Extra, p.Metadata.Extra, p.Spec.Extra)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseJSON(t *testing.T) {
	checkDemo(t, mustParseOne(t, demoJSON))
}

func TestParseYAML(t *testing.T) {
	p := mustParseOne(t, demoYAML)
	checkDemo(t, p)
	if !bytes.Equal(mustMarshal(t, p), mustMarshal(t, mustParseOne(t, demoJSON))) {
		t.Errorf("YAML and JSON parse differently")
	}
}

func TestParseBOM(t *testing.T) {
	checkDemo(t, mustParseOne(t, "\xef\xbb\xbf"+demoJSON))
	checkDemo(t, mustParseOne(t, "\xef\xbb\xbf"+demoYAML))
}

func TestParseJSONList(t *testing.T) {
	other := strings.Replace(demoJSON, `"name": "demo"`, `"name": "other"`, 1)
	list := `{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkgList", "items": [` + demoJSON + `,` + other + `]}`
	pkgs := mustParse(t, list)
	if len(pkgs) != 2 {
		t.Fatalf("got %d packages", len(pkgs))
	}
	checkDemo(t, pkgs[0])
	if pkgs[1].Metadata.Name != "other" {
		t.Errorf("second item = %q", pkgs[1].Metadata.Name)
	}
}

func TestParseYAMLList(t *testing.T) {
	list := "apiVersion: octohelm.tech/v1alpha1\nkind: KubePkgList\nitems:\n" + indent(demoYAML, "  - ", "    ") +
		indent(strings.Replace(demoYAML, "name: demo", "name: other", 1), "  - ", "    ")
	pkgs := mustParse(t, list)
	if len(pkgs) != 2 {
		t.Fatalf("got %d packages", len(pkgs))
	}
	checkDemo(t, pkgs[0])
	if pkgs[1].Metadata.Name != "other" {
		t.Errorf("second item = %q", pkgs[1].Metadata.Name)
	}
}

// indent prefixes the first line with first and the others with rest,
// dropping comment lines.
func indent(s, first, rest string) string {
	var b strings.Builder
	n := 0
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if n == 0 {
			b.WriteString(first)
		} else {
			b.WriteString(rest)
		}
		b.WriteString(line + "\n")
		n++
	}
	return b.String()
}

func TestParseYAMLStream(t *testing.T) {
	stream := "---\n" + demoYAML + "--- # second\n" + strings.Replace(demoYAML, "name: demo", "name: other", 1) + "---\n# only a comment\n"
	pkgs := mustParse(t, stream)
	if len(pkgs) != 2 || pkgs[0].Metadata.Name != "demo" || pkgs[1].Metadata.Name != "other" {
		t.Fatalf("got %d packages", len(pkgs))
	}
	checkDemo(t, pkgs[0])
}

func TestParseListItemDefaults(t *testing.T) {
	pkgs := mustParse(t, `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[{"metadata":{"name":"a"},"spec":{"version":"1.0.0"}}]}`)
	if pkgs[0].APIVersion != kubepkg.APIVersion || pkgs[0].Kind != kubepkg.KindKubePkg {
		t.Errorf("item apiVersion/kind = %q/%q", pkgs[0].APIVersion, pkgs[0].Kind)
	}
	if err := pkgs[0].Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	empty := mustParse(t, `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[]}`)
	if empty == nil || len(empty) != 0 {
		t.Errorf("empty list = %#v", empty)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"missing kind", `{"apiVersion":"octohelm.tech/v1alpha1"}`, []string{"kind: missing"}},
		{"other kind", `{"apiVersion":"v1","kind":"ConfigMap"}`, []string{`kind: unsupported "ConfigMap"`}},
		{"kind not a string", `{"kind":1}`, []string{"kind:"}},
		{"array", `[1,2]`, []string{"must be an object, got an array"}},
		{"scalar", `"x"`, []string{"must be an object, got a string"}},
		{"null", `null`, []string{"must be an object, got null"}},
		{"empty", ``, []string{"no package"}},
		{"comments only", "# nothing\n---\n", []string{"no package"}},
		{"bad yaml", "kind: [KubePkg\n", []string{"invalid YAML"}},
		{"list apiVersion", `{"apiVersion":"v1","kind":"KubePkgList","items":[]}`, []string{`apiVersion: must be "octohelm.tech/v1alpha1"`}},
		{"list item kind", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[{"kind":"Pod"}]}`, []string{`items[0].kind: must be "KubePkg"`}},
		{"list item null", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[null]}`, []string{`items[0]: must be an object`}},
		{"list item field", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[{"kind":"KubePkg","spec":{"version":1}}]}`, []string{`items[0].spec.version:`}},
		{"version type", `{"kind":"KubePkg","spec":{"version":1}}`, []string{"spec.version:", "number"}},
		{"name type", `{"kind":"KubePkg","metadata":{"name":true}}`, []string{"metadata.name:"}},
		{"labels type", `{"kind":"KubePkg","metadata":{"labels":{"a":1}}}`, []string{"metadata.labels:"}},
		{"image value type", `{"kind":"KubePkg","spec":{"images":{"nginx":1}}}`, []string{`spec.images["nginx"]:`}},
		{"manifest type", `{"kind":"KubePkg","spec":{"manifests":{"a.b.c":"x"}}}`, []string{`spec.manifests["a.b.c"]: must be an object, got a string`}},
		{"status type", `{"kind":"KubePkg","status":[]}`, []string{`status: must be an object`}},
		{"trailing garbage", "{\"kind\":\"KubePkg\"} x", []string{"invalid JSON"}},
		{"truncated json", demoJSON[:100], []string{"invalid JSON"}},
		{"yaml flow", "{kind: KubePkg}", []string{"invalid JSON"}},
		{"deep json", strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000), []string{"invalid JSON", "max depth"}},
		{"deep yaml", "kind: KubePkg\nx: " + strings.Repeat("[", 20000), []string{"invalid YAML", "max depth"}},
		{"yaml alias bomb", yamlBomb(), []string{"invalid YAML", "aliasing"}},
		{"second yaml document broken", demoYAML + "---\nkind: [\n", []string{"YAML document 2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := kubepkg.Parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// yamlBomb returns a "billion laughs" document.
func yamlBomb() string {
	bomb := "kind: KubePkg\na: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += n + ": &" + n + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
		prev = n
	}
	return bomb
}

func TestParseSizeCap(t *testing.T) {
	big := make([]byte, oci.MaxPackageSize+1)
	for i := range big {
		big[i] = ' '
	}
	copy(big, demoJSON)
	if _, err := kubepkg.Parse(big); err == nil || !strings.Contains(err.Error(), "allowed") {
		t.Fatalf("Parse of %d bytes: err = %v", len(big), err)
	}
	// exactly at the cap is fine
	if _, err := kubepkg.Parse(big[:oci.MaxPackageSize]); err != nil {
		t.Fatalf("Parse of %d bytes: %v", oci.MaxPackageSize, err)
	}
}

func TestParseDuplicateKeys(t *testing.T) {
	cases := []struct {
		name, doc, key string
	}{
		{"json manifests", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"a"},"spec":{"version":"1.0.0","manifests":{
			"web.default.deployment":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"}},
			"web.default.deployment":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"}}}}}`, "web.default.deployment"},
		{"json images", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"a"},"spec":{"version":"1.0.0","images":{
			"nginx:alpine":"","nginx:alpine":"sha256:` + strings.Repeat("a", 64) + `"}}}`, "nginx:alpine"},
		{"json in list item", `{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[{"kind":"KubePkg","spec":{"images":{"x":"","x":""}}}]}`, "x"},
		{"json top level", `{"kind":"KubePkg","kind":"KubePkg"}`, "kind"},
		{"yaml manifests", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: a}
spec:
  version: 1.0.0
  manifests:
    web.default.deployment: {apiVersion: apps/v1, kind: Deployment, metadata: {name: web}}
    web.default.deployment: {apiVersion: apps/v1, kind: Deployment, metadata: {name: web}}
`, "web.default.deployment"},
		{"yaml images", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: a}
spec:
  version: 1.0.0
  images:
    nginx:alpine: ""
    nginx:alpine: ""
`, "nginx:alpine"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := kubepkg.Parse([]byte(c.doc))
			if err == nil {
				t.Fatal("Parse accepted a duplicate key")
			}
			if !strings.Contains(err.Error(), "duplicate") && !strings.Contains(err.Error(), "already set") {
				t.Errorf("error %q does not say duplicate", err)
			}
			if !strings.Contains(err.Error(), `"`+c.key+`"`) {
				t.Errorf("error %q does not name key %q", err, c.key)
			}
		})
	}
	// the JSON error names where the object is
	_, err := kubepkg.Parse([]byte(cases[0].doc))
	if want := `spec.manifests: duplicate key "web.default.deployment"`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

const unknownFieldsJSON = `{
  "apiVersion": "octohelm.tech/v1alpha1",
  "kind": "KubePkg",
  "x-top": {"nested": [1, 2.5, "three", null, true]},
  "metadata": {
    "name": "demo",
    "uid": "0f7d",
    "generation": 9007199254740993,
    "creationTimestamp": "2024-01-01T00:00:00Z",
    "finalizers": ["octohelm.tech/kubepkg"]
  },
  "spec": {
    "version": "1.0.0",
    "deploy": {"kind": "Deployment", "strategy": "<recreate & wait>"},
    "manifests": {
      "cm.default.configmap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
        "data": {"big": "x"}, "binaryData": null, "x": 12345678901234567890}
    }
  },
  "status": {"digests": [{"image": "a", "digest": "b"}], "observedGeneration": 3}
}`

func TestUnknownFieldsRoundTrip(t *testing.T) {
	p := mustParseOne(t, unknownFieldsJSON)
	if _, ok := p.Extra["x-top"]; !ok {
		t.Errorf("top-level unknown field lost: %v", p.Extra)
	}
	if p.Metadata.Extra["uid"] != "0f7d" || p.Metadata.Extra["generation"] != json.Number("9007199254740993") {
		t.Errorf("metadata unknown fields lost: %v", p.Metadata.Extra)
	}
	if _, ok := p.Spec.Extra["deploy"]; !ok {
		t.Errorf("spec unknown field lost: %v", p.Spec.Extra)
	}
	if p.Status == nil || (*p.Status)["observedGeneration"] != json.Number("3") {
		t.Errorf("status = %v", p.Status)
	}

	out := mustMarshal(t, p)
	if !reflect.DeepEqual(decode(t, out), decode(t, []byte(unknownFieldsJSON))) {
		t.Errorf("round trip changed the document:\n%s", out)
	}
	if !bytes.Contains(out, []byte(`"<recreate & wait>"`)) {
		t.Errorf("HTML characters escaped: %s", out)
	}
	if !bytes.Contains(out, []byte(`12345678901234567890`)) || !bytes.Contains(out, []byte(`9007199254740993`)) {
		t.Errorf("big numbers changed: %s", out)
	}

	// again through YAML: same document
	y := mustParseOne(t, `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
x-top: {nested: [1, 2.5, three, null, true]}
metadata:
  name: demo
  uid: 0f7d
  generation: 9007199254740993
  creationTimestamp: "2024-01-01T00:00:00Z"
  finalizers: [octohelm.tech/kubepkg]
spec:
  version: 1.0.0
  deploy: {kind: Deployment, strategy: "<recreate & wait>"}
  manifests:
    cm.default.configmap:
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: cm}
      data: {big: x}
      binaryData: null
      x: 12345678901234567890
status:
  digests: [{image: a, digest: b}]
  observedGeneration: 3
`)
	if yout := mustMarshal(t, y); !reflect.DeepEqual(decode(t, yout), decode(t, []byte(unknownFieldsJSON))) {
		t.Errorf("YAML round trip differs:\n%s\n%s", yout, out)
	}

	// and through encoding/json directly
	var q kubepkg.KubePkg
	if err := json.Unmarshal(out, &q); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decode(t, again), decode(t, out)) {
		t.Errorf("encoding/json round trip differs")
	}
}

func TestKnownFieldsWin(t *testing.T) {
	p := mustParseOne(t, demoJSON)
	p.Extra = map[string]any{"kind": "Evil", "other": "kept"}
	out := decode(t, mustMarshal(t, p)).(map[string]any)
	if out["kind"] != "KubePkg" || out["other"] != "kept" {
		t.Errorf("marshalled %v", out)
	}
}

func TestMarshalDeterministic(t *testing.T) {
	a := mustMarshal(t, mustParseOne(t, unknownFieldsJSON))
	for i := 0; i < 20; i++ {
		if b := mustMarshal(t, mustParseOne(t, unknownFieldsJSON)); !bytes.Equal(a, b) {
			t.Fatalf("Marshal not deterministic:\n%s\n%s", a, b)
		}
	}
	// keys are sorted
	if i, j := bytes.Index(a, []byte(`"apiVersion"`)), bytes.Index(a, []byte(`"x-top"`)); i != 1 || j < i {
		t.Errorf("keys not sorted: %s", a)
	}
	if bytes.HasSuffix(a, []byte("\n")) {
		t.Errorf("trailing newline")
	}
}

func TestMarshalList(t *testing.T) {
	a := mustParseOne(t, demoJSON)
	b := mustParseOne(t, strings.Replace(demoJSON, `"name": "demo"`, `"name": "b"`, 1))

	one := decode(t, mustMarshal(t, a)).(map[string]any)
	if one["kind"] != kubepkg.KindKubePkg {
		t.Errorf("one package: kind %v", one["kind"])
	}

	out := mustMarshal(t, a, b)
	list := decode(t, out).(map[string]any)
	if list["kind"] != kubepkg.KindKubePkgList || list["apiVersion"] != kubepkg.APIVersion || len(list["items"].([]any)) != 2 {
		t.Errorf("list = %s", out)
	}
	pkgs := mustParse(t, string(out))
	if len(pkgs) != 2 || pkgs[1].Metadata.Name != "b" {
		t.Errorf("re-parsed list: %v", pkgs)
	}

	none, err := kubepkg.Marshal(nil)
	if err != nil || string(none) != `{"apiVersion":"octohelm.tech/v1alpha1","items":[],"kind":"KubePkgList"}` {
		t.Errorf("Marshal(nil) = %s, %v", none, err)
	}
	if _, err := kubepkg.Marshal([]*kubepkg.KubePkg{a, nil}); err == nil {
		t.Errorf("Marshal accepted a nil package")
	}
}

func TestNamespaceAndPlatforms(t *testing.T) {
	p := mustParseOne(t, demoJSON)
	if p.Namespace("x") != "default" {
		t.Errorf("Namespace = %q", p.Namespace("x"))
	}
	p.Metadata.Namespace = ""
	if p.Namespace("x") != "x" {
		t.Errorf("Namespace = %q", p.Namespace("x"))
	}
	pl, err := p.Platforms()
	if err != nil || oci.JoinPlatforms(pl) != "linux/amd64,linux/arm64" {
		t.Errorf("Platforms = %v, %v", pl, err)
	}
	p.Metadata.Annotations = nil
	if pl, err := p.Platforms(); pl != nil || err != nil {
		t.Errorf("Platforms without annotation = %v, %v", pl, err)
	}

	// one parser for the annotation and --platform (oci.ParsePlatforms): an
	// architecture crpe does not know is taken as written, names are folded
	for in, want := range map[string]string{
		"": "",
		" linux/arm/v7 , linux/arm/v7,darwin/arm64": "darwin/arm64,linux/arm/v7",
		"windows/amd64":              "windows/amd64",
		"linux/riscv128":             "linux/riscv128",
		"Linux/x86_64":               "linux/amd64",
		"linux/amd64,linux/amd64/v1": "linux/amd64",
	} {
		p.Metadata.Annotations = map[string]string{kubepkg.AnnotationPlatform: in}
		got, err := p.Platforms()
		if err != nil || oci.JoinPlatforms(got) != want {
			t.Errorf("Platforms(%q) = %v, %v; want %v", in, oci.JoinPlatforms(got), err, want)
		}
		if err := p.Validate(); err != nil && strings.Contains(err.Error(), "metadata.annotations") {
			t.Errorf("Validate refused the platforms %q that Platforms takes: %v", in, err)
		}
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/arm/v7/x", "linux amd64"} {
		p.Metadata.Annotations = map[string]string{kubepkg.AnnotationPlatform: bad}
		if _, err := p.Platforms(); err == nil {
			t.Errorf("Platforms(%q) accepted", bad)
		}
	}
}
