package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
)

// CrpeArchive writes a kubepkg.tgz in crpe's own layout (archive.Write) of
// package p's images (seedtest's content: each image's top, its chosen
// children, their configs and layers), with spec.images pinned and the
// platforms annotation set, as crpe export writes it.
func CrpeArchive(t testing.TB, p *seedtest.Package) []byte {
	t.Helper()
	data := map[digest.Digest][]byte{}
	var blobs []archive.Blob
	add := func(b seedtest.Blob, k oci.Kind) {
		if _, ok := data[b.Desc.Digest]; ok {
			return
		}
		data[b.Desc.Digest] = b.Data
		blobs = append(blobs, archive.Blob{Desc: b.Desc, Kind: k})
	}
	images := map[string]string{}
	var ims []archive.Image
	for _, im := range p.Images {
		add(im.Top, oci.KindManifest)
		for _, c := range im.Children {
			add(c.Blob, oci.KindManifest)
			add(c.Config, oci.KindConfig)
			for _, l := range c.Layers {
				add(l, oci.KindLayer)
			}
		}
		images[im.Ref] = string(im.Top.Desc.Digest)
		ims = append(ims, archive.Image{Ref: im.Ref, Desc: im.Top.Desc})
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	pkg, _ := json.Marshal(map[string]any{
		"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": map[string]any{"name": p.Name, "namespace": ns,
			"annotations": map[string]string{kubepkg.AnnotationPlatform: strings.Join(p.Platforms, ",")}},
		"spec": map[string]any{"version": p.Version, "images": images},
	})
	open := func(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
		b, ok := data[d]
		if !ok {
			return nil, fmt.Errorf("no blob %s", d)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	var buf bytes.Buffer
	if err := archive.Write(context.Background(), &buf, pkg, ims, blobs, open, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
