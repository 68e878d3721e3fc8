package pocket

import (
	"net"
	"reflect"
	"testing"
)

// TestLocalURLs: pocket.json names loopback addresses for a pocket that
// listens on every address (a client naming them needs no token), else the
// one address it listens on.
func TestLocalURLs(t *testing.T) {
	for _, c := range []struct {
		addr string
		tls  bool
		want []string
	}{
		{"[::]:6060", false, []string{"http://127.0.0.1:6060", "http://[::1]:6060"}},
		{"0.0.0.0:6060", false, []string{"http://127.0.0.1:6060"}},
		{"127.0.0.1:6061", true, []string{"https://127.0.0.1:6061"}},
		{"[::1]:6060", false, []string{"http://[::1]:6060"}},
		{"192.0.2.7:6060", false, []string{"http://192.0.2.7:6060"}},
	} {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := localURLs(a, c.tls); !reflect.DeepEqual(got, c.want) {
			t.Errorf("localURLs(%s, tls %v) = %v, want %v", c.addr, c.tls, got, c.want)
		}
	}
	if got := localURLs(&net.TCPAddr{Port: 6060}, false); len(got) != 2 {
		t.Errorf("no IP: %v", got)
	}
}
