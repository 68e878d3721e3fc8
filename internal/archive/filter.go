package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// Entry is a tar entry of an archive, as Walk sees it.
type Entry struct {
	Name   string
	Size   int64
	Digest digest.Digest // for blobs/<alg>/<hex>
}

// eachEntry calls fn for every entry of the archive in r but directories, in
// order, with the digest its name gives (blobs/<alg>/<hex>, else empty) and
// a reader of its bytes. Nothing is hashed or validated: it is for a sender
// planning or re-encoding what it sends; the receiver verifies everything.
func eachEntry(ctx context.Context, r io.Reader, fn func(h *tar.Header, d digest.Digest, body io.Reader) error) error {
	br := bufio.NewReaderSize(r, copyBufferSize)
	var src io.Reader = br
	if head, _ := br.Peek(2); !bytes.Equal(head, []byte{0x1f, 0x8b}) {
		// a plain tar (octohelm/kubepkg after 2023): Read tells it is one
	} else {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("kubepkg.tgz: not a gzip stream: %w", err)
		}
		src = gz
	}
	tr := tar.NewReader(src)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kubepkg.tgz: %w", err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		var d digest.Digest
		if rest, ok := strings.CutPrefix(h.Name, BlobsDir+"/"); ok {
			if alg, hex, ok := strings.Cut(rest, "/"); ok {
				d = digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			}
		}
		if err := fn(h, d, tr); err != nil {
			return err
		}
	}
}

// Filter copies the archive in r to w, leaving out the blobs omit names and
// replacing kubepkg.json with what editPackage makes of it. Entries keep
// their order and headers; metadata, manifests and configs go into a
// compressed gzip member, blobs from the first one over 4 MiB on into a
// stored member, as Write does.
func Filter(ctx context.Context, r io.Reader, w io.Writer, omit map[digest.Digest]bool, editPackage func([]byte) ([]byte, error)) error {
	bw := bufio.NewWriterSize(w, copyBufferSize)
	mw, err := newMemberWriter(bw, regularFile(w))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(mw)
	stored := false
	buf := make([]byte, copyBufferSize)
	err = eachEntry(ctx, r, func(h *tar.Header, d digest.Digest, body io.Reader) error {
		if d != "" {
			if omit[d] {
				return nil
			}
			if !stored && h.Size > 4<<20 {
				if err := tw.Flush(); err != nil {
					return err
				}
				if err := mw.stored(); err != nil {
					return err
				}
				stored = true
			}
		}
		if h.Name == PackageEntry && editPackage != nil {
			b, err := io.ReadAll(io.LimitReader(body, DefaultMaxPackage+1))
			if err != nil {
				return err
			}
			if b, err = editPackage(b); err != nil {
				return err
			}
			h.Size = int64(len(b))
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.CopyBuffer(tw, body, buf); err != nil {
			return fmt.Errorf("kubepkg.tgz: %s: %w", h.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := mw.close(); err != nil {
		return err
	}
	return bw.Flush()
}

// Walk calls fn for every entry of an archive, in order; body reads the
// entry's bytes when fn wants them (bounded by the manifest cap). Nothing is
// hashed: Walk is for a sender planning what to send.
func Walk(ctx context.Context, r io.Reader, fn func(e Entry, body func() ([]byte, error)) error) error {
	return eachEntry(ctx, r, func(h *tar.Header, d digest.Digest, body io.Reader) error {
		return fn(Entry{Name: h.Name, Size: h.Size, Digest: d}, func() ([]byte, error) {
			return io.ReadAll(io.LimitReader(body, DefaultMaxManifest+1))
		})
	})
}
