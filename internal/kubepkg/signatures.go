package kubepkg

import (
	"encoding/json"
	"time"
)

// Signature is what an import's signature check (the agent's --verify-key
// or --verify-policy) found of one image of the package: kept in
// status.signatures of the package as imported, and in the agent's import
// history.
type Signature struct {
	// Image is the reference, Digest what spec.images pins it to.
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Verified: a cosign signature carried with the image verified with
	// Key (the SHA-256 of its PKIX encoding; KeyName its file) over a
	// payload naming Digest; Signature is its manifest's digest.
	Verified  bool   `json:"verified"`
	Key       string `json:"key,omitempty"`
	KeyName   string `json:"keyName,omitempty"`
	Signature string `json:"signature,omitempty"`
	// Identity is a keyless signer's issuer and subject (a Sigstore bundle
	// verified with the policy's trusted root).
	Identity string `json:"identity,omitempty"`
	// Reason says why the image was let through unverified.
	Reason string `json:"reason,omitempty"`
	// Time is when it was checked.
	Time time.Time `json:"time"`
}

// SetStatusSignatures writes list as status.signatures (other status
// fields are kept).
func (p *KubePkg) SetStatusSignatures(list []Signature) {
	if p.Status == nil {
		p.Status = &Status{}
	}
	b, _ := json.Marshal(list)
	var v any
	_ = json.Unmarshal(b, &v)
	(*p.Status)["signatures"] = v
}

// StatusSignatures reads status.signatures (nil when absent).
func (p *KubePkg) StatusSignatures() ([]Signature, error) {
	if p.Status == nil {
		return nil, nil
	}
	v, ok := (*p.Status)["signatures"]
	if !ok {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var list []Signature
	return list, json.Unmarshal(b, &list)
}
