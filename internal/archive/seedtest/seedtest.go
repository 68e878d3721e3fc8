// Package seedtest writes kubepkg.tgz archives in the layouts of the tools
// crpe grew from, for tests: the crpe phone app (octohelm/crpe, Dart, 2022),
// octohelm/kubepkg v0.1 (2022) and octohelm/kubepkg after July 2023. It
// follows those tools' writers (the phone app's KubePkg.exportAsTgz and
// KubePkgRegistry, kubepkg's DigestResolver and Packer), not crpe's writer,
// so that a test of crpe's reader against it checks crpe against what those
// tools wrote. It imports no crpe package.
package seedtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layout is one of the seed's archive layouts.
type Layout string

const (
	// PhoneApp is the crpe phone app's: a gzip tar of kubepkg.json, then the
	// blobs in status.digests order (each image's top index or manifest
	// first, tagged, then each chosen child manifest, with its platform,
	// followed by its config and layers), each digest once, nothing else.
	// spec.images values are "", the annotation is octohelm.tech/platforms.
	PhoneApp Layout = "phone-app"
	// KubepkgV01 is octohelm/kubepkg v0.1's (2022): a gzip tar of
	// kubepkg.json (spec.images set to the top digests, annotation
	// octohelm.tech/platform), the blobs in status.digests order, which is
	// children first (config and layers, then the child manifest, the index
	// last), a blob listed twice written twice, then index.json (the Docker
	// manifests only) and oci-layout. Only Docker media types are typed
	// "manifest"; every entry carries the reference's tag, and children
	// their platform.
	KubepkgV01 Layout = "kubepkg-v0.1"
	// Kubepkg2023 is octohelm/kubepkg's after July 2023: as KubepkgV01 but
	// an uncompressed tar, images in status.images (not spec.images), OCI
	// manifests typed "manifest" too, index.json listing the OCI manifests
	// too, Docker's manifest.json, and one index.json, manifest.json and
	// oci-layout per package of a KubePkgList.
	Kubepkg2023 Layout = "kubepkg-2023"
)

// Layouts are all the layouts.
var Layouts = []Layout{PhoneApp, KubepkgV01, Kubepkg2023}

// Media types.
const (
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Blob is a blob with its descriptor.
type Blob struct {
	Desc ocispec.Descriptor
	Data []byte
}

// Manifest is an image manifest of an Image, with its config and layers.
type Manifest struct {
	Blob
	// Platform is os/arch[/variant].
	Platform string
	Config   Blob
	Layers   []Blob
}

// Image is an image of a package: Top is an index (Children are its chosen
// platforms' manifests, the ones an archive carries) or a manifest
// (Children holds it alone).
type Image struct {
	// Ref is the reference spec.images names it by.
	Ref string
	// Name is its repository (docker.io/library/nginx), Tag its tag.
	Name, Tag string
	Top       Blob
	Index     bool
	Children  []Manifest
}

// Package is a KubePkg of an archive.
type Package struct {
	Name, Namespace, Version string
	// Platforms are the chosen platforms (the package's annotation).
	Platforms []string
	Images    []*Image
	// Digests, when set, replaces status.digests (hostile tests).
	Digests []DigestMeta
	// Edit, when set, edits the package object before it is written.
	Edit func(map[string]any)
}

// DigestMeta is an entry of status.digests as the seed's tools write it.
type DigestMeta struct {
	Digest   digest.Digest `json:"digest"`
	Type     string        `json:"type"`
	Name     string        `json:"name"`
	Size     int64         `json:"size"`
	Tag      *string       `json:"tag"`
	Platform *string       `json:"platform"`
}

// Entry is a tar entry of an archive.
type Entry struct {
	Name string
	Data []byte
}

// BlobName is blobs/<alg>/<hex>.
func BlobName(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Digests is status.digests as the layout's tool writes it for p.
func Digests(l Layout, p *Package) []DigestMeta {
	var out []DigestMeta
	images := sortedImages(p.Images)
	if l == PhoneApp {
		// a map from digest to entry, in insertion order: each digest once
		seen := map[digest.Digest]bool{}
		add := func(m DigestMeta) {
			if !seen[m.Digest] {
				seen[m.Digest] = true
				out = append(out, m)
			}
		}
		for _, im := range images {
			add(DigestMeta{Digest: im.Top.Desc.Digest, Type: "manifest", Name: im.Name, Size: im.Top.Desc.Size, Tag: strp(im.Tag)})
			for _, c := range im.Children {
				if im.Index {
					add(DigestMeta{Digest: c.Desc.Digest, Type: "manifest", Name: im.Name, Size: c.Desc.Size, Platform: strp(c.Platform)})
				}
				add(DigestMeta{Digest: c.Config.Desc.Digest, Type: "blob", Name: im.Name, Size: c.Config.Desc.Size})
				for _, b := range c.Layers {
					add(DigestMeta{Digest: b.Desc.Digest, Type: "blob", Name: im.Name, Size: b.Desc.Size})
				}
			}
		}
		return out
	}
	// kubepkg's DigestResolver: children first, every entry tagged
	typ := func(mt string) string {
		switch mt {
		case DockerManifest, DockerManifestList:
			return "manifest"
		case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex:
			if l == Kubepkg2023 {
				return "manifest"
			}
		}
		return "blob"
	}
	for _, im := range images {
		for _, c := range im.Children {
			for _, b := range append([]Blob{c.Config}, c.Layers...) {
				out = append(out, DigestMeta{Digest: b.Desc.Digest, Type: typ(b.Desc.MediaType), Name: im.Name, Size: b.Desc.Size, Tag: strp(im.Tag), Platform: strp(c.Platform)})
			}
			out = append(out, DigestMeta{Digest: c.Desc.Digest, Type: typ(c.Desc.MediaType), Name: im.Name, Size: c.Desc.Size, Tag: strp(im.Tag), Platform: strp(c.Platform)})
		}
		if im.Index {
			out = append(out, DigestMeta{Digest: im.Top.Desc.Digest, Type: typ(im.Top.Desc.MediaType), Name: im.Name, Size: im.Top.Desc.Size, Tag: strp(im.Tag)})
		}
	}
	return out
}

func sortedImages(ims []*Image) []*Image {
	out := append([]*Image(nil), ims...)
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

// PackageObject is kubepkg.json's object for p in layout l.
func PackageObject(l Layout, p *Package) map[string]any {
	images := map[string]any{}
	var containers []any
	for i, im := range sortedImages(p.Images) {
		if l == PhoneApp {
			images[im.Ref] = ""
		} else {
			images[im.Ref] = string(im.Top.Desc.Digest)
		}
		containers = append(containers, map[string]any{"name": fmt.Sprintf("c%d", i), "image": im.Ref})
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	annotation := "octohelm.tech/platform"
	if l == PhoneApp {
		annotation = "octohelm.tech/platforms"
	}
	digests := p.Digests
	if digests == nil {
		digests = Digests(l, p)
	}
	spec := map[string]any{"version": p.Version}
	status := map[string]any{"digests": digests}
	if l == Kubepkg2023 {
		status["images"] = images
		spec["deploy"] = map[string]any{"kind": "Deployment"}
	} else {
		spec["images"] = images
		spec["manifests"] = map[string]any{
			p.Name + "." + ns + ".deployment": map[string]any{
				"apiVersion": "apps/v1", "kind": "Deployment",
				"metadata": map[string]any{"name": p.Name, "namespace": ns},
				"spec": map[string]any{
					"selector": map[string]any{"matchLabels": map[string]any{"app": p.Name}},
					"template": map[string]any{
						"metadata": map[string]any{"labels": map[string]any{"app": p.Name}},
						"spec":     map[string]any{"containers": containers},
					},
				},
			},
		}
	}
	obj := map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": p.Name, "namespace": ns, "annotations": map[string]any{annotation: strings.Join(p.Platforms, ",")}},
		"spec":     spec,
		"status":   status,
	}
	if p.Edit != nil {
		p.Edit(obj)
	}
	return obj
}

// Entries are the tar entries of an archive of pkgs in layout l.
func Entries(l Layout, pkgs ...*Package) []Entry {
	var objs []any
	for _, p := range pkgs {
		objs = append(objs, PackageObject(l, p))
	}
	var pkgJSON []byte
	if len(objs) == 1 {
		pkgJSON = jsonLine(objs[0])
	} else {
		pkgJSON = jsonLine(map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkgList", "items": objs})
	}
	es := []Entry{{"kubepkg.json", pkgJSON}}
	if l == PhoneApp {
		// one map of entries by name for all packages
		seen := map[string]bool{}
		for _, p := range pkgs {
			for _, m := range Digests(l, p) {
				n := BlobName(m.Digest)
				if !seen[n] {
					seen[n] = true
					es = append(es, Entry{n, blobData(p, m.Digest)})
				}
			}
		}
		return es
	}
	for _, p := range pkgs {
		idx := ocispec.Index{}
		idx.SchemaVersion = 2
		type dockerManifest struct {
			Config   string   `json:"Config"`
			RepoTags []string `json:"RepoTags"`
			Layers   []string `json:"Layers"`
		}
		dms := []dockerManifest{}
		for _, m := range Digests(l, p) {
			es = append(es, Entry{BlobName(m.Digest), blobData(p, m.Digest)})
			if m.Type != "manifest" {
				continue
			}
			mt, man := manifestOf(p, m.Digest)
			desc := ocispec.Descriptor{MediaType: mt, Digest: m.Digest, Size: m.Size, Annotations: map[string]string{"io.containerd.image.name": m.Name}}
			if m.Tag != nil {
				desc.Annotations["org.opencontainers.image.ref.name"] = *m.Tag
				desc.Annotations["io.containerd.image.name"] = m.Name + ":" + *m.Tag
			}
			if m.Platform != nil {
				parts := strings.Split(*m.Platform, "/")
				desc.Platform = &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
				if len(parts) > 2 {
					desc.Platform.Variant = parts[2]
				}
			}
			if mt == DockerManifest || l == Kubepkg2023 && mt == ocispec.MediaTypeImageManifest {
				idx.Manifests = append(idx.Manifests, desc)
			}
			if mt == DockerManifest && l == Kubepkg2023 && man != nil {
				dm := dockerManifest{Config: BlobName(man.Config.Desc.Digest)}
				if m.Tag != nil {
					dm.RepoTags = append(dm.RepoTags, m.Name+":"+*m.Tag)
				}
				for _, b := range man.Layers {
					dm.Layers = append(dm.Layers, BlobName(b.Desc.Digest))
				}
				dms = append(dms, dm)
			}
		}
		es = append(es, Entry{"index.json", jsonLine(idx)})
		if l == Kubepkg2023 && len(dms) > 0 {
			es = append(es, Entry{"manifest.json", jsonLine(dms)})
		}
		es = append(es, Entry{"oci-layout", jsonLine(map[string]string{"imageLayoutVersion": "1.0.0"})})
	}
	return es
}

// blobData finds the bytes of d among p's images (nil when p has none: a
// hostile status.digests may list anything).
func blobData(p *Package, d digest.Digest) []byte {
	for _, im := range p.Images {
		if im.Top.Desc.Digest == d {
			return im.Top.Data
		}
		for _, c := range im.Children {
			if c.Desc.Digest == d {
				return c.Data
			}
			for _, b := range append([]Blob{c.Config}, c.Layers...) {
				if b.Desc.Digest == d {
					return b.Data
				}
			}
		}
	}
	return nil
}

func manifestOf(p *Package, d digest.Digest) (string, *Manifest) {
	for _, im := range p.Images {
		if im.Top.Desc.Digest == d && im.Index {
			return im.Top.Desc.MediaType, nil
		}
		for i, c := range im.Children {
			if c.Desc.Digest == d {
				return c.Desc.MediaType, &im.Children[i]
			}
		}
	}
	return "", nil
}

func jsonLine(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // as kubepkg's writeJsonToTar: a trailing newline
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Tar writes es as a tar stream as the tools did (Go's archive/tar, mode
// 0644, the type flag left as archive/tar sets it).
func Tar(es []Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Name: e.Name, Size: int64(len(e.Data)), Mode: 0o644}); err != nil {
			panic(err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Archive is the archive file of es in layout l: gzip, or a plain tar for
// Kubepkg2023.
func Archive(l Layout, es []Entry) []byte {
	t := Tar(es)
	if l == Kubepkg2023 {
		return t
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(t)
	_ = zw.Close()
	return buf.Bytes()
}

// Write is Archive(l, Entries(l, pkgs...)).
func Write(l Layout, pkgs ...*Package) []byte { return Archive(l, Entries(l, pkgs...)) }

// NewBlob makes a blob of data.
func NewBlob(mediaType string, data []byte) Blob {
	return Blob{Desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, Data: data}
}

// NewManifest makes an image manifest (Docker or OCI media types) of a
// config and layers for platform os/arch[/variant].
func NewManifest(docker bool, platform string, config Blob, layers ...Blob) Manifest {
	mt := ocispec.MediaTypeImageManifest
	if docker {
		mt = DockerManifest
	}
	var lds []ocispec.Descriptor
	for _, l := range layers {
		lds = append(lds, l.Desc)
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mt, "config": config.Desc, "layers": lds})
	return Manifest{Blob: NewBlob(mt, b), Platform: platform, Config: config, Layers: layers}
}

// NewConfig makes an image config for platform os/arch[/variant]; salt
// makes it unique.
func NewConfig(docker bool, platform, salt string) Blob {
	parts := strings.Split(platform, "/")
	cfg := map[string]any{"os": parts[0], "architecture": parts[1], "rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}, "config": map[string]any{"Labels": map[string]string{"salt": salt}}}
	if len(parts) > 2 {
		cfg["variant"] = parts[2]
	}
	mt := ocispec.MediaTypeImageConfig
	if docker {
		mt = "application/vnd.docker.container.image.v1+json"
	}
	b, _ := json.Marshal(cfg)
	return NewBlob(mt, b)
}

// NewIndex makes an index (a Docker manifest list when docker) of the
// chosen manifests plus, for each of other, a descriptor of a manifest the
// archive leaves out (a platform not chosen).
func NewIndex(docker bool, chosen []Manifest, other ...Manifest) Blob {
	mt := ocispec.MediaTypeImageIndex
	if docker {
		mt = DockerManifestList
	}
	var ms []ocispec.Descriptor
	for _, m := range append(append([]Manifest(nil), chosen...), other...) {
		d := m.Desc
		parts := strings.Split(m.Platform, "/")
		d.Platform = &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			d.Platform.Variant = parts[2]
		}
		ms = append(ms, d)
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mt, "manifests": ms})
	return NewBlob(mt, b)
}

// SingleImage is an image of one manifest.
func SingleImage(ref, name, tag string, m Manifest) *Image {
	return &Image{Ref: ref, Name: name, Tag: tag, Top: m.Blob, Children: []Manifest{m}}
}

// IndexImage is an image of an index whose chosen children are chosen.
func IndexImage(ref, name, tag string, index Blob, chosen ...Manifest) *Image {
	return &Image{Ref: ref, Name: name, Tag: tag, Top: index, Index: true, Children: chosen}
}

// Demo is a package of two images: ref "docker.io/library/nginx:alpine" an
// index of linux/amd64 and linux/arm64 (chosen) and linux/s390x (left out),
// and "ghcr.io/octohelm/app:v1" one linux/amd64 manifest sharing a layer
// with the index's amd64 image. The amd64 image has a layer over 4 MiB.
// docker picks Docker media types; seed makes the content (the same seed
// gives the same bytes).
func Demo(name, version string, docker bool, seed uint64) *Package {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	layer := func(n int) Blob {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		mt := ocispec.MediaTypeImageLayerGzip
		if docker {
			mt = "application/vnd.docker.image.rootfs.diff.tar.gzip"
		}
		return NewBlob(mt, b)
	}
	salt := func() string { return fmt.Sprintf("%s-%x", name, rng.Uint64()) }
	shared := layer(40 << 10)
	amd := NewManifest(docker, "linux/amd64", NewConfig(docker, "linux/amd64", salt()), shared, layer(5<<20+7))
	arm := NewManifest(docker, "linux/arm64", NewConfig(docker, "linux/arm64", salt()), layer(3000))
	s390 := NewManifest(docker, "linux/s390x", NewConfig(docker, "linux/s390x", salt()), layer(100))
	idx := NewIndex(docker, []Manifest{amd, arm}, s390)
	single := NewManifest(docker, "linux/amd64", NewConfig(docker, "linux/amd64", salt()), shared, layer(700))
	return &Package{Name: name, Version: version, Platforms: []string{"linux/amd64", "linux/arm64"},
		Images: []*Image{
			IndexImage("docker.io/library/nginx:alpine", "docker.io/library/nginx", "alpine", idx, amd, arm),
			SingleImage("ghcr.io/octohelm/app:v1", "ghcr.io/octohelm/app", "v1", single),
		}}
}

// Blobs lists every blob an archive of p carries: each image's top, its
// chosen manifests, their configs and layers.
func (p *Package) Blobs() []Blob {
	var out []Blob
	seen := map[digest.Digest]bool{}
	add := func(b Blob) {
		if !seen[b.Desc.Digest] {
			seen[b.Desc.Digest] = true
			out = append(out, b)
		}
	}
	for _, im := range p.Images {
		add(im.Top)
		for _, c := range im.Children {
			add(c.Blob)
			add(c.Config)
			for _, l := range c.Layers {
				add(l)
			}
		}
	}
	return out
}
