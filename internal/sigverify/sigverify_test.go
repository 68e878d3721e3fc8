package sigverify_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/sigverify"
)

// signer is a key pair, as cosign generate-key-pair makes them (ECDSA
// P-256), with its public key as sigverify loads it.
type signer struct {
	s   signature.Signer
	pub *sigverify.Key
}

func newSigner(t *testing.T, name string) *signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	k, err := sigverify.ParseKey(name, pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{s: s, pub: k}
}

// blobs is an archive being made.
type blobs struct {
	data   map[digest.Digest][]byte
	list   []archive.Blob
	images []archive.Image
}

func (b *blobs) add(kind oci.Kind, mt string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	if _, ok := b.data[d]; !ok {
		b.data[d] = data
		b.list = append(b.list, archive.Blob{Desc: ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}, Kind: kind})
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func (b *blobs) manifest(config ocispec.Descriptor, layers ...ocispec.Descriptor) ocispec.Descriptor {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	return b.add(oci.KindManifest, ocispec.MediaTypeImageManifest, body)
}

// image adds an image of repository repo.
func (b *blobs) image(repo string, seed byte) digest.Digest {
	cfg := b.add(oci.KindConfig, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","seed":`+string('0'+seed)+`}`))
	l := b.add(oci.KindLayer, ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte{seed}, 1000))
	m := b.manifest(cfg, l)
	b.images = append(b.images, archive.Image{Ref: repo + ":1", Desc: m})
	return m.Digest
}

// sign adds a cosign signature of d by s, its payload naming names (d
// when empty), under cosign's tag.
func (b *blobs) sign(t *testing.T, repo string, d digest.Digest, s *signer, names digest.Digest, suffix string) {
	t.Helper()
	if names == "" {
		names = d
	}
	payload := []byte(`{"critical":{"identity":{"docker-reference":"` + repo + `"},"image":{"docker-manifest-digest":"` + string(names) + `"},"type":"cosign container image signature"},"optional":null}`)
	sig, err := s.s.SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.add(oci.KindConfig, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`))
	l := b.add(oci.KindLayer, oci.MediaTypeCosignSimpleSigning, payload)
	l.Annotations = map[string]string{oci.AnnotationCosignSignature: base64.StdEncoding.EncodeToString(sig)}
	m := b.manifest(cfg, l)
	b.images = append(b.images, archive.Image{Ref: repo + ":" + oci.CosignTag(d, ".sig") + suffix, Desc: m, Subject: d})
}

// verify writes the archive, reads it through a Collector and verifies it.
func (b *blobs) verify(t *testing.T, p *sigverify.Policy) ([]sigverify.Verdict, error) {
	t.Helper()
	var buf bytes.Buffer
	open := func(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b.data[d])), nil
	}
	if err := archive.Write(context.Background(), &buf, []byte(`{"apiVersion":"octohelm.tech/v1alpha1","kind":"KubePkg","metadata":{"name":"x"},"spec":{"version":"1.0.0"}}`), b.images, b.list, open, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	c := sigverify.NewCollector(discard{})
	if _, err := archive.Read(context.Background(), &buf, c, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	return c.Verify(p, time.Unix(1700000000, 0))
}

type discard struct{}

func (discard) Package([]byte) error      { return nil }
func (discard) Index(ocispec.Index) error { return nil }
func (discard) Blob(_ context.Context, _ ocispec.Descriptor, _ oci.Kind, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func newBlobs() *blobs { return &blobs{data: map[digest.Digest][]byte{}} }

func wantRefused(t *testing.T, err error, image, reason string) {
	t.Helper()
	var e *sigverify.Error
	if !errors.As(err, &e) || !strings.Contains(e.Image, image) || !strings.Contains(e.Reason, reason) {
		t.Fatalf("err = %v, want image %s refused: %q", err, image, reason)
	}
}

func TestVerify(t *testing.T) {
	site, vendor := newSigner(t, "site.pub"), newSigner(t, "vendor.pub")
	const nginx, app = "docker.io/library/nginx", "ghcr.io/octohelm/app"

	t.Run("signed", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		b.sign(t, nginx, d, site, "", "")
		vs, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{vendor.pub, site.pub}))
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 1 || !vs[0].Verified || vs[0].Key != site.pub.Fingerprint || vs[0].KeyName != "site.pub" || vs[0].Digest != string(d) {
			t.Fatalf("verdicts %+v", vs)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		b := newBlobs()
		b.image(nginx, 1)
		d := b.image(app, 2)
		b.sign(t, app, d, site, "", "")
		_, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{site.pub}))
		wantRefused(t, err, nginx, "not signed")
	})
	t.Run("another key", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		b.sign(t, nginx, d, vendor, "", "")
		_, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{site.pub}))
		wantRefused(t, err, nginx, "signed with another key")
	})
	t.Run("payload names another digest", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		other := b.image(app, 2)
		b.sign(t, nginx, d, site, other, "")
		b.sign(t, app, other, site, "", "")
		_, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{site.pub}))
		wantRefused(t, err, nginx, "its payload names "+string(other))
	})
	t.Run("a vendor's signature beside the site's", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		b.sign(t, nginx, d, vendor, "", "")
		// a second signature artifact of the same image (a referrer, say)
		b.sign(t, nginx, d, site, "", "-2")
		vs, err := b.verify(t, sigverify.KeysPolicy([]*sigverify.Key{site.pub}))
		if err != nil || !vs[0].Verified || vs[0].Key != site.pub.Fingerprint {
			t.Fatalf("%v %+v", err, vs)
		}
	})
	t.Run("policy", func(t *testing.T) {
		b := newBlobs()
		d := b.image(nginx, 1)
		b.sign(t, nginx, d, vendor, "", "")
		b.image(app, 2)
		p := sigverify.KeysPolicy([]*sigverify.Key{vendor.pub})
		p.Rules[0].Match = "docker.io/library/*"
		vs, err := b.verify(t, p)
		if err != nil || len(vs) != 2 {
			t.Fatalf("%v %+v", err, vs)
		}
		for _, v := range vs {
			switch v.Image {
			case nginx + ":1":
				if !v.Verified {
					t.Errorf("nginx: %+v", v)
				}
			default:
				if v.Verified || !strings.Contains(v.Reason, "no rule") {
					t.Errorf("app: %+v", v)
				}
			}
		}
		p.Rules[0].Required = false
		p.Rules[0].Match = "**"
		vs, err = b.verify(t, p)
		if err != nil || len(vs) != 2 {
			t.Fatalf("optional rule: %v %+v", err, vs)
		}
	})
}
