package export_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
)

// artifactImage is a one-layer artifact as cosign writes them: an image
// manifest whose layer (of mediaType) holds payload, with annotations.
func artifactImage(t *testing.T, mediaType string, payload []byte, ann map[string]string) v1.Image {
	t.Helper()
	l := static.NewLayer(payload, types.MediaType(mediaType))
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l, Annotations: ann})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
}

// TestExportCarriesArtifacts: an image's cosign signature (its
// sha256-<hex>.sig tag) and an OCI 1.1 referrer (found through the
// upstream's fallback tag: go-containerregistry's registry has no
// referrers API) go into the archive with the image, each named in
// index.json with its subject, and --artifacts filters them.
func TestExportCarriesArtifacts(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up := pt.NewUpstream(t)
	img := pt.Image(t, "linux/amd64", 1, 8<<10)
	top := up.PushImage(ctx, t, "demo/app:1.0", img)
	repo := up.Repo("demo/app")

	sig := artifactImage(t, oci.MediaTypeCosignSimpleSigning, []byte(`{"critical":{}}`), map[string]string{oci.AnnotationCosignSignature: "c2ln"})
	sigDigest := up.PushImage(ctx, t, "demo/app:"+oci.CosignTag(top, oci.CosignSignatureSuffix), sig)

	// an SBOM as an OCI 1.1 referrer: artifactType, subject
	sbom := artifactImage(t, "application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`), nil)
	subj, _ := v1.NewHash(string(top))
	raw, _ := img.RawManifest()
	sbom = mutate.Subject(sbom, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: subj, Size: int64(len(raw))}).(v1.Image)
	sbom = mutate.ConfigMediaType(sbom, "application/spdx+json") // its type, by the referrers API's rule
	sd, _ := sbom.Digest()
	ref, _ := name.ParseReference(up.Host+"/demo/app@"+sd.String(), name.Insecure)
	if err := remote.Write(ref, sbom); err != nil {
		t.Fatal(err)
	}
	sbomDigest := digest.Digest(sd.String())
	// the fallback tag a client keeps on a registry without the API: an
	// index of the referrers
	fallback := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: sbom})
	up.PushIndex(ctx, t, "demo/app:"+oci.ReferrersTag(top), fallback)

	for _, c := range []struct {
		flag string
		want map[digest.Digest]string // artifact → ref
	}{
		{"all", map[digest.Digest]string{sigDigest: repo + ":" + oci.CosignTag(top, ".sig"), sbomDigest: repo + "@" + string(sbomDigest)}},
		{"signature", map[digest.Digest]string{sigDigest: repo + ":" + oci.CosignTag(top, ".sig")}},
		{"sbom", map[digest.Digest]string{sbomDigest: repo + "@" + string(sbomDigest)}},
		{"none", map[digest.Digest]string{}},
	} {
		t.Run(c.flag, func(t *testing.T) {
			sel, err := export.ParseArtifacts(c.flag)
			if err != nil {
				t.Fatal(err)
			}
			cache := pt.NewCache(t, pt.NewCounter(), pullthrough.Options{})
			var buf bytes.Buffer
			res, err := export.Export(ctx, cache.Cache, cache.Store, packages(t, "linux/amd64", map[string]string{repo + ":1.0": ""}), &buf, export.Options{Artifacts: sel})
			if err != nil {
				t.Fatal(err)
			}
			a := readArchive(ctx, t, buf.Bytes())
			got := map[digest.Digest]string{}
			for _, m := range a.index.Manifests {
				if s, ok := archive.ArtifactOf(m); ok {
					if s != top {
						t.Errorf("artifact %s is about %s, want %s", m.Digest, s, top)
					}
					got[m.Digest] = m.Annotations[archive.AnnotationRefName]
				}
			}
			if len(got) != len(c.want) || len(res.Artifacts) != len(c.want) {
				t.Fatalf("artifacts %v (result %+v), want %v", got, res.Artifacts, c.want)
			}
			for d, ref := range c.want {
				if got[d] != ref {
					t.Errorf("artifact %s named %q, want %q", d, got[d], ref)
				}
				if _, ok := a.blobs[d]; !ok {
					t.Errorf("artifact %s not in the archive", d)
				}
			}
			// status.digests lists them too (the seed's importers, crpe's reader)
			dms, _ := a.pkgs[0].StatusDigests()
			listed := map[digest.Digest]string{}
			for _, m := range dms {
				listed[m.Digest] = m.Tag
			}
			for d := range c.want {
				if _, ok := listed[d]; !ok {
					t.Errorf("status.digests does not list %s", d)
				}
			}
			if tag, ok := listed[sigDigest]; ok && tag != oci.CosignTag(top, ".sig") {
				t.Errorf("status.digests tags the signature %q", tag)
			}
		})
	}
}
