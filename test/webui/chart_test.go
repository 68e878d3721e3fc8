package webui

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/chart"
	"github.com/octohelm/crpe/internal/chart/charttest"
	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

// pick chooses value in the select sel as a person does (the page hears
// the change).
func (b *Browser) pick(sel, value string) {
	b.t.Helper()
	var got string
	b.Eval(`(() => { const s = document.querySelector(`+jsString(sel)+`); s.value = `+jsString(value)+`;
	  s.dispatchEvent(new Event('change', { bubbles: true })); return s.value; })()`, &got)
	if got != value {
		b.t.Fatalf("%s: no option %q", sel, value)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestPocketUIChart: the pocket's page adds a package from a Helm chart
// repository served on loopback: the repository's charts fill the chart
// picker and the chosen chart's versions (newest first) the version
// picker; a chart that does not render shows Helm's message inline and
// adds nothing; the chosen chart, an older version and values typed in
// the form give a package that is listed, rendered with those values. The
// form is usable at 360 px, with no console error and no failed request
// but the expected 400.
func TestPocketUIChart(t *testing.T) {
	testenv.Crpe(t)
	repo := charttest.Serve(t, charttest.App("1.0.0"), charttest.App("1.1.0"), charttest.Broken("broken", "0.1.0", "the broken chart says no"))
	// the upstream is never asked: nothing is synced here
	p := pt.StartPocket(t, "http://127.0.0.1:9")
	b := NewBrowser(t, 2*time.Minute)
	b.Load(p.URL + "/")

	b.Run("open the chart form and list the repository",
		chromedp.Click(`#add-chart summary`, chromedp.ByQuery),
		chromedp.SetValue(`#chart-repo`, repo, chromedp.ByQuery),
		chromedp.Click(`#chart-list`, chromedp.ByQuery))
	b.WaitText(`#chart-name`, "broken", 10*time.Second)
	var options []string
	b.Eval(`[...document.querySelectorAll('#chart-name option')].map((o) => o.value)`, &options)
	if strings.Join(options, ",") != "app,broken" {
		t.Errorf("chart picker: %v", options)
	}
	b.Eval(`[...document.querySelectorAll('#chart-version option')].map((o) => o.textContent)`, &options)
	if len(options) != 2 || !strings.HasPrefix(options[0], "1.1.0") || !strings.Contains(options[0], "app 1.27") || !strings.HasPrefix(options[1], "1.0.0") {
		t.Errorf("version picker: %v", options)
	}
	b.WaitText(`#chart-desc`, "A web application", 5*time.Second)
	b.CheckPhoneLayout("chart form")
	b.Shot("pocket-chart-form")
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("listing the charts: %v", probs)
	}

	// a chart that does not render: Helm's message, nothing added
	b.pick(`#chart-name`, "broken")
	b.Run("add the broken chart", chromedp.Click(`#chart-submit`, chromedp.ByQuery))
	b.WaitText(`#chart-errors`, "the broken chart says no", 30*time.Second)
	b.Problems() // the 400 answer is expected
	b.WaitText(`#packages`, "No package yet", 5*time.Second)

	// the app, its older version, values typed in
	b.pick(`#chart-name`, "app")
	b.pick(`#chart-version`, "1.0.0")
	b.Run("add the app",
		chromedp.SetValue(`#chart-values`, "replicas: 4\ngreeting: '{{ hi }}'\n", chromedp.ByQuery),
		chromedp.SetValue(`#chart-release`, "shop", chromedp.ByQuery),
		chromedp.Click(`#chart-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#pkg-app`, chromedp.ByQuery))
	b.WaitText(`#pkg-app .version`, "1.0.0", 10*time.Second)
	b.WaitText(`#pkg-app .meta`, "2 images", 10*time.Second) // nginx and the chart itself
	b.CheckToast("package from a chart", "Added app 1.0.0 from chart app 1.0.0")
	b.CheckPhoneLayout("package from a chart")
	b.Shot("pocket-chart")
	if probs := b.Problems(); len(probs) > 0 {
		t.Errorf("adding from a chart: %v", probs)
	}

	var v struct {
		Object struct {
			Spec struct {
				Manifests map[string]map[string]any `json:"manifests"`
			} `json:"spec"`
		} `json:"object"`
	}
	pt.Call(t, http.MethodGet, p.URL+"/api/v1/kubepkgs/app", nil).Must(t, http.StatusOK).JSON(t, &v)
	dep := v.Object.Spec.Manifests["shop-web.default.deployment"]
	cm := v.Object.Spec.Manifests["shop-config.default.configmap"]
	if dep == nil || cm == nil {
		t.Fatalf("manifests of the package: %v", v.Object.Spec.Manifests)
	}
	if r := dep["spec"].(map[string]any)["replicas"]; r != float64(4) {
		t.Errorf("replicas %v, want the value typed, 4", r)
	}
	if g := cm["data"].(map[string]any)["greeting"]; g != "{{ hi }}" {
		t.Errorf("greeting %v", g)
	}

	// an oci:// location: the chart pushed into docker-registry in Helm's
	// layout, its name and version typed, plain HTTP
	reg := testenv.StartDistribution(t)
	info, err := chart.InfoOf(readFile(t, charttest.Archive(t, t.TempDir(), charttest.App("1.1.0"))))
	if err != nil {
		t.Fatal(err)
	}
	art, err := chart.NewArtifact(info)
	if err != nil {
		t.Fatal(err)
	}
	testenv.PushBlob(t, reg.URL, "charts/app", testenv.Blob{Desc: ocispec.Descriptor{Digest: digest.FromBytes(art.Config), Size: int64(len(art.Config))}, Data: art.Config})
	testenv.PushBlob(t, reg.URL, "charts/app", testenv.Blob{Desc: ocispec.Descriptor{Digest: digest.FromBytes(art.Layer), Size: int64(len(art.Layer))}, Data: art.Layer})
	testenv.PushManifest(t, reg.URL, "charts/app", "1.1.0", testenv.Blob{Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: art.Digest(), Size: int64(len(art.Manifest))}, Data: art.Manifest})
	b.Run("open the chart form again", chromedp.Click(`#add-chart summary`, chromedp.ByQuery))
	b.Run("an oci:// location",
		chromedp.SetValue(`#chart-repo`, "oci://"+reg.Addr+"/charts", chromedp.ByQuery),
		chromedp.Evaluate(`document.getElementById('chart-repo').dispatchEvent(new Event('input'))`, nil))
	var hidden bool
	b.Eval(`document.getElementById('chart-list-row').classList.contains('hidden') && !document.getElementById('chart-oci').classList.contains('hidden')`, &hidden)
	if !hidden {
		t.Errorf("with an oci:// location, the name and version fields are not the ones shown")
	}
	b.CheckPhoneLayout("chart form, oci://")
	b.Run("add from the registry",
		chromedp.SetValue(`#chart-oci-name`, "app", chromedp.ByQuery),
		chromedp.SetValue(`#chart-oci-version`, "1.1.0", chromedp.ByQuery),
		chromedp.Click(`#chart-oci-plain`, chromedp.ByQuery),
		chromedp.Click(`#chart-submit`, chromedp.ByQuery))
	b.WaitText(`#pkg-app .version`, "1.1.0", 30*time.Second)
	if probs := b.Problems(); len(probs) > 0 {
		t.Errorf("adding from an oci:// location: %v", probs)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
