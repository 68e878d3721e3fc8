package kubepkg

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/oci"
)

// Types of a status.digests entry.
const (
	// DigestTypeManifest is a manifest or an index (the seed's tools type
	// some OCI manifests "blob": see DigestMeta.Type).
	DigestTypeManifest = "manifest"
	// DigestTypeBlob is a config or a layer (or, in octohelm/kubepkg v0.1,
	// an OCI manifest or index).
	DigestTypeBlob = "blob"
)

// MaxStatusDigests bounds the entries of one package's status.digests (the
// archive reader's cap on the blobs of an archive).
const MaxStatusDigests = 1 << 18

// DigestMeta is one entry of status.digests: a blob of the package's archive
// as the seed's tools (the crpe phone app, octohelm/kubepkg) list it, in
// their JSON form {"digest", "type", "name", "size", "tag"?, "platform"?}.
type DigestMeta struct {
	// Digest of the blob.
	Digest digest.Digest
	// Type is DigestTypeManifest or DigestTypeBlob.
	Type string
	// Name is the repository the blob belongs to, as written
	// (docker.io/library/nginx); Repository is its canonical form.
	Name string
	// Repository is Name as containerd names it (oci.ParseReference).
	Repository string
	// Size of the blob in bytes.
	Size int64
	// Tag is the tag of the reference that led to the blob, if any.
	Tag string
	// Platform is the platform of a chosen child manifest (and, in
	// octohelm/kubepkg, of its config and layers), os/arch[/variant].
	Platform string
}

// StatusDigests reads and validates status.digests: nil when there is none.
// Errors are *FieldError naming the entry (status.digests[3].size). null
// fields (the phone app writes "tag": null) count as absent.
func (p *KubePkg) StatusDigests() ([]DigestMeta, error) {
	if p.Status == nil {
		return nil, nil
	}
	raw, ok := (*p.Status)["digests"]
	if !ok || raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, &FieldError{Path: "status.digests", Err: fmt.Errorf("must be an array, got %s", jsonType(raw))}
	}
	if len(list) > MaxStatusDigests {
		return nil, &FieldError{Path: "status.digests", Err: fmt.Errorf("%d entries, more than %d", len(list), MaxStatusDigests)}
	}
	out := make([]DigestMeta, 0, len(list))
	for i, e := range list {
		m, err := parseDigestMeta(e)
		if err != nil {
			return nil, atField(fmt.Sprintf("status.digests[%d]", i), err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseDigestMeta(v any) (DigestMeta, error) {
	var m DigestMeta
	obj, ok := v.(map[string]any)
	if !ok {
		return m, fmt.Errorf("must be an object, got %s", jsonType(v))
	}
	str := func(key string, required bool) (string, error) {
		x, ok := obj[key]
		if !ok || x == nil {
			if required {
				return "", atField(key, fmt.Errorf("required"))
			}
			return "", nil
		}
		s, ok := x.(string)
		if !ok {
			return "", atField(key, fmt.Errorf("must be a string, got %s", jsonType(x)))
		}
		return s, nil
	}
	d, err := str("digest", true)
	if err != nil {
		return m, err
	}
	if m.Digest, err = oci.ParseDigest(d); err != nil {
		return m, atField("digest", err)
	}
	if m.Type, err = str("type", true); err != nil {
		return m, err
	}
	if m.Type != DigestTypeManifest && m.Type != DigestTypeBlob {
		return m, atField("type", fmt.Errorf("must be %q or %q, got %q", DigestTypeManifest, DigestTypeBlob, m.Type))
	}
	if m.Name, err = str("name", true); err != nil {
		return m, err
	}
	r, err := oci.ParseReference(m.Name)
	if err != nil || r.Digest != "" || r.Tag != "latest" && r.Tag != "" {
		return m, atField("name", fmt.Errorf("%q is not a repository name", m.Name))
	}
	m.Repository = r.Repository
	switch x := obj["size"].(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n < 0 {
			return m, atField("size", fmt.Errorf("must be a whole number of bytes, got %s", x))
		}
		m.Size = n
	case nil:
		return m, atField("size", fmt.Errorf("required"))
	default:
		return m, atField("size", fmt.Errorf("must be a number, got %s", jsonType(x)))
	}
	if m.Tag, err = str("tag", false); err != nil {
		return m, err
	}
	if m.Tag != "" && !oci.ValidTag(m.Tag) {
		return m, atField("tag", fmt.Errorf("%q is not a valid tag", m.Tag))
	}
	if m.Platform, err = str("platform", false); err != nil {
		return m, err
	}
	if m.Platform != "" {
		if _, err := oci.ParsePlatform(m.Platform); err != nil {
			return m, atField("platform", err)
		}
	}
	return m, nil
}

// SetStatusDigests sets status.digests in the seed's form (an empty tag or
// platform is left out), keeping the other status fields.
func (p *KubePkg) SetStatusDigests(list []DigestMeta) {
	if p.Status == nil {
		p.Status = &Status{}
	}
	entries := make([]any, 0, len(list))
	for _, m := range list {
		e := map[string]any{"digest": string(m.Digest), "type": m.Type, "name": m.Name, "size": json.Number(strconv.FormatInt(m.Size, 10))}
		if m.Tag != "" {
			e["tag"] = m.Tag
		}
		if m.Platform != "" {
			e["platform"] = m.Platform
		}
		entries = append(entries, e)
	}
	(*p.Status)["digests"] = entries
}
