package pocketapi

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"rsc.io/qr"

	"github.com/octohelm/crpe/internal/diskfree"
	"github.com/octohelm/crpe/internal/httpx"
)

// PocketInfo is what the pocket tells about itself.
type PocketInfo struct {
	Version string `json:"version"`
	// Instance names this run of the pocket (as its data folder's
	// pocket.json does).
	Instance string `json:"instance,omitempty"`
	Offline  bool   `json:"offline"`
	// URLs are the pocket's addresses on the local networks (for display
	// and the QR code; nothing is sent to them). Empty when it listens on
	// loopback only.
	URLs []string `json:"urls"`
	// Listen is the listening address.
	Listen string `json:"listen"`
	// LoopbackOnly tells that other devices cannot reach the pocket.
	LoopbackOnly bool `json:"loopbackOnly"`
	// Trusted tells whether this client may change the pocket without a
	// token (loopback); Authorized whether it may (trusted, or its token
	// is valid).
	Trusted    bool `json:"trusted"`
	Authorized bool `json:"authorized"`
	// Token is shown to trusted clients only, to be put into the QR code.
	Token string `json:"token,omitempty"`
	Free  int64  `json:"free"`
	// Subscribers counts the open event streams.
	Subscribers int `json:"subscribers"`
}

func (a *API) pocketInfo(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	ln, tls := a.listen, a.tls
	a.mu.Unlock()
	info := PocketInfo{Version: a.ver, Instance: a.instance, Offline: a.ups.Offline(), URLs: []string{}, Trusted: trusted(r), Authorized: a.authorized(r),
		Free: diskfree.Available(a.st.Dir), Subscribers: a.hub.Subscribers()}
	if ln != nil {
		info.Listen = ln.String()
		info.URLs, info.LoopbackOnly = lanURLs(ln, tls)
	}
	if info.Trusted && a.tokens != nil {
		info.Token = a.tokens.First()
	}
	writeJSON(w, http.StatusOK, info)
}

// lanURLs lists http(s)://ADDR:PORT/ for every non-loopback address of the
// host's interfaces that are up (IPv4 first), when ln listens on them.
func lanURLs(ln net.Addr, tls bool) ([]string, bool) {
	tcp, ok := ln.(*net.TCPAddr)
	if !ok {
		return []string{}, true
	}
	if tcp.IP != nil && !tcp.IP.IsUnspecified() {
		if tcp.IP.IsLoopback() {
			return []string{}, true
		}
		return []string{baseURL(tcp.IP, tcp.Port, tls)}, false
	}
	var v4, v6 []string
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
				continue
			}
			if ipn.IP.To4() != nil {
				v4 = append(v4, baseURL(ipn.IP, tcp.Port, tls))
			} else if tcp.IP == nil || tcp.IP.To4() == nil {
				v6 = append(v6, baseURL(ipn.IP, tcp.Port, tls))
			}
		}
	}
	sort.Strings(v4)
	sort.Strings(v6)
	return append(append([]string{}, v4...), v6...), false
}

func baseURL(ip net.IP, port int, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(port)) + "/"
}

// pocketQR answers an SVG QR code of ?url= (an http(s) URL), with the
// token in the fragment (#token=...) for a client allowed to see it, so
// that a phone scanning it is signed in.
func (a *API) pocketQR(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("url")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > 512 {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "url: want an http(s) URL of at most 512 characters", map[string]string{"field": "url"})
		return
	}
	u.Fragment = ""
	text := u.String()
	if a.authorized(r) && a.tokens != nil && r.URL.Query().Get("token") != "false" {
		if tok := a.tokens.First(); tok != "" {
			text += "#token=" + url.QueryEscape(tok)
		}
	}
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(qrSVG(code)))
}

// qrSVG draws code as an SVG with a 4-module quiet zone, one path.
func qrSVG(c *qr.Code) string {
	n := c.Size + 8
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img" aria-label="QR code"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n, n, n)
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; {
			if !c.Black(x, y) {
				x++
				continue
			}
			run := 1
			for x+run < c.Size && c.Black(x+run, y) {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x+4, y+4, run, run)
			x += run
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String()
}
