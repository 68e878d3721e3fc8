package kubepkg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/oci"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Token, if set, is sent to URLs as "Authorization: Bearer <Token>".
	Token string
	// Client fetches URLs; http.DefaultClient when nil.
	Client *http.Client
	// CacheDir, if set, keeps URL responses that carry an ETag. The next load
	// of the same URL (with the same token) sends If-None-Match and, on
	// 304 Not Modified, parses the cached body. Failures to write the cache
	// are ignored: the cache only saves transfers.
	CacheDir string
	// Stdin is read for the source "-"; os.Stdin when nil.
	Stdin io.Reader
}

// Load reads packages (see Parse) from src: a file path, "-" for stdin, or an
// http:// or https:// URL (a deployments center answering JSON or YAML).
// Reads are capped at oci.MaxPackageSize; a non-2xx answer is an error naming
// the URL and the status.
func Load(ctx context.Context, src string, o LoadOptions) ([]*KubePkg, error) {
	var (
		data []byte
		err  error
	)
	switch {
	case src == "":
		return nil, errors.New("no package source given")
	case src == "-":
		in := o.Stdin
		if in == nil {
			in = os.Stdin
		}
		data, err = readBounded(in)
		if err != nil {
			return nil, fmt.Errorf("reading package from stdin: %w", err)
		}
		src = "stdin"
	case hasURLScheme(src):
		return loadURL(ctx, src, o)
	default:
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		data, err = readBounded(f)
		if err != nil {
			return nil, fmt.Errorf("reading package %s: %w", src, err)
		}
	}
	pkgs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return pkgs, nil
}

func hasURLScheme(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// errTooLarge is returned when a document exceeds oci.MaxPackageSize.
var errTooLarge = fmt.Errorf("package document larger than %d bytes", oci.MaxPackageSize)

// readBounded reads all of r, failing once more than oci.MaxPackageSize bytes
// have been read.
func readBounded(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, oci.MaxPackageSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > oci.MaxPackageSize {
		return nil, errTooLarge
	}
	return data, nil
}

func loadURL(ctx context.Context, rawURL string, o LoadOptions) ([]*KubePkg, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("package URL: %w", err)
	}
	shown := u.Redacted()
	data, err := fetch(ctx, u, shown, o)
	if err != nil {
		return nil, err
	}
	pkgs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	return pkgs, nil
}

func fetch(ctx context.Context, u *url.URL, shown string, o LoadOptions) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, err)
	}
	req.Header.Set("Accept", "application/json, application/yaml;q=0.9, */*;q=0.8")
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}

	var cachePath string
	var cached *cacheEntry
	if o.CacheDir != "" {
		cachePath = filepath.Join(o.CacheDir, cacheName(u.String(), o.Token))
		if e, err := readCache(cachePath); err == nil {
			cached = e
			req.Header.Set("If-None-Match", e.etag)
		}
	}

	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode == http.StatusNotModified && cached != nil {
		return cached.body, nil
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg := fmt.Sprintf("GET %s: %s", shown, resp.Status)
		if s := strings.TrimSpace(string(snippet)); s != "" && isPrintable(s) {
			msg += ": " + s
		}
		return nil, errors.New(msg)
	}
	if resp.ContentLength > oci.MaxPackageSize {
		return nil, fmt.Errorf("GET %s: %w", shown, errTooLarge)
	}
	data, err := readBounded(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, err)
	}
	if cachePath != "" {
		if etag := resp.Header.Get("ETag"); etag != "" && len(etag) <= 1024 && !strings.ContainsAny(etag, "\r\n") {
			_ = writeCache(cachePath, etag, data)
		} else if cached != nil {
			_ = os.Remove(cachePath)
		}
	}
	return data, nil
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < ' ' && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

// cacheName names the cache file of a URL fetched with a token; the token is
// part of the key so that answers meant for one token never serve another.
func cacheName(u, token string) string {
	h := sha256.Sum256([]byte(u + "\x00" + token))
	return "kubepkg-" + hex.EncodeToString(h[:]) + ".cache"
}

type cacheEntry struct {
	etag string
	body []byte
}

// A cache file is the ETag on its first line, then the body.
func readCache(path string) (*cacheEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(io.LimitReader(f, oci.MaxPackageSize+4096))
	etag, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	etag = strings.TrimSuffix(etag, "\n")
	if etag == "" {
		return nil, errors.New("cache entry without ETag")
	}
	body, err := readBounded(r)
	if err != nil {
		return nil, err
	}
	return &cacheEntry{etag: etag, body: body}, nil
}

// writeCache publishes a cache entry atomically and durably.
func writeCache(path, etag string, body []byte) error {
	var buf bytes.Buffer
	buf.WriteString(etag)
	buf.WriteByte('\n')
	buf.Write(body)
	return atomicfile.WriteFile(path, buf.Bytes(), 0o644)
}
