package chart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	helmchart "helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/getter"
	"helm.sh/helm/v4/pkg/registry"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// AnnotationHelmImages is the Chart.yaml annotation listing images the
// templates may not show (a YAML list of {name, image} or of references).
const AnnotationHelmImages = "helm.sh/images"

// fromChart renders a chart with Helm's SDK, as `helm template
// --include-crds --skip-tests` does, and makes a package of its objects.
func fromChart(ctx context.Context, source string, o Options) (*Result, error) {
	settings := cli.New()
	if o.CacheDir != "" {
		settings.RepositoryCache = filepath.Join(o.CacheDir, "repository")
		settings.RepositoryConfig = filepath.Join(o.CacheDir, "repositories.yaml")
		settings.ContentCache = filepath.Join(o.CacheDir, "content")
	}
	ropts := []registry.ClientOption{registry.ClientOptWriter(io.Discard), registry.ClientOptCredentialsFile(settings.RegistryConfig)}
	if o.PlainHTTP {
		ropts = append(ropts, registry.ClientOptPlainHTTP())
	}
	if o.Username != "" || o.Password != "" {
		ropts = append(ropts, registry.ClientOptBasicAuth(o.Username, o.Password))
	}
	rc, err := registry.NewClient(ropts...)
	if err != nil {
		return nil, err
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.New(slog.DiscardHandler).Handler()))
	cfg.RegistryClient = rc
	inst := action.NewInstall(cfg)
	inst.SetRegistryClient(rc)
	inst.RepoURL, inst.Version, inst.PlainHTTP = o.Repo, o.Version, o.PlainHTTP
	inst.Username, inst.Password = o.Username, o.Password

	where := source
	if o.Repo != "" {
		where = o.Repo + " " + source
	}
	remote := o.Repo != "" || registry.IsOCI(source)
	key := sourceKey(o.Repo, source, o.Version)
	var ch *chartv2.Chart
	var archive []byte
	path, err := inst.LocateChart(source, settings)
	if err != nil {
		if !remote || o.CacheDir == "" {
			return nil, err
		}
		cached, e, cerr := cacheLookup(o.CacheDir, key)
		if cerr != nil {
			return nil, err // never fetched: the fetch's error says it
		}
		if o.OnFallback != nil {
			o.OnFallback(where, e.Version, e.Fetched, err)
		}
		archive, path = cached, ""
	}
	if path == "" {
		if err := checkArchive(archive); err != nil {
			return nil, err
		}
		if ch, err = loader.LoadArchive(bytes.NewReader(archive)); err != nil {
			return nil, err
		}
	} else if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		if ch, err = loader.LoadDir(path); err != nil {
			return nil, err
		}
		if archive, err = archiveOf(ch); err != nil {
			return nil, err
		}
	} else {
		if archive, err = readCapped(path, MaxChartSize); err != nil {
			return nil, err
		}
		if err := checkArchive(archive); err != nil {
			return nil, err
		}
		if ch, err = loader.LoadArchive(bytes.NewReader(archive)); err != nil {
			return nil, err
		}
		if remote && o.CacheDir != "" {
			if err := cacheStore(o.CacheDir, key, archive, ch.Metadata.Version); err != nil {
				return nil, fmt.Errorf("chart cache: %w", err)
			}
		}
	}
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	if t := ch.Metadata.Type; t != "" && t != "application" {
		return nil, fmt.Errorf("chart %s is a %s chart: only application charts can be rendered", ch.Name(), t)
	}
	ac, err := helmchart.NewAccessor(ch)
	if err != nil {
		return nil, err
	}
	if req := ac.MetaDependencies(); len(req) > 0 {
		if err := action.CheckDependencies(ch, req); err != nil {
			return nil, fmt.Errorf("chart %s: %w (run `helm dependency build` first)", ch.Name(), err)
		}
	}

	vals, err := mergeValues(o, getter.All(settings))
	if err != nil {
		return nil, err
	}
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true
	inst.ReleaseName = o.ReleaseName
	if inst.ReleaseName == "" {
		inst.ReleaseName = ch.Name()
	}
	inst.Namespace = o.Namespace
	inst.IncludeCRDs = true
	if o.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(o.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("--kube-version %q: %w", o.KubeVersion, err)
		}
		inst.KubeVersion = kv
	}
	inst.APIVersions = common.VersionSet(o.APIVersions)
	rr, err := inst.RunWithContext(ctx, ch, vals)
	if err != nil {
		return nil, err
	}
	rel, ok := rr.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("helm returned a release of type %T", rr)
	}
	if len(rel.Manifest) > MaxRendered {
		return nil, fmt.Errorf("chart %s renders more than %d bytes", ch.Name(), MaxRendered)
	}

	objs, err := parseRendered(rel.Manifest)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, h := range rel.Hooks {
		if slices.Contains(h.Events, release.HookTest) {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s (%s %s): a test hook", h.Path, h.Kind, h.Name))
			continue
		}
		hs, err := parseDocuments([]byte(h.Manifest), h.Path)
		if err != nil {
			return nil, err
		}
		objs = append(objs, hs...)
	}

	name, version := o.Name, o.PackageVersion
	if name == "" {
		name = ch.Name()
	}
	if version == "" {
		version = ch.Metadata.Version
	}
	res.Package = newPackage(name, o.Namespace, version)
	sum := sha256.Sum256(archive)
	res.Chart = &ChartInfo{Name: ch.Name(), Version: ch.Metadata.Version, Digest: "sha256:" + hex.EncodeToString(sum[:]), Source: where, Archive: archive, Metadata: ch.Metadata}
	vd, err := valuesDigest(vals)
	if err != nil {
		return nil, err
	}
	a := res.Package.Metadata.Annotations
	a[AnnotationChart], a[AnnotationChartVersion], a[AnnotationChartDigest], a[AnnotationChartSource], a[AnnotationValuesDigest] =
		res.Chart.Name, res.Chart.Version, res.Chart.Digest, res.Chart.Source, vd
	if err := addObjects(res, objs); err != nil {
		return nil, err
	}
	images, err := helmImages(ch.Metadata.Annotations[AnnotationHelmImages])
	if err != nil {
		return nil, fmt.Errorf("chart %s: Chart.yaml annotation %s: %w", ch.Name(), AnnotationHelmImages, err)
	}
	return finish(res, o, images)
}

// parseRendered reads Helm's rendered manifest stream ("# Source:" comments
// name each document's template).
func parseRendered(manifest string) ([]object, error) {
	var out []object
	for _, doc := range splitYAML([]byte(manifest)) {
		source := ""
		for _, line := range strings.Split(string(doc), "\n") {
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
				source = s
				break
			}
		}
		objs, err := parseDocuments(doc, source)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// helmImages reads the helm.sh/images annotation: a YAML list of
// references, or of objects with an "image" field (Artifact Hub's form).
func helmImages(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var list []any
	if err := yaml.Unmarshal([]byte(v), &list); err != nil {
		return nil, err
	}
	var out []string
	for i, x := range list {
		switch e := x.(type) {
		case string:
			out = append(out, e)
		case map[string]any:
			img, _ := e["image"].(string)
			if img == "" {
				return nil, fmt.Errorf("[%d]: no image", i)
			}
			out = append(out, img)
		default:
			return nil, fmt.Errorf("[%d]: not a reference or an object with an image", i)
		}
	}
	return out, nil
}

// archiveOf makes a reproducible archive of a chart folder's files (as
// Helm's loader read them, .helmignore honoured): sorted, in a folder named
// after the chart, mode 0644, time zero. Its digest names the chart.
func archiveOf(ch *chartv2.Chart) ([]byte, error) {
	files := append([]*common.File(nil), ch.Raw...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{Name: ch.Name() + "/" + f.Name, Mode: 0o644, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mergeValues merges the values as `helm template -f FILE... -f VALUES
// --set ...` does: the files in order, then Options.Values as the last
// file, then --set.
func mergeValues(o Options, getters getter.Providers) (map[string]any, error) {
	vopts := values.Options{ValueFiles: o.ValuesFiles}
	vals, err := vopts.MergeValues(getters)
	if err != nil {
		return nil, err
	}
	if len(o.Values) > MaxValuesSize {
		return nil, fmt.Errorf("values: more than %d bytes", MaxValuesSize)
	}
	if len(bytes.TrimSpace(o.Values)) > 0 {
		m, err := loader.LoadValues(bytes.NewReader(o.Values))
		if err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		vals = loader.MergeMaps(vals, m)
	}
	for _, s := range o.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	return vals, nil
}
