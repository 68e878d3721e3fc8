// Package sigverify checks, offline, the signatures carried in a
// kubepkg.tgz with its images (export carries them: archive.AnnotationSubject)
// before an import publishes anything: cosign's signatures (the simple
// signing payload naming the image's digest, signed with a key whose public
// half the site trusts), found under cosign's tag scheme
// (sha256-<hex>.sig) or as OCI 1.1 referrers.
//
// A Collector wraps the importer's archive.Handler and keeps what the
// verification needs as the archive streams (the artifacts' manifests, the
// signature payloads: small, bounded); Verify then judges every image of
// index.json against a Policy and returns one Verdict per image, or an
// error naming the first image refused and why. The cryptography is
// sigstore's (github.com/sigstore/sigstore/pkg/signature).
package sigverify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// Bounds on what a Collector keeps.
const (
	// MaxPayload bounds one signature payload (cosign's are a few hundred
	// bytes).
	MaxPayload = 64 << 10
	// MaxPayloads bounds the payload bytes kept for one archive.
	MaxPayloads = 16 << 20
)

// Key is a public key the site trusts.
type Key struct {
	// Name is where it came from (its file).
	Name string
	// Fingerprint is the SHA-256 of its PKIX encoding: sha256:<hex>.
	Fingerprint string
	v           signature.Verifier
}

// LoadKey reads a PEM public key (cosign.pub: ECDSA, RSA or Ed25519).
func LoadKey(file string) (*Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseKey(file, b)
}

// ParseKey parses a PEM public key named name.
func ParseKey(name string, pemBytes []byte) (*Key, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: not a PEM public key: %w", name, err)
	}
	hash := crypto.SHA256
	if _, ok := pub.(ed25519.PublicKey); ok {
		hash = crypto.Hash(0)
	}
	v, err := signature.LoadVerifier(pub, hash)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	sum := sha256.Sum256(der)
	return &Key{Name: name, Fingerprint: "sha256:" + hex.EncodeToString(sum[:]), v: v}, nil
}

// Rule says what the images of the repositories it matches need.
type Rule struct {
	// Match is a repository pattern (path.Match, on the full name:
	// docker.io/library/*; "**" or "" matches every repository).
	Match string `json:"match"`
	// Keys are public key files (any one of them suffices).
	Keys []string `json:"keys"`
	// Keyless are the signers trusted without a key: a Sigstore bundle
	// (cosign's --new-bundle-format, carried as an OCI 1.1 referrer) whose
	// certificate chains to the policy's trusted root, whose transparency
	// log entry the root's log signed, and whose identity is one of these
	// (any one suffices), over an in-toto statement naming the image's
	// digest: checked offline by sigstore-go.
	Keyless []Identity `json:"keyless"`
	// Required refuses an image without a valid signature; otherwise an
	// image carrying no signature is let through (and so recorded), while
	// one carrying signatures of which none verifies is still refused.
	Required bool `json:"required"`

	keys []*Key
}

// Identity is a keyless signer: the OIDC issuer and the certificate's
// subject (SAN: an email, a URI of a CI workflow), each exact or a regular
// expression.
type Identity struct {
	Issuer        string `json:"issuer"`
	IssuerRegExp  string `json:"issuerRegExp"`
	Subject       string `json:"subject"`
	SubjectRegExp string `json:"subjectRegExp"`
}

// Policy is which signatures an import requires: the first rule matching
// an image's repository decides; an image no rule matches needs none.
type Policy struct {
	// TrustedRoot is a Sigstore trusted root file (trusted_root.json: the
	// certificate authorities and transparency logs a keyless signature
	// must chain to), required by keyless rules; relative to the policy.
	TrustedRoot string `json:"trustedRoot"`
	Rules       []Rule `json:"rules"`

	trusted root.TrustedMaterial
}

// KeysPolicy requires a valid signature by one of keys on every image.
func KeysPolicy(keys []*Key) *Policy {
	return &Policy{Rules: []Rule{{Match: "**", Required: true, keys: keys}}}
}

// LoadPolicy reads a policy file (YAML or JSON; key files relative to it):
//
//	rules:
//	  - match: docker.io/library/*
//	    keys: [keys/library.pub]
//	    required: true
//	  - match: "**"
//	    keys: [keys/site.pub]
func LoadPolicy(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("policy %s: more than 1 MiB", file)
	}
	var p Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	if len(p.Rules) == 0 {
		return nil, fmt.Errorf("policy %s: no rules", file)
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Match != "" && r.Match != "**" {
			if _, err := path.Match(r.Match, ""); err != nil {
				return nil, fmt.Errorf("policy %s: rules[%d].match %q: %w", file, i, r.Match, err)
			}
		}
		if len(r.Keys) == 0 && len(r.Keyless) == 0 {
			return nil, fmt.Errorf("policy %s: rules[%d] names no key and no keyless signer", file, i)
		}
		for j, id := range r.Keyless {
			if id.Issuer == "" && id.IssuerRegExp == "" || id.Subject == "" && id.SubjectRegExp == "" {
				return nil, fmt.Errorf("policy %s: rules[%d].keyless[%d]: give issuer (or issuerRegExp) and subject (or subjectRegExp)", file, i, j)
			}
			if _, err := verify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegExp, id.Subject, id.SubjectRegExp); err != nil {
				return nil, fmt.Errorf("policy %s: rules[%d].keyless[%d]: %w", file, i, j, err)
			}
		}
		if len(r.Keyless) > 0 && p.trusted == nil {
			if p.TrustedRoot == "" {
				return nil, fmt.Errorf("policy %s: rules[%d] trusts keyless signers: the policy needs trustedRoot (a Sigstore trusted_root.json)", file, i)
			}
			f := p.TrustedRoot
			if !strings.HasPrefix(f, "/") {
				f = path.Join(path.Dir(file), f)
			}
			tr, err := root.NewTrustedRootFromPath(f)
			if err != nil {
				return nil, fmt.Errorf("policy %s: trustedRoot %s: %w", file, f, err)
			}
			p.trusted = tr
		}
		for _, k := range r.Keys {
			if !strings.HasPrefix(k, "/") {
				k = path.Join(path.Dir(file), k)
			}
			key, err := LoadKey(k)
			if err != nil {
				return nil, fmt.Errorf("policy %s: rules[%d]: %w", file, i, err)
			}
			r.keys = append(r.keys, key)
		}
	}
	return &p, nil
}

// rule is the rule for repository repo, or nil.
func (p *Policy) rule(repo string) *Rule {
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Match == "" || r.Match == "**" {
			return r
		}
		if ok, _ := path.Match(r.Match, repo); ok {
			return r
		}
	}
	return nil
}

// Verdict is what Verify found of one image, as the package records it
// (status.signatures).
type Verdict = kubepkg.Signature

// Error is an image refused: Image names it, Reason says why.
type Error struct {
	Image  string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("image %s: %s", e.Image, e.Reason) }

// Collector is an archive.Handler that hands everything to the handler it
// wraps and keeps, as the archive streams, what Verify needs.
type Collector struct {
	next archive.Handler

	mu        sync.Mutex
	index     ocispec.Index
	manifests map[digest.Digest]*oci.Manifest
	// wanted are the signature layers of the manifests read so far;
	// payloads their bytes
	wanted   map[digest.Digest]bool
	payloads map[digest.Digest][]byte
	kept     int64
}

// NewCollector wraps next.
func NewCollector(next archive.Handler) *Collector {
	return &Collector{next: next, manifests: map[digest.Digest]*oci.Manifest{}, wanted: map[digest.Digest]bool{}, payloads: map[digest.Digest][]byte{}}
}

// Package hands the package on.
func (c *Collector) Package(data []byte) error { return c.next.Package(data) }

// Index keeps index.json and hands it on.
func (c *Collector) Index(idx ocispec.Index) error {
	c.index = idx
	return c.next.Index(idx)
}

// Blob keeps manifests and the signature payloads, and hands every blob on.
func (c *Collector) Blob(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, r io.Reader) error {
	if mb, ok := r.(*archive.ManifestBlob); ok && kind == oci.KindManifest {
		c.mu.Lock()
		c.manifests[desc.Digest] = mb.Manifest
		for _, l := range mb.Manifest.Layers {
			if isSignatureLayer(l) {
				c.wanted[l.Digest] = true
			}
		}
		c.mu.Unlock()
		return c.next.Blob(ctx, desc, kind, r)
	}
	c.mu.Lock()
	want := c.wanted[desc.Digest] && desc.Size <= MaxPayload && c.kept+desc.Size <= MaxPayloads
	c.mu.Unlock()
	if !want {
		return c.next.Blob(ctx, desc, kind, r)
	}
	// a signature payload: read whole (it is small and verified by the
	// archive reader at its end), then handed on
	b, err := io.ReadAll(io.LimitReader(r, desc.Size+1))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.payloads[desc.Digest] = b
	c.kept += int64(len(b))
	c.mu.Unlock()
	return c.next.Blob(ctx, desc, kind, bytes.NewReader(b))
}

// BlobAt hands a blob the wrapped handler may take from the archive file
// (archive.ExtentHandler) on, but for the payloads Verify needs.
func (c *Collector) BlobAt(ctx context.Context, desc ocispec.Descriptor, kind oci.Kind, e *archive.Extent) (bool, error) {
	eh, ok := c.next.(archive.ExtentHandler)
	if !ok {
		return false, nil
	}
	c.mu.Lock()
	want := c.wanted[desc.Digest]
	c.mu.Unlock()
	if want {
		return false, nil
	}
	return eh.BlobAt(ctx, desc, kind, e)
}

// isSignatureLayer tells a cosign signature layer, or a Sigstore bundle
// (keyless).
func isSignatureLayer(l ocispec.Descriptor) bool {
	return l.MediaType == oci.MediaTypeCosignSimpleSigning || l.MediaType == oci.MediaTypeSigstoreBundle
}

// simpleSigning is cosign's signed payload.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// Verify judges every image of the archive against p: an image a rule
// matches needs a cosign signature, carried with it, by one of the rule's
// keys, over a payload naming the image's digest (the one spec.images
// pins). It returns a Verdict per image, in index.json's order, or an
// *Error naming the first image refused (unsigned where required, or
// carrying signatures of which none verifies).
func (c *Collector) Verify(p *Policy, now time.Time) ([]Verdict, error) {
	vs, refused := c.judge(p, now)
	if len(refused) > 0 {
		return nil, refused[0]
	}
	return vs, nil
}

// Check is Verify for a report: every image's verdict, a refused one
// unverified with the reason.
func (c *Collector) Check(p *Policy, now time.Time) []Verdict {
	vs, _ := c.judge(p, now)
	return vs
}

func (c *Collector) judge(p *Policy, now time.Time) ([]Verdict, []*Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// the signatures carried with each subject
	sigs := map[digest.Digest][]ocispec.Descriptor{}
	for _, m := range c.index.Manifests {
		subject, ok := archive.ArtifactOf(m)
		if !ok {
			continue
		}
		pm := c.manifests[m.Digest]
		if pm == nil {
			continue // left out of a partial archive: checked by the importer
		}
		for _, l := range pm.Layers {
			if isSignatureLayer(l) {
				sigs[subject] = append(sigs[subject], m)
				break
			}
		}
	}
	var out []Verdict
	var refused []*Error
	refuse := func(v Verdict, reason string) {
		v.Reason = reason
		out = append(out, v)
		refused = append(refused, &Error{Image: v.Image, Reason: reason})
	}
	for _, m := range c.index.Manifests {
		if _, ok := archive.ArtifactOf(m); ok {
			continue
		}
		ref := m.Annotations[archive.AnnotationRefName]
		if ref == "" {
			ref = m.Annotations[archive.AnnotationImageName]
		}
		v := Verdict{Image: ref, Digest: string(m.Digest), Time: now.UTC()}
		r, err := oci.ParseReference(ref)
		if err != nil {
			refuse(v, err.Error())
			continue
		}
		rule := p.rule(r.Repository)
		if rule == nil {
			v.Reason = "no rule of the policy matches its repository"
			out = append(out, v)
			continue
		}
		carried := sigs[m.Digest]
		if len(carried) == 0 {
			if rule.Required {
				refuse(v, fmt.Sprintf("not signed: the archive carries no cosign signature of %s, and the policy requires one (rule %q)", m.Digest, rule.Match))
				continue
			}
			v.Reason = fmt.Sprintf("not signed (the policy's rule %q does not require it)", rule.Match)
			out = append(out, v)
			continue
		}
		var failures []string
		for _, s := range carried {
			key, identity, err := c.verifySignature(s, m.Digest, rule, p.trusted)
			if err != nil {
				failures = append(failures, fmt.Sprintf("signature %s: %v", s.Digest, err))
				continue
			}
			if !v.Verified {
				v.Verified, v.Signature = true, string(s.Digest)
				if key != nil {
					v.Key, v.KeyName = key.Fingerprint, key.Name
				}
				v.Identity = identity
			}
		}
		if !v.Verified {
			// signed, but by no trusted key or not over this image: refused,
			// whether the rule requires a signature or not
			sort.Strings(failures)
			refuse(v, "no signature carried with it verifies: "+strings.Join(failures, "; "))
			continue
		}
		// others may not verify (a vendor's key the site does not trust
		// beside its own): one verified signature is enough, as for cosign
		out = append(out, v)
	}
	return out, refused
}

// verifySignature checks the signature manifest s of the image d: its
// cosign signature layers with the rule's keys (every layer must verify,
// its payload naming d), or its Sigstore bundle with the rule's keyless
// signers and the trusted root. It returns the key, or the identity.
func (c *Collector) verifySignature(s ocispec.Descriptor, d digest.Digest, rule *Rule, trusted root.TrustedMaterial) (*Key, string, error) {
	pm := c.manifests[s.Digest]
	var found *Key
	for _, l := range pm.Layers {
		if !isSignatureLayer(l) {
			continue
		}
		payload, ok := c.payloads[l.Digest]
		if !ok {
			return nil, "", fmt.Errorf("its payload %s is not in the archive (or over %d bytes)", l.Digest, MaxPayload)
		}
		if l.MediaType == oci.MediaTypeSigstoreBundle {
			id, err := verifyBundle(payload, d, rule.Keyless, trusted)
			return nil, id, err
		}
		b64 := l.Annotations[oci.AnnotationCosignSignature]
		if b64 == "" {
			return nil, "", fmt.Errorf("its layer %s has no %s annotation", l.Digest, oci.AnnotationCosignSignature)
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, "", fmt.Errorf("its signature is not base64: %w", err)
		}
		var key *Key
		for _, k := range rule.keys {
			if k.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)) == nil {
				key = k
				break
			}
		}
		if key == nil {
			return nil, "", errors.New(noKeyReason(rule.keys))
		}
		var ss simpleSigning
		if err := json.Unmarshal(payload, &ss); err != nil {
			return nil, "", fmt.Errorf("its payload is not cosign's simple signing JSON: %w", err)
		}
		if got := ss.Critical.Image.DockerManifestDigest; got != string(d) {
			return nil, "", fmt.Errorf("its payload names %s, not the image's %s", got, d)
		}
		if found == nil {
			found = key
		}
	}
	if found == nil {
		return nil, "", errors.New("no signature layer")
	}
	return found, "", nil
}

// verifyBundle checks a Sigstore bundle over the image d, offline, with
// sigstore-go: its certificate chains to trusted's certificate
// authorities, its transparency log entry is signed by one of its logs (and
// dates the signature within the certificate's life), its signature covers
// an in-toto statement whose subject is d, and its identity is one of ids.
func verifyBundle(raw []byte, d digest.Digest, ids []Identity, trusted root.TrustedMaterial) (string, error) {
	if len(ids) == 0 || trusted == nil {
		return "", errors.New("a keyless (Sigstore bundle) signature, and the policy trusts no keyless signer for this repository")
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		return "", fmt.Errorf("not a Sigstore bundle: %w", err)
	}
	v, err := verify.NewVerifier(trusted, verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1))
	if err != nil {
		return "", err
	}
	want, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return "", err
	}
	var failures []string
	for _, id := range ids {
		ci, err := verify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegExp, id.Subject, id.SubjectRegExp)
		if err != nil {
			return "", err
		}
		res, err := v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest(d.Algorithm().String(), want), verify.WithCertificateIdentity(ci)))
		if err != nil {
			failures = append(failures, err.Error())
			continue
		}
		if res.Signature != nil && res.Signature.Certificate != nil {
			return res.Signature.Certificate.Issuer + " " + res.Signature.Certificate.SubjectAlternativeName, nil
		}
		return id.Issuer + " " + id.Subject, nil
	}
	return "", fmt.Errorf("the keyless signature does not verify: %s", strings.Join(failures, "; "))
}

func noKeyReason(keys []*Key) string {
	var names []string
	for _, k := range keys {
		names = append(names, k.Name+" ("+k.Fingerprint+")")
	}
	return "signed with another key, or its bytes changed: it does not verify with " + strings.Join(names, ", ")
}

// VerifyBlob checks sigB64 (a base64 signature, as cosign sign-blob writes
// it) over data.
func (k *Key) VerifyBlob(sigB64, data []byte) error {
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sigB64)))
	if err != nil {
		return fmt.Errorf("the signature is not base64: %w", err)
	}
	if err := k.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("it does not verify with %s (%s): %w", k.Name, k.Fingerprint, err)
	}
	return nil
}
