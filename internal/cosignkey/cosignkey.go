// Package cosignkey reads and writes key pairs in cosign's format, so that
// crpe and cosign use each other's keys: an ECDSA P-256 private key as PKCS
// #8, encrypted with a password (scrypt and NaCl secretbox, go-securesystemslib's
// encrypted package) in a PEM block "ENCRYPTED SIGSTORE PRIVATE KEY"
// (cosign's older "ENCRYPTED COSIGN PRIVATE KEY" is read too), and the public
// key as PEM "PUBLIC KEY" (what sigverify.LoadKey reads). It signs blobs as
// cosign sign-blob does: a base64 signature of the SHA-256 of the bytes.
package cosignkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// PEM block types of cosign's private keys.
const (
	SigstorePrivateKeyPEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
	CosignPrivateKeyPEM   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// Generate makes a key pair: the encrypted private key and the public key,
// both PEM, as cosign generate-key-pair writes cosign.key and cosign.pub.
func Generate(password []byte) (priv, pub []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, nil, err
	}
	priv = pem.EncodeToMemory(&pem.Block{Type: SigstorePrivateKeyPEM, Bytes: enc})
	pub, err = cryptoutils.MarshalPublicKeyToPEM(k.Public())
	if err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

// Load reads an encrypted private key file (cosign's or crpe keygen's).
func Load(file string, password []byte) (signature.SignerVerifier, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	sv, err := Parse(b, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return sv, nil
}

// Parse decrypts a PEM private key with password.
func Parse(pemBytes, password []byte) (signature.SignerVerifier, error) {
	p, _ := pem.Decode(pemBytes)
	if p == nil {
		return nil, errors.New("not a PEM private key")
	}
	if p.Type != SigstorePrivateKeyPEM && p.Type != CosignPrivateKeyPEM {
		return nil, fmt.Errorf("a PEM block %q, not cosign's %q", p.Type, SigstorePrivateKeyPEM)
	}
	der, err := encrypted.Decrypt(p.Bytes, password)
	if err != nil {
		return nil, fmt.Errorf("cannot decrypt the key (wrong password?): %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return signature.LoadECDSASignerVerifier(k, crypto.SHA256)
	default:
		return signature.LoadSignerVerifier(k, crypto.SHA256)
	}
}

// SignBlob signs data as cosign sign-blob does: the base64 signature.
func SignBlob(sv signature.Signer, data []byte) ([]byte, error) {
	sig, err := sv.SignMessage(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(sig)), nil
}
