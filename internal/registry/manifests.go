package registry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// resolve returns the digest and record of a manifest reference (tag or
// digest) in repo.
func (rg *Registry) resolve(repo, ref string) (digest.Digest, repodb.Manifest, error) {
	var d digest.Digest
	var m repodb.Manifest
	byDigest := oci.IsDigestRef(ref)
	if byDigest {
		var err error
		if d, err = parseDigestRef(ref); err != nil {
			return "", m, err
		}
	} else if !oci.ValidTag(ref) {
		return "", m, errManifestUnknown("invalid tag %q", ref)
	}
	err := rg.db.View(func(tx *repodb.Tx) error {
		if !byDigest {
			var err error
			if d, err = tx.Tag(repo, ref); err != nil {
				if !tx.RepoExists(repo) {
					return errNameUnknown("repository %s is not known", repo)
				}
				return errManifestUnknown("manifest %s:%s is not known", repo, ref)
			}
		}
		var err error
		if m, err = tx.Manifest(repo, d); err != nil {
			if !tx.RepoExists(repo) {
				return errNameUnknown("repository %s is not known", repo)
			}
			return errManifestUnknown("manifest %s@%s is not known", repo, d)
		}
		return nil
	})
	return d, m, err
}

func (rg *Registry) getManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, m, err := rg.resolve(repo, ref)
	if err != nil {
		return err
	}
	body, err := rg.manifestBytes(r, d)
	if err != nil {
		return err
	}
	if !oci.IsDigestRef(ref) && !accepts(r.Header.Values("Accept"), m.MediaType) {
		// Content negotiation as distribution does it: a client that takes
		// no index gets the linux/amd64 image of one. Otherwise the manifest
		// is served as stored (registries do not convert between schemas).
		if oci.IsIndex(m.MediaType) && (accepts(r.Header.Values("Accept"), ocispec.MediaTypeImageManifest) || accepts(r.Header.Values("Accept"), oci.MediaTypeDockerManifest)) {
			if cd, cm, cbody, ok := rg.defaultChild(r, repo, body); ok {
				d, m, body = cd, cm, cbody
			}
		}
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Docker-Content-Digest", string(d))
	h.Set("ETag", `"`+string(d)+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

var linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// defaultChild picks the linux/amd64 image of an index, when it is stored
// in repo.
func (rg *Registry) defaultChild(r *http.Request, repo string, index []byte) (digest.Digest, repodb.Manifest, []byte, bool) {
	pm, err := oci.ParseManifest("", index)
	if err != nil {
		return "", repodb.Manifest{}, nil, false
	}
	for _, c := range pm.Manifests {
		if c.Platform == nil || !oci.MatchPlatform(linuxAMD64, *c.Platform) {
			continue
		}
		var m repodb.Manifest
		if err := rg.db.View(func(tx *repodb.Tx) error {
			m, err = tx.Manifest(repo, c.Digest)
			return err
		}); err != nil {
			continue
		}
		body, err := rg.manifestBytes(r, c.Digest)
		if err != nil {
			continue
		}
		return c.Digest, m, body, true
	}
	return "", repodb.Manifest{}, nil, false
}

func (rg *Registry) manifestBytes(r *http.Request, d digest.Digest) ([]byte, error) {
	if b, ok := rg.manifests.get(d); ok {
		return b, nil
	}
	b, err := cas.ReadAll(r.Context(), rg.store, d, oci.MaxManifestSize)
	switch {
	case errors.Is(err, cas.ErrNotFound):
		return nil, errManifestUnknown("manifest %s is recorded but its content is missing", d)
	case errors.Is(err, cas.ErrTooLarge):
		return nil, errManifestInvalid("stored manifest %s is larger than %d bytes", d, oci.MaxManifestSize)
	case err != nil:
		return nil, err
	}
	rg.manifests.put(d, b)
	return b, nil
}

// accepts reports whether an Accept header list admits mediaType. No header
// (or a wildcard) admits everything.
func accepts(values []string, mediaType string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			mt = strings.TrimSpace(mt)
			if mt == "" || mt == "*/*" || mt == "application/*" || mt == mediaType {
				return true
			}
		}
	}
	return false
}

func (rg *Registry) putManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	ctx := r.Context()
	byDigest := oci.IsDigestRef(ref)
	var want digest.Digest
	if byDigest {
		var err error
		if want, err = parseDigestRef(ref); err != nil {
			return err
		}
	} else if !oci.ValidTag(ref) {
		return errManifestInvalid("invalid tag %q", ref)
	}
	tags := []string{}
	if !byDigest {
		tags = append(tags, ref)
	}
	for _, t := range r.URL.Query()["tag"] {
		if !oci.ValidTag(t) {
			return errManifestInvalid("invalid tag %q", t)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if r.ContentLength > oci.MaxManifestSize {
		return newErr(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "manifest is larger than %d bytes", oci.MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		return errManifestInvalid("reading manifest: %v", err)
	}
	if len(body) > oci.MaxManifestSize {
		return newErr(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "manifest is larger than %d bytes", oci.MaxManifestSize)
	}
	alg := digest.SHA256
	if byDigest {
		alg = want.Algorithm()
	}
	d := alg.FromBytes(body)
	if byDigest && d != want {
		return errDigestInvalid("manifest content hashes to %s, not %s", d, want)
	}
	pm, err := oci.ParseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	// every config and layer must be present; index children, the subject
	// and non-distributable layers may be absent (sparse content)
	var links []cas.Info
	partial := false
	for _, desc := range pm.Required() {
		info, err := rg.store.Stat(ctx, desc.Digest)
		if err != nil && rg.opts.AllowSparseManifests {
			partial = true
			continue
		}
		if err != nil {
			e := errManifestBlobUnknown("blob %s referenced by the manifest is not in the registry", desc.Digest)
			e.Detail = map[string]string{"digest": string(desc.Digest)}
			return e
		}
		if info.Size != desc.Size {
			return errManifestInvalid("blob %s has %d bytes, the manifest says %d", desc.Digest, info.Size, desc.Size)
		}
		links = append(links, info)
	}
	if _, err := rg.store.Put(ctx, cas.Info{Digest: d, Size: int64(len(body))}, bytes.NewReader(body)); err != nil {
		return err
	}
	rec := repodb.ManifestRecord(pm, body)
	rec.Partial = partial
	err = rg.db.Batch(func(tx *repodb.Tx) error {
		for _, l := range links {
			if err := tx.LinkBlob(repo, l.Digest, l.Size); err != nil {
				return err
			}
		}
		if err := tx.PutManifest(repo, d, rec); err != nil {
			return err
		}
		for _, t := range tags {
			if err := tx.SetTag(repo, t, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/manifests/"+string(d))
	h.Set("Docker-Content-Digest", string(d))
	if pm.Subject != nil {
		h.Set("OCI-Subject", string(pm.Subject.Digest))
	}
	if q := r.URL.Query()["tag"]; len(q) > 0 {
		h.Set("OCI-Tag", strings.Join(tags, ", "))
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (rg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	var err error
	if oci.IsDigestRef(ref) {
		d, perr := parseDigestRef(ref)
		if perr != nil {
			return perr
		}
		err = rg.db.Update(func(tx *repodb.Tx) error { return tx.DeleteManifest(repo, d) })
	} else {
		if !oci.ValidTag(ref) {
			return errManifestUnknown("invalid tag %q", ref)
		}
		err = rg.db.Update(func(tx *repodb.Tx) error { return tx.DeleteTag(repo, ref) })
	}
	if err != nil {
		if isNotFound(err) {
			return errManifestUnknown("manifest %s:%s is not known", repo, ref)
		}
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (rg *Registry) referrers(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := parseDigestRef(ref)
	if err != nil {
		return err
	}
	var refs []repodb.Descriptor
	if err := rg.db.View(func(tx *repodb.Tx) error {
		refs, err = tx.Referrers(repo, d)
		return err
	}); err != nil {
		return err
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := []repodb.Descriptor{}
		for _, x := range refs {
			if x.ArtifactType == at {
				kept = append(kept, x)
			}
		}
		refs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, r, http.StatusOK, ocispec.MediaTypeImageIndex, map[string]any{
		"schemaVersion": 2,
		"mediaType":     ocispec.MediaTypeImageIndex,
		"manifests":     refs,
	})
}
