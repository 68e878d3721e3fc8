package conformance

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestPocketPullConformance runs the suite's pull workflow (read-only mode)
// against `crpe serve`, whose content comes through the pull-through cache
// from a real docker-registry: nothing is in the cache when the suite
// starts.
func TestPocketPullConformance(t *testing.T) {
	suite := testenv.Peer(t, "conformance-ro", "bash test/peers/conformance-ro.sh")
	up := testenv.StartDistribution(t)
	shared := testenv.RandomLayer(t, 64<<10, false)
	amd := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, []testenv.Blob{shared, testenv.RandomLayer(t, 32<<10, false)}, false)
	arm := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "arm64"}, []testenv.Blob{shared}, false)
	idx := testenv.NewIndex([]testenv.Image{amd, arm}, false)
	testenv.PushIndex(t, up.URL, "conformance/ro", "multi", []testenv.Image{amd, arm}, idx)
	single := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, []testenv.Blob{testenv.RandomLayer(t, 16<<10, true)}, true)
	testenv.PushImage(t, up.URL, "conformance/ro", "single", single)

	addr := testenv.FreeAddr(t)
	p := testenv.Start(t, "serve", "--addr", addr, "--data", t.TempDir(), "--registry-endpoint", "docker.io="+up.URL)
	p.Addr = addr
	testenv.WaitHealthy(t, p)

	var manifests, blobs []string
	for _, m := range []testenv.Blob{idx, amd.Manifest, arm.Manifest, single.Manifest} {
		manifests = append(manifests, string(m.Desc.Digest))
	}
	for _, im := range []testenv.Image{amd, arm, single} {
		blobs = append(blobs, string(im.Config.Desc.Digest))
		for _, l := range im.Layers {
			blobs = append(blobs, string(l.Desc.Digest))
		}
	}
	run := func(t *testing.T) {
		results := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, suite)
		cmd.Dir = results
		cmd.Env = append(os.Environ(),
			"OCI_REGISTRY="+addr,
			"OCI_TLS=disabled",
			"OCI_REPO1=docker.io/conformance/ro",
			"OCI_REPO2=docker.io/conformance/ro",
			"OCI_API_PUSH=false",
			"OCI_API_BLOBS_DELETE=false",
			"OCI_API_MANIFESTS_DELETE=false",
			"OCI_API_TAGS_DELETE=false",
			"OCI_RO_DATA_TAGS=multi single",
			"OCI_RO_DATA_MANIFESTS="+strings.Join(manifests, " "),
			"OCI_RO_DATA_BLOBS="+strings.Join(blobs, " "),
			"OCI_RESULTS_DIR="+results,
		)
		out, err := cmd.CombinedOutput()
		checkResults(t, results, out, err, 20)
	}
	t.Run("through the cache", run)
	// the same suite with the upstream gone: what was pulled is served from
	// the cache, and what was never there is unknown (404), not 502
	up.Stop()
	t.Run("upstream unreachable", run)
}
