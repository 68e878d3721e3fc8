// Package webui tests the pocket's and the agent's web UI in a real browser:
// Debian's headless Chromium, driven with chromedp at a phone's viewport
// (360x740), against real processes (docker-registry as the upstream, `crpe
// serve`, `crpe agent`), all on loopback. Set CRPE_SCREENSHOTS=DIR to keep
// the screenshots the tests take (docs/ holds a few).
package webui

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/octohelm/crpe/internal/testenv"
)

const chromiumPath = "/usr/bin/chromium"

// Browser is one headless Chromium tab at a phone's size, recording what
// went wrong: console errors, uncaught exceptions, failed requests.
type Browser struct {
	t   *testing.T
	ctx context.Context

	mu        sync.Mutex
	problems  []string
	requests  map[network.RequestID]string
	bytes     float64
	downloads map[string]string // guid → state
	dlNames   map[string]string // guid → suggested name
	urls      []string
}

// NewBrowser starts Chromium (skipped when missing, failed under CI=true).
func NewBrowser(t *testing.T, timeout time.Duration) *Browser {
	t.Helper()
	return NewBrowserWithRules(t, timeout, "")
}

// NewBrowserWithRules starts Chromium with host resolver rules (such as
// "MAP pocket.test 127.0.0.1": a name for the pocket that is not a
// loopback name, still reaching only 127.0.0.1).
func NewBrowserWithRules(t *testing.T, timeout time.Duration, rules string) *Browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		msg := "chromium not found at " + chromiumPath + " (apt-get install chromium)"
		if testenv.CI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.WindowSize(360, 740),
		chromedp.UserDataDir(profile),
		// Chromium makes its singleton socket folder
		// (org.chromium.Chromium.*) in TMPDIR and leaves it when killed
		chromedp.Env("TMPDIR=" + t.TempDir()),
	}
	if rules != "" {
		opts = append(opts, chromedp.Flag("host-resolver-rules", rules))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		// this chromedp does not know every event of a newer Chromium
		if !strings.Contains(format, "unhandled") {
			t.Logf("chromedp: "+format, args...)
		}
	}))
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelT()
		cancelC()
		cancelA()
		// Chromium's helper processes may still write into the profile a
		// moment after the browser is gone (TempDir's own removal then
		// fails the test with "directory not empty"): empty it until it
		// stays empty
		for i := 0; i < 30; i++ {
			if os.RemoveAll(profile) == nil {
				time.Sleep(50 * time.Millisecond)
				if _, err := os.Stat(profile); os.IsNotExist(err) {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	b := &Browser{t: t, ctx: ctx, requests: map[network.RequestID]string{}, downloads: map[string]string{}, dlNames: map[string]string{}}
	chromedp.ListenTarget(ctx, b.onEvent)
	chromedp.ListenBrowser(ctx, b.onEvent)
	if err := chromedp.Run(ctx,
		network.Enable(),
		runtime.Enable(),
		chromedp.EmulateViewport(360, 740, chromedp.EmulateScale(2), chromedp.EmulateMobile),
	); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

func (b *Browser) onEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.APITypeError {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
			}
			b.problems = append(b.problems, "console.error: "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
		b.problems = append(b.problems, "exception: "+msg)
	case *network.EventRequestWillBeSent:
		b.requests[e.RequestID] = e.Request.Method + " " + e.Request.URL
		b.urls = append(b.urls, e.Request.Method+" "+e.Request.URL)
	case *network.EventResponseReceived:
		if e.Response.Status >= 400 {
			b.problems = append(b.problems, fmt.Sprintf("HTTP %d: %s", int(e.Response.Status), b.requests[e.RequestID]))
		}
	case *network.EventLoadingFailed:
		// an event stream closed by a navigation is not a failure
		if !e.Canceled || !strings.Contains(b.requests[e.RequestID], "/api/v1/events") {
			if !(e.Canceled && e.Type == network.ResourceTypeEventSource) {
				b.problems = append(b.problems, "failed: "+b.requests[e.RequestID]+": "+e.ErrorText)
			}
		}
	case *network.EventLoadingFinished:
		b.bytes += e.EncodedDataLength
	case *browser.EventDownloadWillBegin:
		b.downloads[e.GUID] = "begin"
		b.dlNames[e.GUID] = e.SuggestedFilename
	case *browser.EventDownloadProgress:
		b.downloads[e.GUID] = string(e.State)
	}
}

// Problems returns and clears what went wrong so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// Transferred returns and resets the bytes received over the network.
func (b *Browser) Transferred() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.bytes
	b.bytes = 0
	return n
}

// Requested tells whether a request whose "METHOD URL" contains s was made.
func (b *Browser) Requested(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range b.urls {
		if strings.Contains(u, s) {
			return true
		}
	}
	return false
}

// Run runs actions, failing the test on error.
func (b *Browser) Run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		shot := b.shotFile("failure-" + strings.NewReplacer(" ", "-", "/", "-").Replace(what))
		b.mu.Lock()
		last := b.urls[max(0, len(b.urls)-8):]
		b.mu.Unlock()
		b.t.Fatalf("%s: %v (screenshot %s; problems %v; last requests %v)", what, err, shot, b.Problems(), last)
	}
}

// Eval evaluates a JavaScript expression into res.
func (b *Browser) Eval(js string, res any) {
	b.t.Helper()
	b.Run("eval "+js, chromedp.Evaluate(js, res))
}

// WaitText waits until the text of sel contains want.
func (b *Browser) WaitText(sel, want string, d time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		var txt string
		js := fmt.Sprintf(`(() => { const n = document.querySelector(%q); return n ? n.innerText : ''; })()`, sel)
		if err := chromedp.Run(b.ctx, chromedp.Evaluate(js, &txt)); err != nil {
			b.t.Fatalf("reading %s: %v", sel, err)
		}
		if strings.Contains(txt, want) {
			return txt
		}
		last = txt
		time.Sleep(50 * time.Millisecond)
	}
	shot := b.shotFile("failure-wait")
	b.t.Fatalf("%s never read %q; last %q (screenshot %s)", sel, want, last, shot)
	return ""
}

// Shot saves a screenshot of the viewport as name.png under
// CRPE_SCREENSHOTS (or the test's temp dir, removed when the test ends) and
// returns its path.
func (b *Browser) Shot(name string) string {
	b.t.Helper()
	return b.shotFile(name)
}

// shotFile saves a screenshot as name.png under CRPE_SCREENSHOTS or, with
// it unset, in the test's temp dir; a failure's screenshot (name
// "failure-...") goes to the system temp dir instead, so that it outlives
// the failed test that names it.
func (b *Browser) shotFile(name string) string {
	dir := os.Getenv("CRPE_SCREENSHOTS")
	keep := dir != ""
	if !keep {
		dir = b.t.TempDir()
		if strings.HasPrefix(name, "failure-") {
			dir, name = os.TempDir(), "crpe-webui-"+name
		}
	}
	var buf []byte
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx,
		chromedp.Evaluate(`(() => { const t = document.getElementById('toast'); if (t) t.classList.remove('show'); })()`, nil),
		chromedp.CaptureScreenshot(&buf)); err != nil {
		return "(no screenshot: " + err.Error() + ")"
	}
	if keep {
		buf = shrink(buf)
	}
	p := filepath.Join(dir, name+".png")
	_ = os.WriteFile(p, buf, 0o644)
	return p
}

// shrink halves a screenshot taken at device scale 2 and keeps it small
// (a paletted PNG), for docs/.
func shrink(b []byte) []byte {
	src, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return b
	}
	r := src.Bounds()
	dst := image.NewPaletted(image.Rect(0, 0, r.Dx()/2, r.Dy()/2), palette.Plan9)
	for y := 0; y < r.Dy()/2; y++ {
		for x := 0; x < r.Dx()/2; x++ {
			var sr, sg, sb uint32
			for dy := 0; dy < 2; dy++ {
				for dx := 0; dx < 2; dx++ {
					cr, cg, cb, _ := src.At(r.Min.X+2*x+dx, r.Min.Y+2*y+dy).RGBA()
					sr, sg, sb = sr+cr, sg+cg, sb+cb
				}
			}
			dst.Set(x, y, color.RGBA64{uint16(sr / 4), uint16(sg / 4), uint16(sb / 4), 0xffff})
		}
	}
	var out bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&out, dst); err != nil {
		return b
	}
	return out.Bytes()
}

// AllowDownloads sends downloads to dir.
func (b *Browser) AllowDownloads(dir string) {
	b.t.Helper()
	b.Run("allow downloads", browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllowAndName).
		WithDownloadPath(dir).WithEventsEnabled(true))
}

// WaitDownload waits for a download to complete and returns its guid and
// suggested file name.
func (b *Browser) WaitDownload(d time.Duration) (string, string) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		for g, st := range b.downloads {
			if st == string(browser.DownloadProgressStateCompleted) {
				name := b.dlNames[g]
				delete(b.downloads, g)
				b.mu.Unlock()
				return g, name
			}
			if st == string(browser.DownloadProgressStateCanceled) {
				b.mu.Unlock()
				b.t.Fatalf("download %s cancelled", b.dlNames[g])
			}
		}
		b.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatal("no download completed")
	return "", ""
}

// CheckPhoneLayout checks what the page must be on a phone: no horizontal
// scrolling, controls at least 44 px tall, every control labelled.
func (b *Browser) CheckPhoneLayout(where string) {
	b.t.Helper()
	var res struct {
		ScrollWidth int      `json:"scrollWidth"`
		Width       int      `json:"width"`
		Small       []string `json:"small"`
		Unlabelled  []string `json:"unlabelled"`
	}
	b.Eval(`(() => {
	  const vis = (n) => n.checkVisibility({ contentVisibilityAuto: true, visibilityProperty: true });
	  const small = [], unlabelled = [];
	  document.querySelectorAll('button, a.button, select, input:not([type=checkbox]):not([type=file]), textarea, summary, nav a').forEach((n) => {
	    if (!vis(n)) return;
	    if (n.getBoundingClientRect().height < 44) small.push(n.outerHTML.slice(0, 80));
	  });
	  document.querySelectorAll('button, a.button').forEach((n) => {
	    if (vis(n) && !n.innerText.trim() && !n.getAttribute('aria-label')) unlabelled.push(n.outerHTML.slice(0, 80));
	  });
	  document.querySelectorAll('input, select, textarea').forEach((n) => {
	    if (n.type === 'hidden') return;
	    const lab = (n.id && document.querySelector('label[for="' + n.id + '"]')) || n.closest('label') || n.getAttribute('aria-label');
	    if (!lab) unlabelled.push(n.outerHTML.slice(0, 80));
	  });
	  return { scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth, small, unlabelled };
	})()`, &res)
	if res.ScrollWidth > res.Width {
		b.t.Errorf("%s: the page scrolls sideways at %d px (content %d px wide)", where, res.Width, res.ScrollWidth)
	}
	if len(res.Small) > 0 {
		b.t.Errorf("%s: controls under 44 px tall: %v", where, res.Small)
	}
	if len(res.Unlabelled) > 0 {
		b.t.Errorf("%s: controls without a label: %v", where, res.Unlabelled)
	}
}

// Load opens url and waits for the page to say it is ready; it returns the
// milliseconds until then (from the navigation's start).
func (b *Browser) Load(url string) float64 {
	b.t.Helper()
	var readyAt string
	b.Run("open "+url,
		chromedp.Navigate(url),
		chromedp.WaitVisible(`body[data-ready="true"]`, chromedp.ByQuery),
		chromedp.AttributeValue(`body`, "data-ready-at", &readyAt, nil, chromedp.ByQuery),
	)
	var ms float64
	fmt.Sscanf(readyAt, "%g", &ms)
	return ms
}

// CheckToast waits for the notice want (the #toast status region) and
// checks it covers no visible control.
func (b *Browser) CheckToast(where, want string) {
	b.t.Helper()
	b.WaitText(`#toast.show`, want, 10*time.Second)
	var covered []string
	b.Eval(`(() => {
	  const t = document.getElementById('toast'), r = t.getBoundingClientRect(), out = [];
	  document.querySelectorAll('button, a, input, select, textarea, summary').forEach((n) => {
	    if (t.contains(n) || !n.checkVisibility()) return;
	    const c = n.getBoundingClientRect();
	    if (c.width && c.height && c.left < r.right && c.right > r.left && c.top < r.bottom && c.bottom > r.top) out.push(n.outerHTML.slice(0, 80));
	  });
	  return out;
	})()`, &covered)
	if len(covered) > 0 {
		b.t.Errorf("%s: the notice %q covers controls: %v", where, want, covered)
	}
}

// CheckNoToast checks that no notice shows during d.
func (b *Browser) CheckNoToast(where string, d time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var shown string
		b.Eval(`(() => { const t = document.getElementById('toast'); return t && t.classList.contains('show') ? t.textContent : ''; })()`, &shown)
		if shown != "" {
			b.t.Errorf("%s: a notice shows: %q", where, shown)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
