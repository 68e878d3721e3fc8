package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// The seed's layouts. The tools crpe grew from wrote kubepkg.tgz archives
// that type their blobs by kubepkg.json's status.digests rather than by a
// leading index.json:
//
//   - the crpe phone app (Dart, 2022): a gzip tar of kubepkg.json, then the
//     blobs in status.digests order (each image's top index or manifest
//     first, then each chosen child manifest followed by its config and
//     layers), nothing else; spec.images values may be "" (the digest is the
//     tagged top entry's); the platforms annotation is octohelm.tech/platforms;
//   - octohelm/kubepkg v0.1 (2022): kubepkg.json, the blobs children-first
//     (layers and config, then the child manifest, the index last), then
//     index.json and oci-layout; only Docker media types are typed
//     "manifest", an OCI manifest or index may be typed "blob";
//   - octohelm/kubepkg after 2023: the same as an uncompressed tar, with
//     Docker's manifest.json at the end, and one index.json and oci-layout
//     per package of a KubePkgList (a blob two packages share is written
//     twice).
//
// Read takes them all in its single pass: status.digests announces each
// blob's digest and size before it arrives (so the size and digest checks
// hold as for index.json), the image index is made from spec.images and
// status.digests, and every entry of status.digests is checked against the
// manifests as they arrive: size, type, the repository it names, and that
// some manifest of the archive references it.

// SeedPackageFrom is how errors name the image index Read makes from
// spec.images for an archive of a seed layout.
const SeedPackageFrom = PackageEntry + " spec.images"

// DockerManifestEntry is Docker's manifest.json, which octohelm/kubepkg
// writes after the blobs (it is checked, not used).
const DockerManifestEntry = "manifest.json"

// statusRef is an entry of a package's status.digests.
type statusRef struct {
	// label names it in errors: `kubepkg.json status.digests[3]`.
	label string
	meta  kubepkg.DigestMeta
}

// readStatus reads the status.digests of the packages in data, announcing
// each blob they list, and returns the package as handlers get it: for a
// seed package, each "" in spec.images set to the digest of its tagged top
// entry and the platform annotation set (from the phone app's plural one,
// else from the platforms status.digests names). A package that does not
// parse is returned as is: it is the handler's business.
func (rd *reader) readStatus(entry string, data []byte) ([]byte, error) {
	pkgs, err := kubepkg.Parse(data)
	if err != nil {
		return data, nil
	}
	changed := false
	for i, p := range pkgs {
		item := ""
		if len(pkgs) > 1 {
			item = fmt.Sprintf("items[%d].", i)
		}
		dms, err := p.StatusDigests()
		if err != nil {
			return nil, entryErr(entry, nil, "%s%v", item, err)
		}
		if len(dms) == 0 {
			continue
		}
		if len(p.Spec.Images) == 0 {
			// octohelm/kubepkg from v0.2 (2023) keeps the images in
			// status.images
			if imgs, ok := statusImages(p); ok {
				p.Spec.Images = imgs
				changed = true
			}
		}
		for j, m := range dms {
			if err := rd.announceStatus(&statusRef{label: fmt.Sprintf("%s %sstatus.digests[%d]", entry, item, j), meta: m}); err != nil {
				return nil, err
			}
		}
		for _, ref := range p.ImageRefs() {
			if p.Spec.Images[ref] != "" {
				continue
			}
			d, err := topEntry(ref, dms)
			if err != nil {
				return nil, entryErr(entry, nil, "%sspec.images[%q]: %v", item, ref, err)
			}
			if d != "" {
				p.Spec.Images[ref] = string(d)
				changed = true
			}
		}
		if p.Metadata.Annotations[kubepkg.AnnotationPlatform] == "" {
			plats := p.Metadata.Annotations[kubepkg.AnnotationPlatforms]
			if plats == "" {
				var names []string
				for _, m := range dms {
					if m.Platform != "" && !slices.Contains(names, m.Platform) {
						names = append(names, m.Platform)
					}
				}
				plats = strings.Join(names, ",")
			}
			if ps, err := oci.ParsePlatforms(plats); err == nil && len(ps) > 0 {
				if p.Metadata.Annotations == nil {
					p.Metadata.Annotations = map[string]string{}
				}
				p.Metadata.Annotations[kubepkg.AnnotationPlatform] = oci.JoinPlatforms(ps)
				changed = true
			}
		}
	}
	rd.pkgs = pkgs
	if !changed {
		return data, nil
	}
	out, err := kubepkg.Marshal(pkgs)
	if err != nil {
		return nil, entryErr(entry, err, "cannot write the package back")
	}
	return out, nil
}

// statusImages reads status.images, a map of references to digests.
func statusImages(p *kubepkg.KubePkg) (map[string]string, bool) {
	m, ok := (*p.Status)["images"].(map[string]any)
	if !ok || len(m) == 0 {
		return nil, false
	}
	out := map[string]string{}
	for ref, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, false
		}
		out[ref] = s
	}
	return out, true
}

// topEntry finds the digest of ref's image in status.digests: its tagged
// manifest entry (the phone app tags only the top one; octohelm/kubepkg tags
// every entry, and gives the platform of the child manifests). It returns ""
// when ref is not a valid reference (the handler refuses it).
func topEntry(ref string, dms []kubepkg.DigestMeta) (digest.Digest, error) {
	r, err := oci.ParseReference(ref)
	if err != nil || r.Digest != "" {
		return "", nil
	}
	var all, plain []digest.Digest
	for _, m := range dms {
		if m.Type != kubepkg.DigestTypeManifest || m.Repository != r.Repository || m.Tag != r.Tag || slices.Contains(all, m.Digest) {
			continue
		}
		all = append(all, m.Digest)
		if m.Platform == "" {
			plain = append(plain, m.Digest)
		}
	}
	switch {
	case len(all) == 1:
		return all[0], nil
	case len(plain) == 1:
		return plain[0], nil
	case len(all) == 0:
		return "", fmt.Errorf(`is "" and status.digests has no manifest of %s tagged %q`, r.Repository, r.Tag)
	}
	return "", fmt.Errorf(`is "" and status.digests has %d manifests of %s tagged %q: which one is the image is not said`, len(all), r.Repository, r.Tag)
}

// announceStatus records a blob status.digests lists: its size bounds the
// entry, and the manifests that reference it must agree.
func (rd *reader) announceStatus(s *statusRef) error {
	d := s.meta.Digest
	if k, ok := rd.known[d]; ok {
		prev := k.status
		switch {
		case k.desc.Size != s.meta.Size:
			return entryErr(PackageEntry, nil, "%s lists %s with size %d, but %s lists it with size %d", strings.TrimPrefix(s.label, PackageEntry+" "), d, s.meta.Size, k.from, k.desc.Size)
		case prev != nil && prev.meta.Type != s.meta.Type:
			return entryErr(PackageEntry, nil, "%s types %s as a %s, but %s types it as a %s", strings.TrimPrefix(s.label, PackageEntry+" "), d, s.meta.Type, prev.label, prev.meta.Type)
		}
		return nil
	}
	if int64(len(rd.known)) >= rd.lim.MaxBlobs {
		return entryErr(PackageEntry, nil, "status.digests lists more than %d blobs in all", rd.lim.MaxBlobs)
	}
	rd.known[d] = &knownBlob{desc: ocispec.Descriptor{Digest: d, Size: s.meta.Size}, from: s.label, status: s}
	rd.statusList = append(rd.statusList, s)
	return nil
}

// startSeed begins reading an archive of a seed layout, at its first blob:
// the image index is made from spec.images (each digest must be listed in
// status.digests, which gives its size) and given to the handler.
func (rd *reader) startSeed(entry string) error {
	if len(rd.statusList) == 0 || rd.sawLayout || rd.sawIndex {
		return entryErr(entry, nil, "blob before %s and %s (and kubepkg.json has no status.digests to type the blobs by)", LayoutEntry, IndexEntry)
	}
	rd.seed = true
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	refs := map[string]bool{}
	for _, p := range rd.pkgs {
		for _, ref := range p.ImageRefs() {
			if refs[ref] {
				continue
			}
			d, err := oci.ParseDigest(p.Spec.Images[ref])
			if err != nil {
				continue // not pinned: the handler refused the package already
			}
			refs[ref] = true
			k := rd.known[d]
			if k == nil || k.status == nil {
				return entryErr(PackageEntry, nil, "spec.images[%q] is %s, which status.digests does not list", ref, d)
			}
			desc := ocispec.Descriptor{Digest: d, Size: k.desc.Size, Annotations: map[string]string{AnnotationImageName: ref, AnnotationRefName: ref}}
			if err := rd.announce(SeedPackageFrom, desc, oci.KindManifest); err != nil {
				return err
			}
			if r, err := oci.ParseReference(ref); err == nil {
				rd.addRepo(d, r.Repository)
			}
			idx.Manifests = append(idx.Manifests, desc)
		}
	}
	sort.Slice(idx.Manifests, func(i, j int) bool {
		return idx.Manifests[i].Annotations[AnnotationImageName] < idx.Manifests[j].Annotations[AnnotationImageName]
	})
	rd.sawIndex = true
	rd.sum.Index = idx
	if err := rd.h.Index(idx); err != nil {
		return fmt.Errorf("kubepkg.tgz: %s: %w", SeedPackageFrom, err)
	}
	return nil
}

// addRepo records that an image of repository repo holds d (and so every
// blob d's manifest references), for checking the names of status.digests.
func (rd *reader) addRepo(d digest.Digest, repo string) {
	if len(rd.statusList) == 0 {
		return
	}
	k := rd.known[d]
	if k == nil || slices.Contains(k.repos, repo) {
		return
	}
	k.repos = append(k.repos, repo)
	for _, c := range k.children {
		rd.addRepo(c, repo)
	}
}

// checkStatus is the end of an archive with status.digests: every entry of
// it that arrived is referenced by a manifest of the archive (or is an
// image of spec.images) and names a repository whose image holds it.
func (rd *reader) checkStatus() error {
	for _, s := range rd.statusList {
		k := rd.known[s.meta.Digest]
		if !rd.seen[s.meta.Digest] {
			continue // absent: the required-blob checks decide
		}
		if k.kinds == 0 {
			return entryErr(BlobEntry(s.meta.Digest), nil, "%s lists it, but no manifest of the archive references it", s.label)
		}
		if len(k.repos) > 0 && !slices.Contains(k.repos, s.meta.Repository) {
			return entryErr(BlobEntry(s.meta.Digest), nil, "%s names it %s, but it belongs to %s", s.label, s.meta.Name, strings.Join(k.repos, ", "))
		}
	}
	return nil
}

// readTrailingIndex checks an index.json that follows the blobs (the
// octohelm/kubepkg layouts, one per package): each of its manifests must be
// a blob the archive announced, with the same size. It announces nothing.
func (rd *reader) readTrailingIndex(entry string, size int64) error {
	data, err := rd.readSmall(entry, size, rd.lim.MaxIndex)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return entryErr(entry, err, "not a valid OCI image index")
	}
	if idx.SchemaVersion != 2 {
		return entryErr(entry, nil, "schemaVersion must be 2")
	}
	for i, m := range idx.Manifests {
		k, ok := rd.known[m.Digest]
		if !ok {
			return entryErr(entry, nil, "manifests[%d]: %s is not a blob of the archive", i, m.Digest)
		}
		if k.desc.Size != m.Size {
			return entryErr(entry, nil, "manifests[%d]: %s has size %d, %s says %d", i, m.Digest, m.Size, k.from, k.desc.Size)
		}
	}
	return nil
}

// readDockerManifest checks Docker's manifest.json (octohelm/kubepkg after
// 2023 writes it after the blobs): every config and layer it names must be a
// blob of the archive.
func (rd *reader) readDockerManifest(entry string, size int64) error {
	data, err := rd.readSmall(entry, size, rd.lim.MaxIndex)
	if err != nil {
		return err
	}
	var list []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&list); err != nil {
		return entryErr(entry, err, "not Docker's manifest.json (a JSON array)")
	}
	for i, m := range list {
		for _, p := range append([]string{m.Config}, m.Layers...) {
			alg, enc, _ := strings.Cut(strings.TrimPrefix(p, BlobsDir+"/"), "/")
			d, err := oci.ParseDigest(alg + ":" + enc)
			if err != nil || !strings.HasPrefix(p, BlobsDir+"/") {
				return entryErr(entry, err, "[%d]: %q is not blobs/<alg>/<hex>", i, p)
			}
			if _, ok := rd.known[d]; !ok {
				return entryErr(entry, nil, "[%d]: %s is not a blob of the archive", i, p)
			}
		}
	}
	return nil
}
