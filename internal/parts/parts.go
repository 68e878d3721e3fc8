// Package parts owns split archives, for removable media: a kubepkg.tgz cut
// into files of at most a given size (NAME.000, NAME.001, …) and the parts
// file NAME.parts (JSON) listing each part's name, size and sha256 digest,
// and the whole archive's. The parts concatenated are exactly the archive.
//
// Writer cuts what is written into parts (temp files published together at
// the end, with the parts file last). Resolve finds the parts of an archive
// from its parts file, its first part or all its parts, checks the files
// present against the parts file before the first byte is read, and Reader
// streams them back as one archive, checking each part's digest at its end
// (before its last bytes are handed on), so that a consumer never reaches
// the archive's end through a corrupt, truncated or misplaced part.
//
// The parts file is untrusted: it is read bounded (MaxFileSize), holds at
// most MaxParts parts, and every name in it must be a plain file name (no
// folder, no "..") of the form ARCHIVE.NNN, in order.
package parts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// MediaType is the parts file's mediaType.
const MediaType = "application/vnd.octohelm.crpe.kubepkg-parts.v1+json"

// FileSuffix ends a parts file's name: demo-1.0.0.kubepkg.tgz.parts.
const FileSuffix = ".parts"

// MaxFileSize bounds a parts file; MaxParts bounds its parts (10000 parts of
// 4 GiB are 40 TiB).
const (
	MaxFileSize = 2 << 20
	MaxParts    = 10000
)

// FAT32 is the largest file FAT32 holds (4 GiB less one byte), the size
// "fat32" stands for in ParseSize.
const FAT32 = 4<<30 - 1

// Manifest is a parts file.
type Manifest struct {
	MediaType string `json:"mediaType"`
	// Archive is the whole archive: what the parts concatenated are.
	Archive Part `json:"archive"`
	// Parts are in order.
	Parts []Part `json:"parts"`
}

// Part names a file by its name (a plain file name), size and digest.
type Part struct {
	Name   string        `json:"name"`
	Size   int64         `json:"size"`
	Digest digest.Digest `json:"digest"`
}

// Error is a refusal of a part (or of the parts file), naming it.
type Error struct {
	Part   string
	Reason string
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "part %s", e.Part)
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func partErr(part, format string, args ...any) *Error {
	return &Error{Part: part, Reason: fmt.Sprintf(format, args...)}
}

// PartName is the name of part i of archive: archive.000, archive.001, …
// (archive.1000 after archive.999).
func PartName(archive string, i int) string { return fmt.Sprintf("%s.%03d", archive, i) }

// FileName is the name of archive's parts file.
func FileName(archive string) string { return archive + FileSuffix }

var partRE = regexp.MustCompile(`^(.+)\.([0-9]{3,})$`)

// SplitName tells whether name is a part's name (PartName's form) and, if so,
// which archive it belongs to and its index.
func SplitName(name string) (archive string, i int, ok bool) {
	m := partRE.FindStringSubmatch(name)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n >= MaxParts || PartName(m[1], n) != name {
		return "", 0, false
	}
	return m[1], n, true
}

// checkName refuses anything but a plain file name: no folder, no "..", no
// control characters.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 255:
		return errors.New("name longer than 255 bytes")
	case name == "." || name == ".." || strings.Contains(name, ".."):
		return errors.New(`not a plain file name (".." is not allowed)`)
	case strings.ContainsAny(name, `/\:`):
		return errors.New("not a plain file name (no folders)")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errors.New("not a plain file name (control character)")
		}
	}
	return nil
}

func checkDigest(d digest.Digest) error {
	if !strings.HasPrefix(string(d), "sha256:") || d.Validate() != nil {
		return fmt.Errorf("digest %q: want sha256:<64 lowercase hex>", d)
	}
	return nil
}

// Parse reads a parts file and validates it: its media type, the archive's
// name and digest, 1 to MaxParts parts each named ARCHIVE.NNN in order (so
// every name is a plain file name in the parts file's folder), each with a
// positive size and a sha256 digest, the sizes adding up to the archive's.
// A refusal naming a part is an *Error.
func Parse(b []byte) (*Manifest, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("parts file: more than %d bytes", MaxFileSize)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parts file: not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parts file: more than one JSON value")
	}
	if m.MediaType != MediaType {
		return nil, fmt.Errorf("parts file: mediaType %q, want %q", m.MediaType, MediaType)
	}
	if err := checkName(m.Archive.Name); err != nil {
		return nil, fmt.Errorf("parts file: archive name %q: %w", m.Archive.Name, err)
	}
	if err := checkDigest(m.Archive.Digest); err != nil {
		return nil, fmt.Errorf("parts file: archive: %w", err)
	}
	if len(m.Parts) == 0 {
		return nil, errors.New("parts file: no parts")
	}
	if len(m.Parts) > MaxParts {
		return nil, fmt.Errorf("parts file: %d parts, at most %d", len(m.Parts), MaxParts)
	}
	var total int64
	for i, p := range m.Parts {
		if err := checkName(p.Name); err != nil {
			return nil, &Error{Part: p.Name, Reason: "refused in the parts file", Err: err}
		}
		if want := PartName(m.Archive.Name, i); p.Name != want {
			return nil, partErr(p.Name, "listed as part %d of %s, whose part %d is named %s", i, m.Archive.Name, i, want)
		}
		if p.Size <= 0 || p.Size > 1<<50 {
			return nil, partErr(p.Name, "size %d in the parts file", p.Size)
		}
		if err := checkDigest(p.Digest); err != nil {
			return nil, &Error{Part: p.Name, Reason: "refused in the parts file", Err: err}
		}
		total += p.Size
	}
	if total != m.Archive.Size {
		return nil, fmt.Errorf("parts file: the parts hold %d bytes, the archive %d", total, m.Archive.Size)
	}
	return &m, nil
}

// Marshal writes m as a parts file (indented JSON, a final newline).
func (m *Manifest) Marshal() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// ParseSize reads a part size: plain bytes (1048576), a binary unit
// (512KiB, 64MiB, 1GiB, 1TiB; case does not matter), or "fat32", the
// largest file FAT32 holds (4 GiB less one byte: a 4GiB part does not fit).
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "fat32" {
		return FAT32, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"b", 1}} {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, KiB, MiB, GiB or TiB (64MiB, 1GiB, 4294967295), or fat32", s)
	}
	return n * mult, nil
}
