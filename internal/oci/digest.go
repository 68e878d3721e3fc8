package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ErrInvalidDigest is wrapped by every error about a digest's form.
var ErrInvalidDigest = errors.New("invalid digest")

var encodedRE = map[digest.Algorithm]*regexp.Regexp{
	digest.SHA256: regexp.MustCompile(`^[a-f0-9]{64}$`),
	digest.SHA512: regexp.MustCompile(`^[a-f0-9]{128}$`),
}

// Supported reports whether alg is an algorithm crpe takes (sha256, sha512).
func Supported(alg digest.Algorithm) bool { _, ok := encodedRE[alg]; return ok }

// ParseDigest validates s as a digest crpe takes: sha256 or sha512 with a
// lowercase hex encoding of the right length. It never panics. This is the
// one digest check of crpe.
func ParseDigest(s string) (digest.Digest, error) {
	if len(s) > 7+1+128 {
		return "", fmt.Errorf("%w: too long", ErrInvalidDigest)
	}
	alg, enc, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("%w: %q has no algorithm", ErrInvalidDigest, s)
	}
	re, ok := encodedRE[digest.Algorithm(alg)]
	if !ok {
		return "", fmt.Errorf("%w: unsupported algorithm %q", ErrInvalidDigest, alg)
	}
	if !re.MatchString(enc) {
		return "", fmt.Errorf("%w: %q is not a valid %s encoding", ErrInvalidDigest, enc, alg)
	}
	return digest.Digest(s), nil
}

// IsDigest reports whether s is a digest ParseDigest takes.
func IsDigest(s string) bool { _, err := ParseDigest(s); return err == nil }

// NewHash returns a fresh hash for a supported algorithm.
func NewHash(alg digest.Algorithm) (hash.Hash, error) {
	switch alg {
	case digest.SHA256:
		return sha256.New(), nil
	case digest.SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("%w: unsupported algorithm %q", ErrInvalidDigest, alg)
}
