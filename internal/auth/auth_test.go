package auth

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFromRequest(t *testing.T) {
	for _, c := range []struct {
		h, want string
		present bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER  abc ", "abc", true},
		{"Basic eDpzZWNyZXQ=", "secret", true}, // x:secret
		{"Basic Om9ubHlwdw==", "onlypw", true}, // :onlypw
		{"Digest foo", "", true},
		{"", "", false},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		if c.h != "" {
			r.Header.Set("Authorization", c.h)
		}
		got, present := FromRequest(r)
		if got != c.want || present != c.present {
			t.Errorf("%q: got %q %v", c.h, got, present)
		}
	}
}

func TestTokensReloadAndRevoke(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte("# comment\n\none\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toks, err := LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	if !toks.Valid("one") || toks.Valid("# comment") || toks.Valid("") {
		t.Fatal("initial set wrong")
	}
	_ = os.WriteFile(p, []byte("two\n"), 0o600) // same size, maybe same mtime
	time.Sleep(600 * time.Millisecond)
	if toks.Valid("one") || !toks.Valid("two") {
		t.Fatal("rewrite not seen")
	}
	_ = os.Remove(p)
	time.Sleep(600 * time.Millisecond)
	if !toks.Valid("two") {
		t.Fatal("a briefly missing file revoked the tokens")
	}
	_ = os.WriteFile(p, []byte("\n"), 0o600)
	time.Sleep(600 * time.Millisecond)
	if toks.Valid("two") {
		t.Fatal("an emptied file did not revoke the tokens")
	}
	if _, err := LoadTokens(p); err == nil {
		t.Fatal("starting with an empty token file must fail")
	}
}
