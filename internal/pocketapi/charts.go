package pocketapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/octohelm/crpe/internal/chart"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// Bounds of the chart endpoints.
const (
	// MaxChartRequest bounds the body of POST /api/v1/charts/render: the
	// values (chart.MaxValuesSize) and the rest.
	MaxChartRequest = chart.MaxValuesSize + 64<<10
	// chartListTimeout bounds GET /api/v1/charts (reaching the repository
	// and reading its index).
	chartListTimeout = 30 * time.Second
	// chartRenderTimeout bounds a render, the chart's download included.
	chartRenderTimeout = 3 * time.Minute
)

// chartName is a chart's name in a repository (Helm's rule for names, no
// path).
var chartName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ChartRequest is the body of POST /api/v1/charts/render.
type ChartRequest struct {
	// Repo is a chart repository URL (http, https) or an OCI location
	// (oci://host/path, the chart's name appended).
	Repo string `json:"repo"`
	// Chart is the chart's name (or a whole oci:// reference, Repo empty).
	Chart string `json:"chart"`
	// Version is the chart's version or a constraint (default: the
	// newest).
	Version string `json:"version,omitempty"`
	// Values is a values document, YAML or JSON.
	Values      string `json:"values,omitempty"`
	ReleaseName string `json:"releaseName,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	// Name and PackageVersion name the package (default: the chart's).
	Name           string `json:"name,omitempty"`
	PackageVersion string `json:"packageVersion,omitempty"`
	// Platforms sets the package's platforms (os/arch,...).
	Platforms string `json:"platforms,omitempty"`
	// Images the manifests do not name (an operator's operands).
	Images []string `json:"images,omitempty"`
	// KubeVersion and APIVersions shape .Capabilities.
	KubeVersion string   `json:"kubeVersion,omitempty"`
	APIVersions []string `json:"apiVersions,omitempty"`
	// Username and Password reach the repository; PlainHTTP an OCI
	// registry over plain HTTP.
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	PlainHTTP bool   `json:"plainHTTP,omitempty"`
	// NoChartArtifact leaves the chart itself out of the package (by
	// default it is kept in the pocket's cache as crpe.local/charts/NAME:
	// VERSION and pinned in spec.images, as `crpe package` does).
	NoChartArtifact bool `json:"noChartArtifact,omitempty"`
}

func chartInvalid(w http.ResponseWriter, r *http.Request, field, msg string) {
	httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", msg, map[string]string{"field": field})
}

// source checks the request and tells what to render: the source and the
// options of chart.Package. Only remote charts are rendered: a chart
// repository (by name) or an OCI reference, never a path on the pocket.
func (q *ChartRequest) source() (string, chart.Options, string, string) {
	o := chart.Options{Version: strings.TrimSpace(q.Version), Values: []byte(q.Values), ReleaseName: strings.TrimSpace(q.ReleaseName),
		Namespace: strings.TrimSpace(q.Namespace), Name: strings.TrimSpace(q.Name), PackageVersion: strings.TrimSpace(q.PackageVersion),
		Images: q.Images, KubeVersion: strings.TrimSpace(q.KubeVersion), APIVersions: q.APIVersions,
		Username: q.Username, Password: q.Password, PlainHTTP: q.PlainHTTP}
	repoURL, name := strings.TrimSpace(q.Repo), strings.TrimSpace(q.Chart)
	if o.Namespace != "" && !kubepkg.IsDNS1123Label(o.Namespace) {
		return "", o, "namespace", fmt.Sprintf("%q is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)", o.Namespace)
	}
	if len(q.Values) > chart.MaxValuesSize {
		return "", o, "values", fmt.Sprintf("values: more than %d bytes", chart.MaxValuesSize)
	}
	switch {
	case repoURL == "" && strings.HasPrefix(name, "oci://"):
		if _, err := url.Parse(name); err != nil || len(name) <= len("oci://") {
			return "", o, "chart", fmt.Sprintf("%q is not an oci:// chart reference", name)
		}
		return name, o, "", ""
	case repoURL == "":
		return "", o, "repo", "a chart repository URL (http:// or https://) or an oci:// location is required"
	case name == "":
		return "", o, "chart", "the chart's name is required"
	case !chartName.MatchString(name):
		return "", o, "chart", fmt.Sprintf("%q is not a chart name (letters, digits, '.', '-' and '_')", name)
	}
	u, err := url.Parse(repoURL)
	switch {
	case err != nil:
		return "", o, "repo", fmt.Sprintf("%q is not a URL: %v", repoURL, err)
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "oci":
		return "", o, "repo", fmt.Sprintf("%q: want an http://, https:// or oci:// URL", repoURL)
	case u.Host == "":
		return "", o, "repo", fmt.Sprintf("%q names no host", repoURL)
	case u.Scheme == "oci":
		return strings.TrimSuffix(repoURL, "/") + "/" + name, o, "", ""
	}
	o.Repo = repoURL
	return name, o, "", ""
}

// renderChart renders a chart with Helm's SDK (chart.Package, as `crpe
// package` does) and adds the package to the library.
func (a *API) renderChart(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxChartRequest))
	if err != nil {
		httpx.WriteError(w, r, http.StatusRequestEntityTooLarge, "TOO_LARGE", fmt.Sprintf("the request is over %d bytes (values at most %d)", MaxChartRequest, chart.MaxValuesSize), nil)
		return
	}
	var q ChartRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "invalid JSON body: "+err.Error(), nil)
		return
	}
	src, o, field, msg := q.source()
	if field != "" {
		chartInvalid(w, r, field, msg)
		return
	}
	if q.Platforms != "" {
		if _, err := oci.ParsePlatforms(q.Platforms); err != nil {
			chartInvalid(w, r, "platforms", err.Error())
			return
		}
	}
	o.CacheDir = filepath.Join(a.st.Dir, "charts")
	o.OnFallback = func(source, version string, fetched time.Time, err error) {
		a.log.Warn("the chart's source cannot be reached: using the chart cached in the data folder",
			"source", source, "version", version, "cached", fetched.Format(time.RFC3339), "error", err)
	}

	// one render at a time: Helm's repository cache is shared, and a
	// render is heavy for a phone
	a.chartMu.Lock()
	defer a.chartMu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), chartRenderTimeout)
	defer cancel()
	res, err := chart.Package(ctx, src, o)
	if err != nil {
		writeChartError(w, r, src, err)
		return
	}
	if q.Platforms != "" {
		res.Package.Metadata.Annotations[kubepkg.AnnotationPlatform] = q.Platforms
	}
	if res.Chart != nil && !q.NoChartArtifact {
		// the chart travels with its package: kept in the cache, pinned
		if err := chart.KeepWith(res, "the pocket's cache", func(art *chart.Artifact) error { return chart.Keep(ctx, a.st.Store, a.st.DB, art) }); err != nil {
			internal(w, r, err)
			return
		}
	}
	views, errs := a.store(r.Context(), []*kubepkg.KubePkg{res.Package}, sourceRequest{})
	if len(errs) > 0 {
		httpx.WriteErrors(w, r, http.StatusBadRequest, errs...)
		return
	}
	a.log.Info("package rendered from a chart", "kubepkg", res.Package.Metadata.Name, "chart", res.Chart.Name, "chartVersion", res.Chart.Version, "source", res.Chart.Source)
	writeJSON(w, http.StatusCreated, map[string]any{"items": views, "chart": res.Chart, "images": res.Images, "skipped": res.Skipped})
}

// keepChartArtifact keeps a chart archive (the body) as the artifact crpe
// package lists in a package (POST /api/v1/charts/artifacts): crpe package
// asks the pocket that holds the data folder to keep it.
func (a *API) keepChartArtifact(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, chart.MaxChartSize))
	if err != nil {
		httpx.WriteError(w, r, http.StatusRequestEntityTooLarge, "TOO_LARGE", fmt.Sprintf("a chart archive is at most %d bytes", chart.MaxChartSize), nil)
		return
	}
	info, err := chart.InfoOf(body)
	if err != nil {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), map[string]string{"field": "chart"})
		return
	}
	art, err := chart.NewArtifact(info)
	if err == nil {
		err = chart.Keep(r.Context(), a.st.Store, a.st.DB, art)
	}
	if err != nil {
		internal(w, r, fmt.Errorf("keeping the chart: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"ref": art.Ref, "digest": string(art.Digest())})
}

// unreachable tells a repository or registry that could not be reached
// from one that answered.
func unreachable(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded)
}

// writeChartError answers a render's failure: 502 when the chart's
// repository could not be reached, else 400 with Helm's message (a chart
// or version not found, a chart that does not render, values that do not
// parse).
func writeChartError(w http.ResponseWriter, r *http.Request, src string, err error) {
	if unreachable(err) {
		httpx.WriteError(w, r, http.StatusBadGateway, "SOURCE_UNAVAILABLE", err.Error(), map[string]string{"source": src})
		return
	}
	var fe *kubepkg.FieldError
	if errors.As(err, &fe) {
		httpx.WriteErrors(w, r, http.StatusBadRequest, fieldErrors(err, "")...)
		return
	}
	field := "chart"
	if strings.HasPrefix(err.Error(), "values: ") || strings.Contains(err.Error(), "--set data") {
		field = "values"
	}
	httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), map[string]string{"field": field, "source": src})
}

// listCharts lists a chart repository's charts and versions
// (GET /api/v1/charts?repo=URL).
func (a *API) listCharts(w http.ResponseWriter, r *http.Request) {
	repoURL := strings.TrimSpace(r.URL.Query().Get("repo"))
	if repoURL == "" {
		chartInvalid(w, r, "repo", "the query parameter repo (a chart repository URL) is required")
		return
	}
	tmp := filepath.Join(a.st.Dir, "charts")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		internal(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), chartListTimeout)
	defer cancel()
	charts, err := chart.ListRepo(ctx, repoURL, chart.RepoOptions{Client: a.client, TempDir: tmp})
	if err != nil {
		var re *chart.RepoError
		if errors.As(err, &re) {
			chartInvalid(w, r, "repo", err.Error())
			return
		}
		httpx.WriteError(w, r, http.StatusBadGateway, "SOURCE_UNAVAILABLE", fmt.Sprintf("chart repository %s cannot be reached: %v", repoURL, err), map[string]string{"source": repoURL})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"repo": repoURL, "charts": charts})
}
