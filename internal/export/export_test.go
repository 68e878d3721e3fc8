package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
)

// read is what an archive holds, read with the verifying reader.
type read struct {
	pkgs  []*kubepkg.KubePkg
	index ocispec.Index
	blobs map[digest.Digest][]byte
	kinds map[digest.Digest]oci.Kind
}

func (r *read) Package(data []byte) error {
	var err error
	r.pkgs, err = kubepkg.Parse(data)
	return err
}

func (r *read) Index(idx ocispec.Index) error { r.index = idx; return nil }

func (r *read) Blob(_ context.Context, desc ocispec.Descriptor, kind oci.Kind, rd io.Reader) error {
	b, err := io.ReadAll(rd)
	r.blobs[desc.Digest], r.kinds[desc.Digest] = b, kind
	return err
}

func readArchive(ctx context.Context, t *testing.T, data []byte) *read {
	t.Helper()
	r := &read{blobs: map[digest.Digest][]byte{}, kinds: map[digest.Digest]oci.Kind{}}
	if _, err := archive.Read(ctx, bytes.NewReader(data), r, archive.Limits{}); err != nil {
		t.Fatalf("the archive does not read back: %v", err)
	}
	return r
}

func packages(t *testing.T, platforms string, images map[string]string) []*kubepkg.KubePkg {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": "demo", "namespace": "default",
			"annotations": map[string]string{kubepkg.AnnotationPlatform: platforms}},
		"spec": map[string]any{"version": "1.0.0", "images": images},
	})
	pkgs, err := kubepkg.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// imageBlobs are an image's manifest, config and layers.
func imageBlobs(t *testing.T, img v1.Image) map[digest.Digest][]byte {
	t.Helper()
	_, _, data := pt.Blobs(t, img)
	raw, _ := img.RawManifest()
	data[pt.Digest(t, img)] = raw
	return data
}

// TestExportFiltersPlatforms: a multi-platform index exported for some of
// its platforms keeps the index as the upstream served it, with only the
// chosen children and their blobs, fetched through the cache; the others
// are neither in the archive nor fetched.
func TestExportFiltersPlatforms(t *testing.T) {
	plats := []string{"linux/amd64", "linux/arm64", "linux/s390x"}
	for _, c := range []struct {
		want string
		take []int // indexes into plats
	}{
		{"linux/arm64", []int{1}},
		{"linux/amd64,linux/s390x", []int{0, 2}},
	} {
		t.Run(c.want, func(t *testing.T) {
			ctx := pt.Context(t, 60*time.Second)
			up, ctr := pt.NewUpstream(t), pt.NewCounter()
			idx, imgs := pt.Index(t, 2, 64<<10, plats...)
			top := up.PushIndex(ctx, t, "demo/app:1.0", idx)
			rawIndex, _ := idx.RawManifest()
			cache := pt.NewCache(t, ctr, pullthrough.Options{})
			ref := up.Repo("demo/app") + ":1.0"

			pkgs := packages(t, c.want, map[string]string{ref: ""})
			var buf bytes.Buffer
			res, err := export.Export(ctx, cache.Cache, cache.Store, pkgs, &buf, export.Options{})
			if err != nil {
				t.Fatal(err)
			}
			a := readArchive(ctx, t, buf.Bytes())

			want := map[digest.Digest][]byte{top: rawIndex}
			taken := map[int]bool{}
			for _, i := range c.take {
				taken[i] = true
				for d, b := range imageBlobs(t, imgs[i]) {
					want[d] = b
				}
			}
			for d, b := range want {
				if got, ok := a.blobs[d]; !ok || !bytes.Equal(got, b) {
					t.Errorf("blob %s missing or changed (in archive: %v)", d, ok)
				}
			}
			if len(a.blobs) != len(want) {
				t.Errorf("%d blobs in the archive, want %d", len(a.blobs), len(want))
			}
			for i, img := range imgs {
				if taken[i] {
					continue
				}
				for d := range imageBlobs(t, img) {
					if _, ok := a.blobs[d]; ok {
						t.Errorf("blob %s of %s is in the archive", d, plats[i])
					}
					if _, err := cache.Store.Stat(ctx, d); err == nil {
						t.Errorf("blob %s of %s was fetched", d, plats[i])
					}
				}
			}
			// only the chosen configs and layers were fetched, once each
			if n, w := ctr.Count(up.Host, http.MethodGet, "blobs"), 3*len(c.take); n != w {
				t.Errorf("%d upstream blob GETs, want %d", n, w)
			}

			if len(a.index.Manifests) != 1 || a.index.Manifests[0].Digest != top || a.index.Manifests[0].Annotations[archive.AnnotationRefName] != ref {
				t.Errorf("index.json %+v, want %s as %s", a.index.Manifests, ref, top)
			}
			if len(a.pkgs) != 1 || a.pkgs[0].Spec.Images[ref] != string(top) || a.pkgs[0].Metadata.Annotations[kubepkg.AnnotationPlatform] != c.want {
				t.Errorf("kubepkg.json: images %v, annotations %v", a.pkgs[0].Spec.Images, a.pkgs[0].Metadata.Annotations)
			}
			if len(res.Images) != 1 || strings.Join(res.Images[0].Platforms, ",") != c.want || res.Images[0].Digest != string(top) {
				t.Errorf("result images %+v", res.Images)
			}

			// the same export again is byte-identical, and served from the cache
			var again bytes.Buffer
			if _, err := export.Export(ctx, cache.Cache, cache.Store, packages(t, c.want, map[string]string{ref: ""}), &again, export.Options{}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Bytes(), buf.Bytes()) {
				t.Error("a second export of the same content differs")
			}
			if n, w := ctr.Count(up.Host, http.MethodGet, "blobs"), 3*len(c.take); n != w {
				t.Errorf("%d upstream blob GETs after the second export, want still %d", n, w)
			}
		})
	}
}

// TestExportHonoursPins: a digest in spec.images is exported even after its
// tag moved on; a pin that disagrees (with the reference's own digest, or
// with another package's pin of the same image) is refused before anything
// is written.
func TestExportHonoursPins(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up, ctr := pt.NewUpstream(t), pt.NewCounter()
	oldIdx, _ := pt.Index(t, 1, 16<<10, "linux/amd64", "linux/arm64")
	oldTop := up.PushIndex(ctx, t, "demo/app:1.0", oldIdx)
	newIdx, _ := pt.Index(t, 1, 16<<10, "linux/amd64", "linux/arm64")
	newTop := up.PushIndex(ctx, t, "demo/app:1.0", newIdx) // the tag moves on
	cache := pt.NewCache(t, ctr, pullthrough.Options{})
	repo := up.Repo("demo/app")
	ref := repo + ":1.0"

	var buf bytes.Buffer
	if _, err := export.Export(ctx, cache.Cache, cache.Store, packages(t, "linux/amd64", map[string]string{ref: string(oldTop)}), &buf, export.Options{}); err != nil {
		t.Fatal(err)
	}
	a := readArchive(ctx, t, buf.Bytes())
	if a.index.Manifests[0].Digest != oldTop || a.pkgs[0].Spec.Images[ref] != string(oldTop) {
		t.Fatalf("pinned %s, exported %s (images %v)", oldTop, a.index.Manifests[0].Digest, a.pkgs[0].Spec.Images)
	}
	if _, ok := a.blobs[newTop]; ok {
		t.Fatal("the tag's current index is in the archive")
	}

	for _, c := range []struct {
		name string
		pkgs func() []*kubepkg.KubePkg
	}{
		{"reference digest and pin differ", func() []*kubepkg.KubePkg {
			return packages(t, "linux/amd64", map[string]string{repo + "@" + string(oldTop): string(newTop)})
		}},
		{"tag@digest and pin differ", func() []*kubepkg.KubePkg {
			return packages(t, "linux/amd64", map[string]string{ref + "@" + string(newTop): string(oldTop)})
		}},
		{"two packages pin differently", func() []*kubepkg.KubePkg {
			one := packages(t, "linux/amd64", map[string]string{ref: string(oldTop)})
			two := packages(t, "linux/amd64", map[string]string{ref: string(newTop)})
			two[0].Metadata.Name = "other"
			return append(one, two...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := export.Export(ctx, cache.Cache, cache.Store, c.pkgs(), &buf, export.Options{})
			if err == nil {
				t.Fatalf("exported (%d bytes)", buf.Len())
			}
			if buf.Len() > 0 {
				t.Errorf("%d bytes written before the refusal: %v", buf.Len(), err)
			}
			for _, d := range []digest.Digest{oldTop, newTop} {
				if !strings.Contains(err.Error(), string(d)) {
					t.Errorf("the error does not name both digests: %v", err)
					break
				}
			}
		})
	}
}

// TestExportFailsOnLyingUpstream: a layer the upstream serves with other
// bytes fails the export, and the cache keeps nothing of it.
func TestExportFailsOnLyingUpstream(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up, ctr := pt.NewUpstream(t), pt.NewCounter()
	img := pt.Image(t, "linux/amd64", 1, 32<<10)
	up.PushImage(ctx, t, "demo/app:1.0", img)
	_, layers, data := pt.Blobs(t, img)
	lie := bytes.Repeat([]byte{'x'}, len(data[layers[0]]))
	up.Lie(string(layers[0]), lie, "")
	cache := pt.NewCache(t, ctr, pullthrough.Options{})
	_, err := export.Export(ctx, cache.Cache, cache.Store, packages(t, "linux/amd64", map[string]string{up.Repo("demo/app") + ":1.0": ""}), io.Discard, export.Options{})
	if err == nil {
		t.Fatal("exported a layer the upstream lied about")
	}
	for _, d := range []digest.Digest{layers[0], digest.FromBytes(lie)} {
		if _, serr := cache.Store.Stat(ctx, d); serr == nil {
			t.Errorf("%s stored", d)
		}
	}
	if !strings.Contains(err.Error(), string(layers[0])) {
		t.Errorf("the error does not name the layer: %v", err)
	}
}
