// Package auth owns who may do what on crpe's HTTP servers: the token file
// (one token per line, re-read when it changes), reading a token from a
// Bearer header or the password of HTTP Basic auth, and the guard that lets
// reads through anonymously (unless pull tokens are required) and asks every
// write for a token.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/octohelm/crpe/internal/atomicfile"
)

// Tokens is a set of accepted tokens read from a file, re-read at most
// twice a second when tokens are checked (the file is small), so a rewrite is
// seen whatever its size or timestamp.
type Tokens struct {
	path string

	mu      sync.Mutex
	checked time.Time
	tokens  [][]byte
}

// LoadTokens reads the token file at path. The file must hold at least one
// token; blank lines and lines starting with # are skipped.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.reload(true); err != nil {
		return nil, err
	}
	return t, nil
}

// reload re-reads the file. A missing file keeps the last set (it may be
// mid-rewrite); a file that holds no token revokes every token, except at
// first load, where it is an error.
func (t *Tokens) reload(first bool) error {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	var toks [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		toks = append(toks, []byte(line))
	}
	if len(toks) == 0 && first {
		return fmt.Errorf("token file %s holds no token", t.path)
	}
	t.tokens = toks
	return nil
}

// Valid reports whether tok is one of the tokens, in constant time per token.
func (t *Tokens) Valid(tok string) bool {
	if tok == "" {
		return false
	}
	t.mu.Lock()
	if time.Since(t.checked) > 500*time.Millisecond {
		// keep the last good set if the file is briefly missing mid-rewrite
		_ = t.reload(false)
		t.checked = time.Now()
	}
	toks := t.tokens
	t.mu.Unlock()
	ok := 0
	for _, x := range toks {
		ok |= subtle.ConstantTimeCompare(x, []byte(tok))
	}
	return ok == 1
}

// EnsureTokenFile returns path if set; otherwise it uses <dataDir>/token,
// creating it with a random token (mode 0600) on first start. created tells
// whether a new token was written.
func EnsureTokenFile(path, dataDir string) (string, bool, error) {
	if path != "" {
		return path, false, nil
	}
	p := filepath.Join(dataDir, "token")
	if _, err := os.Stat(p); err == nil {
		return p, false, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	if err := atomicfile.WriteFile(p, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return p, true, nil
}

// FromRequest returns the token a request carries: a Bearer token, or the
// password of HTTP Basic auth (any user name).
func FromRequest(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw, true
	}
	return "", true
}

// ErrNoToken and ErrBadToken are the guard's refusals.
var (
	ErrNoToken  = errors.New("authentication required: send the token as a Bearer token or as the password of Basic auth")
	ErrBadToken = errors.New("invalid token")
)

// Guard decides whether a request may proceed.
type Guard struct {
	Tokens *Tokens
	// PullTokenRequired makes reads need a token too.
	PullTokenRequired bool
}

// Check returns nil when r may proceed; write tells whether r changes state.
// A request that carries credentials must carry valid ones, even for reads.
func (g *Guard) Check(r *http.Request, write bool) error {
	tok, present := FromRequest(r)
	if !present {
		if write || g.PullTokenRequired {
			return ErrNoToken
		}
		return nil
	}
	if g.Tokens == nil || !g.Tokens.Valid(tok) {
		return ErrBadToken
	}
	return nil
}

// Middleware guards next: isWrite classifies requests, deny writes the
// refusal (so each API answers in its own error format).
func (g *Guard) Middleware(isWrite func(*http.Request) bool, deny func(http.ResponseWriter, *http.Request, error), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.Check(r, isWrite(r)); err != nil {
			deny(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// First returns the first token of the file (for clients that send one).
func (t *Tokens) First() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.tokens) == 0 {
		return ""
	}
	return string(t.tokens[0])
}
