package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v4/pkg/chart/v2/loader"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// The chart travels with its package as an OCI artifact in Helm's own
// layout (what `helm push` writes), so that the intranet side can see, and
// `helm pull` from the agent, exactly what was rendered.
const (
	// ConfigMediaType is Helm's chart config (Chart.yaml's metadata as JSON).
	ConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
	// LayerMediaType is the chart archive.
	LayerMediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	// ArtifactRepository is where crpe keeps the charts of its packages:
	// crpe.local/charts/<name>:<version>.
	ArtifactRepository = "crpe.local/charts/"
	// AnnotationChartArtifact names the artifact in spec.images.
	AnnotationChartArtifact = "octohelm.tech/chart-artifact"
)

// Artifact is a chart as an OCI artifact: its manifest, config and layer.
type Artifact struct {
	Ref      string // crpe.local/charts/<name>:<version>
	Manifest []byte
	Config   []byte
	Layer    []byte
}

// Digest is the artifact manifest's digest.
func (a *Artifact) Digest() digest.Digest { return digest.FromBytes(a.Manifest) }

// NewArtifact makes the artifact of a rendered chart, reproducibly: the
// same chart archive gives the same bytes.
func NewArtifact(info *ChartInfo) (*Artifact, error) {
	if info == nil || len(info.Archive) == 0 {
		return nil, fmt.Errorf("no chart archive")
	}
	cfg, err := json.Marshal(info.Metadata)
	if err != nil {
		return nil, err
	}
	desc := func(mt string, b []byte) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    desc(ConfigMediaType, cfg),
		Layers:    []ocispec.Descriptor{desc(LayerMediaType, info.Archive)},
		Annotations: map[string]string{
			ocispec.AnnotationTitle:   info.Name,
			ocispec.AnnotationVersion: info.Version,
		},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Artifact{Ref: ArtifactRepository + info.Name + ":" + info.Version, Manifest: body, Config: cfg, Layer: info.Archive}, nil
}

// Keep stores the artifact in a data folder's store and records it under
// its reference in the index, so that an export through that folder's
// cache carries it (its digest is pinned in spec.images: found locally,
// never asked upstream).
func Keep(ctx context.Context, store cas.Store, db *repodb.DB, a *Artifact) error {
	r, err := oci.ParseReference(a.Ref)
	if err != nil {
		return err
	}
	pm, err := oci.ParseManifest(ocispec.MediaTypeImageManifest, a.Manifest)
	if err != nil {
		return err
	}
	var infos []cas.Info
	for _, b := range [][]byte{a.Config, a.Layer, a.Manifest} {
		info, err := store.Put(ctx, cas.Info{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b))
		if err != nil {
			return err
		}
		infos = append(infos, info)
	}
	return db.Update(func(tx *repodb.Tx) error {
		for _, info := range infos[:2] {
			if err := tx.LinkBlob(r.Repository, info.Digest, info.Size); err != nil {
				return err
			}
		}
		d := a.Digest()
		if err := tx.PutManifest(r.Repository, d, repodb.ManifestRecord(pm, a.Manifest)); err != nil {
			return err
		}
		return tx.SetTag(r.Repository, r.Tag, d)
	})
}

// KeepWith makes res's chart an artifact, has keep store it, and lists it
// in the package: spec.images pins it, AnnotationChartArtifact names it,
// res.Images says where it was kept (where).
func KeepWith(res *Result, where string, keep func(*Artifact) error) error {
	a, err := NewArtifact(res.Chart)
	if err != nil {
		return err
	}
	if err := keep(a); err != nil {
		return fmt.Errorf("keeping the chart in %s: %w", where, err)
	}
	Pin(res, a.Ref, a.Digest(), where)
	return nil
}

// Pin lists the chart artifact ref@d in res's package (see KeepWith).
func Pin(res *Result, ref string, d digest.Digest, where string) {
	res.Package.Spec.Images[ref] = string(d)
	res.Package.Metadata.Annotations[AnnotationChartArtifact] = ref + "@" + string(d)
	res.Images = append(res.Images, ImageSource{Ref: ref, Found: []string{"the chart itself, kept in " + where}})
}

// InfoOf reads a chart archive (bounded and checked as Package does) into
// the ChartInfo its artifact is made of.
func InfoOf(archive []byte) (*ChartInfo, error) {
	if len(archive) > MaxChartSize {
		return nil, fmt.Errorf("chart archive: more than %d bytes", MaxChartSize)
	}
	if err := checkArchive(archive); err != nil {
		return nil, err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, err
	}
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	return &ChartInfo{Name: ch.Name(), Version: ch.Metadata.Version, Digest: string(digest.FromBytes(archive)), Archive: archive, Metadata: ch.Metadata}, nil
}
