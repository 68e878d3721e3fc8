// Package chart makes KubePkg packages from what people already ship: Helm
// charts (a folder, a .tgz, a chart repository or an OCI reference), folders
// of YAML files and kustomizations. It renders on the internet side, once,
// with Helm's own SDK (the objects `helm template --include-crds
// --skip-tests` prints) and kustomize's API, so that the intranet side only
// applies plain manifests.
package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// Annotations a package made from a chart carries (its provenance).
const (
	// AnnotationChart is the chart's name.
	AnnotationChart = "octohelm.tech/chart"
	// AnnotationChartVersion is the chart's version.
	AnnotationChartVersion = "octohelm.tech/chart-version"
	// AnnotationChartDigest is the sha256 of the chart archive rendered (for
	// a folder: of the archive crpe makes of it, see ArchiveDir).
	AnnotationChartDigest = "octohelm.tech/chart-digest"
	// AnnotationChartSource is where the chart came from (a path, a
	// repository URL and name, an oci:// reference).
	AnnotationChartSource = "octohelm.tech/chart-source"
	// AnnotationValuesDigest is the sha256 of the merged values, as JSON
	// with sorted keys.
	AnnotationValuesDigest = "octohelm.tech/values-digest"
	// AnnotationSource is what a package not made from a chart was made
	// from: "yaml" (a folder of files) or "kustomize".
	AnnotationSource = "octohelm.tech/source"
)

// Caps on what is read.
const (
	// MaxChartSize bounds a chart archive (compressed) and the files of a
	// chart folder, values files and a kustomization's files, each.
	MaxChartSize = 32 << 20
	// MaxRendered bounds the rendered manifests, all together.
	MaxRendered = 32 << 20
	// MaxValuesSize bounds Options.Values.
	MaxValuesSize = 1 << 20
	// maxFiles bounds the files of a YAML folder.
	maxFiles = 10000
)

// Options shape a package, with `helm template`'s flags.
type Options struct {
	// Repo is a chart repository URL (--repo): SOURCE is then a chart name.
	Repo string
	// Version is the chart version or constraint (--version).
	Version string
	// ValuesFiles (-f) and Set (--set), merged as Helm does.
	ValuesFiles []string
	Set         []string
	// Values is a values document (YAML or JSON) given as bytes, as a
	// values file given last: merged over ValuesFiles, under Set. At most
	// MaxValuesSize bytes.
	Values []byte
	// ReleaseName (default: the chart's name) and Namespace (default
	// "default").
	ReleaseName string
	Namespace   string
	// KubeVersion and APIVersions shape .Capabilities.
	KubeVersion string
	APIVersions []string
	// Images are images the manifests do not name (an operator's
	// operands), added to spec.images.
	Images []string
	// Name and PackageVersion name the package (default: the chart's name
	// and version; for a folder, its name and 0.0.0).
	Name           string
	PackageVersion string
	// PlainHTTP reaches an OCI registry over plain HTTP (--plain-http).
	PlainHTTP bool
	// Username and Password for a chart repository or OCI registry.
	Username, Password string
	// CacheDir holds downloaded charts and repository indexes (helm's
	// repository cache when empty), and the chart cache that lets a chart
	// fetched once be packaged again with no network (see cache.go).
	CacheDir string
	// OnFallback, when set, is told when a remote chart could not be
	// fetched and the cached one is used.
	OnFallback func(source, version string, fetched time.Time, err error)
}

// ImageSource says where an image of the package was found.
type ImageSource struct {
	// Ref is the image in full form (docker.io/library/nginx:1.27).
	Ref string `json:"ref"`
	// Found lists where: "Deployment/default/web containers[0]",
	// "Chart.yaml helm.sh/images", "--image".
	Found []string `json:"found"`
}

// ChartInfo is the chart a package was rendered from.
type ChartInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Source  string `json:"source"`
	// Archive is the chart archive rendered (for the archive's artifact).
	Archive []byte `json:"-"`
	// Metadata is Chart.yaml's content (the artifact's config).
	Metadata any `json:"-"`
}

// Result is a package and how it was made.
type Result struct {
	Package *kubepkg.KubePkg
	// Images are the images of spec.images, sorted, with where each was
	// found.
	Images []ImageSource
	// Chart is set for a package made from a chart.
	Chart *ChartInfo
	// Skipped lists what was left out (test hooks), for the report.
	Skipped []string
}

// Package makes a package from source: a chart folder (with Chart.yaml), a
// chart archive (.tgz), a chart name with Options.Repo, an oci:// chart
// reference, a kustomization folder (kustomization.yaml) or a folder of
// YAML files.
func Package(ctx context.Context, source string, o Options) (*Result, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Repo == "" && !strings.HasPrefix(source, "oci://") {
		fi, err := os.Stat(source)
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			switch {
			case exists(filepath.Join(source, "Chart.yaml")):
			case exists(filepath.Join(source, "kustomization.yaml")), exists(filepath.Join(source, "kustomization.yml")), exists(filepath.Join(source, "Kustomization")):
				return fromObjects(source, o, "kustomize", func() ([]object, error) { return kustomize(source) })
			default:
				return fromObjects(source, o, "yaml", func() ([]object, error) { return yamlFolder(source) })
			}
		}
	}
	return fromChart(ctx, source, o)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// object is a rendered Kubernetes object and where it came from.
type object struct {
	obj    map[string]any
	source string // a template path or a file
}

// fromObjects makes a package of a folder's objects.
func fromObjects(dir string, o Options, kind string, load func() ([]object, error)) (*Result, error) {
	objs, err := load()
	if err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(dir)
	name := o.Name
	if name == "" {
		name = strings.ToLower(filepath.Base(abs))
	}
	version := o.PackageVersion
	if version == "" {
		version = o.Version // a folder has no chart version: --version names the package's
	}
	if version == "" {
		version = "0.0.0"
	}
	p := newPackage(name, o.Namespace, version)
	p.Metadata.Annotations[AnnotationSource] = kind
	res := &Result{Package: p}
	if err := addObjects(res, objs); err != nil {
		return nil, err
	}
	return finish(res, o, nil)
}

func newPackage(name, namespace, version string) *kubepkg.KubePkg {
	return &kubepkg.KubePkg{
		APIVersion: kubepkg.APIVersion, Kind: kubepkg.KindKubePkg,
		Metadata: kubepkg.ObjectMeta{Name: name, Namespace: namespace, Annotations: map[string]string{}},
		Spec:     kubepkg.Spec{Version: version, Images: map[string]string{}, Manifests: map[string]kubepkg.Manifest{}},
	}
}

// addObjects puts objects, exactly as rendered, into the package's
// manifests, keyed as the seed keys them (kubepkg.ManifestKey):
// <name>.<namespace>.<lowercase kind>, where an object that names no
// namespace (a cluster-scoped one, or a namespaced one the operator puts in
// the package's namespace) is keyed with the package's namespace. Two
// objects with one key are refused.
func addObjects(res *Result, objs []object) error {
	p := res.Package
	for _, x := range objs {
		m := kubepkg.Manifest(x.obj)
		kind, _ := m["kind"].(string)
		if kind == "" || m["apiVersion"] == nil {
			return fmt.Errorf("%s: an object without apiVersion or kind", x.source)
		}
		if strings.HasSuffix(kind, "List") {
			return fmt.Errorf("%s: %s objects are not supported: list the items as documents", x.source, kind)
		}
		meta, _ := m["metadata"].(map[string]any)
		if meta == nil || meta["name"] == nil {
			return fmt.Errorf("%s: %s without metadata.name", x.source, kind)
		}
		key := p.ManifestKey(m)
		if _, dup := p.Spec.Manifests[key]; dup {
			return fmt.Errorf("%s: a second object %s", x.source, key)
		}
		p.Spec.Manifests[key] = m
	}
	return nil
}

// finish adds the images (the manifests' pod templates, the chart's
// helm.sh/images annotation, --image), each normalized, with where it was
// found, and validates the package.
func finish(res *Result, o Options, chartImages []string) (*Result, error) {
	p := res.Package
	found := map[string][]string{}
	add := func(ref, where string) error {
		full, err := oci.NormalizeReference(ref)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if !contains(found[full], where) {
			found[full] = append(found[full], where)
		}
		return nil
	}
	keys := make([]string, 0, len(p.Spec.Manifests))
	for k := range p.Spec.Manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, u := range kubepkg.PodImages(p.Spec.Manifests[k]) {
			if err := add(u.Image, k+" "+u.Path); err != nil {
				return nil, err
			}
		}
	}
	for _, ref := range chartImages {
		if err := add(ref, "Chart.yaml "+AnnotationHelmImages); err != nil {
			return nil, err
		}
	}
	for _, ref := range o.Images {
		if err := add(ref, "--image"); err != nil {
			return nil, err
		}
	}
	for ref, where := range found {
		p.Spec.Images[ref] = ""
		res.Images = append(res.Images, ImageSource{Ref: ref, Found: where})
	}
	sort.Slice(res.Images, func(i, j int) bool { return res.Images[i].Ref < res.Images[j].Ref })
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return res, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// parseDocuments reads a multi-document YAML stream into objects (empty
// documents and comments are skipped).
func parseDocuments(data []byte, source string) ([]object, error) {
	var out []object
	for i, doc := range splitYAML(data) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		// YAML to JSON, then numbers as json.Number (kubepkg's rule: an
		// integer keeps its exact value)
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i+1, err)
		}
		v, err := kubepkg.DecodeValue(j)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i+1, err)
		}
		if v == nil {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: document %d: not an object", source, i+1)
		}
		out = append(out, object{obj: m, source: source})
	}
	return out, nil
}

// splitYAML splits a stream at its "---" document separators.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out.Write(line)
	}
	return out.Bytes()
}

// yamlFolder reads every .yaml, .yml and .json file under dir (sorted,
// hidden files and folders skipped, each capped).
func yamlFolder(dir string) ([]object, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: symbolic links are not followed", p)
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if len(files) >= maxFiles {
				return fmt.Errorf("%s: more than %d files", dir, maxFiles)
			}
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var objs []object
	total := 0
	for _, f := range files {
		b, err := readCapped(f, MaxChartSize)
		if err != nil {
			return nil, err
		}
		if total += len(b); total > MaxRendered {
			return nil, fmt.Errorf("%s: more than %d bytes of manifests", dir, MaxRendered)
		}
		rel, _ := filepath.Rel(dir, f)
		o, err := parseDocuments(b, rel)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no Kubernetes object in its YAML files", dir)
	}
	return objs, nil
}

// readCapped reads a file of at most max bytes.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes", path, max)
	}
	return b, nil
}

// valuesDigest is the sha256 of values as JSON (encoding/json sorts keys).
func valuesDigest(vals map[string]any) (string, error) {
	b, err := json.Marshal(vals)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// checkArchive refuses a chart archive with anything but regular files and
// folders (links, devices), a path outside its folder, or more than
// MaxChartSize bytes once expanded: before Helm's loader sees it.
func checkArchive(b []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("chart archive: not a gzip stream: %w", err)
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return fmt.Errorf("chart archive: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeXGlobalHeader:
		case tar.TypeSymlink, tar.TypeLink:
			return fmt.Errorf("chart archive: %s: links are not allowed", h.Name)
		default:
			return fmt.Errorf("chart archive: %s: entries of type %q are not allowed", h.Name, h.Typeflag)
		}
		clean := filepath.ToSlash(filepath.Clean(h.Name))
		if strings.HasPrefix(h.Name, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("chart archive: %s: a path outside the chart's folder", h.Name)
		}
		if total += h.Size; total > MaxChartSize {
			return fmt.Errorf("chart archive: more than %d bytes expanded", MaxChartSize)
		}
	}
}
