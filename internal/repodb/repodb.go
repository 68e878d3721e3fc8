// Package repodb owns the repository index: which repositories exist, their
// tags, which manifests and blobs each one links, and the referrers of each
// subject. Blob bytes live in a cas.Store; this index only names them.
//
// It is one bbolt file (<data>/index.db). bbolt was chosen over a tree of
// small files rewritten atomically because a single write transaction can
// publish many tags, links and referrers together (an archive import
// publishes all of its images at once, or nothing), every commit is fsynced
// with a copy-on-write B+tree (a kill -9 at any moment leaves either the old
// or the new state, never a mix), and reads are lock-free memory-mapped
// lookups. The file is locked while open, so a second process (fsck) waits
// rather than reading a half-applied state.
package repodb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/octohelm/crpe/internal/oci"
)

var (
	bRepos     = []byte("repos")
	bMeta      = []byte("meta")
	bTags      = []byte("t")
	bManifests = []byte("m")
	bBlobs     = []byte("b")
	bReferrers = []byte("r")
)

// Errors of the index.
var (
	ErrRepoNotFound     = errors.New("repository not found")
	ErrTagNotFound      = errors.New("tag not found")
	ErrManifestNotFound = errors.New("manifest not found")
	ErrBlobNotFound     = errors.New("blob not linked")
	ErrInUse            = errors.New("index is locked by another process")
)

// Manifest is what the index records of a manifest in a repository.
type Manifest struct {
	MediaType    string            `json:"mediaType"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	// Partial marks a manifest whose config and layers need not all be
	// present: cached by a pull-through cache before its blobs were
	// fetched, or pushed sparse on purpose.
	Partial bool `json:"partial,omitempty"`
}

// ManifestRecord is the record of manifest m whose bytes are body: the one
// builder of a Manifest (the registry's push, the pull-through cache and the
// importer all record manifests with it).
func ManifestRecord(m *oci.Manifest, body []byte) Manifest {
	rec := Manifest{MediaType: m.MediaType, Size: int64(len(body)), ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	if m.Subject != nil {
		rec.Subject = m.Subject.Digest
	}
	return rec
}

// Descriptor is a referrer as the referrers API lists it.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// DB is the repository index.
type DB struct {
	db    *bolt.DB
	group group // Batch's
}

// Open opens (creating if needed) the index at path. readOnly opens it for
// inspection (fsck); it waits up to timeout for another process's lock.
func Open(path string, readOnly bool, timeout time.Duration) (*DB, error) {
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: timeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is a crpe process running on this data folder?)", ErrInUse, path)
		}
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	if !readOnly {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bRepos, bMeta} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return tx.Bucket(bMeta).Put([]byte("schema"), []byte("1"))
		})
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return &DB{db: db}, nil
}

// Close releases the index.
func (d *DB) Close() error { return d.db.Close() }

// Tx is a write transaction over the index. Everything done through one Tx
// becomes visible at once when Update returns nil, or not at all.
type Tx struct{ tx *bolt.Tx }

// Update runs fn in one write transaction.
func (d *DB) Update(fn func(*Tx) error) error {
	return d.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// View runs fn in a read transaction (a consistent snapshot).
func (d *DB) View(fn func(*Tx) error) error {
	return d.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

func (t *Tx) repo(name string, create bool) (*bolt.Bucket, error) {
	repos := t.tx.Bucket(bRepos)
	if repos == nil {
		return nil, fmt.Errorf("%w: %s", ErrRepoNotFound, name)
	}
	if b := repos.Bucket([]byte(name)); b != nil {
		return b, nil
	}
	if !create {
		return nil, fmt.Errorf("%w: %s", ErrRepoNotFound, name)
	}
	b, err := repos.CreateBucket([]byte(name))
	if err != nil {
		return nil, err
	}
	for _, sub := range [][]byte{bTags, bManifests, bBlobs, bReferrers} {
		if _, err := b.CreateBucket(sub); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// RepoExists reports whether the repository has anything.
func (t *Tx) RepoExists(name string) bool {
	_, err := t.repo(name, false)
	return err == nil
}

// LinkBlob records that repository name holds blob d of size.
func (t *Tx) LinkBlob(name string, d digest.Digest, size int64) error {
	b, err := t.repo(name, true)
	if err != nil {
		return err
	}
	return b.Bucket(bBlobs).Put([]byte(d), binary.AppendVarint(nil, size))
}

// Blob returns the size of blob d if repository name links it.
func (t *Tx) Blob(name string, d digest.Digest) (int64, error) {
	b, err := t.repo(name, false)
	if err != nil {
		return 0, fmt.Errorf("%w: %s in %s", ErrBlobNotFound, d, name)
	}
	v := b.Bucket(bBlobs).Get([]byte(d))
	if v == nil {
		return 0, fmt.Errorf("%w: %s in %s", ErrBlobNotFound, d, name)
	}
	size, _ := binary.Varint(v)
	return size, nil
}

// UnlinkBlob removes blob d from repository name.
func (t *Tx) UnlinkBlob(name string, d digest.Digest) error {
	if _, err := t.Blob(name, d); err != nil {
		return err
	}
	b, _ := t.repo(name, false)
	if err := b.Bucket(bBlobs).Delete([]byte(d)); err != nil {
		return err
	}
	return t.dropIfEmpty(name)
}

// PutManifest records manifest d in repository name and, when subject is
// set, lists it among the subject's referrers.
func (t *Tx) PutManifest(name string, d digest.Digest, m Manifest) error {
	b, err := t.repo(name, true)
	if err != nil {
		return err
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := b.Bucket(bManifests).Put([]byte(d), v); err != nil {
		return err
	}
	if m.Subject != "" {
		ref, _ := json.Marshal(Descriptor{MediaType: m.MediaType, Digest: d, Size: m.Size, ArtifactType: m.ArtifactType, Annotations: m.Annotations})
		if err := b.Bucket(bReferrers).Put(referrerKey(m.Subject, d), ref); err != nil {
			return err
		}
	}
	return nil
}

func referrerKey(subject, d digest.Digest) []byte {
	return []byte(string(subject) + "\x00" + string(d))
}

// Manifest returns the record of manifest d in repository name.
func (t *Tx) Manifest(name string, d digest.Digest) (Manifest, error) {
	var m Manifest
	b, err := t.repo(name, false)
	if err != nil {
		return m, fmt.Errorf("%w: %s in %s", ErrManifestNotFound, d, name)
	}
	v := b.Bucket(bManifests).Get([]byte(d))
	if v == nil {
		return m, fmt.Errorf("%w: %s in %s", ErrManifestNotFound, d, name)
	}
	err = json.Unmarshal(v, &m)
	return m, err
}

// DeleteManifest removes manifest d from repository name, with the tags that
// point at it and its referrers entry.
func (t *Tx) DeleteManifest(name string, d digest.Digest) error {
	n, err := t.DeleteManifests(name, map[digest.Digest]bool{d: true})
	if err == nil && n == 0 {
		err = fmt.Errorf("%w: %s in %s", ErrManifestNotFound, d, name)
	}
	return err
}

// DeleteManifests removes the manifests ds that repository name records,
// with the tags that point at them and their referrers entries, in one pass
// over the repository's tags (garbage collection drops many at once). It
// returns how many it removed; a digest not recorded is skipped.
func (t *Tx) DeleteManifests(name string, ds map[digest.Digest]bool) (int, error) {
	b, err := t.repo(name, false)
	if err != nil {
		return 0, nil
	}
	gone := map[string]bool{}
	for d := range ds {
		m, err := t.Manifest(name, d)
		if err != nil {
			continue
		}
		if err := b.Bucket(bManifests).Delete([]byte(d)); err != nil {
			return len(gone), err
		}
		if m.Subject != "" {
			if err := b.Bucket(bReferrers).Delete(referrerKey(m.Subject, d)); err != nil {
				return len(gone), err
			}
		}
		gone[string(d)] = true
	}
	if len(gone) == 0 {
		return 0, nil
	}
	tags := b.Bucket(bTags)
	var drop [][]byte
	_ = tags.ForEach(func(k, v []byte) error {
		if gone[string(v)] {
			drop = append(drop, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range drop {
		if err := tags.Delete(k); err != nil {
			return len(gone), err
		}
	}
	return len(gone), t.dropIfEmpty(name)
}

// SetTag points tag at manifest d (which must be recorded).
func (t *Tx) SetTag(name, tag string, d digest.Digest) error {
	if _, err := t.Manifest(name, d); err != nil {
		return err
	}
	b, _ := t.repo(name, false)
	return b.Bucket(bTags).Put([]byte(tag), []byte(d))
}

// Tag resolves tag in repository name.
func (t *Tx) Tag(name, tag string) (digest.Digest, error) {
	b, err := t.repo(name, false)
	if err != nil {
		return "", fmt.Errorf("%w: %s:%s", ErrTagNotFound, name, tag)
	}
	v := b.Bucket(bTags).Get([]byte(tag))
	if v == nil {
		return "", fmt.Errorf("%w: %s:%s", ErrTagNotFound, name, tag)
	}
	return digest.Digest(v), nil
}

// DeleteTag removes tag from repository name.
func (t *Tx) DeleteTag(name, tag string) error {
	if _, err := t.Tag(name, tag); err != nil {
		return err
	}
	b, _ := t.repo(name, false)
	if err := b.Bucket(bTags).Delete([]byte(tag)); err != nil {
		return err
	}
	return t.dropIfEmpty(name)
}

// Tags lists the tags of repository name in lexical order, after last, at
// most n of them (n <= 0: all). more tells whether tags follow.
func (t *Tx) Tags(name, last string, n int) (tags []string, more bool, err error) {
	b, err := t.repo(name, false)
	if err != nil {
		return nil, false, err
	}
	tags, more = page(b.Bucket(bTags).Cursor(), last, n)
	return tags, more, nil
}

// Repositories lists repository names in lexical order, after last, at most n.
func (t *Tx) Repositories(last string, n int) ([]string, bool) {
	repos := t.tx.Bucket(bRepos)
	if repos == nil {
		return nil, false
	}
	return page(repos.Cursor(), last, n)
}

func page(c *bolt.Cursor, last string, n int) ([]string, bool) {
	out := []string{}
	var k []byte
	if last == "" {
		k, _ = c.First()
	} else {
		k, _ = c.Seek([]byte(last))
		if k != nil && string(k) == last {
			k, _ = c.Next()
		}
	}
	for ; k != nil; k, _ = c.Next() {
		if n > 0 && len(out) == n {
			return out, true
		}
		out = append(out, string(k))
	}
	return out, false
}

// Referrers lists the manifests of repository name whose subject is d,
// sorted by digest.
func (t *Tx) Referrers(name string, subject digest.Digest) ([]Descriptor, error) {
	out := []Descriptor{}
	b, err := t.repo(name, false)
	if err != nil {
		return out, nil
	}
	prefix := []byte(string(subject) + "\x00")
	c := b.Bucket(bReferrers).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var desc Descriptor
		if err := json.Unmarshal(v, &desc); err != nil {
			return nil, err
		}
		out = append(out, desc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// ForEachRepo calls fn with every repository name.
func (t *Tx) ForEachRepo(fn func(name string) error) error {
	repos := t.tx.Bucket(bRepos)
	if repos == nil {
		return nil
	}
	return repos.ForEachBucket(func(k []byte) error { return fn(string(k)) })
}

// ForEachManifest calls fn with every manifest of repository name.
func (t *Tx) ForEachManifest(name string, fn func(digest.Digest, Manifest) error) error {
	b, err := t.repo(name, false)
	if err != nil {
		return err
	}
	return b.Bucket(bManifests).ForEach(func(k, v []byte) error {
		var m Manifest
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("manifest %s in %s: %w", k, name, err)
		}
		return fn(digest.Digest(k), m)
	})
}

// ForEachTag calls fn with every tag of repository name.
func (t *Tx) ForEachTag(name string, fn func(tag string, d digest.Digest) error) error {
	b, err := t.repo(name, false)
	if err != nil {
		return err
	}
	return b.Bucket(bTags).ForEach(func(k, v []byte) error { return fn(string(k), digest.Digest(v)) })
}

// ForEachBlob calls fn with every blob linked by repository name.
func (t *Tx) ForEachBlob(name string, fn func(digest.Digest, int64) error) error {
	b, err := t.repo(name, false)
	if err != nil {
		return err
	}
	return b.Bucket(bBlobs).ForEach(func(k, v []byte) error {
		size, _ := binary.Varint(v)
		return fn(digest.Digest(k), size)
	})
}

func (t *Tx) dropIfEmpty(name string) error {
	b, err := t.repo(name, false)
	if err != nil {
		return nil
	}
	for _, sub := range [][]byte{bTags, bManifests, bBlobs, bReferrers} {
		if k, _ := b.Bucket(sub).Cursor().First(); k != nil {
			return nil
		}
	}
	return t.tx.Bucket(bRepos).DeleteBucket([]byte(name))
}

var bPackages = []byte("kubepkgs")

// PackageVersion is one imported version of a package.
type PackageVersion struct {
	Version    string            `json:"version"`
	Images     map[string]string `json:"images"`
	Platforms  string            `json:"platforms,omitempty"`
	ImportedAt time.Time         `json:"importedAt"`
	Forced     bool              `json:"forced,omitempty"`
	// Expired marks a version past --keep-versions: its images may be
	// garbage-collected.
	Expired bool `json:"expired,omitempty"`
	// Signatures are the verdicts of the import's signature check, as the
	// importer wrote them (kubepkg.Signature JSON).
	Signatures json.RawMessage `json:"signatures,omitempty"`
}

// Package is an imported package: its current version and its history
// (oldest first, the current one last).
type Package struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Version    string            `json:"version"`
	Images     map[string]string `json:"images"`
	Platforms  string            `json:"platforms,omitempty"`
	ImportedAt time.Time         `json:"importedAt"`
	// Object is the KubePkg as imported (JSON).
	Object  json.RawMessage  `json:"object,omitempty"`
	History []PackageVersion `json:"history"`
}

func packageKey(namespace, name string) []byte { return []byte(namespace + "/" + name) }

// Package returns the record of package namespace/name.
func (t *Tx) Package(namespace, name string) (*Package, bool, error) {
	b := t.tx.Bucket(bPackages)
	if b == nil {
		return nil, false, nil
	}
	v := b.Get(packageKey(namespace, name))
	if v == nil {
		return nil, false, nil
	}
	var p Package
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, false, err
	}
	return &p, true, nil
}

// PutPackage records p.
func (t *Tx) PutPackage(p *Package) error {
	b, err := t.tx.CreateBucketIfNotExists(bPackages)
	if err != nil {
		return err
	}
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.Put(packageKey(p.Namespace, p.Name), v)
}

// Packages lists every package record, sorted by namespace and name.
func (t *Tx) Packages() ([]*Package, error) {
	out := []*Package{}
	b := t.tx.Bucket(bPackages)
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		var p Package
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("package %s: %w", k, err)
		}
		out = append(out, &p)
		return nil
	})
	return out, err
}
