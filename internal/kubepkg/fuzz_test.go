package kubepkg_test

import (
	"bytes"
	"testing"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts
// survives Marshal → Parse → Marshal unchanged, and can be validated and
// inspected without panicking.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		demoJSON, demoYAML, unknownFieldsJSON,
		`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkgList","items":[` + demoJSON + `]}`,
		"---\n" + demoYAML + "---\n" + demoYAML,
		`{"kind":"KubePkg","spec":{"images":{"a":"","a":""}}}`,
		`{"kind":"KubePkg","spec":{"manifests":{"x":{"kind":"CronJob","spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"image":"a"}]}}}}}}}}}`,
		"kind: KubePkg\nmetadata: &a {name: x}\nspec: *a\n",
		"[[[[[[[[]]]]]]]]", "", "null", "{}", "kind: [", "\xef\xbb\xbf{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := kubepkg.Parse(data)
		if err != nil {
			return
		}
		for _, p := range pkgs {
			_ = p.Validate()
			_ = p.ManifestImages()
			_, _ = p.Platforms()
			for _, ref := range p.ImageRefs() {
				_, _ = oci.NormalizeReference(ref)
			}
			p.AddManifestImages()
		}
		out, err := kubepkg.Marshal(pkgs)
		if err != nil {
			t.Fatalf("Marshal of a parsed document: %v", err)
		}
		again, err := kubepkg.Parse(out)
		if err != nil {
			t.Fatalf("Parse of a marshalled document: %v\n%s", err, out)
		}
		out2, err := kubepkg.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}
