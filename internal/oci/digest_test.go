package oci

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseDigest(t *testing.T) {
	ok := []string{
		string(digest.FromString("a")),
		string(digest.SHA512.FromString("a")),
	}
	for _, s := range ok {
		if _, err := ParseDigest(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := []string{"", "sha256", "sha256:", "sha256:abc", "sha384:" + strings.Repeat("a", 96),
		"sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("g", 64), "md5:abc",
		"sha256:" + strings.Repeat("a", 63) + "/", "sha256:../" + strings.Repeat("a", 61)}
	for _, s := range bad {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(string(digest.FromString("a")))
	f.Add("sha512:" + strings.Repeat("0", 128))
	f.Add("sha256:../../x")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		// whatever is accepted is safe as a path component and valid for go-digest
		if strings.ContainsAny(d.Encoded(), "/\\.") {
			t.Fatalf("accepted path-unsafe digest %q", s)
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("accepted %q that go-digest rejects: %v", s, err)
		}
	})
}
