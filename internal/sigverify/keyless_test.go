package sigverify_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/sigverify"
)

const (
	issuer   = "https://token.actions.example"
	identity = "https://git.example/org/app/.github/workflows/release.yml@refs/heads/main"
)

// keylessBundle is a Sigstore bundle (v0.3) as cosign --new-bundle-format
// attaches it: a DSSE envelope of an in-toto statement whose subject is
// names, signed by a Fulcio-like certificate of id, with its transparency
// log entry (inclusion promise), made by a virtual Sigstore (sigstore-go's
// test CA and log).
func keylessBundle(t *testing.T, vs *ca.VirtualSigstore, id string, names digest.Digest) []byte {
	t.Helper()
	statement, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": "image", "digest": map[string]string{names.Algorithm().String(): names.Encoded()}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	})
	ent, err := vs.AttestAtTime(id, issuer, statement, time.Now(), true) // with an inclusion proof, as bundle v0.3 requires
	if err != nil {
		t.Fatal(err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	env := sc.(*bundle.Envelope).Envelope
	entries, _ := ent.TlogEntries()
	var tles []*protorekor.TransparencyLogEntry
	for _, e := range entries {
		// the entry as a bundle carries it: its kind and its inclusion
		// promise (the log's signed entry timestamp, signed again here the
		// way the virtual log signs it: the entry keeps it unexported)
		tle := proto.Clone(e.TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
		tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
		set, err := vs.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
			IntegratedTime: tle.IntegratedTime, LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId)})
		if err != nil {
			t.Fatal(err)
		}
		tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
		tles = append(tles, tle)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		t.Fatal(err)
	}
	var sigs []*protodsse.Signature
	for _, s := range env.Signatures {
		raw, err := decodeB64(s.Sig)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, &protodsse.Signature{Sig: raw, Keyid: s.KeyID})
	}
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.(*bundle.Certificate).Certificate().Raw}},
			TlogEntries: tles,
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType, Signatures: sigs}},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// attachBundle adds raw as a referrer of d (cosign's shape: artifactType
// the bundle's, the empty config, one bundle layer).
func (b *blobs) attachBundle(repo string, d digest.Digest, raw []byte) {
	cfg := b.add(oci.KindConfig, ocispec.MediaTypeEmptyJSON, []byte(`{}`))
	l := b.add(oci.KindLayer, oci.MediaTypeSigstoreBundle, raw)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: oci.MediaTypeSigstoreBundle, Config: cfg, Layers: []ocispec.Descriptor{l},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(b.data[d]))}}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	md := b.add(oci.KindManifest, ocispec.MediaTypeImageManifest, body)
	md.ArtifactType = oci.MediaTypeSigstoreBundle
	b.images = append(b.images, archive.Image{Ref: repo + "@" + string(md.Digest), Desc: md, Subject: d})
}

// keylessPolicy writes vs's trusted root and a policy trusting id.
func keylessPolicy(t *testing.T, vs *ca.VirtualSigstore, id string) *sigverify.Policy {
	t.Helper()
	dir := t.TempDir()
	// the virtual log's ID is its hex string's bytes; a trusted_root.json
	// names a log by the raw bytes of that hash (as Sigstore's does)
	logs := map[string]*root.TransparencyLog{}
	for id, l := range vs.RekorLogs() {
		c := *l
		raw, err := hex.DecodeString(id)
		if err != nil {
			t.Fatal(err)
		}
		c.ID = raw
		logs[id] = &c
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), vs.CTLogs(), vs.TimestampingAuthorities(), logs)
	if err != nil {
		t.Fatal(err)
	}
	trJSON, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted_root.json"), trJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	pol := "trustedRoot: trusted_root.json\nrules:\n  - match: \"**\"\n    required: true\n    keyless:\n      - issuer: " + issuer + "\n        subject: " + id + "\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := sigverify.LoadPolicy(filepath.Join(dir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerifyKeyless: a keyless signature (a Sigstore bundle carried as a
// referrer) verifies offline with the policy's trusted root and identity;
// another identity, a statement about another image, or another Sigstore's
// root are refused.
func TestVerifyKeyless(t *testing.T) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	const nginx = "docker.io/library/nginx"

	b := newBlobs()
	d := b.image(nginx, 1)
	b.attachBundle(nginx, d, keylessBundle(t, vs, identity, d))
	vs1, err := b.verify(t, keylessPolicy(t, vs, identity))
	if err != nil {
		t.Fatal(err)
	}
	if len(vs1) != 1 || !vs1[0].Verified || vs1[0].Identity != issuer+" "+identity || vs1[0].Key != "" {
		t.Fatalf("verdicts %+v", vs1)
	}

	t.Run("another identity", func(t *testing.T) {
		_, err := b.verify(t, keylessPolicy(t, vs, "https://git.example/someone/else"))
		wantRefused(t, err, nginx, "keyless signature does not verify")
	})
	t.Run("another Sigstore's root", func(t *testing.T) {
		_, err := b.verify(t, keylessPolicy(t, other, identity))
		wantRefused(t, err, nginx, "keyless signature does not verify")
	})
	t.Run("a statement about another image", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		o := b.image("docker.io/library/other", 2)
		b.attachBundle(nginx, d, keylessBundle(t, vs, identity, o))
		b.attachBundle("docker.io/library/other", o, keylessBundle(t, vs, identity, o))
		_, err := b.verify(t, keylessPolicy(t, vs, identity))
		wantRefused(t, err, nginx, "keyless signature does not verify")
	})
	t.Run("a key rule does not take a bundle", func(t *testing.T) {
		_, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{newSigner(t, "site.pub").pub}))
		wantRefused(t, err, nginx, "trusts no keyless signer")
	})
	if !strings.Contains(vs1[0].Identity, identity) {
		t.Fatal("identity not recorded")
	}
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
