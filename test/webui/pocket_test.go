package webui

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

const kib = 1 << 10

// TestPocketUI drives the pocket's page as a person on a phone would: a
// fresh start with no console error and no failing request, small and
// quick; an invalid package refused inline; a package added, synced to
// "Synced" with progress, downloaded and verified; an agent added and the
// package sent to it, then a second version sent with the delta's saving
// shown; the agent's version compared; the other screens.
func TestPocketUI(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 512*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})
	b := NewBrowser(t, 3*time.Minute)

	// fresh start
	ms := b.Load(p.URL + "/")
	sent := b.Transferred()
	pt.Figure(t, "pocket_first_load_bytes", sent)
	pt.Figure(t, "pocket_first_load_ms", ms)
	if sent > 300*kib {
		t.Errorf("the first load transferred %.0f bytes, want < 300 KiB", sent)
	}
	time.Sleep(300 * time.Millisecond) // the event stream and the service worker settle
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("fresh start: %v", probs)
	}
	b.CheckPhoneLayout("empty pocket")
	b.Shot("pocket-empty")

	// an invalid package: shown inline, naming the field; nothing stored
	b.Run("paste an invalid package",
		chromedp.SetValue(`#add-doc`, pt.Package("demo", "latest", "docker.io/library/app:1.0", "linux/amd64"), chromedp.ByQuery),
		chromedp.Click(`#add-submit`, chromedp.ByQuery))
	b.WaitText(`#add-errors`, "spec.version", 10*time.Second)
	b.Problems() // the 400 answer is expected
	b.WaitText(`#packages`, "No package yet", 5*time.Second)

	// a valid one
	b.Run("paste a package",
		chromedp.SetValue(`#add-doc`, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64,linux/arm64"), chromedp.ByQuery),
		chromedp.Click(`#add-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#pkg-demo`, chromedp.ByQuery))
	b.WaitText(`#pkg-demo .status`, "Not cached", 10*time.Second)

	// sync, slowed down so that its progress shows
	f.Proxy.BytesPerSecond.Store(1 << 20)
	b.Run("sync", chromedp.Click(`#pkg-demo button.sync`, chromedp.ByQuery))
	b.WaitText(`#pkg-demo .live`, "Syncing", 10*time.Second)
	b.WaitText(`#pkg-demo .live`, "/s", 10*time.Second) // a rate is shown
	b.Shot("pocket-syncing")
	b.WaitText(`#pkg-demo .status`, "Synced", 60*time.Second)
	f.Proxy.BytesPerSecond.Store(0)
	b.CheckToast("synced package", "demo synced")
	b.CheckPhoneLayout("synced package")
	// a notice while the package's buttons sit at the bottom of the screen
	// (where the notice shows first) goes where it covers none of them
	b.Eval(`(() => {
	  const r = document.querySelector('#pkg-demo button.sync').getBoundingClientRect();
	  const sp = document.createElement('div');
	  sp.id = 'probe-spacer';
	  sp.style.height = Math.max(0, innerHeight - r.bottom - 8) + 'px';
	  document.querySelector('main').prepend(sp);
	  crpe.toast('probe notice');
	  return true;
	})()`, nil)
	b.CheckToast("the package's buttons at the bottom of the screen", "probe notice")
	b.Eval(`(() => { document.getElementById('probe-spacer').remove(); document.getElementById('toast').classList.remove('show'); return true; })()`, nil)
	// shown once: a page opened after the sync does not announce it again
	later := NewBrowser(t, time.Minute)
	later.Load(p.URL + "/")
	later.WaitText(`#pkg-demo .status`, "Synced", 10*time.Second)
	later.CheckNoToast("a page opened after the sync", 1500*time.Millisecond)

	// download, with the upstream down: straight from the cache
	f.Proxy.Fail.Store(true)
	dl := t.TempDir()
	b.AllowDownloads(dl)
	b.Run("download", chromedp.Click(`#pkg-demo a.download`, chromedp.ByQuery))
	guid, name := b.WaitDownload(60 * time.Second)
	if name != "demo-1.0.0.kubepkg.tgz" {
		t.Errorf("download named %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := testenv.Run(ctx, t, "inspect", filepath.Join(dl, guid), "--verify"); err != nil {
		t.Fatalf("the downloaded archive: %v\n%s", err, out)
	}
	f.Proxy.Fail.Store(false)

	// an agent
	b.Run("agents tab", chromedp.Click(`#tab-agents`, chromedp.ByQuery),
		chromedp.Click(`#add-agent summary`, chromedp.ByQuery),
		chromedp.SetValue(`#agent-name`, "plant", chromedp.ByQuery),
		chromedp.SetValue(`#agent-url`, ag.URL, chromedp.ByQuery),
		chromedp.SetValue(`#agent-token`, ag.Token, chromedp.ByQuery),
		chromedp.Click(`#agent-form button[type=submit]`, chromedp.ByQuery))
	b.WaitText(`#agents`, "Reachable, token accepted", 20*time.Second)
	b.CheckPhoneLayout("agents")

	// send, then a second version with the delta
	b.Run("packages tab", chromedp.Click(`#tab-packages`, chromedp.ByQuery),
		chromedp.WaitVisible(`#pkg-demo button.send`, chromedp.ByQuery),
		chromedp.Click(`#pkg-demo button.send`, chromedp.ByQuery))
	b.WaitText(`#pkg-demo .send-result`, "Sent to plant", 60*time.Second)
	b.Run("add version 2",
		chromedp.Click(`#add-package summary`, chromedp.ByQuery),
		chromedp.SetValue(`#add-doc`, pt.Package("demo", "2.0.0", "docker.io/library/app:2.0", "linux/amd64"), chromedp.ByQuery),
		chromedp.Click(`#add-submit`, chromedp.ByQuery))
	b.WaitText(`#pkg-demo .version`, "2.0.0", 10*time.Second)
	b.Run("agents tab again", chromedp.Click(`#tab-agents`, chromedp.ByQuery))
	b.WaitText(`#agents li[data-action="upgrade"]`, "would be upgraded", 20*time.Second)
	b.Shot("pocket-agents")
	b.Run("back to the packages", chromedp.Click(`#tab-packages`, chromedp.ByQuery),
		chromedp.WaitVisible(`#pkg-demo button.sync`, chromedp.ByQuery),
		chromedp.Click(`#pkg-demo button.sync`, chromedp.ByQuery))
	b.WaitText(`#pkg-demo .status`, "Synced", 60*time.Second)
	b.Run("send version 2", chromedp.Click(`#pkg-demo button.send`, chromedp.ByQuery))
	txt := b.WaitText(`#pkg-demo .send-result`, "(1 layer the agent had)", 60*time.Second)
	if !strings.Contains(txt, "MiB saved by the delta") {
		t.Errorf("send result: %q", txt)
	}
	b.Shot("pocket-packages")
	b.Run("agents tab, after", chromedp.Click(`#tab-agents`, chromedp.ByQuery))
	b.WaitText(`#agents li[data-action="current"]`, "up to date", 20*time.Second)

	// the other screens
	b.Run("registries", chromedp.Click(`#tab-registries`, chromedp.ByQuery))
	b.WaitText(`#registries`, "docker.io", 10*time.Second)
	b.CheckPhoneLayout("registries")
	b.Run("cache", chromedp.Click(`#tab-cache`, chromedp.ByQuery))
	b.WaitText(`#cache`, "Needed by packages", 10*time.Second)
	b.CheckPhoneLayout("cache")
	b.Shot("pocket-cache")
	b.Run("share", chromedp.Click(`#tab-share`, chromedp.ByQuery))
	b.WaitText(`#share`, "other devices cannot reach it", 10*time.Second) // the test pocket listens on 127.0.0.1 only
	b.WaitText(`#signin`, "needs no token", 10*time.Second)
	b.CheckPhoneLayout("share")

	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems along the way: %v", probs)
	}
}

// TestPocketUIShare: a pocket listening on every interface shows its LAN
// address with a QR code carrying the token; a second phone opening the
// page with #token=... is signed in and may change the pocket. (The second
// phone is played by a loopback client naming the pocket by another host
// name, so nothing is sent to a LAN address.)
func TestPocketUIShare(t *testing.T) {
	testenv.Crpe(t)
	up := testenv.StartDistribution(t)
	p := pt.StartPocket(t, up.URL)
	b := NewBrowser(t, 2*time.Minute)

	// "localhost" and "127.0.0.1" both name the pocket from this host; the
	// page opened by the IP is trusted, a page opened as "pocket.test"
	// (mapped to 127.0.0.1 by the browser's resolver rules) is not
	b.Load(p.URL + "/#share")
	b.WaitText(`#signin`, "needs no token", 10*time.Second)

	b2 := NewBrowserWithRules(t, 2*time.Minute, "MAP pocket.test 127.0.0.1")
	port := p.Addr[strings.LastIndex(p.Addr, ":")+1:]
	remote := "http://pocket.test:" + port
	b2.Load(remote + "/#share")
	b2.WaitText(`#signin`, "Not signed in", 10*time.Second)
	// adding a package asks for the token
	b2.Run("packages", chromedp.Click(`#tab-packages`, chromedp.ByQuery),
		chromedp.SetValue(`#add-doc`, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64"), chromedp.ByQuery),
		chromedp.Click(`#add-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#token-dialog[open]`, chromedp.ByQuery),
		chromedp.Click(`#token-dialog .cancel`, chromedp.ByQuery))
	b2.WaitText(`#add-errors`, "authentication required", 10*time.Second)
	b2.Problems() // the 401 is expected

	// the QR code's link signs the second phone in
	b2.Load(remote + "/#token=" + pt.PocketToken)
	var hash string
	b2.Eval(`location.hash`, &hash)
	if hash != "" {
		t.Errorf("the token stayed in the address bar: %q", hash)
	}
	b2.Run("add with the token",
		chromedp.SetValue(`#add-doc`, pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64"), chromedp.ByQuery),
		chromedp.Click(`#add-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#pkg-demo`, chromedp.ByQuery))
	b2.Run("share", chromedp.Click(`#tab-share`, chromedp.ByQuery))
	b2.WaitText(`#signin`, "Signed in", 10*time.Second)
	// this phone can pass the pocket on: a QR code of the address it uses
	b2.Run("qr", chromedp.WaitVisible(`#share img.qr[src^="blob:"]`, chromedp.ByQuery))
	var qrOK bool
	b2.Run("qr loaded", chromedp.Poll(`(() => { const i = document.querySelector('#share img.qr'); return i && i.complete && i.naturalWidth > 0; })()`, &qrOK, chromedp.WithPollingTimeout(10*time.Second)))
	b2.Shot("pocket-share")
	b2.CheckPhoneLayout("share on a second phone")
	if probs := b2.Problems(); len(probs) > 0 {
		t.Fatalf("second phone: %v", probs)
	}
}
