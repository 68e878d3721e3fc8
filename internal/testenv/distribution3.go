package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry3 is CNCF distribution v3 (`registry`, built with
// `go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2`)
// on loopback, filesystem storage in a temp dir, optionally behind htpasswd
// auth and TLS from a CA the test makes.
type Registry3 struct {
	Addr string // 127.0.0.1:port
	URL  string // https:// or http://
	Dir  string
	// CAFile is the PEM of the CA the server's certificate chains to (TLS).
	CAFile string
	// User and Password are the htpasswd credentials (Auth).
	User, Password string
	// Client trusts the CA and sends the credentials.
	Client *http.Client
	logged
}

// Registry3Options choose auth and TLS.
type Registry3Options struct {
	Auth, TLS bool
}

// StartRegistry3 starts distribution v3 and waits until it answers.
func StartRegistry3(t testing.TB, o Registry3Options) *Registry3 {
	t.Helper()
	bin := Peer(t, "registry", "go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2")
	dir := t.TempDir()
	r := &Registry3{Addr: FreeAddr(t), Dir: dir}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	extra := ""
	if o.TLS {
		cert, key, ca := makeCerts(t, dir)
		r.CAFile = ca
		pool := x509.NewCertPool()
		b, _ := os.ReadFile(ca)
		pool.AppendCertsFromPEM(b)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		extra += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	authCfg := ""
	if o.Auth {
		r.User, r.Password = "crpe", "s3cret-pass"
		h, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hp := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(hp, []byte(r.User+":"+string(h)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		authCfg = fmt.Sprintf("auth:\n  htpasswd:\n    realm: crpe-test\n    path: %s\n", hp)
	}
	cfg := registryConfig(filepath.Join(dir, "data"), r.Addr) + "  secret: crpe-test-secret\n" + extra + authCfg
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if o.TLS {
		scheme = "https"
	}
	r.URL = scheme + "://" + r.Addr
	r.Client = &http.Client{Transport: &basicRT{tr, r.User, r.Password}, Timeout: 30 * time.Second}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	if err := r.start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registry v3 log (tail):\n%s", tail(r.Logs(), 4000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := r.Client.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		select {
		case <-r.done:
			t.Fatalf("registry v3 exited: %s", r.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry v3 did not start: %v\n%s", err, r.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type basicRT struct {
	rt         http.RoundTripper
	user, pass string
}

func (b *basicRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.user != "" {
		r = r.Clone(r.Context())
		r.SetBasicAuth(b.user, b.pass)
	}
	return b.rt.RoundTrip(r)
}

// makeCerts writes a CA and a server certificate for 127.0.0.1 (and
// localhost) into dir and returns the paths of the certificate, its key and
// the CA.
func makeCerts(t testing.TB, dir string) (cert, key, ca string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crpe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}
