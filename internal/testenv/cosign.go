package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// CosignVersion is the cosign test/run.sh installs
// (`go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5`).
const CosignVersion = "v2.6.5"

// CosignPassword is the password of every key pair KeyPair makes: cosign
// reads it from COSIGN_PASSWORD, never from a terminal.
const CosignPassword = "crpe-test-password"

// cosignTimeout bounds every cosign command (and is passed as its own
// --timeout): on loopback each takes well under a second.
const cosignTimeout = 60 * time.Second

// Cosign is the cosign CLI (github.com/sigstore/cosign/v2) run for a test
// against registries on 127.0.0.1: keys made and kept in Dir, signatures,
// attestations and SBOMs written to and read from the registry, nothing
// sent elsewhere. Every command runs with HOME, DOCKER_CONFIG and the TUF
// cache inside Dir (no credential, key or trust root of the user's is
// seen), no COSIGN_, SIGSTORE_ or TUF_ variable of the test's environment,
// and HTTP(S)_PROXY pointing at a closed loopback port, so that a request
// to anything but loopback fails at once instead of reaching the network
// (Go never proxies loopback addresses, so the registries are reached
// directly). The transparency log (Rekor) is neither written (--tlog-upload=false)
// nor checked (--insecure-ignore-tlog), and the verify commands trust
// TrustedRoot, a Sigstore trusted root of no authority, instead of
// fetching Sigstore's through TUF.
type Cosign struct {
	Bin string // the cosign binary
	Dir string // the test's folder: keys, files written, HOME
	// TrustedRoot is the --trusted-root of Verify and VerifyAttestation
	// (verify-blob takes one only with --new-bundle-format): a Sigstore
	// trusted root naming no certificate authority, transparency log or
	// timestamp authority, so that only the public key given is trusted.
	// cosign verifies a Sigstore bundle (what --new-bundle-format
	// attaches, an OCI 1.1 referrer) only with a trusted root, and once
	// one such bundle is attached to an image, `cosign verify` and
	// `cosign verify-attestation` verify its bundles and nothing else.
	TrustedRoot string
	// Env is added to every command's environment, last: e.g.
	// "COSIGN_EXPERIMENTAL=1", which --registry-referrers-mode=oci-1-1 needs.
	Env []string
}

// StartCosign finds cosign (a missing binary skips the test, or fails it
// under CI=true) and makes its folder for the test.
func StartCosign(t testing.TB) *Cosign {
	t.Helper()
	bin := Peer(t, "cosign", "go install github.com/sigstore/cosign/v2/cmd/cosign@"+CosignVersion)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "home", ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(root, []byte(emptyTrustedRoot), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Cosign{Bin: bin, Dir: dir, TrustedRoot: root}
}

// emptyTrustedRoot is a Sigstore trusted root with no authority in it.
const emptyTrustedRoot = `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}` + "\n"

// nowhere is a loopback address nothing listens on: the proxy of every
// request cosign would send off the machine, and its TUF mirror.
const nowhere = "http://127.0.0.1:9"

// environ is the environment of a cosign command: the test's, less what
// could point cosign at the user's credentials, keys, trust roots or the
// network, plus the test's own.
func (c *Cosign) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "COSIGN_"), strings.HasPrefix(k, "SIGSTORE_"), strings.HasPrefix(k, "TUF_"),
			strings.HasPrefix(k, "XDG_"), strings.EqualFold(k, "HTTP_PROXY"), strings.EqualFold(k, "HTTPS_PROXY"),
			strings.EqualFold(k, "NO_PROXY"), strings.EqualFold(k, "ALL_PROXY"),
			k == "HOME", k == "DOCKER_CONFIG", k == "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	home := filepath.Join(c.Dir, "home")
	return append(env,
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"COSIGN_PASSWORD="+CosignPassword,
		// without --trusted-root, the verify commands look for Sigstore's
		// trusted root through TUF: with a mirror of their own and no
		// root.json for it cached under TUF_ROOT they give up before any
		// request ("Could not fetch trusted_root.json from the TUF
		// repository", a warning) and go on with the public key given.
		"TUF_ROOT="+filepath.Join(home, ".sigstore", "root"),
		"TUF_MIRROR="+nowhere,
		// the older TUF client keeps its cache in memory
		"SIGSTORE_NO_CACHE=1",
		"HTTP_PROXY="+nowhere, "HTTPS_PROXY="+nowhere, "NO_PROXY=",
	) // c.Env is added by Run, last
}

// registryFlags make cosign reach a plain-HTTP registry on loopback.
var registryFlags = []string{"--allow-http-registry", "--allow-insecure-registry"}

// Run runs cosign with args in Dir, in the environment Cosign describes,
// bounded by a minute, and returns its standard output and error apart:
// the way to any command the other methods do not cover.
func (c *Cosign) Run(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cosignTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, slices.Concat(args, []string{"--timeout", cosignTimeout.String()})...)
	cmd.Dir = c.Dir
	cmd.Env = append(c.environ(), c.Env...)
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	if err != nil {
		err = fmt.Errorf("cosign %s: %w", strings.Join(args, " "), err)
	}
	return so.String(), se.String(), err
}

// combined runs cosign and returns its standard output, then its standard
// error, and its error.
func (c *Cosign) combined(args ...string) (string, error) {
	so, se, err := c.Run(args...)
	return so + se, err
}

// must runs cosign and fails the test if it fails; it returns the
// standard output.
func (c *Cosign) must(t testing.TB, args ...string) string {
	t.Helper()
	so, se, err := c.Run(args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s\nstderr: %s", err, so, se)
	}
	return so
}

// KeyPair makes an encrypted ECDSA P-256 key pair (password
// CosignPassword) as NAME.key and NAME.pub in Dir and returns their paths.
func (c *Cosign) KeyPair(t testing.TB, name string) (key, pub string) {
	t.Helper()
	c.must(t, "generate-key-pair", "--output-key-prefix", name)
	key, pub = filepath.Join(c.Dir, name+".key"), filepath.Join(c.Dir, name+".pub")
	for _, p := range []string{key, pub} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("cosign generate-key-pair: %v", err)
		}
	}
	return key, pub
}

// Sign signs ref (REGISTRY/REPO@sha256:..., a digest: cosign warns of a
// tag) with key and pushes the signature; extra flags go before ref, e.g.
// "--registry-referrers-mode=oci-1-1" (with COSIGN_EXPERIMENTAL=1 in Env).
func (c *Cosign) Sign(t testing.TB, ref, key string, extra ...string) {
	t.Helper()
	args := append([]string{"sign", "--key", key, "--tlog-upload=false", "--yes"}, registryFlags...)
	c.must(t, append(append(args, extra...), ref)...)
}

// Attest signs the in-toto statement of predicateFile (predicateType: a
// URI or one of cosign's names: slsaprovenance, spdxjson, cyclonedx,
// vuln, custom...) about ref with key and pushes it; extra flags go before
// ref, e.g. "--new-bundle-format".
func (c *Cosign) Attest(t testing.TB, ref, key, predicateFile, predicateType string, extra ...string) {
	t.Helper()
	args := append([]string{"attest", "--key", key, "--type", predicateType, "--predicate", predicateFile,
		"--tlog-upload=false", "--yes"}, registryFlags...)
	c.must(t, append(append(args, extra...), ref)...)
}

// AttachSBOM pushes sbomFile unsigned as ref's SBOM (sbomType: spdx,
// cyclonedx or syft; a JSON file is recognised as such) with the
// deprecated `cosign attach sbom`; extra flags go before ref.
func (c *Cosign) AttachSBOM(t testing.TB, ref, sbomFile, sbomType string, extra ...string) {
	t.Helper()
	args := append([]string{"attach", "sbom", "--sbom", sbomFile, "--type", sbomType}, registryFlags...)
	c.must(t, append(append(args, extra...), ref)...)
}

// Verify checks ref's signatures against the public key pub and returns
// cosign's output (on success the JSON of the verified payloads, then its
// messages) and its error: tests assert both ways.
func (c *Cosign) Verify(ref, pub string, extra ...string) (string, error) {
	args := append([]string{"verify", "--key", pub, "--insecure-ignore-tlog", "--trusted-root", c.TrustedRoot}, registryFlags...)
	return c.combined(append(append(args, extra...), ref)...)
}

// VerifyAttestation checks ref's attestations of predicateType against
// pub, as Verify does its signatures.
func (c *Cosign) VerifyAttestation(ref, pub, predicateType string, extra ...string) (string, error) {
	args := append([]string{"verify-attestation", "--key", pub, "--type", predicateType, "--insecure-ignore-tlog",
		"--trusted-root", c.TrustedRoot}, registryFlags...)
	return c.combined(append(append(args, extra...), ref)...)
}

// Tree lists what cosign finds attached to ref (signatures, attestations,
// SBOMs) and returns its standard output; extra flags go before ref, e.g.
// "--experimental-oci11".
func (c *Cosign) Tree(ref string, extra ...string) (string, error) {
	args := append(append([]string{"tree"}, registryFlags...), extra...)
	so, se, err := c.Run(append(args, ref)...)
	if err != nil {
		return so + se, err
	}
	return so, nil
}

// DownloadSBOM returns the bytes of ref's SBOM, as attached (the standard
// output of `cosign download sbom`), or cosign's output and its error.
func (c *Cosign) DownloadSBOM(ref string) (string, error) {
	so, se, err := c.Run(append(append([]string{"download", "sbom"}, registryFlags...), ref)...)
	if err != nil {
		return so + se, err
	}
	return so, nil
}

// SignBlob signs file with key and returns the path of the signature
// (base64, in Dir).
func (c *Cosign) SignBlob(t testing.TB, key, file string) (sigPath string) {
	t.Helper()
	f, err := os.CreateTemp(c.Dir, filepath.Base(file)+".*.sig")
	if err != nil {
		t.Fatal(err)
	}
	sigPath = f.Name()
	f.Close()
	c.must(t, "sign-blob", "--key", key, "--tlog-upload=false", "--yes", "--output-signature", sigPath, file)
	if fi, err := os.Stat(sigPath); err != nil || fi.Size() == 0 {
		t.Fatalf("cosign sign-blob wrote no signature to %s: %v", sigPath, err)
	}
	return sigPath
}

// VerifyBlob checks the signature sig of file against pub; the error
// holds cosign's output.
func (c *Cosign) VerifyBlob(pub, sig, file string) error {
	out, err := c.combined("verify-blob", "--key", pub, "--signature", sig, "--insecure-ignore-tlog", file)
	if err != nil {
		return errors.Join(err, errors.New(strings.TrimSpace(out)))
	}
	return nil
}
