// Package cosignpeer_test runs cosign (testenv.Cosign) against Debian's
// docker-registry 2.8 and CNCF distribution v3 on loopback: it signs, attests
// and attaches an SBOM to a random image, checks that cosign verifies them
// with the right key only and lists and downloads them, and logs exactly
// what cosign wrote into each registry (tags, manifests, referrers), both
// in its default tag scheme (sha256-<hex>.sig/.att/.sbom) and in OCI 1.1
// referrers mode.
package cosignpeer_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// predicateType is the in-toto predicate type of the test's attestation.
const predicateType = "https://crpe.octohelm.tech/test/attestation/v1"

// registry is a registry on loopback the test pushes to. Neither serves
// the referrers API (GET /v2/<name>/referrers/<digest> is a 404 of
// docker-registry 2.8 and of distribution v3.1.2 alike).
type registry struct{ addr, url string }

// TestCosignImage runs, against each registry, cosign's tag scheme on one
// image and its OCI 1.1 mode on another, with one key pair to sign and
// another that must not verify.
func TestCosignImage(t *testing.T) {
	starts := []struct {
		name  string
		start func(t *testing.T) registry
	}{
		{"docker-registry-2.8", func(t *testing.T) registry {
			d := testenv.StartDistribution(t)
			return registry{d.Addr, d.URL}
		}},
		{"distribution-v3", func(t *testing.T) registry {
			r := testenv.StartRegistry3(t, testenv.Registry3Options{})
			return registry{r.Addr, r.URL}
		}},
	}
	for _, s := range starts {
		t.Run(s.name, func(t *testing.T) {
			c := testenv.StartCosign(t)
			reg := s.start(t)
			key, pub := c.KeyPair(t, "cosign")
			_, otherPub := c.KeyPair(t, "other")
			t.Run("tag-scheme", func(t *testing.T) { tagScheme(t, c, reg, key, pub, otherPub) })
			t.Run("oci-1-1", func(t *testing.T) { referrersMode(t, c, reg, key, pub, otherPub) })
		})
	}
}

// tagScheme is cosign's default: signature, attestation and SBOM each
// under a tag named after the image's digest.
func tagScheme(t *testing.T, c *testenv.Cosign, reg registry, key, pub, otherPub string) {
	const repo = "library/nginx"
	dgst := pushRandomImage(t, reg, repo, "1.0")
	ref := reg.addr + "/" + repo + "@" + dgst
	predicate, sbom := writeFiles(t)

	c.Sign(t, ref, key)
	c.Attest(t, ref, key, predicate, predicateType)
	c.AttachSBOM(t, ref, sbom, "spdx")

	out, err := c.Verify(ref, pub)
	if err != nil {
		t.Fatalf("verify with the signing key: %v\n%s", err, out)
	}
	if !strings.Contains(out, dgst) || !strings.Contains(out, `"type":"cosign container image signature"`) {
		t.Errorf("verify: no payload naming %s:\n%s", dgst, out)
	}
	out, err = c.Verify(ref, otherPub)
	if err == nil {
		t.Fatalf("verify with another key passed:\n%s", out)
	}
	if !strings.Contains(out, "no matching signatures") {
		t.Errorf("verify with another key: %v, want no matching signatures:\n%s", err, out)
	}
	if out, err := c.VerifyAttestation(ref, pub, predicateType); err != nil {
		t.Fatalf("verify-attestation: %v\n%s", err, out)
	}
	if out, err := c.VerifyAttestation(ref, otherPub, predicateType); err == nil {
		t.Fatalf("verify-attestation with another key passed:\n%s", out)
	}

	tree, err := c.Tree(ref)
	if err != nil {
		t.Fatalf("tree: %v\n%s", err, tree)
	}
	t.Logf("cosign tree:\n%s", tree)
	hexPart := strings.TrimPrefix(dgst, "sha256:")
	for _, want := range []string{
		"Signatures for an image tag: " + reg.addr + "/" + repo + ":sha256-" + hexPart + ".sig",
		"Attestations for an image tag: " + reg.addr + "/" + repo + ":sha256-" + hexPart + ".att",
		"SBOMs for an image tag: " + reg.addr + "/" + repo + ":sha256-" + hexPart + ".sbom",
	} {
		if !strings.Contains(tree, want) {
			t.Errorf("tree lacks %q", want)
		}
	}
	got, err := c.DownloadSBOM(ref)
	if err != nil {
		t.Fatalf("download sbom: %v\n%s", err, got)
	}
	if want, _ := os.ReadFile(sbom); got != string(want) {
		t.Errorf("download sbom:\n%s\nwant the attached bytes:\n%s", got, want)
	}

	// what cosign wrote: three tags beside the image's, one single-layer
	// OCI manifest each, none with a subject
	shapes := record(t, reg, repo, dgst)
	wantTags := []string{"1.0", "sha256-" + hexPart + ".att", "sha256-" + hexPart + ".sbom", "sha256-" + hexPart + ".sig"}
	if got := tagsOf(shapes); !slices.Equal(got, wantTags) {
		t.Fatalf("tags %v, want %v", got, wantTags)
	}
	for suffix, want := range map[string]struct {
		layer       string
		annotations []string
	}{
		".sig":  {"application/vnd.dev.cosign.simplesigning.v1+json", []string{"dev.cosignproject.cosign/signature"}},
		".att":  {"application/vnd.dsse.envelope.v1+json", []string{"dev.cosignproject.cosign/signature", "predicateType"}},
		".sbom": {"text/spdx+json", nil},
	} {
		m := shapes["sha256-"+hexPart+suffix]
		if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != "" || m.Subject != nil ||
			m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(m.Layers) != 1 ||
			m.Layers[0].MediaType != want.layer || !slices.Equal(keys(m.Layers[0].Annotations), want.annotations) {
			t.Errorf("%s manifest: %s", suffix, m)
		}
	}
}

// referrersMode is cosign's OCI 1.1 mode (COSIGN_EXPERIMENTAL=1): a
// signature and an SBOM with --registry-referrers-mode=oci-1-1, an
// attestation with --new-bundle-format (attest has no referrers mode), each
// a manifest whose subject is the image. Neither registry serves the
// referrers API, so go-containerregistry lists them in the fallback tag of
// OCI 1.1, sha256-<hex>: an index.
func referrersMode(t *testing.T, c *testenv.Cosign, reg registry, key, pub, otherPub string) {
	const repo = "library/busybox"
	dgst := pushRandomImage(t, reg, repo, "1.0")
	ref := reg.addr + "/" + repo + "@" + dgst
	predicate, sbom := writeFiles(t)
	x := *c
	x.Env = append(slices.Clone(c.Env), "COSIGN_EXPERIMENTAL=1")

	x.Sign(t, ref, key, "--registry-referrers-mode=oci-1-1")
	x.AttachSBOM(t, ref, sbom, "spdx", "--registry-referrers-mode=oci-1-1")
	x.Attest(t, ref, key, predicate, predicateType, "--new-bundle-format")

	// with a Sigstore bundle attached, verify checks bundles only (and
	// needs the trusted root Verify gives it)
	if out, err := x.Verify(ref, pub, "--experimental-oci11"); err != nil {
		t.Errorf("verify --experimental-oci11: %v\n%s", err, out)
	}
	if out, err := x.Verify(ref, otherPub, "--experimental-oci11"); err == nil {
		t.Errorf("verify --experimental-oci11 with another key passed:\n%s", out)
	}
	if out, err := x.VerifyAttestation(ref, pub, predicateType); err != nil {
		t.Errorf("verify-attestation: %v\n%s", err, out)
	}
	if out, err := x.VerifyAttestation(ref, otherPub, predicateType); err == nil {
		t.Errorf("verify-attestation with another key passed:\n%s", out)
	}
	tree, err := x.Tree(ref, "--experimental-oci11")
	if err != nil {
		t.Fatalf("tree --experimental-oci11: %v\n%s", err, tree)
	}
	t.Logf("cosign tree --experimental-oci11:\n%s", tree)
	for _, want := range []string{
		"application/vnd.dev.cosign.artifact.sig.v1+json artifacts via OCI referrer",
		"application/vnd.dev.cosign.artifact.sbom.v1+json artifacts via OCI referrer",
		"application/vnd.oci.empty.v1+json artifacts via OCI referrer", // the bundle
	} {
		if !strings.Contains(tree, want) {
			t.Errorf("tree lacks %q", want)
		}
	}
	if got, err := x.DownloadSBOM(ref); err != nil {
		t.Errorf("download sbom: %v\n%s", err, got)
	} else if want, _ := os.ReadFile(sbom); got != string(want) {
		t.Errorf("download sbom:\n%s\nwant the attached bytes:\n%s", got, want)
	}

	shapes := record(t, reg, repo, dgst)
	fallback := strings.Replace(dgst, ":", "-", 1)
	if got := tagsOf(shapes); !slices.Equal(got, []string{"1.0", fallback}) {
		t.Fatalf("tags %v, want 1.0 and %s", got, fallback)
	}
	index := shapes[fallback]
	if index.MediaType != ocispec.MediaTypeImageIndex || len(index.Manifests) != 3 {
		t.Fatalf("%s: want an index of 3 referrers", index)
	}
	// by config media type: artifactType, layer, manifest annotation keys
	want := map[string]string{
		"application/vnd.dev.cosign.artifact.sig.v1+json": "application/vnd.dev.cosign.artifact.sig.v1+json " +
			"application/vnd.dev.cosign.simplesigning.v1+json []",
		"application/vnd.dev.cosign.artifact.sbom.v1+json": " text/spdx+json []",
		"application/vnd.oci.empty.v1+json": "application/vnd.dev.sigstore.bundle.v0.3+json " +
			"application/vnd.dev.sigstore.bundle.v0.3+json [dev.sigstore.bundle.content dev.sigstore.bundle.predicateType org.opencontainers.image.created]",
	}
	for _, d := range index.Manifests {
		m := shapes[d.Digest.String()]
		if m.Subject == nil || m.Subject.Digest.String() != dgst || len(m.Layers) != 1 {
			t.Errorf("%s: want one layer and subject %s", m, dgst)
			continue
		}
		got := fmt.Sprintf("%s %s %v", m.ArtifactType, m.Layers[0].MediaType, keys(m.Annotations))
		if w, ok := want[m.Config.MediaType]; !ok || got != w {
			t.Errorf("%s: config %s: %q, want %q", m.Ref, m.Config.MediaType, got, w)
		}
		delete(want, m.Config.MediaType)
	}
	if len(want) > 0 {
		t.Errorf("no referrer with config %v", keys(want))
	}
}

// pushRandomImage pushes a one-layer OCI image under tag and returns its
// digest.
func pushRandomImage(t *testing.T, reg registry, repo, tag string) string {
	t.Helper()
	im := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"},
		[]testenv.Blob{testenv.RandomLayer(t, 4096, false)}, false)
	testenv.PushImage(t, reg.url, repo, tag, im)
	return im.Manifest.Desc.Digest.String()
}

// writeFiles writes a tiny in-toto predicate and a tiny SPDX 2.3 JSON SBOM
// (each with a nonce) and returns their paths.
func writeFiles(t *testing.T) (predicate, sbom string) {
	t.Helper()
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	n := hex.EncodeToString(nonce)
	dir := t.TempDir()
	predicate, sbom = filepath.Join(dir, "predicate.json"), filepath.Join(dir, "sbom.spdx.json")
	p := fmt.Sprintf(`{"builder":{"id":"https://crpe.octohelm.tech/test/builder"},"nonce":%q}`, n)
	s := fmt.Sprintf(`{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"test-image",`+
		`"documentNamespace":"https://crpe.octohelm.tech/test/spdx/%s","creationInfo":{"created":"2025-01-01T00:00:00Z","creators":["Tool: crpe-test"]},`+
		`"packages":[{"name":"data.bin","SPDXID":"SPDXRef-Package-data","downloadLocation":"NOASSERTION"}]}`+"\n", n)
	for f, b := range map[string]string{predicate: p, sbom: s} {
		if err := os.WriteFile(f, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return predicate, sbom
}

// manifest is what the test reads of a manifest or an index.
type manifest struct {
	Ref          string               `json:"-"` // tag or digest
	ContentType  string               `json:"-"`
	MediaType    string               `json:"mediaType"`
	ArtifactType string               `json:"artifactType,omitempty"`
	Config       ocispec.Descriptor   `json:"config"`
	Layers       []ocispec.Descriptor `json:"layers"`
	Manifests    []ocispec.Descriptor `json:"manifests"`
	Subject      *ocispec.Descriptor  `json:"subject,omitempty"`
	Annotations  map[string]string    `json:"annotations,omitempty"`
}

// String is the manifest's shape: media types, annotation keys, subject.
func (m manifest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: Content-Type %s, mediaType %s", m.Ref, m.ContentType, m.MediaType)
	if m.ArtifactType != "" {
		fmt.Fprintf(&b, ", artifactType %s", m.ArtifactType)
	}
	if m.Config.MediaType != "" {
		fmt.Fprintf(&b, ", config %s (%d bytes)", m.Config.MediaType, m.Config.Size)
	}
	for i, l := range m.Layers {
		fmt.Fprintf(&b, ", layers[%d] %s (%d bytes) annotations %v", i, l.MediaType, l.Size, keys(l.Annotations))
	}
	for i, d := range m.Manifests {
		fmt.Fprintf(&b, ", manifests[%d] %s artifactType %q %s annotations %v", i, d.MediaType, d.ArtifactType, d.Digest, keys(d.Annotations))
	}
	if m.Subject != nil {
		fmt.Fprintf(&b, ", subject %s %s", m.Subject.MediaType, m.Subject.Digest)
	}
	if len(m.Annotations) > 0 {
		fmt.Fprintf(&b, ", annotations %v", keys(m.Annotations))
	}
	return b.String()
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func tagsOf(shapes map[string]manifest) []string {
	var tags []string
	for ref := range shapes {
		if !strings.HasPrefix(ref, "sha256:") {
			tags = append(tags, ref)
		}
	}
	slices.Sort(tags)
	return tags
}

const accept = ocispec.MediaTypeImageManifest + ", " + ocispec.MediaTypeImageIndex + ", " +
	testenv.DockerManifest + ", " + testenv.DockerManifestList

// record logs the repository's tags and, for each, its manifest (raw and
// its shape), then the referrers of dgst: from the referrers API where the
// registry serves it, else from the fallback tag of OCI 1.1
// (sha256-<hex>, an index), and the manifests of either; it returns them
// all by tag or digest.
func record(t *testing.T, reg registry, repo, dgst string) map[string]manifest {
	t.Helper()
	var tags struct {
		Tags []string `json:"tags"`
	}
	body, _ := get(t, reg.url+"/v2/"+repo+"/tags/list", "")
	if err := json.Unmarshal(body, &tags); err != nil {
		t.Fatalf("tags/list: %v: %s", err, body)
	}
	slices.Sort(tags.Tags)
	t.Logf("%s: tags of %s: %q", reg.addr, repo, tags.Tags)
	shapes := map[string]manifest{}
	fetch := func(ref string) manifest {
		if m, ok := shapes[ref]; ok {
			return m
		}
		body, ct := get(t, reg.url+"/v2/"+repo+"/manifests/"+ref, accept)
		var m manifest
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("manifest %s: %v: %s", ref, err, body)
		}
		m.Ref, m.ContentType = ref, ct
		shapes[ref] = m
		t.Logf("%s\n  %s", m, body)
		return m
	}
	for _, tag := range tags.Tags {
		fetch(tag)
	}
	resp, err := http.Get(reg.url + "/v2/" + repo + "/referrers/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	t.Logf("GET /v2/%s/referrers/%s: %s %s", repo, dgst, resp.Status, strings.TrimSpace(string(body)))
	var referrers manifest
	switch {
	case resp.StatusCode == http.StatusOK:
		if err := json.Unmarshal(body, &referrers); err != nil {
			t.Fatalf("referrers: %v", err)
		}
	case slices.Contains(tags.Tags, strings.Replace(dgst, ":", "-", 1)):
		referrers = fetch(strings.Replace(dgst, ":", "-", 1))
	}
	for _, d := range referrers.Manifests {
		fetch(d.Digest.String())
	}
	return shapes
}

// get returns the body and Content-Type of a 200 answer to GET url.
func get(t *testing.T, url, accept string) ([]byte, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return body, resp.Header.Get("Content-Type")
}

// TestCosignBlob signs a file with a key and verifies the signature:
// with the key's public half only, and of that file only.
func TestCosignBlob(t *testing.T) {
	c := testenv.StartCosign(t)
	key, pub := c.KeyPair(t, "cosign")
	_, otherPub := c.KeyPair(t, "other")
	file := filepath.Join(t.TempDir(), "blob.bin")
	if err := os.WriteFile(file, []byte("crpe test blob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sig := c.SignBlob(t, key, file)
	if err := c.VerifyBlob(pub, sig, file); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyBlob(otherPub, sig, file); err == nil {
		t.Error("verify-blob with another key passed")
	}
	if err := os.WriteFile(file, []byte("crpe test blob, changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyBlob(pub, sig, file); err == nil {
		t.Error("verify-blob of a changed file passed")
	}
}
