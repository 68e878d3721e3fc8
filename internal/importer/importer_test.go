package importer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
)

const (
	multiRepo  = "registry.test/demo/multi"
	singleRepo = "registry.test/demo/single"
	multiRef   = multiRepo + ":1.0"
	singleRef  = singleRepo + ":2.0"
)

// content is what an archive holds, as internal/archive's writer takes it.
type content struct {
	images []archive.Image
	blobs  []archive.Blob
	data   map[digest.Digest][]byte
	// chosen are the manifests, configs and layers of the platforms the
	// package names; left are the children of other platforms, absent
	left []digest.Digest
}

func (c *content) add(t *testing.T, kind oci.Kind, mt string, b []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if _, ok := c.data[desc.Digest]; !ok {
		c.data[desc.Digest] = b
		c.blobs = append(c.blobs, archive.Blob{Desc: desc, Kind: kind})
	}
	return desc
}

func (c *content) addImage(t *testing.T, img v1.Image) ocispec.Descriptor {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	config, layers, data := pt.Blobs(t, img)
	c.add(t, oci.KindConfig, string(m.Config.MediaType), data[config])
	for i, l := range layers {
		c.add(t, oci.KindLayer, string(m.Layers[i].MediaType), data[l])
	}
	return c.add(t, oci.KindManifest, string(m.MediaType), raw)
}

// newContent is a three-platform index of which the package takes two (a
// sparse index) and a single-platform image.
func newContent(t *testing.T) *content {
	t.Helper()
	c := &content{data: map[digest.Digest][]byte{}}
	idx, imgs := pt.Index(t, 2, 64<<10, "linux/amd64", "linux/arm64", "linux/s390x")
	for _, img := range imgs[:2] {
		c.addImage(t, img)
	}
	c.left = append(c.left, pt.Digest(t, imgs[2]))
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	top := c.add(t, oci.KindManifest, ocispec.MediaTypeImageIndex, raw)
	c.images = append(c.images, archive.Image{Ref: multiRef, Desc: top})
	single := c.addImage(t, pt.Image(t, "linux/amd64", 1, 32<<10))
	c.images = append(c.images, archive.Image{Ref: singleRef, Desc: single})
	return c
}

// archive is the kubepkg.tgz of version of package demo with c's images.
func (c *content) archive(ctx context.Context, t *testing.T, version string) []byte {
	t.Helper()
	images := map[string]string{}
	for _, im := range c.images {
		if im.Subject == "" { // an artifact carried with an image is not one of spec.images
			images[im.Ref] = string(im.Desc.Digest)
		}
	}
	pkg, _ := json.Marshal(map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": "demo", "namespace": "default",
			"annotations": map[string]string{kubepkg.AnnotationPlatform: "linux/amd64,linux/arm64"}},
		"spec": map[string]any{"version": version, "images": images},
	})
	open := func(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
		b, ok := c.data[d]
		if !ok {
			return nil, fmt.Errorf("no blob %s", d)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	var buf bytes.Buffer
	if err := archive.Write(ctx, &buf, pkg, c.images, c.blobs, open, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type store struct {
	*storage.Storage
	im *importer.Importer
}

func newStore(t *testing.T) *store {
	t.Helper()
	st, err := storage.Open(context.Background(), t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &store{Storage: st, im: importer.New(st.Store, st.DB, importer.Options{Dir: st.Dir})}
}

// dump is everything the index holds, as text.
func (s *store) dump(t *testing.T) string {
	t.Helper()
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }
	if err := s.DB.View(func(tx *repodb.Tx) error {
		if err := tx.ForEachRepo(func(repo string) error {
			if err := tx.ForEachTag(repo, func(tag string, d digest.Digest) error { add("tag %s:%s %s", repo, tag, d); return nil }); err != nil {
				return err
			}
			if err := tx.ForEachBlob(repo, func(d digest.Digest, size int64) error { add("blob %s@%s %d", repo, d, size); return nil }); err != nil {
				return err
			}
			return tx.ForEachManifest(repo, func(d digest.Digest, m repodb.Manifest) error {
				b, _ := json.Marshal(m)
				add("manifest %s@%s %s", repo, d, b)
				refs, err := tx.Referrers(repo, d)
				for _, r := range refs {
					add("referrer %s@%s %s", repo, d, r.Digest)
				}
				return err
			})
		}); err != nil {
			return err
		}
		pkgs, err := tx.Packages()
		for _, p := range pkgs {
			b, _ := json.Marshal(p)
			add("package %s", b)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestImportPublishes: an archive of the writer, imported into an empty
// store, publishes its tags, manifests, blob links and package, with every
// blob in the store; imported again, it changes nothing and receives
// nothing.
func TestImportPublishes(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	c := newContent(t)
	s := newStore(t)
	res, err := s.im.Import(ctx, bytes.NewReader(c.archive(ctx, t, "1.0.0")), importer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsReceived != len(c.blobs) || res.BlobsPresent != 0 {
		t.Errorf("received %d blobs, %d present; want %d and 0", res.BlobsReceived, res.BlobsPresent, len(c.blobs))
	}
	if len(res.Packages) != 1 || res.Packages[0].Name != "demo" || res.Packages[0].Version != "1.0.0" || res.Packages[0].Namespace != "default" {
		t.Errorf("packages %+v", res.Packages)
	}
	for _, b := range c.blobs {
		got, err := io.ReadAll(io.LimitReader(mustOpen(ctx, t, s, b.Desc.Digest), 1<<30))
		if err != nil || !bytes.Equal(got, c.data[b.Desc.Digest]) {
			t.Errorf("blob %s (%s) not in the store: %v", b.Desc.Digest, b.Kind, err)
		}
	}
	if err := s.DB.View(func(tx *repodb.Tx) error {
		for _, im := range c.images {
			repo, tag, _ := strings.Cut(im.Ref, ":")
			if d, err := tx.Tag(repo, tag); err != nil || d != im.Desc.Digest {
				t.Errorf("tag %s = %s, %v; want %s", im.Ref, d, err, im.Desc.Digest)
			}
			if res.Images[im.Ref] != string(im.Desc.Digest) {
				t.Errorf("result names %s as %s", im.Ref, res.Images[im.Ref])
			}
		}
		for _, b := range c.blobs {
			_, inMulti := tx.Manifest(multiRepo, b.Desc.Digest)
			_, inSingle := tx.Manifest(singleRepo, b.Desc.Digest)
			_, linkedMulti := tx.Blob(multiRepo, b.Desc.Digest)
			_, linkedSingle := tx.Blob(singleRepo, b.Desc.Digest)
			switch {
			case b.Kind == oci.KindManifest && inMulti != nil && inSingle != nil:
				t.Errorf("manifest %s not recorded", b.Desc.Digest)
			case b.Kind != oci.KindManifest && linkedMulti != nil && linkedSingle != nil:
				t.Errorf("%s %s not linked", b.Kind, b.Desc.Digest)
			}
		}
		for _, d := range c.left {
			if _, err := tx.Manifest(multiRepo, d); err == nil {
				t.Errorf("the child %s of a platform left out is recorded", d)
			}
		}
		p, ok, err := tx.Package("default", "demo")
		if err != nil || !ok || p.Version != "1.0.0" || p.Images[multiRef] != string(c.images[0].Desc.Digest) || p.Platforms != "linux/amd64,linux/arm64" {
			t.Errorf("package record %+v, %v, %v", p, ok, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	before := s.dump(t)
	res, err = s.im.Import(ctx, bytes.NewReader(c.archive(ctx, t, "1.0.0")), importer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Packages[0].Unchanged || res.BlobsReceived != 0 || res.BlobsPresent != len(c.blobs) {
		t.Errorf("second import: %+v", res)
	}
	if after := s.dump(t); after != before {
		t.Errorf("a second import of the same archive changed the index:\n%s\n---\n%s", before, after)
	}
}

func mustOpen(ctx context.Context, t *testing.T, s *store, d digest.Digest) io.Reader {
	t.Helper()
	rc, _, err := s.Store.Open(ctx, d)
	if err != nil {
		t.Fatalf("blob %s: %v", d, err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// TestBrokenArchivePublishesNothing: over a store holding version 1.0.0, a
// truncated or corrupt archive of 1.1.0 fails and leaves the index exactly
// as it was.
func TestBrokenArchivePublishesNothing(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	s := newStore(t)
	if _, err := s.im.Import(ctx, bytes.NewReader(newContent(t).archive(ctx, t, "1.0.0")), importer.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	before := s.dump(t)
	if !strings.Contains(before, `"version":"1.0.0"`) {
		t.Fatalf("index after the first import:\n%s", before)
	}

	next := newContent(t)
	good := next.archive(ctx, t, "1.1.0")
	var layer []byte
	for _, b := range next.blobs {
		if b.Kind == oci.KindLayer {
			layer = next.data[b.Desc.Digest]
		}
	}
	// layers are stored verbatim (a stored gzip member)
	at := bytes.Index(good, layer[len(layer)/2:len(layer)/2+64])
	if at < 0 {
		t.Fatal("a layer's bytes are not in the archive as they are (stored gzip member)")
	}
	flipped := bytes.Clone(good)
	flipped[at] ^= 0xff
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"truncated in the middle", good[:len(good)/2]},
		{"truncated before the gzip trailer", good[:len(good)-8]},
		{"truncated by one byte", good[:len(good)-1]},
		{"a layer byte flipped", flipped},
		{"not gzip", []byte("kubepkg.json")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.im.Import(ctx, bytes.NewReader(c.data), importer.ImportOptions{}); err == nil {
				t.Fatal("a broken archive was imported")
			}
			if after := s.dump(t); after != before {
				t.Errorf("a failed import changed the index:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	// the whole archive imports over it
	res, err := s.im.Import(ctx, bytes.NewReader(good), importer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Packages[0].Previous != "1.0.0" || res.Packages[0].Version != "1.1.0" {
		t.Errorf("packages %+v", res.Packages)
	}
}
