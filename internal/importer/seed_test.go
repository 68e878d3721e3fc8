package importer_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/archive/seedtest"
	"github.com/octohelm/crpe/internal/importer"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
	"github.com/octohelm/crpe/internal/repodb"
)

// TestImportSeedLayouts imports an archive of each layout of the seed's
// tools (written by seedtest, by their rules): every blob is stored, every
// image tagged by its reference, the package recorded with its platforms;
// hostile versions (status.digests lying about a name, a size or a type,
// a blob announced nowhere) publish nothing.
func TestImportSeedLayouts(t *testing.T) {
	ctx := pt.Context(t, 120*time.Second)
	for _, l := range seedtest.Layouts {
		for _, docker := range []bool{false, true} {
			name := string(l)
			if docker {
				name += "/docker"
			}
			t.Run(name, func(t *testing.T) {
				s := newStore(t)
				p := seedtest.Demo("demo", "1.0.0", docker, 3)
				res, err := s.im.Import(ctx, bytes.NewReader(seedtest.Write(l, p)), importer.ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
				blobs := p.Blobs()
				if res.BlobsReceived != len(blobs) {
					t.Errorf("received %d blobs, want %d", res.BlobsReceived, len(blobs))
				}
				for _, b := range blobs {
					got, err := io.ReadAll(mustOpen(ctx, t, s, b.Desc.Digest))
					if err != nil || !bytes.Equal(got, b.Data) {
						t.Errorf("blob %s not stored as it was: %v", b.Desc.Digest, err)
					}
				}
				if err := s.DB.View(func(tx *repodb.Tx) error {
					for _, im := range p.Images {
						if d, err := tx.Tag(im.Name, im.Tag); err != nil || d != im.Top.Desc.Digest {
							t.Errorf("tag %s = %s, %v; want %s", im.Ref, d, err, im.Top.Desc.Digest)
						}
					}
					rec, ok, err := tx.Package("default", "demo")
					if err != nil || !ok || rec.Version != "1.0.0" || rec.Platforms != "linux/amd64,linux/arm64" {
						t.Errorf("package record %+v, %v, %v", rec, ok, err)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}

				// hostile versions of the next version publish nothing
				before := s.dump(t)
				next := seedtest.Demo("demo", "1.1.0", docker, 4)
				lies := map[string]func([]seedtest.DigestMeta) []seedtest.DigestMeta{
					"name": func(ds []seedtest.DigestMeta) []seedtest.DigestMeta {
						ds[len(ds)-1].Name = "docker.io/library/elsewhere"
						return ds
					},
					"size": func(ds []seedtest.DigestMeta) []seedtest.DigestMeta {
						for i := range ds {
							if ds[i].Size > 4<<20 {
								ds[i].Size--
							}
						}
						return ds
					},
					"type": func(ds []seedtest.DigestMeta) []seedtest.DigestMeta {
						for i := range ds {
							if ds[i].Size > 4<<20 {
								ds[i].Type = "manifest"
							}
						}
						return ds
					},
					"announced nowhere": func(ds []seedtest.DigestMeta) []seedtest.DigestMeta {
						for i := range ds {
							if ds[i].Size > 4<<20 {
								return append(ds[:i:i], ds[i+1:]...)
							}
						}
						return ds
					},
				}
				for what, lie := range lies {
					next.Digests = lie(seedtest.Digests(l, next))
					_, err := s.im.Import(ctx, bytes.NewReader(seedtest.Write(l, next)), importer.ImportOptions{})
					if err == nil || !strings.Contains(err.Error(), "blobs/") && !strings.Contains(err.Error(), "status.digests") {
						t.Errorf("%s lie: err = %v, want an error naming the entry", what, err)
					}
					if after := s.dump(t); after != before {
						t.Errorf("%s lie: a failed import changed the index", what)
					}
				}
			})
		}
	}
}
