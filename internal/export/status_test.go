package export_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/pullthrough"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
)

// digestMeta is one entry of status.digests as the seed's tools write and
// read it (octohelm/kubepkg's v1alpha1.DigestMeta, the crpe phone app's).
type digestMeta struct {
	Type     string `json:"type"`
	Digest   string `json:"digest"`
	Name     string `json:"name"`
	Size     int64  `json:"size"`
	Tag      string `json:"tag,omitempty"`
	Platform string `json:"platform,omitempty"`
}

// TestStatusDigestsAsKubepkgReadsThem: kubepkg.json carries status.digests
// in the seed tools' form, so an importer following kubepkg's rule —
// kubepkg.json first, then each blobs/<alg>/<hex> entry looked up in
// status.digests and imported as its type says, a manifest with a tag and
// no platform tagged — finds every blob of the archive, typed, named and
// sized, and tags exactly the exported references.
func TestStatusDigestsAsKubepkgReadsThem(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	up := pt.NewUpstream(t)
	idx, _ := pt.Index(t, 2, 32<<10, "linux/amd64", "linux/arm64", "linux/s390x")
	top := up.PushIndex(ctx, t, "demo/multi:1.0", idx)
	_, other := pt.Index(t, 2, 32<<10, "linux/arm64")
	single := up.PushImage(ctx, t, "demo/single:2.0", other[0])
	cache := pt.NewCache(t, pt.NewCounter(), pullthrough.Options{})
	multiRef, singleRef := up.Repo("demo/multi")+":1.0", up.Repo("demo/single")+":2.0"
	pkgs := packages(t, "linux/amd64,linux/arm64", map[string]string{multiRef: "", singleRef: ""})
	var buf bytes.Buffer
	if _, err := export.Export(ctx, cache.Cache, cache.Store, pkgs, &buf, export.Options{}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	a := readArchive(ctx, t, data)

	// kubepkg's rule, over the raw tar stream
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var metas map[digest.Digest]digestMeta
	var order []digestMeta
	tagged := map[string]digest.Digest{}
	imported := map[digest.Digest]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == "kubepkg.json" {
			var p struct {
				Status struct {
					Digests []digestMeta `json:"digests"`
				} `json:"status"`
			}
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("kubepkg.json: %v", err)
			}
			order = p.Status.Digests
			metas = map[digest.Digest]digestMeta{}
			for _, m := range order {
				metas[digest.Digest(m.Digest)] = m
			}
			continue
		}
		rest, ok := strings.CutPrefix(h.Name, "blobs/")
		if !ok {
			continue
		}
		if metas == nil {
			t.Fatalf("%s before kubepkg.json", h.Name)
		}
		d := digest.Digest(strings.Replace(rest, "/", ":", 1))
		m, ok := metas[d]
		if !ok {
			t.Errorf("%s is not in status.digests: kubepkg's importer would skip it", h.Name)
			continue
		}
		if m.Size != int64(len(body)) {
			t.Errorf("status.digests says %d bytes for %s, the entry has %d", m.Size, d, len(body))
		}
		isManifest := a.kinds[d] == oci.KindManifest
		if (m.Type == "manifest") != isManifest {
			t.Errorf("status.digests types %s %q; the archive's manifests say manifest=%v", d, m.Type, isManifest)
		}
		if m.Type == "manifest" {
			if _, err := oci.ParseManifest("", body); err != nil {
				t.Errorf("%s typed manifest does not parse: %v", d, err)
			}
			if m.Tag != "" && m.Platform == "" {
				tagged[m.Name+":"+m.Tag] = d
			}
		}
		imported[d] = true
	}
	if len(imported) != len(a.blobs) {
		t.Errorf("kubepkg's rule imports %d blobs, the archive has %d", len(imported), len(a.blobs))
	}
	want := map[string]digest.Digest{multiRef: top, singleRef: single}
	if len(tagged) != len(want) || tagged[multiRef] != top || tagged[singleRef] != single {
		t.Errorf("tagged %v, want %v", tagged, want)
	}
	// the app's order: each top manifest first, then each chosen child with
	// its platform, followed by its config and layers
	var shape []string
	for _, m := range order {
		s := m.Type
		if m.Tag != "" {
			s += ":" + m.Tag
		}
		if m.Platform != "" {
			s += "@" + m.Platform
		}
		shape = append(shape, s)
	}
	wantShape := "manifest:1.0 manifest@linux/amd64 blob blob blob manifest@linux/arm64 blob blob blob manifest:2.0 blob blob blob"
	if strings.Join(shape, " ") != wantShape {
		t.Errorf("status.digests in order:\n got %s\nwant %s", strings.Join(shape, " "), wantShape)
	}
}
