// Package charttest makes Helm charts and chart repositories for tests,
// with Helm's own SDK: chart archives as `helm package` writes them
// (chartutil.Save) and index.yaml as `helm repo index` writes it
// (repo.IndexDirectory), served over loopback.
package charttest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	repo "helm.sh/helm/v4/pkg/repo/v1"
)

// Chart is a chart to write.
type Chart struct {
	Name, Version, AppVersion, Description string
	// Values is values.yaml.
	Values string
	// Templates are the files under templates/, by name.
	Templates map[string]string
}

// App is a small application chart: a Deployment of .Values.image with
// .Values.replicas, a Service, and a ConfigMap naming the release, its
// namespace and .Values.greeting.
func App(version string) Chart {
	return Chart{Name: "app", Version: version, AppVersion: "1.27", Description: "A web application",
		Values: "replicas: 1\nimage: docker.io/library/nginx:1.27-alpine\ngreeting: hello\n",
		Templates: map[string]string{
			"deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels: {app: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers:
        - name: web
          image: {{ .Values.image | quote }}
`,
			"service.yaml": `apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80}]
`,
			"configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  release: {{ .Release.Name | quote }}
  namespace: {{ .Release.Namespace | quote }}
  greeting: {{ .Values.greeting | quote }}
`,
		}}
}

// Broken is a chart whose templates fail to render with Helm's message
// "message".
func Broken(name, version, message string) Chart {
	return Chart{Name: name, Version: version, Description: "A chart that does not render",
		Templates: map[string]string{"fail.yaml": `{{ fail "` + message + `" }}`}}
}

// Archive writes c as a chart archive into dir (as `helm package` does)
// and returns its path.
func Archive(t testing.TB, dir string, c Chart) string {
	t.Helper()
	ch := &chartv2.Chart{Metadata: &chartv2.Metadata{APIVersion: chartv2.APIVersionV2, Name: c.Name, Version: c.Version,
		AppVersion: c.AppVersion, Description: c.Description, Type: "application"}}
	now := time.Now()
	ch.ModTime = now
	if c.Values != "" {
		ch.Raw = append(ch.Raw, &common.File{Name: chartutil.ValuesfileName, Data: []byte(c.Values), ModTime: now})
	}
	names := make([]string, 0, len(c.Templates))
	for n := range c.Templates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ch.Templates = append(ch.Templates, &common.File{Name: "templates/" + n, Data: []byte(c.Templates[n]), ModTime: now})
	}
	p, err := chartutil.Save(ch, dir)
	if err != nil {
		t.Fatalf("chart %s %s: %v", c.Name, c.Version, err)
	}
	return p
}

// WriteRepo writes the charts' archives into dir and an index.yaml naming
// them under baseURL (as `helm repo index --url` does).
func WriteRepo(t testing.TB, dir, baseURL string, charts ...Chart) {
	t.Helper()
	for _, c := range charts {
		Archive(t, dir, c)
	}
	idx, err := repo.IndexDirectory(dir, baseURL)
	if err != nil {
		t.Fatal(err)
	}
	idx.SortEntries()
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Serve serves a chart repository of charts on loopback until the test
// ends and returns its URL.
func Serve(t testing.TB, charts ...Chart) string {
	t.Helper()
	dir := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	WriteRepo(t, dir, srv.URL, charts...)
	if _, err := os.Stat(filepath.Join(dir, "index.yaml")); err != nil {
		t.Fatal(err)
	}
	return srv.URL
}

// CronTabCRD is a CustomResourceDefinition the tests' charts carry in their
// crds/ folder: stable.example.com's CronTab (its objects kept as they are).
const CronTabCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  names: {kind: CronTab, plural: crontabs, singular: crontab}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`
