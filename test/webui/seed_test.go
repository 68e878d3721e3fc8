package webui

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/testenv"
)

// TestAgentUISeedUpload: the agent page's upload takes archives of the
// seed's tools: the phone app's kubepkg.tgz and kubepkg's plain .tar
// (after 2023), both imported.
func TestAgentUISeedUpload(t *testing.T) {
	testenv.Crpe(t)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	dir := t.TempDir()
	files := map[string]string{}
	for _, c := range []struct {
		layout  seedtest.Layout
		name    string
		version string
	}{{seedtest.PhoneApp, "phone.kubepkg.tgz", "1.0.0"}, {seedtest.Kubepkg2023, "kubepkg.kube.tar", "1.1.0"}} {
		p := seedtest.Demo("seed", c.version, false, 5)
		f := filepath.Join(dir, c.name)
		if err := os.WriteFile(f, seedtest.Write(c.layout, p), 0o644); err != nil {
			t.Fatal(err)
		}
		files[c.version] = f
	}

	b := NewBrowser(t, 2*time.Minute)
	b.Load(ag.URL + "/")
	b.Run("token", chromedp.Evaluate(`localStorage.setItem('crpe.agent.token', '`+ag.Token+`')`, nil))
	b.Load(ag.URL + "/")
	for _, v := range []string{"1.0.0", "1.1.0"} {
		b.Run("upload "+v,
			chromedp.SetUploadFiles(`#upload-file`, []string{files[v]}, chromedp.ByQuery),
			chromedp.Click(`#upload-submit`, chromedp.ByQuery))
		b.WaitText(`#upload-status`, "Imported seed "+v, 60*time.Second)
	}
	b.WaitText(`#packages article[data-name="seed"]`, "1.1.0", 10*time.Second)
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
}
