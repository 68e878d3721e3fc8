package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// seedPackage is seedtest.Demo: an index (amd64, arm64 chosen; s390x left
// out) and a single amd64 manifest sharing a layer with it.
func seedPackage(docker bool) *seedtest.Package { return seedtest.Demo("demo", "1.0.0", docker, 99) }

// blobsOf lists every blob the package's archive must carry.
func blobsOf(p *seedtest.Package) map[digest.Digest]oci.Kind {
	out := map[digest.Digest]oci.Kind{}
	for _, im := range p.Images {
		out[im.Top.Desc.Digest] = oci.KindManifest
		for _, c := range im.Children {
			out[c.Desc.Digest] = oci.KindManifest
			out[c.Config.Desc.Digest] = oci.KindConfig
			for _, l := range c.Layers {
				out[l.Desc.Digest] = oci.KindLayer
			}
		}
	}
	return out
}

// TestReadSeedLayouts reads an archive of each layout of the seed's tools,
// written by seedtest (their writers' rules, not crpe's writer): every blob
// is given to the handler once, typed as its manifest says, the image index
// is made from spec.images (status.images for kubepkg after 2023) with
// "" resolved from the tagged entries, and the platforms annotation is the
// one crpe reads.
func TestReadSeedLayouts(t *testing.T) {
	for _, l := range seedtest.Layouts {
		for _, docker := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/docker=%v", l, docker), func(t *testing.T) {
				p := seedPackage(docker)
				b := seedtest.Write(l, p)
				if l == seedtest.Kubepkg2023 && bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
					t.Fatal("the 2023 layout is a plain tar")
				}
				h, sum, err := readArchive(b, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				want := blobsOf(p)
				if len(h.blobs) != len(want) || len(sum.Blobs) != len(want) {
					t.Fatalf("got %d blobs (summary %d), want %d", len(h.blobs), len(sum.Blobs), len(want))
				}
				for d, k := range want {
					if got, ok := h.kinds[d]; !ok || got != k {
						t.Errorf("%s: kind %v (delivered %v), want %v", d, got, ok, k)
					}
				}
				pkgs, err := kubepkg.Parse(h.pkg)
				if err != nil {
					t.Fatal(err)
				}
				if got := pkgs[0].Metadata.Annotations[kubepkg.AnnotationPlatform]; got != "linux/amd64,linux/arm64" {
					t.Errorf("platform annotation %q", got)
				}
				if h.index == nil || len(h.index.Manifests) != 2 {
					t.Fatalf("index %+v", h.index)
				}
				for _, im := range p.Images {
					if got := pkgs[0].Spec.Images[im.Ref]; got != string(im.Top.Desc.Digest) {
						t.Errorf("spec.images[%s] = %q, want %s", im.Ref, got, im.Top.Desc.Digest)
					}
					found := false
					for _, m := range sum.Index.Manifests {
						if m.Annotations[AnnotationImageName] == im.Ref {
							found = true
							if m.Digest != im.Top.Desc.Digest || m.Size != im.Top.Desc.Size || m.MediaType != im.Top.Desc.MediaType {
								t.Errorf("index entry %+v, want %+v", m, im.Top.Desc)
							}
						}
					}
					if !found {
						t.Errorf("index has no %s", im.Ref)
					}
				}
			})
		}
	}
}

// TestReadSeedList reads kubepkg's KubePkgList layout: one index.json and
// oci-layout per package after its blobs, and a blob both packages hold
// written twice (verified again, delivered once).
func TestReadSeedList(t *testing.T) {
	for _, l := range []seedtest.Layout{seedtest.KubepkgV01, seedtest.Kubepkg2023, seedtest.PhoneApp} {
		t.Run(string(l), func(t *testing.T) {
			a := seedPackage(true)
			b := seedPackage(true)
			b.Name = "other"
			b.Images = b.Images[1:] // the single image: its layers are a's too
			a.Images[1] = b.Images[0]
			es := seedtest.Entries(l, a, b)
			if l != seedtest.PhoneApp && strings.Count(fmt.Sprint(names(es)), "index.json") != 2 {
				t.Fatalf("want two index.json: %v", names(es))
			}
			h, _, err := readArchive(seedtest.Archive(l, es), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(h.blobs) != len(blobsOf(a)) {
				t.Errorf("got %d blobs, want %d", len(h.blobs), len(blobsOf(a)))
			}
		})
	}
}

func names(es []seedtest.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// statusIndex finds d in status.digests.
func statusIndex(t *testing.T, ds []seedtest.DigestMeta, d digest.Digest) int {
	t.Helper()
	for i, m := range ds {
		if m.Digest == d {
			return i
		}
	}
	t.Fatalf("%s not in status.digests", d)
	return -1
}

// TestReadSeedRefuses feeds hostile versions of each layout: status.digests
// lying about a size, a type or a name, a blob announced nowhere, a blob
// listed that nothing references, a missing or corrupt blob, a malformed
// entry, a "" image with no tagged entry. Each is refused naming the entry.
func TestReadSeedRefuses(t *testing.T) {
	type tcase struct {
		name string
		// edit changes the package (status.digests in p.Digests) or the
		// entries
		edit   func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta
		tweak  func(t *testing.T, p *seedtest.Package, es []seedtest.Entry) []seedtest.Entry
		docker bool
		only   seedtest.Layout
		entry  string // the entry named; "" for any
		want   []string
	}
	amdLayer := func(p *seedtest.Package) seedtest.Blob { return p.Images[0].Children[0].Layers[1] }
	amdManifest := func(p *seedtest.Package) seedtest.Manifest { return p.Images[0].Children[0] }
	cases := []tcase{
		{name: "size lie", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			i := statusIndex(t, ds, amdLayer(p).Desc.Digest)
			ds[i].Size++
			return ds
		}, want: []string{"status.digests[", "5242888"}}, // the size status.digests gives (5 MiB + 7, plus one)
		{name: "layer typed manifest", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[statusIndex(t, ds, amdLayer(p).Desc.Digest)].Type = "manifest"
			return ds
		}, want: []string{"status.digests[", "types it as a manifest"}},
		{name: "config typed manifest", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[statusIndex(t, ds, amdManifest(p).Config.Desc.Digest)].Type = "manifest"
			return ds
		}, want: []string{"status.digests[", "types it as a manifest"}},
		{name: "Docker manifest typed blob", docker: true, edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[statusIndex(t, ds, amdManifest(p).Desc.Digest)].Type = "blob"
			return ds
		}, want: []string{"status.digests[", "types it as a blob", "docker"}},
		{name: "name lie", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[statusIndex(t, ds, amdLayer(p).Desc.Digest)].Name = "docker.io/library/other"
			return ds
		}, entry: BlobEntry(amdLayerOf()), want: []string{"status.digests[", "names it docker.io/library/other", "docker.io/library/nginx"}},
		{name: "unknown type", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[0].Type = "layer"
			return ds
		}, entry: PackageEntry, want: []string{"status.digests[0].type"}},
		{name: "negative size", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[1].Size = -1
			return ds
		}, entry: PackageEntry, want: []string{"status.digests[1].size"}},
		{name: "bad digest", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[2].Digest = "sha256:xyz"
			return ds
		}, entry: PackageEntry, want: []string{"status.digests[2].digest"}},
		{name: "blob announced nowhere", tweak: func(t *testing.T, p *seedtest.Package, es []seedtest.Entry) []seedtest.Entry {
			extra := seedtest.NewBlob("", []byte("not listed anywhere"))
			return append(es[:2:2], append([]seedtest.Entry{{Name: seedtest.BlobName(extra.Desc.Digest), Data: extra.Data}}, es[2:]...)...)
		}, want: []string{"announced nowhere"}},
		{name: "blob listed but not referenced", edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			extra := seedtest.NewBlob("", []byte("listed, referenced by nothing"))
			return append(ds, seedtest.DigestMeta{Digest: extra.Desc.Digest, Type: "blob", Name: "docker.io/library/nginx", Size: extra.Desc.Size})
		}, tweak: func(t *testing.T, p *seedtest.Package, es []seedtest.Entry) []seedtest.Entry {
			extra := seedtest.NewBlob("", []byte("listed, referenced by nothing"))
			return append(es[:2:2], append([]seedtest.Entry{{Name: seedtest.BlobName(extra.Desc.Digest), Data: extra.Data}}, es[2:]...)...)
		}, want: []string{"status.digests[", "no manifest of the archive references it"}},
		{name: "blob missing", tweak: func(t *testing.T, p *seedtest.Package, es []seedtest.Entry) []seedtest.Entry {
			return dropEntry(es, seedtest.BlobName(amdLayer(p).Desc.Digest))
		}, entry: BlobEntry(amdLayerOf()), want: []string{"missing"}},
		{name: "blob corrupt", tweak: func(t *testing.T, p *seedtest.Package, es []seedtest.Entry) []seedtest.Entry {
			for i := range es {
				if es[i].Name == seedtest.BlobName(amdLayer(p).Desc.Digest) {
					d := append([]byte(nil), es[i].Data...)
					d[len(d)/2] ^= 0x55
					es[i].Data = d
				}
			}
			return es
		}, entry: BlobEntry(amdLayerOf()), want: []string{"does not match"}},
		{name: "image without a tagged entry", only: seedtest.PhoneApp, edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			ds[statusIndex(t, ds, p.Images[0].Top.Desc.Digest)].Tag = nil
			return ds
		}, entry: PackageEntry, want: []string{`spec.images["docker.io/library/nginx:alpine"]`, "tagged"}},
		{name: "spec.images digest not listed", only: seedtest.KubepkgV01, edit: func(t *testing.T, p *seedtest.Package, ds []seedtest.DigestMeta) []seedtest.DigestMeta {
			i := statusIndex(t, ds, p.Images[1].Top.Desc.Digest)
			return append(ds[:i:i], ds[i+1:]...)
		}, entry: PackageEntry, want: []string{"spec.images", "status.digests does not list"}},
	}
	for _, l := range seedtest.Layouts {
		for _, c := range cases {
			if c.only != "" && c.only != l {
				continue
			}
			t.Run(string(l)+"/"+c.name, func(t *testing.T) {
				p := seedPackage(c.docker)
				if c.edit != nil {
					p.Digests = c.edit(t, p, seedtest.Digests(l, p))
				}
				es := seedtest.Entries(l, p)
				if c.tweak != nil {
					es = c.tweak(t, p, es)
				}
				_, _, err := readArchive(seedtest.Archive(l, es), Limits{})
				var ee *EntryError
				if err == nil || !errors.As(err, &ee) {
					t.Fatalf("err = %v, want an *EntryError", err)
				}
				if c.entry != "" && ee.Entry != c.entry {
					t.Errorf("entry %q, want %q (%v)", ee.Entry, c.entry, err)
				}
				for _, w := range c.want {
					if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
						t.Errorf("%v: want %q", err, w)
					}
				}
			})
		}
	}
}

// amdLayerOf is the digest of seedPackage's amd64 layer of its own (the
// same in every call: the content is seeded).
func amdLayerOf() digest.Digest {
	return seedPackage(false).Images[0].Children[0].Layers[1].Desc.Digest
}

func dropEntry(es []seedtest.Entry, name string) []seedtest.Entry {
	var out []seedtest.Entry
	for _, e := range es {
		if e.Name != name {
			out = append(out, e)
		}
	}
	return out
}

// TestReadCrpeStatusDigests reads crpe's own layout with status.digests:
// the same checks hold (a status.digests that disagrees with the manifests
// is refused), and without status.digests (archives written before it) the
// reader is as it was.
func TestReadCrpeStatusDigests(t *testing.T) {
	c := newContent(5)
	l1 := c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 3000)
	cfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	m := c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg, l1)
	c.image("docker.io/library/x:1", m)
	status := func(name string, size int64) []byte {
		ds := []map[string]any{
			{"digest": m.Digest, "type": "manifest", "name": "docker.io/library/x", "size": m.Size, "tag": "1"},
			{"digest": cfg.Digest, "type": "blob", "name": "docker.io/library/x", "size": cfg.Size},
			{"digest": l1.Digest, "type": "blob", "name": name, "size": size},
		}
		b, _ := json.Marshal(map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg", "metadata": map[string]any{"name": "x"},
			"spec": map[string]any{"version": "1.0.0", "images": map[string]any{"docker.io/library/x:1": m.Digest}}, "status": map[string]any{"digests": ds}})
		return b
	}
	write := func(pkg []byte) []byte {
		var buf bytes.Buffer
		if err := Write(t.Context(), &buf, pkg, c.images, c.blobs, c.open, Options{}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if _, _, err := readArchive(write(status("docker.io/library/x", l1.Size)), Limits{}); err != nil {
		t.Fatalf("crpe layout with a true status.digests: %v", err)
	}
	if _, _, err := readArchive(write(status("docker.io/library/y", l1.Size)), Limits{}); err == nil || !strings.Contains(err.Error(), "names it docker.io/library/y") {
		t.Errorf("name lie: %v", err)
	}
	if _, _, err := readArchive(write(status("docker.io/library/x", l1.Size+1)), Limits{}); err == nil || !strings.Contains(err.Error(), "status.digests[2]") {
		t.Errorf("size lie: %v", err)
	}
}
