package chart

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/kubepkg"
)

// ManifestYAML is one manifest as a YAML document (keys sorted, numbers
// exact), without a separator.
func ManifestYAML(m kubepkg.Manifest) ([]byte, error) {
	j, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(j)
}

// escapeTemplate makes text a Go template that prints text exactly: each
// "{{" becomes an action printing "{{" ("}}" outside an action is plain
// text).
func escapeTemplate(text []byte) []byte {
	return []byte(strings.ReplaceAll(string(text), "{{", `{{ "{{" }}`))
}

// TemplateName is the file under templates/ that holds the manifest of key
// key: the key with any character but letters, digits, '.', '-' and '_'
// made '-' (RBAC names hold ':'), never starting with '_' or '.' (Helm
// renders no partials), and ".yaml".
func TemplateName(key string) string {
	var b strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if s == "" || s[0] == '_' || s[0] == '.' {
		s = "m" + s
	}
	return s + ".yaml"
}

// fixedTime is the time of every file of a written chart, so that two
// archives of one package are the same bytes.
var fixedTime = time.Unix(0, 0).UTC()

// NewChart makes a Helm chart (apiVersion v2, application) whose templates
// print exactly p's manifests: one template per manifest, named from its
// key (TemplateName), with every "{{" of the manifest escaped so that Helm
// prints it as it is. The chart's name and version are the package's; it
// takes no values.
func NewChart(p *kubepkg.KubePkg) (*chartv2.Chart, error) {
	md := &chartv2.Metadata{
		APIVersion:  chartv2.APIVersionV2,
		Name:        p.Metadata.Name,
		Version:     p.Spec.Version,
		Type:        "application",
		Description: fmt.Sprintf("The manifests of the KubePkg %s %s, as they are (written by crpe manifests).", p.Metadata.Name, p.Spec.Version),
		Annotations: map[string]string{"octohelm.tech/kubepkg": p.Namespace("default") + "/" + p.Metadata.Name, "octohelm.tech/kubepkg-version": p.Spec.Version},
	}
	ch := &chartv2.Chart{Metadata: md, ModTime: fixedTime, SchemaModTime: fixedTime}
	ch.Raw = []*common.File{{Name: chartutil.ValuesfileName, ModTime: fixedTime,
		Data: []byte("# The templates are the package's manifests as they are: this chart takes no values.\n")}}
	keys := make([]string, 0, len(p.Spec.Manifests))
	for k := range p.Spec.Manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := map[string]string{}
	for _, k := range keys {
		name := TemplateName(k)
		if other, dup := seen[strings.ToLower(name)]; dup {
			return nil, fmt.Errorf("manifests %q and %q would both be templates/%s", other, k, name)
		}
		seen[strings.ToLower(name)] = k
		y, err := ManifestYAML(p.Spec.Manifests[k])
		if err != nil {
			return nil, fmt.Errorf("spec.manifests[%q]: %w", k, err)
		}
		ch.Templates = append(ch.Templates, &common.File{Name: "templates/" + name, ModTime: fixedTime, Data: escapeTemplate(y)})
	}
	if err := ch.Validate(); err != nil {
		return nil, fmt.Errorf("package %s %s as a chart: %w", p.Metadata.Name, p.Spec.Version, err)
	}
	return ch, nil
}

// WriteChart writes p as a Helm chart (NewChart) to dest: a chart archive
// when dest ends in .tgz (Helm's own chartutil.Save, as `helm package`
// writes it), else a chart folder, which must not exist or be empty. What
// is written appears whole or not at all: it is made beside dest and
// renamed into place.
func WriteChart(p *kubepkg.KubePkg, dest string) error {
	ch, err := NewChart(p)
	if err != nil {
		return err
	}
	parent := filepath.Dir(dest)
	tmp, err := os.MkdirTemp(parent, ".crpe-chart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if strings.HasSuffix(dest, ".tgz") {
		saved, err := chartutil.Save(ch, tmp)
		if err != nil {
			return err
		}
		if err := os.Chmod(saved, 0o644); err != nil {
			return err
		}
		return os.Rename(saved, dest)
	}
	if entries, err := os.ReadDir(dest); err == nil {
		if len(entries) > 0 {
			return fmt.Errorf("%s is a folder that is not empty: name a new folder, or a FILE.tgz", dest)
		}
		if err := os.Remove(dest); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", dest, err)
	}
	if err := chartutil.SaveDir(ch, tmp); err != nil {
		return err
	}
	return os.Rename(filepath.Join(tmp, ch.Name()), dest)
}
