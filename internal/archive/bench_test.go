package archive

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/oci"
)

// benchContent is one image of ~256 MiB of random layers (8 × 32 MiB).
func benchContent(b *testing.B) (*content, int64) {
	c := newContent(1)
	var layers []ocispec.Descriptor
	var total int64
	for i := 0; i < 8; i++ {
		l := c.layer(digest.SHA256, ocispec.MediaTypeImageLayerGzip, 32<<20)
		layers = append(layers, l)
		total += l.Size
	}
	cfg := c.config(digest.SHA256, ocispec.MediaTypeImageConfig, "amd64")
	c.image("docker.io/library/bench:1", c.manifest(digest.SHA256, ocispec.MediaTypeImageManifest, cfg, layers...))
	return c, total
}

func BenchmarkWrite(b *testing.B) {
	c, total := benchContent(b)
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Write(context.Background(), io.Discard, []byte(testPkg), c.images, c.blobs, c.open, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// discardHandler reads every blob to io.Discard.
type discardHandler struct{}

func (discardHandler) Package([]byte) error      { return nil }
func (discardHandler) Index(ocispec.Index) error { return nil }
func (discardHandler) Blob(_ context.Context, _ ocispec.Descriptor, _ oci.Kind, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func BenchmarkRead(b *testing.B) {
	c, total := benchContent(b)
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, []byte(testPkg), c.images, c.blobs, c.open, Options{}); err != nil {
		b.Fatal(err)
	}
	archive := buf.Bytes()
	c.data = nil
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Read(context.Background(), bytes.NewReader(archive), discardHandler{}, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
