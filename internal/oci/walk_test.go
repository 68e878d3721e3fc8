package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// graph is an in-memory manifest store for walk tests.
type graph map[digest.Digest][]byte

func (g graph) add(v any) ocispec.Descriptor {
	b, _ := json.Marshal(v)
	d := digest.FromBytes(b)
	g[d] = b
	var head struct{ MediaType string }
	_ = json.Unmarshal(b, &head)
	return ocispec.Descriptor{MediaType: head.MediaType, Digest: d, Size: int64(len(b))}
}

func (g graph) fetch(_ context.Context, d ocispec.Descriptor) ([]byte, error) {
	b, ok := g[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: not found", d.Digest)
	}
	return b, nil
}

func blob(s string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromString(s), Size: int64(len(s))}
}

func (g graph) image(name string) ocispec.Descriptor {
	return g.add(map[string]any{
		"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": blob(name + "-config"), "layers": []ocispec.Descriptor{blob(name + "-l1"), blob("shared-layer")},
	})
}

func withPlatform(d ocispec.Descriptor, p string) ocispec.Descriptor {
	pl, err := ParsePlatform(p)
	if err != nil {
		panic(err)
	}
	d.Platform = &pl
	return d
}

func (g graph) index(children ...ocispec.Descriptor) ocispec.Descriptor {
	return g.add(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex, "manifests": children})
}

func walkAll(t *testing.T, g graph, root ocispec.Descriptor, o WalkOptions) ([]string, error) {
	t.Helper()
	var got []string
	err := Walk(context.Background(), root, g.fetch, func(_ context.Context, n *Node) error {
		if n.Err != nil {
			return n.Err
		}
		got = append(got, fmt.Sprintf("%d:%s", n.Depth, n.Kind))
		return nil
	}, o)
	return got, err
}

func TestWalkPlatforms(t *testing.T) {
	g := graph{}
	amd, arm := g.image("amd"), g.image("arm")
	att := g.add(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": blob("att-config"), "layers": []ocispec.Descriptor{blob("att")}})
	root := g.index(withPlatform(amd, "linux/amd64"), withPlatform(arm, "linux/arm/v7"), withPlatform(att, "unknown/unknown"))

	got, err := walkAll(t, g, root, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// every node once: the shared layer of arm is not visited again
	want := "0:manifest 1:manifest 2:config 2:layer 2:layer 1:manifest 2:config 2:layer 1:manifest 2:config 2:layer"
	if strings.Join(got, " ") != want {
		t.Errorf("walk without a filter:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	arm7, _ := ParsePlatforms("linux/arm")
	got, err = walkAll(t, g, root, WalkOptions{Platforms: arm7})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "0:manifest 1:manifest 2:config 2:layer 2:layer" {
		t.Errorf("linux/arm keeps the arm/v7 child only: %v", got)
	}

	s390, _ := ParsePlatforms("linux/s390x")
	_, err = walkAll(t, g, root, WalkOptions{Platforms: s390})
	if !errors.Is(err, ErrNoPlatform) || !strings.Contains(err.Error(), "linux/amd64, linux/arm/v7") {
		t.Errorf("no child of the platform: %v", err)
	}

	// a single image is not filtered by the walk (its platform is in its config)
	if _, err := walkAll(t, g, amd, WalkOptions{Platforms: s390}); err != nil {
		t.Errorf("single image: %v", err)
	}
}

func TestWalkChecksAndLimits(t *testing.T) {
	g := graph{}
	img := g.image("a")

	// a manifest whose bytes are not what its descriptor says
	lie := img
	lie.Size++
	if _, err := walkAll(t, g, g.index(lie), WalkOptions{}); !errors.Is(err, ErrManifestInvalid) {
		t.Errorf("size lie: %v", err)
	}
	other := g.image("b")
	swapped := img
	g[swapped.Digest] = g[other.Digest]
	if _, err := walkAll(t, g, g.index(swapped), WalkOptions{}); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Errorf("digest lie: %v", err)
	}
	g[img.Digest], _ = g.fetch(context.Background(), img)

	// nesting: MaxDepth levels of indexes under the root are walked, one more is refused
	g = graph{}
	d := g.image("deep")
	for i := 0; i <= MaxDepth; i++ {
		d = g.index(d)
	}
	if _, err := walkAll(t, g, d, WalkOptions{}); err != nil {
		t.Errorf("%d nested indexes: %v", MaxDepth+1, err)
	}
	d = g.index(d)
	if _, err := walkAll(t, g, d, WalkOptions{}); !errors.Is(err, ErrTooDeep) {
		t.Errorf("%d nested indexes: %v", MaxDepth+2, err)
	}

	// a missing child reaches Visit as n.Err; ErrSkip and a nil return go on
	g = graph{}
	present := g.image("p")
	absent := blob("absent-manifest")
	absent.MediaType = ocispec.MediaTypeImageManifest
	root := g.index(absent, present)
	var missing []digest.Digest
	err := Walk(context.Background(), root, g.fetch, func(_ context.Context, n *Node) error {
		if n.Err != nil {
			missing = append(missing, n.Desc.Digest)
			return nil
		}
		if n.Kind == KindManifest && n.Depth == 1 {
			return ErrSkip
		}
		if n.Kind != KindManifest {
			t.Errorf("visited %s under a skipped manifest", n.Kind)
		}
		return nil
	}, WalkOptions{})
	if err != nil || len(missing) != 1 || missing[0] != absent.Digest {
		t.Errorf("missing child: %v %v", missing, err)
	}
}

func TestWalkSubject(t *testing.T) {
	g := graph{}
	img := g.image("subject")
	sig := g.add(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest,
		"config": blob("sig-config"), "layers": []ocispec.Descriptor{}, "subject": img})
	got, err := walkAll(t, g, sig, WalkOptions{})
	if err != nil || strings.Join(got, " ") != "0:manifest 1:config 1:manifest 2:config 2:layer 2:layer" {
		t.Errorf("with subject: %v %v", got, err)
	}
	got, err = walkAll(t, g, sig, WalkOptions{NoSubject: true, NoBlobs: true})
	if err != nil || strings.Join(got, " ") != "0:manifest" {
		t.Errorf("without subject and blobs: %v %v", got, err)
	}
}

func TestPlatforms(t *testing.T) {
	for in, want := range map[string]string{
		"linux/amd64":               "linux/amd64",
		"Linux/X86_64":              "linux/amd64",
		"linux/aarch64":             "linux/arm64",
		"linux/arm64/v8":            "linux/arm64/v8",
		"linux/arm":                 "linux/arm",
		"linux/arm/7":               "linux/arm/v7",
		"linux/loong128":            "linux/loong128",
		"windows/amd64":             "windows/amd64",
		"linux/arm/v6, linux/arm/6": "linux/arm/v6",
	} {
		ps, err := ParsePlatforms(in)
		if err != nil || JoinPlatforms(ps) != want {
			t.Errorf("ParsePlatforms(%q) = %q, %v; want %q", in, JoinPlatforms(ps), err, want)
		}
	}
	for _, bad := range []string{"linux", "amd64", "/amd64", "linux/", "linux/arm/v7/x", "linux amd64", "linux/amd64,", "linux/*"} {
		if _, err := ParsePlatforms(bad); err == nil {
			t.Errorf("ParsePlatforms(%q) accepted", bad)
		}
	}
	p := func(s string) ocispec.Platform { x, _ := ParsePlatform(s); return x }
	for _, c := range []struct {
		want, have string
		ok         bool
	}{
		{"linux/arm", "linux/arm/v7", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/amd64", "linux/amd64/v1", true},
		{"linux/arm/v7", "linux/arm64", false},
		{"linux/arm64", "linux/arm/v7", false},
		{"linux/amd64", "linux/amd64/v3", false},
	} {
		if got := MatchPlatform(p(c.want), p(c.have)); got != c.ok {
			t.Errorf("MatchPlatform(%s, %s) = %v", c.want, c.have, got)
		}
	}
}
