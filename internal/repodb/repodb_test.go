package repodb_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/repodb"
)

func open(t *testing.T) *repodb.DB {
	t.Helper()
	db, err := repodb.Open(filepath.Join(t.TempDir(), "index.db"), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func dg(s string) digest.Digest { return digest.FromString(s) }

const manifestType = "application/vnd.oci.image.manifest.v1+json"

func update(t *testing.T, db *repodb.DB, fn func(tx *repodb.Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, db *repodb.DB, fn func(tx *repodb.Tx) error) {
	t.Helper()
	if err := db.View(fn); err != nil {
		t.Fatal(err)
	}
}

func TestTags(t *testing.T) {
	db := open(t)
	const repo = "docker.io/library/app"
	m1, m2 := dg("m1"), dg("m2")
	if err := db.Update(func(tx *repodb.Tx) error { return tx.SetTag(repo, "1.0", m1) }); !errors.Is(err, repodb.ErrManifestNotFound) {
		t.Fatalf("tag of an unrecorded manifest: %v, want ErrManifestNotFound", err)
	}
	update(t, db, func(tx *repodb.Tx) error {
		for _, d := range []digest.Digest{m1, m2} {
			if err := tx.PutManifest(repo, d, repodb.Manifest{MediaType: manifestType, Size: 10}); err != nil {
				return err
			}
		}
		for _, tag := range []string{"b", "a", "c", "latest"} {
			if err := tx.SetTag(repo, tag, m1); err != nil {
				return err
			}
		}
		return tx.SetTag(repo, "latest", m2) // moved
	})
	view(t, db, func(tx *repodb.Tx) error {
		if d, err := tx.Tag(repo, "latest"); err != nil || d != m2 {
			t.Errorf("latest = %s, %v; want %s", d, err, m2)
		}
		if _, err := tx.Tag(repo, "nope"); !errors.Is(err, repodb.ErrTagNotFound) {
			t.Errorf("unknown tag: %v", err)
		}
		if _, err := tx.Tag("docker.io/library/other", "a"); !errors.Is(err, repodb.ErrTagNotFound) {
			t.Errorf("tag of an unknown repository: %v", err)
		}
		all, more, err := tx.Tags(repo, "", 0)
		if err != nil || more || !reflect.DeepEqual(all, []string{"a", "b", "c", "latest"}) {
			t.Errorf("Tags = %v, %v, %v", all, more, err)
		}
		page, more, _ := tx.Tags(repo, "", 2)
		if !reflect.DeepEqual(page, []string{"a", "b"}) || !more {
			t.Errorf("first page = %v, more %v", page, more)
		}
		page, more, _ = tx.Tags(repo, "b", 2)
		if !reflect.DeepEqual(page, []string{"c", "latest"}) || more {
			t.Errorf("page after b = %v, more %v", page, more)
		}
		return nil
	})
	update(t, db, func(tx *repodb.Tx) error { return tx.DeleteTag(repo, "a") })
	view(t, db, func(tx *repodb.Tx) error {
		if _, err := tx.Tag(repo, "a"); !errors.Is(err, repodb.ErrTagNotFound) {
			t.Errorf("deleted tag: %v", err)
		}
		if _, err := tx.Manifest(repo, m1); err != nil {
			t.Errorf("deleting a tag dropped its manifest: %v", err)
		}
		return nil
	})
	if err := db.Update(func(tx *repodb.Tx) error { return tx.DeleteTag(repo, "a") }); !errors.Is(err, repodb.ErrTagNotFound) {
		t.Errorf("deleting a deleted tag: %v", err)
	}
}

func TestManifestsAndReferrers(t *testing.T) {
	db := open(t)
	const repo, other = "ghcr.io/acme/app", "ghcr.io/acme/other"
	subject, sig, sbom, plain := dg("subject"), dg("sig"), dg("sbom"), dg("plain")
	update(t, db, func(tx *repodb.Tx) error {
		if err := tx.PutManifest(repo, subject, repodb.Manifest{MediaType: manifestType, Size: 100}); err != nil {
			return err
		}
		if err := tx.PutManifest(repo, sig, repodb.Manifest{MediaType: manifestType, Size: 20, ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json", Subject: subject,
			Annotations: map[string]string{"k": "v"}}); err != nil {
			return err
		}
		if err := tx.PutManifest(repo, sbom, repodb.Manifest{MediaType: manifestType, Size: 30, ArtifactType: "application/spdx+json", Subject: subject}); err != nil {
			return err
		}
		if err := tx.PutManifest(repo, plain, repodb.Manifest{MediaType: manifestType, Size: 40, Partial: true}); err != nil {
			return err
		}
		return tx.SetTag(repo, "sig", sig)
	})
	view(t, db, func(tx *repodb.Tx) error {
		m, err := tx.Manifest(repo, sig)
		if err != nil || m.Subject != subject || m.ArtifactType == "" || m.Annotations["k"] != "v" || m.Size != 20 {
			t.Errorf("Manifest(sig) = %+v, %v", m, err)
		}
		if m, _ := tx.Manifest(repo, plain); !m.Partial {
			t.Errorf("Partial not kept: %+v", m)
		}
		if _, err := tx.Manifest(other, sig); !errors.Is(err, repodb.ErrManifestNotFound) {
			t.Errorf("manifest of another repository: %v", err)
		}
		refs, err := tx.Referrers(repo, subject)
		if err != nil || len(refs) != 2 {
			t.Fatalf("Referrers = %+v, %v", refs, err)
		}
		want := []digest.Digest{sig, sbom}
		if want[0] > want[1] {
			want[0], want[1] = want[1], want[0]
		}
		if refs[0].Digest != want[0] || refs[1].Digest != want[1] {
			t.Errorf("referrers not sorted by digest: %+v", refs)
		}
		for _, r := range refs {
			if r.Digest == sig && (r.ArtifactType != "application/vnd.dev.cosign.artifact.sig.v1+json" || r.Size != 20 || r.MediaType != manifestType || r.Annotations["k"] != "v") {
				t.Errorf("referrer descriptor %+v", r)
			}
		}
		if refs, _ := tx.Referrers(other, subject); len(refs) != 0 {
			t.Errorf("referrers leak into another repository: %+v", refs)
		}
		if refs, _ := tx.Referrers(repo, plain); len(refs) != 0 {
			t.Errorf("referrers of a manifest nothing refers to: %+v", refs)
		}
		n := 0
		_ = tx.ForEachManifest(repo, func(digest.Digest, repodb.Manifest) error { n++; return nil })
		if n != 4 {
			t.Errorf("ForEachManifest saw %d, want 4", n)
		}
		return nil
	})

	// deleting a referrer drops its referrers entry and the tags on it
	update(t, db, func(tx *repodb.Tx) error { return tx.DeleteManifest(repo, sig) })
	view(t, db, func(tx *repodb.Tx) error {
		refs, _ := tx.Referrers(repo, subject)
		if len(refs) != 1 || refs[0].Digest != sbom {
			t.Errorf("referrers after deleting sig: %+v", refs)
		}
		if _, err := tx.Tag(repo, "sig"); !errors.Is(err, repodb.ErrTagNotFound) {
			t.Errorf("tag on a deleted manifest: %v", err)
		}
		if _, err := tx.Manifest(repo, sig); !errors.Is(err, repodb.ErrManifestNotFound) {
			t.Errorf("deleted manifest: %v", err)
		}
		return nil
	})
	if err := db.Update(func(tx *repodb.Tx) error { return tx.DeleteManifest(repo, sig) }); !errors.Is(err, repodb.ErrManifestNotFound) {
		t.Errorf("deleting a deleted manifest: %v", err)
	}
}

func TestBlobLinks(t *testing.T) {
	db := open(t)
	const a, b = "docker.io/library/a", "docker.io/library/b"
	l1, l2 := dg("l1"), dg("l2")
	update(t, db, func(tx *repodb.Tx) error {
		if err := tx.LinkBlob(a, l1, 1234); err != nil {
			return err
		}
		if err := tx.LinkBlob(a, l2, 1<<40); err != nil {
			return err
		}
		return tx.LinkBlob(b, l1, 1234)
	})
	view(t, db, func(tx *repodb.Tx) error {
		if size, err := tx.Blob(a, l2); err != nil || size != 1<<40 {
			t.Errorf("Blob(a, l2) = %d, %v", size, err)
		}
		if _, err := tx.Blob(b, l2); !errors.Is(err, repodb.ErrBlobNotFound) {
			t.Errorf("blob not linked in b: %v", err)
		}
		if _, err := tx.Blob("docker.io/library/none", l1); !errors.Is(err, repodb.ErrBlobNotFound) {
			t.Errorf("blob of an unknown repository: %v", err)
		}
		got := map[digest.Digest]int64{}
		_ = tx.ForEachBlob(a, func(d digest.Digest, size int64) error { got[d] = size; return nil })
		if !reflect.DeepEqual(got, map[digest.Digest]int64{l1: 1234, l2: 1 << 40}) {
			t.Errorf("ForEachBlob(a) = %v", got)
		}
		return nil
	})
	update(t, db, func(tx *repodb.Tx) error { return tx.UnlinkBlob(a, l1) })
	view(t, db, func(tx *repodb.Tx) error {
		if _, err := tx.Blob(a, l1); !errors.Is(err, repodb.ErrBlobNotFound) {
			t.Errorf("unlinked blob: %v", err)
		}
		if _, err := tx.Blob(b, l1); err != nil {
			t.Errorf("unlinking from a unlinked it from b: %v", err)
		}
		return nil
	})
	if err := db.Update(func(tx *repodb.Tx) error { return tx.UnlinkBlob(a, l1) }); !errors.Is(err, repodb.ErrBlobNotFound) {
		t.Errorf("unlinking an unlinked blob: %v", err)
	}
}

// TestDeleteDropsEmptyRepositories: a repository exists while it holds a
// tag, manifest, blob link or referrer, and is listed in order.
func TestDeleteDropsEmptyRepositories(t *testing.T) {
	db := open(t)
	const a, b, c = "docker.io/library/a", "docker.io/library/b", "docker.io/library/c"
	m, l := dg("m"), dg("l")
	update(t, db, func(tx *repodb.Tx) error {
		for _, r := range []string{c, a, b} {
			if err := tx.PutManifest(r, m, repodb.Manifest{MediaType: manifestType}); err != nil {
				return err
			}
			if err := tx.SetTag(r, "1", m); err != nil {
				return err
			}
		}
		return tx.LinkBlob(b, l, 1)
	})
	view(t, db, func(tx *repodb.Tx) error {
		if names, more := tx.Repositories("", 0); !reflect.DeepEqual(names, []string{a, b, c}) || more {
			t.Errorf("Repositories = %v, %v", names, more)
		}
		if names, more := tx.Repositories(a, 1); !reflect.DeepEqual(names, []string{b}) || !more {
			t.Errorf("Repositories after a, 1 = %v, %v", names, more)
		}
		return nil
	})
	update(t, db, func(tx *repodb.Tx) error {
		if err := tx.DeleteManifest(a, m); err != nil { // its tag goes with it
			return err
		}
		return tx.DeleteManifest(b, m) // b still links a blob
	})
	view(t, db, func(tx *repodb.Tx) error {
		if tx.RepoExists(a) {
			t.Error("repository a, now empty, still exists")
		}
		if !tx.RepoExists(b) {
			t.Error("repository b, which links a blob, is gone")
		}
		n := 0
		_ = tx.ForEachRepo(func(string) error { n++; return nil })
		if n != 2 {
			t.Errorf("ForEachRepo saw %d repositories, want 2", n)
		}
		return nil
	})
	update(t, db, func(tx *repodb.Tx) error { return tx.UnlinkBlob(b, l) })
	view(t, db, func(tx *repodb.Tx) error {
		if tx.RepoExists(b) {
			t.Error("repository b, now empty, still exists")
		}
		return nil
	})
}

// TestFailedUpdateChangesNothing: everything of a transaction that returns
// an error is undone.
func TestFailedUpdateChangesNothing(t *testing.T) {
	db := open(t)
	const repo = "docker.io/library/app"
	boom := errors.New("boom")
	err := db.Update(func(tx *repodb.Tx) error {
		if err := tx.PutManifest(repo, dg("m"), repodb.Manifest{MediaType: manifestType}); err != nil {
			return err
		}
		if err := tx.SetTag(repo, "1", dg("m")); err != nil {
			return err
		}
		if err := tx.LinkBlob(repo, dg("l"), 1); err != nil {
			return err
		}
		if err := tx.PutPackage(&repodb.Package{Namespace: "default", Name: "demo", Version: "1.0.0"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	view(t, db, func(tx *repodb.Tx) error {
		if tx.RepoExists(repo) {
			t.Error("a failed transaction created a repository")
		}
		if pkgs, _ := tx.Packages(); len(pkgs) != 0 {
			t.Errorf("a failed transaction recorded packages: %+v", pkgs)
		}
		return nil
	})
}

func TestPackages(t *testing.T) {
	db := open(t)
	update(t, db, func(tx *repodb.Tx) error {
		for _, p := range []*repodb.Package{
			{Namespace: "web", Name: "b", Version: "1.0.0", Images: map[string]string{"x": string(dg("x"))}},
			{Namespace: "default", Name: "z", Version: "0.1.0"},
			{Namespace: "web", Name: "a", Version: "2.0.0", History: []repodb.PackageVersion{{Version: "1.0.0", Expired: true}, {Version: "2.0.0"}}},
		} {
			if err := tx.PutPackage(p); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(tx *repodb.Tx) error {
		p, ok, err := tx.Package("web", "a")
		if err != nil || !ok || p.Version != "2.0.0" || len(p.History) != 2 || !p.History[0].Expired {
			t.Errorf("Package(web, a) = %+v, %v, %v", p, ok, err)
		}
		if _, ok, _ := tx.Package("web", "none"); ok {
			t.Error("an unknown package was found")
		}
		pkgs, err := tx.Packages()
		if err != nil || len(pkgs) != 3 {
			t.Fatalf("Packages = %+v, %v", pkgs, err)
		}
		var order []string
		for _, p := range pkgs {
			order = append(order, p.Namespace+"/"+p.Name)
		}
		if !reflect.DeepEqual(order, []string{"default/z", "web/a", "web/b"}) {
			t.Errorf("Packages order %v", order)
		}
		return nil
	})
}

// TestDeleteManifests drops a set of manifests in one pass: their tags go,
// the other manifests and their tags stay, a digest not recorded is
// skipped, and the count says how many were removed.
func TestDeleteManifests(t *testing.T) {
	db := open(t)
	const r = "docker.io/library/many"
	var all []digest.Digest
	update(t, db, func(tx *repodb.Tx) error {
		for i := range 50 {
			m := dg(fmt.Sprint("m", i))
			all = append(all, m)
			if err := tx.PutManifest(r, m, repodb.Manifest{MediaType: manifestType}); err != nil {
				return err
			}
			for j := range 3 { // three tags each
				if err := tx.SetTag(r, fmt.Sprintf("t%d-%d", i, j), m); err != nil {
					return err
				}
			}
		}
		return nil
	})
	drop := map[digest.Digest]bool{dg("never recorded"): true}
	for i := 0; i < 50; i += 2 {
		drop[all[i]] = true
	}
	update(t, db, func(tx *repodb.Tx) error {
		n, err := tx.DeleteManifests(r, drop)
		if err != nil || n != 25 {
			t.Errorf("DeleteManifests = %d, %v; want 25", n, err)
		}
		return err
	})
	view(t, db, func(tx *repodb.Tx) error {
		tags, _, err := tx.Tags(r, "", 0)
		if err != nil || len(tags) != 75 {
			t.Errorf("%d tags left (%v), want 75", len(tags), err)
		}
		for i, m := range all {
			_, err := tx.Manifest(r, m)
			if gone := i%2 == 0; gone != (err != nil) {
				t.Errorf("manifest %d: gone = %v, want %v", i, err != nil, gone)
			}
			d, err := tx.Tag(r, fmt.Sprintf("t%d-1", i))
			if gone := i%2 == 0; gone != (err != nil) || (!gone && d != m) {
				t.Errorf("tag t%d-1: %s, %v", i, d, err)
			}
		}
		return nil
	})
}
