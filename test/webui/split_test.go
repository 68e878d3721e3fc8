package webui

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

// TestAgentUISplit: the agent's page takes the parts of a split archive
// (crpe export --split) as several chosen files. A missing part is refused
// on the page, naming it, before any byte is sent; a corrupt part is
// refused by the agent (its digest, from the parts file sent first),
// naming it, and nothing is published; all the parts with their parts file
// import, and so do the parts alone (ordered by their .NNN suffix), chosen
// in any order.
func TestAgentUISplit(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 256*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})

	archive := demoArchive(t, p.URL)
	// the archive split in parts of 128 KiB, as crpe export --split writes
	// them (the same writer)
	dir := t.TempDir()
	name := "demo-1.0.0.kubepkg.tgz"
	w, err := parts.Create(filepath.Join(dir, name), 128*kib, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(archive); err != nil {
		t.Fatal(err)
	}
	m, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Parts) < 3 {
		t.Fatalf("%d parts, want at least 3", len(m.Parts))
	}
	list := filepath.Join(dir, name+".parts")
	var all []string // in reverse order: the page orders them
	for i := len(m.Parts) - 1; i >= 0; i-- {
		all = append(all, filepath.Join(dir, m.Parts[i].Name))
	}
	// a copy with part 001 corrupt
	bad := t.TempDir()
	for _, pth := range append([]string{list}, all...) {
		b, _ := os.ReadFile(pth)
		if filepath.Base(pth) == m.Parts[1].Name {
			b[len(b)/2] ^= 0x20
		}
		_ = os.WriteFile(filepath.Join(bad, filepath.Base(pth)), b, 0o644)
	}
	var badAll []string
	for _, pth := range all {
		badAll = append(badAll, filepath.Join(bad, filepath.Base(pth)))
	}
	published := func() []string {
		var l struct {
			Items []struct{ Name, Version string } `json:"items"`
		}
		r := pt.Call(t, "GET", ag.URL+"/api/v1/kubepkgs", nil)
		r.Must(t, 200)
		_ = json.Unmarshal(r.Body, &l)
		var out []string
		for _, it := range l.Items {
			out = append(out, it.Name+"@"+it.Version)
		}
		return out
	}

	b := NewBrowser(t, 2*time.Minute)
	b.Load(ag.URL + "/")
	b.WaitText(`#packages`, "No package imported yet", 5*time.Second)

	// a part missing: refused on the page, before a byte is sent
	missing := m.Parts[2].Name
	var chosen []string
	for _, pth := range all {
		if filepath.Base(pth) != missing {
			chosen = append(chosen, pth)
		}
	}
	b.Run("choose all parts but one", chromedp.SetUploadFiles(`#upload-file`, append([]string{list}, chosen...), chromedp.ByQuery))
	b.WaitText(`#upload-status`, "files", 5*time.Second)
	b.Run("upload", chromedp.Click(`#upload-submit`, chromedp.ByQuery))
	b.WaitText(`#upload-errors`, "Part "+missing+" is missing", 10*time.Second)
	if b.Requested("PUT ") {
		t.Errorf("an upload with a part missing was sent")
	}

	// a corrupt part: the agent finds it by its digest and names it
	b.Run("choose the parts, one corrupt", chromedp.SetUploadFiles(`#upload-file`, append(badAll, filepath.Join(bad, name+".parts")), chromedp.ByQuery))
	b.WaitText(`#upload-status`, "files", 5*time.Second)
	b.Run("upload the corrupt parts",
		chromedp.Click(`#upload-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#token-dialog[open]`, chromedp.ByQuery),
		chromedp.SetValue(`#token-input`, ag.Token, chromedp.ByQuery),
		chromedp.Click(`#token-dialog button[type=submit]`, chromedp.ByQuery))
	txt := b.WaitText(`#upload-errors`, "part "+m.Parts[1].Name+": corrupt", 30*time.Second)
	t.Logf("the page says: %s", txt)
	if probs := b.Problems(); len(probs) != 1 || !strings.Contains(probs[0], "HTTP 400") {
		t.Errorf("want the agent's 400 only, got %v", probs)
	}
	if got := published(); len(got) != 0 {
		t.Fatalf("after a refused upload the agent publishes %v", got)
	}

	// every part and the parts file, in any order
	b.Run("choose every part and the parts file", chromedp.SetUploadFiles(`#upload-file`, append(all, list), chromedp.ByQuery))
	b.WaitText(`#upload-status`, "files", 5*time.Second)
	b.Run("upload the parts", chromedp.Click(`#upload-submit`, chromedp.ByQuery))
	b.WaitText(`#upload-status`, "Imported demo 1.0.0", 60*time.Second)
	b.WaitText(`#packages article[data-name="demo"]`, "1.0.0", 10*time.Second)
	if got := published(); len(got) != 1 || got[0] != "demo@1.0.0" {
		t.Errorf("the agent publishes %v, want demo@1.0.0", got)
	}
	// the parts alone, ordered by their suffix (the same version again)
	b.Run("choose the parts alone", chromedp.SetUploadFiles(`#upload-file`, all, chromedp.ByQuery))
	b.WaitText(`#upload-status`, "files", 5*time.Second)
	b.Run("upload the parts alone", chromedp.Click(`#upload-submit`, chromedp.ByQuery))
	b.WaitText(`#upload-status`, "Imported demo 1.0.0", 60*time.Second)
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	b.CheckPhoneLayout("agent after a split upload")
}

// demoArchive adds package demo 1.0.0 (docker.io/library/app:1.0,
// linux/amd64) to the pocket at url and returns its kubepkg.tgz.
func demoArchive(t *testing.T, url string) []byte {
	t.Helper()
	pt.Call(t, "POST", url+"/api/v1/kubepkgs", pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")).Must(t, 201)
	return pt.Call(t, "GET", url+"/api/v1/kubepkgs/demo/kubepkg.tgz", nil).Must(t, 200).Body
}
