package pocketapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/chart"
	"github.com/octohelm/crpe/internal/chart/charttest"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/pocketapi"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
)

// apiErrors is the error body.
type apiErrors struct {
	Errors []struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Detail  map[string]string `json:"detail"`
	} `json:"errors"`
}

// call sends a request with a JSON body (nil: none) and returns the status
// and the body.
func call(ctx context.Context, t *testing.T, method, u string, body any, hdr ...string) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = strings.NewReader(string(j))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// wantError checks an error answer: its status, code, the field it names
// (if any) and a part of its message.
func wantError(t *testing.T, what string, status int, body []byte, wantStatus int, code, field, msg string) {
	t.Helper()
	var e apiErrors
	_ = json.Unmarshal(body, &e)
	if status != wantStatus || len(e.Errors) == 0 || e.Errors[0].Code != code ||
		(field != "" && e.Errors[0].Detail["field"] != field) || !strings.Contains(e.Errors[0].Message, msg) {
		t.Errorf("%s: %d %s, want %d %s field %q with %q", what, status, body, wantStatus, code, field, msg)
	}
}

// TestChartsList: GET /api/v1/charts lists a chart repository's charts
// with their versions, newest first, from its index.yaml read by Helm's
// repo package; a URL that is no repository, an index over the cap and a
// repository that cannot be reached are told apart; the call needs what a
// change needs (it makes the pocket reach a URL).
func TestChartsList(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	repoURL := charttest.Serve(t, charttest.App("1.0.0"), charttest.App("2.0.0"), charttest.App("1.1.0"), charttest.Broken("broken", "0.1.0", "boom"))
	p := newExportPocket(ctx, t, http.DefaultTransport, false)
	list := p.url + "/api/v1/charts?repo=" + url.QueryEscape(repoURL)

	status, body := call(ctx, t, http.MethodGet, list, nil)
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	var got struct {
		Repo   string            `json:"repo"`
		Charts []chart.RepoChart `json:"charts"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Repo != repoURL || len(got.Charts) != 2 || got.Charts[0].Name != "app" || got.Charts[1].Name != "broken" {
		t.Fatalf("charts: %s", body)
	}
	var versions []string
	for _, v := range got.Charts[0].Versions {
		versions = append(versions, v.Version)
	}
	if strings.Join(versions, ",") != "2.0.0,1.1.0,1.0.0" || got.Charts[0].Description != "A web application" || got.Charts[0].Versions[0].AppVersion != "1.27" {
		t.Errorf("app: %+v", got.Charts[0])
	}

	// anonymous from another host: refused, as a change is
	status, body = call(ctx, t, http.MethodGet, list, nil, "Host", "pocket.example")
	wantError(t, "anonymous", status, body, http.StatusUnauthorized, "UNAUTHORIZED", "", "")

	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts", nil)
	wantError(t, "no repo", status, body, http.StatusBadRequest, "INVALID", "repo", "required")
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts?repo=file:///etc", nil)
	wantError(t, "a file URL", status, body, http.StatusBadRequest, "INVALID", "repo", "http")
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts?repo="+url.QueryEscape(repoURL+"/nothere"), nil)
	wantError(t, "not a repository", status, body, http.StatusBadRequest, "INVALID", "repo", "404")

	junk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big/index.yaml" {
			chunk := []byte(strings.Repeat("# padding\n", 6554)) // 64 KiB
			for i := 0; i <= chart.MaxIndexSize/len(chunk); i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		_, _ = io.WriteString(w, "apiVersion: v1\nentries: [not, a, map]\n")
	}))
	defer junk.Close()
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts?repo="+url.QueryEscape(junk.URL+"/big"), nil)
	wantError(t, "an index over the cap", status, body, http.StatusBadRequest, "INVALID", "repo", "more than")
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts?repo="+url.QueryEscape(junk.URL), nil)
	wantError(t, "an invalid index", status, body, http.StatusBadRequest, "INVALID", "repo", "index.yaml")

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/charts?repo="+url.QueryEscape(gone.URL), nil)
	wantError(t, "unreachable", status, body, http.StatusBadGateway, "SOURCE_UNAVAILABLE", "", "cannot be reached")
}

// TestChartsRender: POST /api/v1/charts/render renders a chart of a
// repository with the values given (merged over the chart's) and adds the
// package to the library: its objects are the rendered ones, its images
// those of its pod templates, its provenance recorded; a version
// constraint picks the newest match; name, version and platforms can be
// set. The chart itself is kept in the pocket's cache and pinned in
// spec.images (unless noChartArtifact). A chart that does not render, values that do not parse, a chart or
// version the repository lacks and bad fields answer 400 with Helm's
// message and store nothing; an unreachable repository 502; an oversized
// body 413.
func TestChartsRender(t *testing.T) {
	ctx := pt.Context(t, 120*time.Second)
	repoURL := charttest.Serve(t, charttest.App("1.0.0"), charttest.App("1.1.0"), charttest.App("2.0.0"), charttest.Broken("broken", "0.1.0", "the broken chart says no"))
	p := newExportPocket(ctx, t, http.DefaultTransport, false)
	render := p.url + "/api/v1/charts/render"

	status, body := call(ctx, t, http.MethodPost, render, map[string]any{
		"repo": repoURL, "chart": "app", "version": "^1.0", "releaseName": "shop", "namespace": "apps",
		"values": "replicas: 3\ngreeting: '{{ not a template }}'\n"})
	if status != http.StatusCreated {
		t.Fatalf("render: %d %s", status, body)
	}
	var res struct {
		Items []struct {
			Name, Version, Namespace string
		} `json:"items"`
		Chart struct {
			Name, Version, Source string
		} `json:"chart"`
		Images []chart.ImageSource `json:"images"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].Name != "app" || res.Items[0].Version != "1.1.0" || res.Items[0].Namespace != "apps" ||
		res.Chart.Version != "1.1.0" || !strings.Contains(res.Chart.Source, repoURL) {
		t.Fatalf("render answered %s", body)
	}
	if len(res.Images) != 2 || res.Images[0].Ref != "docker.io/library/nginx:1.27-alpine" || res.Images[1].Ref != "crpe.local/charts/app:1.1.0" {
		t.Errorf("images: %+v", res.Images)
	}
	pkg := getPackage(ctx, t, p.url, "app")
	// the chart travels with the package: kept in the pocket's cache,
	// pinned in spec.images, counted as cached
	if d := pkg.Spec.Images["crpe.local/charts/app:1.1.0"]; !strings.HasPrefix(d, "sha256:") || pkg.Metadata.Annotations[chart.AnnotationChartArtifact] != "crpe.local/charts/app:1.1.0@"+d {
		t.Errorf("chart artifact: %q, %v", d, pkg.Metadata.Annotations)
	}
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/kubepkgs/app", nil)
	var view struct {
		Images []struct {
			Ref                string
			Blobs, CachedBlobs int
		} `json:"images"`
	}
	if err := json.Unmarshal(body, &view); err != nil || status != http.StatusOK {
		t.Fatalf("view: %d %s", status, body)
	}
	for _, im := range view.Images {
		if im.Ref == "crpe.local/charts/app:1.1.0" && (im.Blobs == 0 || im.CachedBlobs != im.Blobs) {
			t.Errorf("the chart artifact is not cached: %+v", im)
		}
	}
	dep := pkg.Spec.Manifests["shop-web.apps.deployment"]
	cm := pkg.Spec.Manifests["shop-config.apps.configmap"]
	if dep == nil || cm == nil {
		t.Fatalf("manifests: %v", keysOf(pkg.Spec.Manifests))
	}
	if spec := dep["spec"].(map[string]any); spec["replicas"].(json.Number).String() != "3" {
		t.Errorf("replicas: %v", spec["replicas"])
	}
	data := cm["data"].(map[string]any)
	if data["release"] != "shop" || data["namespace"] != "apps" || data["greeting"] != "{{ not a template }}" {
		t.Errorf("configmap data: %v", data)
	}
	if _, ok := pkg.Spec.Manifests["shop-web.apps.service"]; !ok || len(pkg.Spec.Manifests) != 3 {
		t.Errorf("manifests: %v", keysOf(pkg.Spec.Manifests))
	}
	a := pkg.Metadata.Annotations
	if a[chart.AnnotationChart] != "app" || a[chart.AnnotationChartVersion] != "1.1.0" || !strings.HasPrefix(a[chart.AnnotationChartDigest], "sha256:") || a[chart.AnnotationValuesDigest] == "" {
		t.Errorf("annotations: %v", a)
	}

	// the newest by default, named and versioned as asked, for arm64 only
	status, body = call(ctx, t, http.MethodPost, render, map[string]any{
		"repo": repoURL, "chart": "app", "name": "shop", "packageVersion": "3.0.0", "platforms": "linux/arm64", "noChartArtifact": true})
	if status != http.StatusCreated {
		t.Fatalf("render 2: %d %s", status, body)
	}
	shop := getPackage(ctx, t, p.url, "shop")
	if shop.Spec.Version != "3.0.0" || shop.Metadata.Annotations[chart.AnnotationChartVersion] != "2.0.0" || shop.Metadata.Annotations[kubepkg.AnnotationPlatform] != "linux/arm64" {
		t.Errorf("shop: %s %v", shop.Spec.Version, shop.Metadata.Annotations)
	}
	if len(shop.Spec.Images) != 1 {
		t.Errorf("noChartArtifact: images %v", shop.Spec.Images)
	}
	if _, ok := shop.Spec.Manifests["app-web.default.deployment"]; !ok {
		t.Errorf("release name and namespace by default: %v", keysOf(shop.Spec.Manifests))
	}

	refused := []struct {
		what   string
		body   any
		status int
		code   string
		field  string
		msg    string
	}{
		{"a chart that does not render", map[string]any{"repo": repoURL, "chart": "broken"}, 400, "INVALID", "chart", "the broken chart says no"},
		{"values that do not parse", map[string]any{"repo": repoURL, "chart": "app", "values": "replicas: [1\n"}, 400, "INVALID", "values", "values"},
		{"a chart the repository lacks", map[string]any{"repo": repoURL, "chart": "nope"}, 400, "INVALID", "chart", "nope"},
		{"a version the repository lacks", map[string]any{"repo": repoURL, "chart": "app", "version": "9.9.9"}, 400, "INVALID", "chart", "9.9.9"},
		{"a path for a chart", map[string]any{"repo": repoURL, "chart": "../../etc"}, 400, "INVALID", "chart", "not a chart name"},
		{"no repository", map[string]any{"chart": "app"}, 400, "INVALID", "repo", "required"},
		{"a file repository", map[string]any{"repo": "file:///tmp", "chart": "app"}, 400, "INVALID", "repo", "oci://"},
		{"a bad namespace", map[string]any{"repo": repoURL, "chart": "app", "namespace": "Apps!"}, 400, "INVALID", "namespace", "DNS-1123"},
		{"a bad package name", map[string]any{"repo": repoURL, "chart": "app", "name": "Not_A_Name"}, 400, "INVALID", "metadata.name", "DNS-1123"},
		{"bad platforms", map[string]any{"repo": repoURL, "chart": "app", "platforms": "linux"}, 400, "INVALID", "platforms", ""},
		{"an unknown field", map[string]any{"repo": repoURL, "chart": "app", "valuesFile": "/etc/passwd"}, 400, "INVALID", "", "unknown field"},
		{"values over the cap", map[string]any{"repo": repoURL, "chart": "app", "values": "x: " + strings.Repeat("y", pocketapi.MaxChartRequest)}, 413, "TOO_LARGE", "", "values at most"},
		{"values just over the cap", map[string]any{"repo": repoURL, "chart": "app", "values": "x: " + strings.Repeat("y", chart.MaxValuesSize-2)}, 400, "INVALID", "values", "more than"},
	}
	for _, c := range refused {
		status, body := call(ctx, t, http.MethodPost, render, c.body)
		wantError(t, c.what, status, body, c.status, c.code, c.field, c.msg)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	status, body = call(ctx, t, http.MethodPost, render, map[string]any{"repo": gone.URL, "chart": "app"})
	wantError(t, "an unreachable repository", status, body, http.StatusBadGateway, "SOURCE_UNAVAILABLE", "", "")

	// nothing else was stored
	status, body = call(ctx, t, http.MethodGet, p.url+"/api/v1/kubepkgs", nil)
	var list struct {
		Items []struct{ Name string } `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil || status != 200 {
		t.Fatalf("list: %d %s", status, body)
	}
	if len(list.Items) != 2 || list.Items[0].Name != "app" || list.Items[1].Name != "shop" {
		t.Errorf("library: %s", body)
	}

	// a change: anonymous from another host is refused
	status, body = call(ctx, t, http.MethodPost, render, map[string]any{"repo": repoURL, "chart": "app"}, "Host", "pocket.example")
	wantError(t, "anonymous", status, body, http.StatusUnauthorized, "UNAUTHORIZED", "", "")
}

func getPackage(ctx context.Context, t *testing.T, base, name string) *kubepkg.KubePkg {
	t.Helper()
	status, body := call(ctx, t, http.MethodGet, base+"/api/v1/kubepkgs/"+name, nil)
	if status != http.StatusOK {
		t.Fatalf("package %s: %d %s", name, status, body)
	}
	var v struct {
		Object json.RawMessage `json:"object"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	pkgs, err := kubepkg.Parse(v.Object)
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("package %s: %v", name, err)
	}
	return pkgs[0]
}

func keysOf(m map[string]kubepkg.Manifest) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
