package casfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/oci"
)

// Finding is one thing Check noticed.
type Finding struct {
	// Problem is true for damage (a corrupt or stray blob), false for
	// information (a leftover temp file of an interrupted write).
	Problem  bool
	Path     string
	Digest   digest.Digest
	Message  string
	Repaired bool
}

// Check re-hashes every blob and lists what is wrong. With repair it removes
// corrupt blobs, stray files in the blob folders and leftover temp files.
// It returns the number of blobs checked.
func (s *Store) Check(ctx context.Context, repair bool, report func(Finding)) (int, error) {
	n := 0
	buf := make([]byte, copyBufSize)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		dir := filepath.Join(s.root, "blobs", string(alg))
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return n, err
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			p := filepath.Join(dir, e.Name())
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if _, err := oci.ParseDigest(string(d)); err != nil || !e.Type().IsRegular() {
				f := Finding{Problem: true, Path: p, Message: "not a blob (bad name or not a regular file)"}
				if repair {
					f.Repaired = os.RemoveAll(p) == nil
				}
				report(f)
				continue
			}
			n++
			got, err := hashFile(p, alg, buf)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // deleted meanwhile
				}
				report(Finding{Problem: true, Path: p, Digest: d, Message: "unreadable: " + err.Error()})
				continue
			}
			if got != d {
				f := Finding{Problem: true, Path: p, Digest: d, Message: fmt.Sprintf("corrupt: content hashes to %s", got)}
				if repair {
					f.Repaired = os.Remove(p) == nil
				}
				report(f)
			}
		}
	}
	entries, err := os.ReadDir(s.IngestDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return n, err
	}
	for _, e := range entries {
		p := filepath.Join(s.IngestDir(), e.Name())
		f := Finding{Path: p, Message: "leftover temp file of an interrupted write"}
		if repair {
			f.Repaired = os.RemoveAll(p) == nil
		}
		report(f)
	}
	return n, nil
}

// CleanIngest removes every leftover temp file. Only call it when no write
// can be in progress (at start, before serving).
func (s *Store) CleanIngest() (int, error) {
	entries, err := os.ReadDir(s.IngestDir())
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.IngestDir(), e.Name())); err != nil {
			return 0, err
		}
	}
	return len(entries), nil
}

func hashFile(p string, alg digest.Algorithm, buf []byte) (digest.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, err := oci.NewHash(alg)
	if err != nil {
		return "", err
	}
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return "", err
	}
	return digest.NewDigest(alg, h), nil
}
