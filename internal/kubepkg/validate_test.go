package kubepkg_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

var (
	sha256Digest = "sha256:" + strings.Repeat("ab", 32)
	sha512Digest = "sha512:" + strings.Repeat("cd", 64)
)

func TestValidateOK(t *testing.T) {
	cases := map[string]func(p *kubepkg.KubePkg){
		"demo":                 func(p *kubepkg.KubePkg) {},
		"v prefix":             func(p *kubepkg.KubePkg) { p.Spec.Version = "v1.2.3" },
		"prerelease and build": func(p *kubepkg.KubePkg) { p.Spec.Version = "1.2.3-rc.1+build.5" },
		"digest values": func(p *kubepkg.KubePkg) {
			p.Spec.Images = map[string]string{
				"nginx:alpine":                        sha256Digest,
				"ghcr.io/a/b@" + sha256Digest:         "",
				"ghcr.io/a/b:1.0@" + sha256Digest:     sha256Digest,
				"localhost:5000/x/y:z":                sha512Digest,
				"registry.example.com:443/deep/a/b/c": "",
			}
		},
		"no namespace anywhere": func(p *kubepkg.KubePkg) { p.Metadata.Namespace = "" },
		"object namespace": func(p *kubepkg.KubePkg) {
			m := p.Spec.Manifests["web.default.deployment"]
			m["metadata"].(map[string]any)["namespace"] = "prod"
			delete(p.Spec.Manifests, "web.default.deployment")
			p.Spec.Manifests["web.prod.deployment"] = m
		},
		"package namespace": func(p *kubepkg.KubePkg) {
			p.Metadata.Namespace = "prod"
			m := p.Spec.Manifests["web.default.deployment"]
			delete(p.Spec.Manifests, "web.default.deployment")
			p.Spec.Manifests["web.prod.deployment"] = m
		},
		"platform with variant": func(p *kubepkg.KubePkg) {
			p.Metadata.Annotations[kubepkg.AnnotationPlatform] = "linux/amd64, linux/arm64/v8,linux/arm/v7"
		},
		"empty platform": func(p *kubepkg.KubePkg) { p.Metadata.Annotations[kubepkg.AnnotationPlatform] = "" },
		"dotted name":    func(p *kubepkg.KubePkg) { p.Metadata.Name = "demo.example-1" },
		"no manifests":   func(p *kubepkg.KubePkg) { p.Spec.Manifests = nil; p.Spec.Images = nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			p := mustParseOne(t, demoJSON)
			mutate(p)
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(p *kubepkg.KubePkg)
		want   string // the whole message of one of the joined errors
	}{
		{"apiVersion", func(p *kubepkg.KubePkg) { p.APIVersion = "v1" },
			`apiVersion: must be "octohelm.tech/v1alpha1", got "v1"`},
		{"kind", func(p *kubepkg.KubePkg) { p.Kind = "Pkg" },
			`kind: must be "KubePkg", got "Pkg"`},
		{"name missing", func(p *kubepkg.KubePkg) { p.Metadata.Name = "" },
			`metadata.name: required`},
		{"name uppercase", func(p *kubepkg.KubePkg) { p.Metadata.Name = "Demo" },
			`metadata.name: "Demo" is not a DNS-1123 subdomain`},
		{"name underscore", func(p *kubepkg.KubePkg) { p.Metadata.Name = "my_app" },
			`metadata.name: "my_app" is not a DNS-1123 subdomain`},
		{"name too long", func(p *kubepkg.KubePkg) { p.Metadata.Name = strings.Repeat("a", 254) },
			`metadata.name: "` + strings.Repeat("a", 254) + `" is not a DNS-1123 subdomain`},
		{"namespace", func(p *kubepkg.KubePkg) { p.Metadata.Namespace = "a.b" },
			`metadata.namespace: "a.b" is not a DNS-1123 label`},
		{"version missing", func(p *kubepkg.KubePkg) { p.Spec.Version = "" },
			`spec.version: required`},
		{"version 1.x", func(p *kubepkg.KubePkg) { p.Spec.Version = "1.x" },
			`spec.version: "1.x" is not a semantic version`},
		{"version latest", func(p *kubepkg.KubePkg) { p.Spec.Version = "latest" },
			`spec.version: "latest" is not a semantic version`},
		{"version 1.2", func(p *kubepkg.KubePkg) { p.Spec.Version = "1.2" },
			`spec.version: "1.2" is not a semantic version`},
		{"version vv", func(p *kubepkg.KubePkg) { p.Spec.Version = "vv1.2.3" },
			`spec.version: "vv1.2.3" is not a semantic version`},
		{"image key", func(p *kubepkg.KubePkg) { p.Spec.Images["Nginx:Alpine"] = "" },
			`spec.images["Nginx:Alpine"]: invalid image reference`},
		{"image key bad tag", func(p *kubepkg.KubePkg) { p.Spec.Images["nginx:-x"] = "" },
			`spec.images["nginx:-x"]: invalid image reference`},
		{"image key empty", func(p *kubepkg.KubePkg) { p.Spec.Images[""] = "" },
			`spec.images[""]: invalid image reference`},
		{"image value short", func(p *kubepkg.KubePkg) { p.Spec.Images["nginx:alpine"] = "sha256:abc" },
			`spec.images["nginx:alpine"]: value "sha256:abc" must be empty or a digest`},
		{"image value tag", func(p *kubepkg.KubePkg) { p.Spec.Images["nginx:alpine"] = "alpine" },
			`spec.images["nginx:alpine"]: value "alpine" must be empty or a digest`},
		{"image value md5", func(p *kubepkg.KubePkg) { p.Spec.Images["nginx:alpine"] = "md5:" + strings.Repeat("a", 32) },
			`spec.images["nginx:alpine"]: value "md5:` + strings.Repeat("a", 32) + `" must be empty or a digest`},
		{"image value uppercase hex", func(p *kubepkg.KubePkg) { p.Spec.Images["nginx:alpine"] = strings.ToUpper(sha256Digest) },
			`spec.images["nginx:alpine"]: value "SHA256:` + strings.Repeat("AB", 32) + `" must be empty or a digest`},
		{"manifest apiVersion", func(p *kubepkg.KubePkg) { delete(p.Spec.Manifests["web.default.deployment"], "apiVersion") },
			`spec.manifests["web.default.deployment"].apiVersion: required (a non-empty string)`},
		{"manifest kind", func(p *kubepkg.KubePkg) { p.Spec.Manifests["web.default.deployment"]["kind"] = 3 },
			`spec.manifests["web.default.deployment"].kind: required (a non-empty string)`},
		{"manifest name", func(p *kubepkg.KubePkg) { delete(p.Spec.Manifests["web.default.deployment"], "metadata") },
			`spec.manifests["web.default.deployment"].metadata.name: required (a non-empty string)`},
		{"manifest nil", func(p *kubepkg.KubePkg) { p.Spec.Manifests["x.default.pod"] = nil },
			`spec.manifests["x.default.pod"]: must be an object`},
		{"manifest namespace type", func(p *kubepkg.KubePkg) {
			p.Spec.Manifests["web.default.deployment"]["metadata"].(map[string]any)["namespace"] = 1
		}, `spec.manifests["web.default.deployment"].metadata.namespace: must be a string`},
		{"manifest key", func(p *kubepkg.KubePkg) {
			p.Spec.Manifests["web.default.deployment"]["metadata"].(map[string]any)["namespace"] = "prod"
		}, `spec.manifests["web.default.deployment"]: key does not match the object (want "web.prod.deployment")`},
		{"manifest key kind case", func(p *kubepkg.KubePkg) {
			m := p.Spec.Manifests["web.default.deployment"]
			delete(p.Spec.Manifests, "web.default.deployment")
			p.Spec.Manifests["web.default.Deployment"] = m
		}, `spec.manifests["web.default.Deployment"]: key does not match the object (want "web.default.deployment")`},
		{"manifest key package namespace", func(p *kubepkg.KubePkg) { p.Metadata.Namespace = "team" },
			`spec.manifests["web.default.deployment"]: key does not match the object (want "web.team.deployment")`},
		{"platform no arch", func(p *kubepkg.KubePkg) { p.Metadata.Annotations[kubepkg.AnnotationPlatform] = "linux" },
			`metadata.annotations["octohelm.tech/platform"]: platform "linux": want os/arch[/variant]`},
		{"platform trailing comma", func(p *kubepkg.KubePkg) {
			p.Metadata.Annotations[kubepkg.AnnotationPlatform] = "linux/amd64,"
		}, `metadata.annotations["octohelm.tech/platform"]: platform "": want os/arch[/variant]`},
		{"platform too deep", func(p *kubepkg.KubePkg) {
			p.Metadata.Annotations[kubepkg.AnnotationPlatform] = "linux/arm/v7/extra"
		}, `metadata.annotations["octohelm.tech/platform"]: platform "linux/arm/v7/extra": want os/arch[/variant]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParseOne(t, demoJSON)
			c.mutate(p)
			err := p.Validate()
			if err == nil {
				t.Fatalf("Validate accepted it, want %q", c.want)
			}
			if !hasMessage(err, c.want) {
				t.Errorf("Validate:\n%v\nwant a line starting with:\n%s", err, c.want)
			}
		})
	}
}

// hasMessage reports whether one of the joined errors starts with want.
func hasMessage(err error, want string) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if strings.HasPrefix(e.Error(), want) {
				return true
			}
		}
		return false
	}
	return strings.HasPrefix(err.Error(), want)
}

func TestValidateReportsAll(t *testing.T) {
	p := &kubepkg.KubePkg{
		Spec: kubepkg.Spec{
			Images:    map[string]string{"UPPER": "nope"},
			Manifests: map[string]kubepkg.Manifest{"a": {"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"}}},
		},
		Metadata: kubepkg.ObjectMeta{Annotations: map[string]string{kubepkg.AnnotationPlatform: "x"}},
	}
	err := p.Validate()
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate = %v, want joined errors", err)
	}
	var paths []string
	for _, e := range j.Unwrap() {
		paths = append(paths, strings.SplitN(e.Error(), ":", 2)[0])
	}
	want := []string{"apiVersion", "kind", "metadata.name", "metadata.annotations[\"octohelm.tech/platform\"]", "spec.version",
		`spec.images["UPPER"]`, `spec.images["UPPER"]`, `spec.manifests["a"]`}
	if strings.Join(paths, "|") != strings.Join(want, "|") {
		t.Errorf("paths:\n%q\nwant\n%q\n%v", paths, want, err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, ok := range []string{"0.0.1", "v1.2.3", "1.2.3-alpha.1", "10.20.30+meta"} {
		if _, err := kubepkg.ParseVersion(ok); err != nil {
			t.Errorf("ParseVersion(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1", "1.2", "1.x", "latest", "1.2.3.4", "01.2.3", "v", "1.2.3-"} {
		if _, err := kubepkg.ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
	v, _ := kubepkg.ParseVersion("v1.10.0")
	w, _ := kubepkg.ParseVersion("1.9.0")
	if !v.GreaterThan(w) {
		t.Errorf("1.10.0 not greater than 1.9.0")
	}
}

func TestManifestKey(t *testing.T) {
	p := &kubepkg.KubePkg{}
	m := kubepkg.Manifest{"kind": "ConfigMap", "metadata": map[string]any{"name": "cm"}}
	if k := p.ManifestKey(m); k != "cm.default.configmap" {
		t.Errorf("ManifestKey = %q", k)
	}
	p.Metadata.Namespace = "ns"
	if k := p.ManifestKey(m); k != "cm.ns.configmap" {
		t.Errorf("ManifestKey = %q", k)
	}
	m["metadata"].(map[string]any)["namespace"] = "own"
	if k := p.ManifestKey(m); k != "cm.own.configmap" {
		t.Errorf("ManifestKey = %q", k)
	}
}

func TestHelpers(t *testing.T) {
	if !oci.IsDigest(sha256Digest) || !oci.IsDigest(sha512Digest) || oci.IsDigest("sha256:"+strings.Repeat("a", 63)) {
		t.Error("IsDigest")
	}
	if !kubepkg.IsDNS1123Label("a-1") || kubepkg.IsDNS1123Label("-a") || kubepkg.IsDNS1123Label(strings.Repeat("a", 64)) {
		t.Error("IsDNS1123Label")
	}
	if !kubepkg.IsDNS1123Subdomain("a.b-c") || kubepkg.IsDNS1123Subdomain("a..b") || kubepkg.IsDNS1123Subdomain("a.") {
		t.Error("IsDNS1123Subdomain")
	}
}

func TestFieldError(t *testing.T) {
	p := mustParseOne(t, demoJSON)
	p.Spec.Version = "x"
	var fe *kubepkg.FieldError
	if err := p.Validate(); !errors.As(err, &fe) || fe.Path != "spec.version" {
		t.Errorf("Validate = %v, FieldError %+v", err, fe)
	}
	_, err := kubepkg.Parse([]byte(`{"kind":"KubePkg","spec":{"manifests":{"a.b":{"metadata":{"name":1}},"c":1}}}`))
	if !errors.As(err, &fe) || !strings.HasPrefix(fe.Path, "spec.manifests[") {
		t.Errorf("Parse = %v, FieldError %+v", err, fe)
	}
}
