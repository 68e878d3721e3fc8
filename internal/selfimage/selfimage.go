// Package selfimage builds crpe's own container image from the running crpe
// binary, with no Docker: one layer holding /crpe on an empty base, written
// as an OCI Image Layout tar that `ctr images import` and k3s's airgap images
// folder take. Air-gapped clusters cannot pull crpe's image before the agent
// runs; this is how it gets there.
package selfimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Static reports whether the ELF binary at path is statically linked (no
// program interpreter). Non-ELF files (other systems) are reported as not
// usable.
func Static(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("%s is not a Linux (ELF) binary: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// Write writes the image of the binary at exe, named ref, to w.
func Write(w io.Writer, exe, ref string) error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("the image is built from the running binary, which must be a Linux one (this is %s)", runtime.GOOS)
	}
	static, err := Static(exe)
	if err != nil {
		return err
	}
	if !static {
		return fmt.Errorf("%s is dynamically linked: rebuild it with CGO_ENABLED=0 to put it in an image with no libc", exe)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		return err
	}
	epoch := time.Unix(0, 0).UTC()
	// the layer: /crpe and an empty /tmp
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	_ = tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch, Format: tar.FormatPAX})
	_ = tw.WriteHeader(&tar.Header{Name: "crpe", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatPAX})
	_, _ = tw.Write(bin)
	if err := tw.Close(); err != nil {
		return err
	}
	diffID := digest.FromBytes(tarBuf.Bytes())
	var gzBuf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&gzBuf, gzip.BestSpeed)
	_, _ = gz.Write(tarBuf.Bytes())
	_ = gz.Close()
	layer := gzBuf.Bytes()
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: ocispec.ImageConfig{
			Entrypoint: []string{"/crpe"},
			User:       "65532:65532",
			Env:        []string{"PATH=/"},
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	if runtime.GOARCH == "arm" {
		cfg.Platform.Variant = "v7"
	}
	cfgJSON, _ := json.Marshal(cfg)
	man := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	}
	man.SchemaVersion = 2
	manJSON, _ := json.Marshal(man)
	plat := cfg.Platform
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manJSON), Size: int64(len(manJSON)), Platform: &plat,
		Annotations: map[string]string{ocispec.AnnotationRefName: ref, "io.containerd.image.name": ref},
	}}}
	index.SchemaVersion = 2
	indexJSON, _ := json.Marshal(index)

	out := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := out.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := out.Write(b)
		return err
	}
	blob := func(b []byte) error {
		return file(fmt.Sprintf("blobs/sha256/%x", sha256.Sum256(b)), b)
	}
	for _, step := range []func() error{
		func() error { return file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)) },
		func() error { return file("index.json", indexJSON) },
		func() error { return blob(manJSON) },
		func() error { return blob(cfgJSON) },
		func() error { return blob(layer) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return out.Close()
}
