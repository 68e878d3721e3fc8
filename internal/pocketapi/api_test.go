package pocketapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"rsc.io/qr"

	"github.com/octohelm/crpe/internal/kubepkg"
)

func TestTrusted(t *testing.T) {
	for _, c := range []struct {
		remote, host string
		want         bool
	}{
		{"127.0.0.1:5000", "127.0.0.1:6060", true},
		{"127.0.0.1:5000", "localhost:6060", true},
		{"[::1]:5000", "[::1]:6060", true},
		{"127.0.0.1:5000", "pocket.example:6060", false}, // a rebound DNS name
		{"192.168.1.7:5000", "127.0.0.1:6060", false},
		{"192.168.1.7:5000", "192.168.1.5:6060", false},
		{"garbage", "127.0.0.1", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/kubepkgs", nil)
		r.RemoteAddr, r.Host = c.remote, c.host
		if got := trusted(r); got != c.want {
			t.Errorf("trusted(%s → %s) = %v", c.remote, c.host, got)
		}
	}
}

func TestCrossOrigin(t *testing.T) {
	for _, c := range []struct {
		origin, site, host string
		want               bool
	}{
		{"", "", "127.0.0.1:6060", false}, // a script
		{"http://127.0.0.1:6060", "same-origin", "127.0.0.1:6060", false},
		{"http://evil.example", "cross-site", "127.0.0.1:6060", true},
		{"http://evil.example", "", "127.0.0.1:6060", true},
		{"null", "", "127.0.0.1:6060", true},
		{"", "cross-site", "127.0.0.1:6060", true},
		{"http://127.0.0.1:7000", "same-site", "127.0.0.1:6060", true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.site != "" {
			r.Header.Set("Sec-Fetch-Site", c.site)
		}
		if got := crossOrigin(r); got != c.want {
			t.Errorf("crossOrigin(%q, %q) = %v", c.origin, c.site, got)
		}
	}
}

func TestFieldErrorsNameTheField(t *testing.T) {
	pkgs, err := kubepkg.Parse([]byte(`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"Bad"},"spec":{"version":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	errs := fieldErrors(pkgs[0].Validate(), "Bad")
	fields := map[string]bool{}
	for _, e := range errs {
		detail, _ := e.Detail.(map[string]string)
		fields[detail["field"]] = true
		if detail["package"] != "Bad" || !strings.HasPrefix(e.Message, "package Bad: ") {
			t.Errorf("error without its package: %+v", e)
		}
	}
	if !fields["metadata.name"] || !fields["spec.version"] {
		t.Fatalf("fields: %v", fields)
	}
	if e := fieldErrors(errors.New("plain"), ""); len(e) != 1 || e[0].Detail.(map[string]string)["field"] != "" {
		t.Fatalf("plain error: %+v", e)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range [][3]string{
		{"2.0.0", "1.0.0", "upgrade"},
		{"1.0.0", "1.0.0", "current"},
		{"v1.0.0", "1.0.0", "current"},
		{"1.0.0", "1.2.0", "newer-on-agent"},
	} {
		if got := compareVersions(c[0], c[1]); got != c[2] {
			t.Errorf("compareVersions(%s, %s) = %s, want %s", c[0], c[1], got, c[2])
		}
	}
}

// TestHubKeepsTheLatest: a slow subscriber gets the latest event of each
// key, in first-seen order, and never blocks the publisher.
func TestHubKeepsTheLatest(t *testing.T) {
	h := NewHub()
	s := h.subscribe()
	defer h.unsubscribe(s)
	for i := 0; i < 1000; i++ {
		h.Publish("job:a", "job", map[string]int{"n": i})
	}
	h.Publish("change:kubepkgs", "change", map[string]string{"what": "kubepkgs"})
	h.Publish("job:a", "job", map[string]string{"state": "done"})
	select {
	case <-s.notify:
	case <-time.After(time.Second):
		t.Fatal("not notified")
	}
	got := s.take()
	if len(got) != 2 || !strings.Contains(string(got[0]), `"state":"done"`) || !strings.Contains(string(got[1]), "event: change") {
		t.Fatalf("got %q", got)
	}
}

func TestQRSVG(t *testing.T) {
	c, err := qr.Encode("http://192.0.2.1:6060/#token=abc", qr.M)
	if err != nil {
		t.Fatal(err)
	}
	svg := qrSVG(c)
	if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, `d="M`) || len(svg) > 20000 {
		t.Fatalf("svg: %.200s (%d bytes)", svg, len(svg))
	}
}

func TestJobProgress(t *testing.T) {
	j := &Job{v: JobView{State: StateRunning}, images: map[string]*imageCounter{}}
	j.SetImages([]ImageProgress{{Ref: "a", Total: 100, Blobs: 2}})
	j.SetTotal(100, 0)
	j.SetInFlight(func(string) int64 { return 30 }, func() int64 { return 30 })
	v := j.view()
	if v.Bytes != 30 || v.Percent != 30 || v.Images[0].Bytes != 30 {
		t.Fatalf("in flight: %+v", v)
	}
	j.ImageDone("a", 60)
	j.Add(60)
	j.SetInFlight(func(string) int64 { return 90 }, func() int64 { return 90 }) // over the total: capped
	v = j.view()
	if v.Bytes != 100 || v.Percent != 99 && v.Percent != 100 || v.Images[0].Bytes != 100 {
		t.Fatalf("capped: %+v", v)
	}
}
