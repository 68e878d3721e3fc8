package pocketclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/storage"
)

// fakePocket answers GET /api/v1/pocket with instance, and POST
// /api/v1/export with handler.
func fakePocket(instance string, export http.HandlerFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/pocket", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"version":"test","instance":"`+instance+`"}`)
	})
	mux.HandleFunc("GET /api/v1/jobs/j1", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"j1","state":"failed","error":"image x: blob sha256:abc: the upstream went away"}`)
	})
	if export != nil {
		mux.HandleFunc("POST /api/v1/export", export)
	}
	return mux
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestReach: the first URL that answers with the file's instance is the
// pocket; another pocket on the port, or none, is an error saying so.
func TestReach(t *testing.T) {
	srv := httptest.NewServer(fakePocket("i1", nil))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	p, err := Reach(ctx(t), &storage.PocketFile{PID: 7, Instance: "i1", URLs: []string{dead.URL, srv.URL}})
	if err != nil || p.URL != srv.URL || p.PID != 7 || p.token != "" {
		t.Fatalf("Reach: %+v, %v", p, err)
	}
	_, err = Reach(ctx(t), &storage.PocketFile{Instance: "i2", URLs: []string{srv.URL}})
	if err == nil || !strings.Contains(err.Error(), "another pocket answers there") {
		t.Errorf("another instance: %v", err)
	}
	_, err = Reach(ctx(t), &storage.PocketFile{Instance: "i1", URLs: []string{dead.URL}})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("nobody there: %v", err)
	}
	if _, err := Reach(ctx(t), &storage.PocketFile{Instance: "i1"}); err == nil {
		t.Error("a file naming no address was reached")
	}
}

// TestReachPinsTheCertificate: over https, the pocket's certificate named
// by the file is trusted whatever its names, and no other.
func TestReachPinsTheCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(fakePocket("i1", nil))
	defer srv.Close()
	// another certificate (every httptest server has the same one)
	other := httptest.NewUnstartedServer(fakePocket("i1", nil))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	other.StartTLS()
	defer other.Close()
	certFile := filepath.Join(t.TempDir(), "tls.crt")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Reach(ctx(t), &storage.PocketFile{Instance: "i1", URLs: []string{srv.URL}, TLSCert: certFile}); err != nil {
		t.Fatalf("the pinned certificate: %v", err)
	}
	if _, err := Reach(ctx(t), &storage.PocketFile{Instance: "i1", URLs: []string{other.URL}, TLSCert: certFile}); err == nil {
		t.Fatal("a pocket with another certificate was trusted")
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestExport: the archive is copied after the head; an error before the
// first byte is the pocket's; a transfer cut off after it says why, from
// the job.
func TestExport(t *testing.T) {
	var mode string
	srv := httptest.NewServer(fakePocket("i1", func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "refuse":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"errors":[{"code":"NOT_CACHED","message":"not cached, and the export is offline"}]}`)
		case "cut":
			w.Header().Set("X-Crpe-Job", "j1")
			w.Header().Set("X-Crpe-Export-Summary", "e30=") // {}
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "half")
		default:
			w.Header().Set("X-Crpe-Job", "j1")
			w.Header().Set("X-Crpe-Export-Summary", "eyJibG9icyI6M30=") // {"blobs":3}
			_, _ = io.WriteString(w, "archive")
		}
	}))
	defer srv.Close()
	p, err := Reach(ctx(t), &storage.PocketFile{Instance: "i1", URLs: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var got *Head
	h, err := p.Export(ctx(t), &ExportRequest{KubePkg: []byte(`{}`)}, &out, func(h *Head) {
		if out.Len() != 0 {
			t.Error("head called after the first byte")
		}
		got = h
	})
	if err != nil || out.String() != "archive" || got == nil || h.Job != "j1" || string(h.Summary) != `{"blobs":3}` {
		t.Fatalf("Export: %+v %q %v", h, out.String(), err)
	}

	mode = "refuse"
	_, err = p.Export(ctx(t), &ExportRequest{KubePkg: []byte(`{}`)}, io.Discard, nil)
	var pe *Error
	if !errors.As(err, &pe) || pe.Status != http.StatusConflict || pe.Code != "NOT_CACHED" {
		t.Errorf("refused: %v", err)
	}

	mode = "cut"
	_, err = p.Export(ctx(t), &ExportRequest{KubePkg: []byte(`{}`)}, io.Discard, nil)
	if !errors.Is(err, ErrCutOff) || !strings.Contains(err.Error(), "the upstream went away") {
		t.Errorf("cut off: %v", err)
	}
}
