package parts

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzParse: a parts file, whatever its bytes, is refused or describes
// parts a reader can take safely: plain file names ARCHIVE.NNN in order,
// positive sizes adding up to the archive's, at most MaxParts of them.
func FuzzParse(f *testing.F) {
	good := &Manifest{MediaType: MediaType, Archive: Part{Name: "a.tgz", Size: 3, Digest: digest.FromString("abc")},
		Parts: []Part{{Name: "a.tgz.000", Size: 2, Digest: digest.FromString("ab")}, {Name: "a.tgz.001", Size: 1, Digest: digest.FromString("c")}}}
	f.Add(good.Marshal())
	f.Add([]byte(strings.Replace(string(good.Marshal()), "a.tgz.001", "../x", 1)))
	f.Add([]byte(`{"mediaType":"` + MediaType + `","archive":{"name":"a","size":1,"digest":""},"parts":[{"name":"a.000","size":1}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if len(m.Parts) == 0 || len(m.Parts) > MaxParts || checkName(m.Archive.Name) != nil {
			t.Fatalf("accepted %d parts of %q", len(m.Parts), m.Archive.Name)
		}
		var total int64
		for i, p := range m.Parts {
			if p.Name != PartName(m.Archive.Name, i) || checkName(p.Name) != nil || strings.ContainsAny(p.Name, `/\`) || p.Size <= 0 {
				t.Fatalf("accepted part %d: %+v", i, p)
			}
			total += p.Size
		}
		if total != m.Archive.Size {
			t.Fatalf("accepted parts of %d bytes for an archive of %d", total, m.Archive.Size)
		}
	})
}
