package importer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// imageSharing is one version of registry.test/demo/app:latest: its own
// config and a layer every version shares.
func imageSharing(t *testing.T, version string, shared []byte) *content {
	t.Helper()
	c := &content{data: map[digest.Digest][]byte{}}
	cfg := c.add(t, oci.KindConfig, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","v":"`+version+`"}`))
	layer := c.add(t, oci.KindLayer, ocispec.MediaTypeImageLayerGzip, shared)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
	top := c.add(t, oci.KindManifest, ocispec.MediaTypeImageManifest, m)
	c.images = []archive.Image{{Ref: "registry.test/demo/app:latest", Desc: top}}
	return c
}

// TestGCFailsClosed: garbage collection stops, deleting nothing, when a
// live image cannot be read (a keep set without it would unlink and sweep
// the layer it shares with an expired version); once the image is back, the
// expired version's own blobs go and the shared layer stays.
func TestGCFailsClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newStore(t)
	s.im = importer.New(s.Store, s.DB, importer.Options{Dir: s.Dir, KeepVersions: 1})
	shared := bytes.Repeat([]byte("shared layer "), 1000)
	v1, v2 := imageSharing(t, "1.0.0", shared), imageSharing(t, "2.0.0", shared)
	for _, c := range []struct {
		c       *content
		version string
	}{{v1, "1.0.0"}, {v2, "2.0.0"}} {
		if _, err := s.im.Import(ctx, bytes.NewReader(c.c.archive(ctx, t, c.version)), importer.ImportOptions{}); err != nil {
			t.Fatalf("import %s: %v", c.version, err)
		}
	}
	live := v2.images[0].Desc.Digest
	old := v1.images[0].Desc.Digest
	var oldConfig, layer digest.Digest
	for _, b := range v1.blobs {
		switch b.Kind {
		case oci.KindConfig:
			oldConfig = b.Desc.Digest
		case oci.KindLayer:
			layer = b.Desc.Digest
		}
	}

	// the live image's manifest is lost: nothing may be deleted
	liveBody := v2.data[live]
	if err := s.Store.Delete(ctx, live); err != nil {
		t.Fatal(err)
	}
	before := s.dump(t)
	_, err := s.im.GC(ctx, 0)
	if err == nil || !strings.Contains(err.Error(), "nothing deleted") || !strings.Contains(err.Error(), string(live)) {
		t.Fatalf("GC with an unreadable live image: %v", err)
	}
	if after := s.dump(t); after != before {
		t.Errorf("GC that stopped changed the index:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, d := range []digest.Digest{old, oldConfig, layer} {
		if _, err := s.Store.Stat(ctx, d); err != nil {
			t.Errorf("GC that stopped removed %s: %v", d, err)
		}
	}

	// back: the expired version's manifest and config go, the layer stays
	if _, err := s.Store.Put(ctx, cas.Info{Digest: live, Size: int64(len(liveBody))}, bytes.NewReader(liveBody)); err != nil {
		t.Fatal(err)
	}
	res, err := s.im.GC(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.ManifestsDropped != 1 || res.BlobsRemoved != 2 {
		t.Errorf("GC: %+v, want 1 manifest dropped and 2 blobs (the old manifest and config) removed", res)
	}
	for _, d := range []digest.Digest{old, oldConfig} {
		if _, err := s.Store.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("expired %s still stored: %v", d, err)
		}
	}
	if _, err := s.Store.Stat(ctx, layer); err != nil {
		t.Errorf("the shared layer was removed: %v", err)
	}

	// an unreferenced blob younger than the grace period stays, then goes
	orphan := []byte("orphan")
	od := digest.FromBytes(orphan)
	if _, err := s.Store.Put(ctx, cas.Info{Digest: od, Size: int64(len(orphan))}, bytes.NewReader(orphan)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.im.GC(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.Stat(ctx, od); err != nil {
		t.Errorf("an unreferenced blob younger than the grace period was removed: %v", err)
	}
	if _, err := s.im.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.Stat(ctx, od); err == nil {
		t.Error("an unreferenced blob past the grace period was kept")
	}
}

// withArtifacts adds to c a cosign signature of its image (tagged
// sha256-<hex>.sig) and an SBOM referrer (subject, untagged), each unique
// to the version.
func withArtifacts(t *testing.T, c *content, version string) (sig, sbom digest.Digest) {
	t.Helper()
	top := c.images[0].Desc
	emptyCfg := c.add(t, oci.KindConfig, ocispec.MediaTypeEmptyJSON, []byte(`{}`))
	payload := c.add(t, oci.KindLayer, oci.MediaTypeCosignSimpleSigning, []byte(`{"critical":{"image":{"docker-manifest-digest":"`+string(top.Digest)+`"}},"v":"`+version+`"}`))
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: emptyCfg, Layers: []ocispec.Descriptor{payload}})
	sd := c.add(t, oci.KindManifest, ocispec.MediaTypeImageManifest, m)
	c.images = append(c.images, archive.Image{Ref: "registry.test/demo/app:" + oci.CosignTag(top.Digest, ".sig"), Desc: sd, Subject: top.Digest})
	doc := c.add(t, oci.KindLayer, "application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3","v":"`+version+`"}`))
	m, _ = json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/spdx+json",
		Config: emptyCfg, Layers: []ocispec.Descriptor{doc}, Subject: &top})
	bd := c.add(t, oci.KindManifest, ocispec.MediaTypeImageManifest, m)
	c.images = append(c.images, archive.Image{Ref: "registry.test/demo/app@" + string(bd.Digest), Desc: bd, Subject: top.Digest})
	return sd.Digest, bd.Digest
}

// TestGCArtifacts: the signatures and SBOMs carried with an image are
// imported beside it (the cosign tag set, the referrer listed), kept while
// it lives, and dropped with it when its version expires, tag included.
func TestGCArtifacts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newStore(t)
	s.im = importer.New(s.Store, s.DB, importer.Options{Dir: s.Dir, KeepVersions: 1})
	shared := bytes.Repeat([]byte("shared layer "), 1000)
	v1, v2 := imageSharing(t, "1.0.0", shared), imageSharing(t, "2.0.0", shared)
	sig1, sbom1 := withArtifacts(t, v1, "1.0.0")
	sig2, sbom2 := withArtifacts(t, v2, "2.0.0")
	const repo = "registry.test/demo/app"
	top1, top2 := v1.images[0].Desc.Digest, v2.images[0].Desc.Digest

	res, err := s.im.Import(ctx, bytes.NewReader(v1.archive(ctx, t, "1.0.0")), importer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Artifacts) != 2 || len(res.Images) != 1 {
		t.Fatalf("import result %+v", res)
	}
	check := func(top, sig, sbom digest.Digest, present bool) {
		t.Helper()
		_ = s.DB.View(func(tx *repodb.Tx) error {
			d, err := tx.Tag(repo, oci.CosignTag(top, ".sig"))
			if present != (err == nil && d == sig) {
				t.Errorf("tag %s: %s %v, want present %v", oci.CosignTag(top, ".sig"), d, err, present)
			}
			refs, _ := tx.Referrers(repo, top)
			if present != (len(refs) == 1 && refs[0].Digest == sbom && refs[0].ArtifactType == "application/spdx+json") {
				t.Errorf("referrers of %s: %+v, want present %v", top, refs, present)
			}
			return nil
		})
		for _, d := range []digest.Digest{sig, sbom} {
			if _, err := s.Store.Stat(ctx, d); (err == nil) != present {
				t.Errorf("%s stored: %v, want %v", d, err, present)
			}
		}
	}
	check(top1, sig1, sbom1, true)
	if _, err := s.im.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	check(top1, sig1, sbom1, true) // v1 is live

	if _, err := s.im.Import(ctx, bytes.NewReader(v2.archive(ctx, t, "2.0.0")), importer.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.im.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	check(top1, sig1, sbom1, false) // gone with v1
	check(top2, sig2, sbom2, true)
}
