package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/octohelm/crpe/internal/registrypush"
)

// TestMirrorConfigRegistryMode: in registry mode the agent's mirror-config
// points the nodes at the site registry, over plain HTTP when the agent
// reaches it so (--plain-http), else HTTPS, in both formats.
func TestMirrorConfigRegistryMode(t *testing.T) {
	for _, plain := range []bool{false, true} {
		tg, err := registrypush.ParseTarget("reg.lan:5000/crpe")
		if err != nil {
			t.Fatal(err)
		}
		u := &uiAPI{registry: &regMode{push: registrypush.Options{Target: tg, PlainHTTP: plain}}}
		want := "https://reg.lan:5000"
		if plain {
			want = "http://reg.lan:5000"
		}
		for _, format := range []string{"containerd", "k3s"} {
			rec := httptest.NewRecorder()
			u.mirrorConfig(rec, httptest.NewRequest(http.MethodGet, "/api/v1/mirror-config?hosts=docker.io&format="+format, nil))
			body := rec.Body.String()
			if rec.Code != http.StatusOK || !strings.Contains(body, want) || (plain && strings.Contains(body, "https://reg.lan")) {
				t.Errorf("plain-http %v, %s: %d\n%s\nwant %s", plain, format, rec.Code, body, want)
			}
		}
	}
}
