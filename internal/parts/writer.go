package parts

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/atomicfile"
)

// Writer cuts what is written into parts of at most a given size, hashing
// each part and the whole. Parts are written to temp files beside the
// output; Commit publishes them and then the parts file, Abort removes them:
// a failed export leaves nothing under the output names.
type Writer struct {
	path string // the archive's path: parts are path.000, …
	name string // its file name
	max  int64
	perm os.FileMode

	cur     *atomicfile.File
	curN    int64
	curHash hash.Hash
	whole   hash.Hash
	total   int64
	sealed  []*atomicfile.File
	m       Manifest
	sync    bool
	err     error
}

// Create starts a split archive at path (parts path.000, …, parts file
// path.parts) of parts of at most size bytes. When sync is true each part
// is fsynced as it is sealed (before removable media are unplugged).
func Create(path string, size int64, sync bool) (*Writer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("part size %d: want a positive number of bytes", size)
	}
	name := filepath.Base(path)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Writer{path: path, name: name, max: size, perm: 0o644, sync: sync, whole: sha256.New(),
		m: Manifest{MediaType: MediaType, Archive: Part{Name: name}}}, nil
}

// Write writes p, rolling over to the next part at the part size.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if w.cur == nil {
			if err := w.next(); err != nil {
				w.err = err
				return n, err
			}
		}
		c := p[:min(int64(len(p)), w.max-w.curN)]
		m, err := w.cur.Write(c)
		w.curHash.Write(c[:m])
		w.whole.Write(c[:m])
		w.curN += int64(m)
		w.total += int64(m)
		n += m
		if err != nil {
			if errors.Is(err, syscall.EFBIG) {
				err = fmt.Errorf("%w (the file system takes no file this large: FAT32 holds at most 4 GiB less one byte, --split fat32)", err)
			}
			w.err = err
			return n, err
		}
		p = p[m:]
		if w.curN == w.max {
			if err := w.seal(); err != nil {
				w.err = err
				return n, err
			}
		}
	}
	return n, nil
}

// next starts the next part.
func (w *Writer) next() error {
	i := len(w.m.Parts)
	if i >= MaxParts {
		return fmt.Errorf("%s: more than %d parts: choose a larger part size", w.path, MaxParts)
	}
	name := PartName(w.name, i)
	f, err := atomicfile.Create(PartName(w.path, i), w.perm)
	if err != nil {
		return err
	}
	w.cur, w.curN, w.curHash = f, 0, sha256.New()
	w.m.Parts = append(w.m.Parts, Part{Name: name})
	return nil
}

// seal ends the current part: its temp file closed, its size and digest
// noted.
func (w *Writer) seal() error {
	p := &w.m.Parts[len(w.m.Parts)-1]
	p.Size, p.Digest = w.curN, digest.NewDigest(digest.SHA256, w.curHash)
	f := w.cur
	w.cur = nil
	if err := f.Seal(w.sync); err != nil {
		return err
	}
	w.sealed = append(w.sealed, f)
	return nil
}

// Commit publishes the parts and then the parts file, removes parts of an
// earlier archive of the same name beyond the new last one, and returns the
// parts file's content. A parts file already there is removed first, so
// that it never describes parts it does not match.
func (w *Writer) Commit() (*Manifest, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.cur != nil {
		if err := w.seal(); err != nil {
			w.err = err
			return nil, err
		}
	}
	if len(w.sealed) == 0 {
		return nil, fmt.Errorf("%s: nothing was written", w.path)
	}
	w.err = errors.New("parts: committed")
	w.m.Archive.Size, w.m.Archive.Digest = w.total, digest.NewDigest(digest.SHA256, w.whole)
	list := w.path + FileSuffix
	if err := os.Remove(list); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for i, f := range w.sealed {
		if err := f.Publish(); err != nil {
			for _, g := range w.sealed[:i] {
				os.Remove(g.Path())
			}
			for _, g := range w.sealed[i+1:] {
				g.Abort()
			}
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(list, w.m.Marshal(), w.perm); err != nil {
		for _, g := range w.sealed {
			os.Remove(g.Path())
		}
		return nil, err
	}
	for i := len(w.sealed); ; i++ {
		if os.Remove(PartName(w.path, i)) != nil {
			break
		}
	}
	m := w.m
	return &m, nil
}

// Abort removes every temp part; it does nothing after Commit, so it can be
// deferred.
func (w *Writer) Abort() {
	if w.cur != nil {
		w.cur.Abort()
		w.cur = nil
	}
	for _, f := range w.sealed {
		f.Abort()
	}
	if w.err == nil {
		w.err = errors.New("parts: aborted")
	}
}
