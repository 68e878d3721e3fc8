package parts

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Set is an archive on disk: one plain file, or the parts of a split one.
type Set struct {
	// Name is the archive's file name (without its folder).
	Name string
	// Manifest is the parts file, nil for a plain archive or when no parts
	// file was given or found beside the parts (they are then ordered by
	// their suffix).
	Manifest *Manifest
	// ManifestPath is where the parts file was read.
	ManifestPath string
	// Paths are the files, in order: one for a plain archive.
	Paths []string
	// Size is the archive's size.
	Size  int64
	split bool
}

// Split tells whether the archive is split.
func (s *Set) Split() bool { return s.split }

// Open opens paths as one archive stream (Resolve, then Set.Open).
func Open(paths ...string) (io.ReadCloser, error) {
	s, err := Resolve(paths...)
	if err != nil {
		return nil, err
	}
	return s.Open()
}

// Open reads the archive: the plain file (an *os.File), or the parts (a
// *Reader that can read a part again, for Explain).
func (s *Set) Open() (io.ReadCloser, error) {
	if !s.split {
		return os.Open(s.Paths[0])
	}
	i := 0
	r := NewReader(s.Manifest, func() (string, io.Reader, error) {
		if i >= len(s.Paths) {
			return "", nil, io.EOF
		}
		name := s.partName(i)
		f, err := os.Open(s.Paths[i])
		i++
		if err != nil {
			return name, nil, err
		}
		return name, f, nil
	})
	r.size = s.Size
	r.reopen = func(i int) (io.ReadCloser, error) { return os.Open(s.Paths[i]) }
	return r, nil
}

func (s *Set) partName(i int) string {
	if s.Manifest != nil {
		return s.Manifest.Parts[i].Name
	}
	return PartName(s.Name, i)
}

// Resolve finds an archive from what a user names: one plain archive file;
// or a split archive by its parts file (NAME.parts), by its first part
// (NAME.000: the parts file is looked for beside it), by the archive's name
// when only its parts are there, or by its parts (in any order, in any
// folders, with or without the parts file). Parts the user did not name are
// looked for in the parts file's folder (else the first part's).
//
// With a parts file, every part must be there with the size it says before
// the first byte is read: a missing part or a part of another size is
// refused here, naming it. Without one, the parts must be NAME.000 to
// NAME.N with none missing between (a missing last part is then only found
// at the archive's end, as a truncated archive).
func Resolve(paths ...string) (*Set, error) {
	if len(paths) == 0 {
		return nil, errors.New("no archive given")
	}
	var list string
	var parts []string
	for _, p := range paths {
		base := filepath.Base(p)
		switch _, _, isPart := SplitName(base); {
		case strings.HasSuffix(base, FileSuffix):
			if list != "" {
				return nil, fmt.Errorf("two parts files given: %s and %s", list, p)
			}
			list = p
		case isPart:
			parts = append(parts, p)
		case len(paths) == 1:
			fi, err := os.Stat(p)
			if err == nil {
				if !fi.Mode().IsRegular() {
					return nil, fmt.Errorf("%s: not a regular file", p)
				}
				return &Set{Name: base, Paths: []string{p}, Size: fi.Size()}, nil
			}
			if _, lerr := os.Stat(p + FileSuffix); errors.Is(err, os.ErrNotExist) && lerr == nil {
				list = p + FileSuffix // the archive's name: its parts are there
				continue
			}
			return nil, err
		default:
			return nil, fmt.Errorf("%s: neither a part (NAME.000, NAME.001, …) nor a parts file (NAME%s): give one archive, or the parts of one", p, FileSuffix)
		}
	}
	// every part named must be of the same archive
	name := ""
	if list != "" {
		name = strings.TrimSuffix(filepath.Base(list), FileSuffix)
	}
	given := map[string]string{} // part name → path
	for _, p := range parts {
		base := filepath.Base(p)
		archive, _, _ := SplitName(base)
		if name == "" {
			name = archive
		}
		if archive != name {
			return nil, fmt.Errorf("%s is not a part of %s", p, name)
		}
		if prev, ok := given[base]; ok {
			return nil, fmt.Errorf("part %s given twice: %s and %s", base, prev, p)
		}
		given[base] = p
	}
	if list == "" && len(parts) > 0 {
		if p := filepath.Join(filepath.Dir(parts[0]), FileName(name)); exists(p) {
			list = p
		}
	}
	if list != "" {
		return resolveWithList(list, given)
	}
	return resolveBySuffix(name, parts, given)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// resolveWithList finds every part the parts file lists and checks its
// size.
func resolveWithList(list string, given map[string]string) (*Set, error) {
	f, err := os.Open(list)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	f.Close()
	if err != nil {
		return nil, err
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", list, err)
	}
	if FileName(m.Archive.Name) != filepath.Base(list) {
		return nil, fmt.Errorf("%s: lists the parts of %s", list, m.Archive.Name)
	}
	s := &Set{Name: m.Archive.Name, Manifest: m, ManifestPath: list, Size: m.Archive.Size, split: true}
	listed := map[string]bool{}
	for _, p := range m.Parts {
		listed[p.Name] = true
	}
	for name, p := range given {
		if !listed[name] {
			return nil, partErr(name, "given (%s), but %s does not list it", p, list)
		}
	}
	dir := filepath.Dir(list)
	for _, p := range m.Parts {
		path, ok := given[p.Name]
		if !ok {
			path = filepath.Join(dir, p.Name)
		}
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, partErr(p.Name, "missing: not given, and not in %s", dir)
		case err != nil:
			return nil, &Error{Part: p.Name, Err: err}
		case !fi.Mode().IsRegular():
			return nil, partErr(p.Name, "%s is not a regular file", path)
		case fi.Size() != p.Size:
			return nil, partErr(p.Name, "%s has %d bytes, the parts file says %d (truncated, or not this archive's part)", path, fi.Size(), p.Size)
		}
		s.Paths = append(s.Paths, path)
	}
	return s, nil
}

// resolveBySuffix orders the parts by their suffix: those given, or the
// first part's siblings when it alone was given.
func resolveBySuffix(name string, parts []string, given map[string]string) (*Set, error) {
	if len(parts) == 1 {
		dir := filepath.Dir(parts[0])
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if archive, _, ok := SplitName(e.Name()); ok && archive == name && given[e.Name()] == "" {
				given[e.Name()] = filepath.Join(dir, e.Name())
			}
		}
	}
	idx := map[int]string{}
	last := -1
	for base, p := range given {
		_, i, _ := SplitName(base)
		idx[i] = p
		last = max(last, i)
	}
	s := &Set{Name: name, split: true}
	var missing []string
	for i := 0; i <= last; i++ {
		p, ok := idx[i]
		if !ok {
			missing = append(missing, PartName(name, i))
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, &Error{Part: filepath.Base(p), Err: err}
		}
		if !fi.Mode().IsRegular() {
			return nil, partErr(filepath.Base(p), "%s is not a regular file", p)
		}
		s.Paths = append(s.Paths, p)
		s.Size += fi.Size()
	}
	if len(missing) > 0 {
		return nil, partErr(missing[0], "missing (no parts file %s was found to say how many parts there are)", FileName(name))
	}
	return s, nil
}
