package testenv

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback in front of a target address. It counts
// the bytes it reads from its clients (what they put on the wire towards the
// target) and from the target, can keep the first bytes of each direction,
// and can cut every connection once, when the client-to-target count
// reaches cutAt.
type Proxy struct {
	ln     net.Listener
	target string
	URL    string
	cutAt  int64

	// Up and Down count the bytes client→target and target→client; Conns
	// the connections accepted; Cut tells whether the cut happened.
	Up, Down atomic.Int64
	Conns    atomic.Int64
	Cut      atomic.Bool

	mu      sync.Mutex
	capture int
	capUp   bytes.Buffer
	capDown bytes.Buffer
	open    map[net.Conn]bool
}

// StartProxy starts a Proxy to target on 127.0.0.1: it cuts every open
// connection once when cutAt (> 0) bytes went client→target, and keeps the
// first capture bytes of each direction (see Captured). It stops when the
// test ends.
func StartProxy(t testing.TB, target string, cutAt int64, capture int) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, URL: "http://" + ln.Addr().String(), cutAt: cutAt, capture: capture, open: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.open[c] = true
	} else {
		delete(p.open, c)
	}
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		_ = c.Close()
	}
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.Conns.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) keep(buf *bytes.Buffer, b []byte) {
	if p.capture == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if room := p.capture - buf.Len(); room > 0 {
		if len(b) > room {
			b = b[:room]
		}
		buf.Write(b)
	}
}

func (p *Proxy) handle(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.track(c, true)
	p.track(s, true)
	defer func() {
		_ = c.Close()
		_ = s.Close()
		p.track(c, false)
		p.track(s, false)
	}()
	done := make(chan struct{}, 2)
	go func() { // target → client
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				p.Down.Add(int64(n))
				p.keep(&p.capDown, buf[:n])
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() { // client → target
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				total := p.Up.Add(int64(n))
				p.keep(&p.capUp, buf[:n])
				if _, werr := s.Write(buf[:n]); werr != nil {
					break
				}
				if p.cutAt > 0 && total >= p.cutAt && p.Cut.CompareAndSwap(false, true) {
					// the cut: both sides lose the connection at once
					_ = c.Close()
					_ = s.Close()
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := s.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// Captured returns the first bytes of each direction.
func (p *Proxy) Captured() (up, down string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.capUp.String(), p.capDown.String()
}
