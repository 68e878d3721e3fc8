package testenv

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/octohelm/crpe/internal/archive/seedtest"
)

// TagDigest is the digest a registry at base answers for repo:tag (HEAD),
// "" when it does not have it.
func TagDigest(t testing.TB, c *http.Client, base, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// CheckImages pulls p's images by tag from the registry at base, each
// under the repository repoOf gives its name: each tag resolves to the
// archive's digest, every manifest and blob is the archive's byte for byte.
func CheckImages(t testing.TB, c *http.Client, base string, repoOf func(name string) string, p *seedtest.Package) {
	t.Helper()
	for _, im := range p.Images {
		repo := repoOf(im.Name)
		if got := TagDigest(t, c, base, repo, im.Tag); got != string(im.Top.Desc.Digest) {
			t.Errorf("%s:%s is %q, want %s", repo, im.Tag, got, im.Top.Desc.Digest)
		}
		for _, ch := range im.Children {
			for _, b := range append([]seedtest.Blob{ch.Blob, ch.Config}, ch.Layers...) {
				kind := "blobs"
				if b.Desc.Digest == ch.Desc.Digest {
					kind = "manifests"
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/"+kind+"/"+string(b.Desc.Digest), nil)
				req.Header.Set("Accept", b.Desc.MediaType)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(body, b.Data) {
					t.Errorf("%s %s: %d, %d bytes, want the archive's %d", repo, b.Desc.Digest, resp.StatusCode, len(body), len(b.Data))
				}
			}
		}
	}
}
