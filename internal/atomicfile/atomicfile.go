// Package atomicfile writes a file so that readers see either the old
// content or the whole new content, never a part: a temp file in the same
// folder, written, optionally fsynced, then renamed over the target. It is
// the one such writer of crpe (the blob store has its own, which publishes
// by content address).
package atomicfile

import (
	"os"
	"path/filepath"
)

// File is a file being written; Commit publishes it at its path, Abort (or a
// failed Commit) removes it. Commit is Seal then Publish: a writer of
// several files (a split archive) seals each as it is done and publishes
// them all at the end.
type File struct {
	*os.File
	path   string
	perm   os.FileMode
	sealed bool
	done   bool
}

// Create starts writing path (its folder is created when missing); perm is
// the published file's mode.
func Create(path string, perm os.FileMode) (*File, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &File{File: f, path: path, perm: perm}, nil
}

// Commit publishes the file: its mode set, fsynced when sync is true (a
// file that must survive a power cut), closed and renamed over the path.
func (f *File) Commit(sync bool) error {
	if err := f.Seal(sync); err != nil {
		return err
	}
	return f.Publish()
}

// Seal ends the writing without publishing: the mode set, fsynced when sync
// is true, the file closed (it holds no descriptor any more). Publish or
// Abort follows.
func (f *File) Seal(sync bool) error {
	if f.done || f.sealed {
		return os.ErrClosed
	}
	f.sealed = true
	err := f.Chmod(f.perm)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		f.done = true
		os.Remove(f.Name())
	}
	return err
}

// Publish renames a sealed file over its path.
func (f *File) Publish() error {
	if f.done || !f.sealed {
		return os.ErrClosed
	}
	f.done = true
	err := os.Rename(f.Name(), f.path)
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// OSFile is the temp file being written, for writers that write to a
// regular file in their own way (archive.Write's writev).
func (f *File) OSFile() *os.File { return f.File }

// Path is where the file is published.
func (f *File) Path() string { return f.path }

// Abort discards the file; it does nothing after Commit, so it can be
// deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	if !f.sealed {
		f.File.Close()
	}
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically and durably (fsynced).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit(true)
}
