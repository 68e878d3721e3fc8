package agentimport

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/testenv"
)

const (
	refApp  = "docker.io/library/app:stable"
	refSide = "docker.io/library/side:1.0"
)

// versions is three versions of an image docker.io/library/app:stable, each
// with a distinct layer and one layer they share, plus an image side:1.0
// that only v1 of the package lists (its tag stays after v1 expires).
type versions struct {
	reg    *testenv.Distribution
	cache  string
	shared testenv.Blob
	apps   []testenv.Image // v1, v2, v3
	side   testenv.Image
}

func newVersions(t *testing.T) *versions {
	t.Helper()
	v := &versions{reg: testenv.StartDistribution(t), cache: t.TempDir()}
	v.shared = testenv.RandomLayer(t, 1*MiB, false)
	sizes := []int{3 * MiB, 1 * MiB, 1*MiB + 4096}
	for i, n := range sizes {
		im := testenv.NewImage(t, amd64, []testenv.Blob{v.shared, testenv.RandomLayer(t, n, false)}, false)
		testenv.PushImage(t, v.reg.URL, "library/app", "v"+string(rune('1'+i)), im)
		v.apps = append(v.apps, im)
	}
	v.side = testenv.NewImage(t, amd64, []testenv.Blob{testenv.RandomLayer(t, 64<<10, false)}, false)
	testenv.PushImage(t, v.reg.URL, "library/side", "1.0", v.side)
	return v
}

// export writes the archive of version i (0-based) of package name in
// namespace ns ("" = none); version 0 also lists side:1.0.
func (v *versions) export(ctx context.Context, t *testing.T, name, ns, version string, i int) string {
	t.Helper()
	imgs := map[string]digest.Digest{refApp: v.apps[i].Manifest.Desc.Digest}
	if i == 0 {
		imgs[refSide] = v.side.Manifest.Desc.Digest
	}
	return exportPkg(ctx, t, v.reg, appYAML(name, ns, version, imgs), v.cache)
}

// storeBytesOnDisk adds up the files under <data>/blobs.
func storeBytesOnDisk(t *testing.T, data string) int64 {
	t.Helper()
	var n int64
	_ = filepath.WalkDir(filepath.Join(data, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestStorageLifecycle: with --keep-versions 2 --gc-grace 0s, the third
// version expires the first; garbage collection runs in the background and
// removes what only v1 needed, keeps what v2, v3 and tags need, and /metrics
// and fsck agree.
func TestStorageLifecycle(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	v := newVersions(t)
	files := []string{
		v.export(ctx, t, "app", "default", "1.0.0", 0),
		v.export(ctx, t, "app", "default", "2.0.0", 1),
		v.export(ctx, t, "app", "default", "3.0.0", 2),
	}
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--keep-versions", "2", "--gc-grace", "0s"}})

	importTo(ctx, t, files[0], a.URL, a.Token)
	s2 := importTo(ctx, t, files[1], a.URL, a.Token)
	if len(s2.Import.Expired) != 0 {
		t.Errorf("v2 expired %v, want nothing (2 versions kept)", s2.Import.Expired)
	}
	bytes2 := mustMetric(t, a, "crpe_store_bytes")
	if disk := storeBytesOnDisk(t, a.Data); float64(disk) != bytes2 {
		t.Errorf("after v2: crpe_store_bytes %v, the blobs on disk %d", bytes2, disk)
	}
	runs0 := mustMetric(t, a, "crpe_gc_runs_total")

	s3 := importTo(ctx, t, files[2], a.URL, a.Token)
	if len(s3.Import.Expired) != 1 || s3.Import.Expired[0] != "default/app@1.0.0" {
		t.Errorf("v3 expired %v, want [default/app@1.0.0]", s3.Import.Expired)
	}
	// garbage collection runs in the background after the import
	deadline := time.Now().Add(15 * time.Second)
	for mustMetric(t, a, "crpe_gc_runs_total") < runs0+1 {
		if time.Now().After(deadline) {
			t.Fatalf("crpe_gc_runs_total still %v 15s after v3 expired v1\n%s", runs0, a.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	removed := mustMetric(t, a, "crpe_gc_blobs_removed_total")
	freed := mustMetric(t, a, "crpe_gc_bytes_freed_total")
	bytes3 := mustMetric(t, a, "crpe_store_bytes")
	t.Logf("GC: %v runs, %v blobs removed, %v bytes freed; crpe_store_bytes %v after v2, %v after v3 and GC", mustMetric(t, a, "crpe_gc_runs_total"), removed, freed, bytes2, bytes3)

	v1 := v.apps[0]
	gone := map[string]digest.Digest{"v1 manifest": v1.Manifest.Desc.Digest, "v1 config": v1.Config.Desc.Digest, "v1 distinct layer": v1.Layers[1].Desc.Digest}
	var goneBytes int64
	for what, d := range gone {
		if exists(blobPath(a.Data, d)) {
			t.Errorf("%s %s still in <data>/blobs after GC", what, d)
		}
	}
	goneBytes = v1.Manifest.Desc.Size + v1.Config.Desc.Size + v1.Layers[1].Desc.Size
	if removed != 3 || freed != float64(goneBytes) {
		t.Errorf("crpe_gc_blobs_removed_total %v, crpe_gc_bytes_freed_total %v; want 3 blobs, %d bytes (v1's manifest, config, distinct layer)", removed, freed, goneBytes)
	}
	keep := map[string]digest.Digest{"shared layer": v.shared.Desc.Digest, "side layer (tagged)": v.side.Layers[0].Desc.Digest,
		"side manifest": v.side.Manifest.Desc.Digest}
	for i, im := range v.apps[1:] {
		n := "v" + string(rune('2'+i))
		keep[n+" manifest"], keep[n+" config"], keep[n+" distinct layer"] = im.Manifest.Desc.Digest, im.Config.Desc.Digest, im.Layers[1].Desc.Digest
	}
	for what, d := range keep {
		if !exists(blobPath(a.Data, d)) {
			t.Errorf("%s %s removed by GC", what, d)
		}
	}
	if bytes3 >= bytes2 {
		t.Errorf("crpe_store_bytes did not drop: %v after v2, %v after v3 and GC", bytes2, bytes3)
	}
	if want := bytes2 + float64(s3.Import.BytesReceived) - freed; bytes3 != want {
		t.Errorf("crpe_store_bytes %v, want %v (after v2) + %d (v3 received) - %v (freed) = %v", bytes3, bytes2, s3.Import.BytesReceived, freed, want)
	}
	if disk := storeBytesOnDisk(t, a.Data); float64(disk) != bytes3 {
		t.Errorf("after GC: crpe_store_bytes %v, the blobs on disk %d", bytes3, disk)
	}

	// tags still resolve; kept versions by digest; v1 is gone
	if code, body, _ := get(t, a.URL+"/v2/library/app/manifests/stable?ns=docker.io"); code != http.StatusOK || digest.FromBytes(body) != v.apps[2].Manifest.Desc.Digest {
		t.Errorf("app:stable: %d %s, want v3 %s", code, digest.FromBytes(body), v.apps[2].Manifest.Desc.Digest)
	}
	if code, _, _ := get(t, a.URL+"/v2/docker.io/library/side/manifests/1.0"); code != http.StatusOK {
		t.Errorf("side:1.0 (tag of expired v1): %d", code)
	}
	if code, _, _ := get(t, a.URL+"/v2/docker.io/library/app/manifests/"+string(v.apps[1].Manifest.Desc.Digest)); code != http.StatusOK {
		t.Errorf("v2's manifest by digest: %d", code)
	}
	if code, _, _ := get(t, a.URL+"/v2/docker.io/library/app/blobs/"+string(v.apps[1].Layers[1].Desc.Digest)); code != http.StatusOK {
		t.Errorf("v2's distinct layer: %d", code)
	}
	if code, _, _ := get(t, a.URL+"/v2/docker.io/library/app/manifests/"+string(v1.Manifest.Desc.Digest)); code != http.StatusNotFound {
		t.Errorf("v1's manifest by digest after GC: %d, want 404", code)
	}
	code, body, _ := get(t, a.URL+"/api/v1/kubepkgs/default/app")
	var pkg struct {
		Version string `json:"version"`
		History []struct {
			Version string `json:"version"`
			Expired bool   `json:"expired"`
		} `json:"history"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &pkg) != nil {
		t.Fatalf("GET /api/v1/kubepkgs/default/app: %d %s", code, body)
	}
	if pkg.Version != "3.0.0" || len(pkg.History) != 3 || !pkg.History[0].Expired || pkg.History[1].Expired || pkg.History[2].Expired {
		t.Errorf("app after v3: %s", body)
	}

	// fsck on the data folder once the agent is stopped
	stopAgent(t, a)
	r := crpe(ctx, t, "fsck", "--data", a.Data)
	if r.Code != 0 || !strings.Contains(r.Stdout, ": 0 problems") {
		t.Errorf("fsck after GC: %s", r)
	}
}

// TestKubePkgsAPI: GET /api/v1/kubepkgs lists packages (anonymous read), GET
// /api/v1/kubepkgs/{ns}/{name} gives one with its history; a package
// without metadata.namespace lands in the agent's --namespace.
func TestKubePkgsAPI(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	v := newVersions(t)
	libV1 := v.export(ctx, t, "lib", "", "1.0.0", 0)
	libV2 := v.export(ctx, t, "lib", "", "1.1.0", 1)
	ops := v.export(ctx, t, "tool", "ops", "0.1.0", 2)
	a := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--namespace", "team-a"}})

	before := time.Now().UTC().Add(-time.Second)
	s := importTo(ctx, t, libV1, a.URL, a.Token)
	if len(s.Import.Packages) != 1 || s.Import.Packages[0].Namespace != "team-a" {
		t.Errorf("lib without metadata.namespace imported as %+v, want namespace team-a", s.Import.Packages)
	}
	importTo(ctx, t, libV2, a.URL, a.Token)
	importTo(ctx, t, ops, a.URL, a.Token)
	after := time.Now().UTC().Add(time.Second)

	code, body, _ := get(t, a.URL+"/api/v1/kubepkgs")
	var list struct {
		Items []struct {
			Namespace  string            `json:"namespace"`
			Name       string            `json:"name"`
			Version    string            `json:"version"`
			ImportedAt string            `json:"importedAt"`
			Images     map[string]string `json:"images"`
		} `json:"items"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/v1/kubepkgs: %d %s", code, body)
	}
	got := map[string]string{}
	for _, it := range list.Items {
		got[it.Namespace+"/"+it.Name] = it.Version
		at, err := time.Parse(time.RFC3339, it.ImportedAt)
		if err != nil || at.Before(before) || at.After(after) {
			t.Errorf("%s/%s importedAt %q (%v), want a time of this test", it.Namespace, it.Name, it.ImportedAt, err)
		}
		switch it.Name {
		case "lib":
			if it.Images[refApp] != string(v.apps[1].Manifest.Desc.Digest) || len(it.Images) != 1 {
				t.Errorf("lib images %v, want app:stable = v2 %s", it.Images, v.apps[1].Manifest.Desc.Digest)
			}
		case "tool":
			if it.Images[refApp] != string(v.apps[2].Manifest.Desc.Digest) {
				t.Errorf("tool images %v", it.Images)
			}
		}
	}
	if len(got) != 2 || got["team-a/lib"] != "1.1.0" || got["ops/tool"] != "0.1.0" {
		t.Errorf("GET /api/v1/kubepkgs: %v, want team-a/lib@1.1.0 and ops/tool@0.1.0\n%s", got, body)
	}

	code, body, _ = get(t, a.URL+"/api/v1/kubepkgs/team-a/lib")
	var pkg struct {
		Namespace string            `json:"namespace"`
		Name      string            `json:"name"`
		Version   string            `json:"version"`
		Images    map[string]string `json:"images"`
		History   []struct {
			Version    string            `json:"version"`
			Images     map[string]string `json:"images"`
			ImportedAt time.Time         `json:"importedAt"`
		} `json:"history"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &pkg) != nil {
		t.Fatalf("GET /api/v1/kubepkgs/team-a/lib: %d %s", code, body)
	}
	var hv []string
	for _, h := range pkg.History {
		hv = append(hv, h.Version)
	}
	sort.Strings(hv)
	if pkg.Namespace != "team-a" || pkg.Name != "lib" || pkg.Version != "1.1.0" || strings.Join(hv, ",") != "1.0.0,1.1.0" {
		t.Errorf("team-a/lib: %s/%s@%s history %v, want team-a/lib@1.1.0 with history 1.0.0,1.1.0", pkg.Namespace, pkg.Name, pkg.Version, hv)
	}
	for _, h := range pkg.History {
		want := v.apps[0].Manifest.Desc.Digest
		if h.Version == "1.1.0" {
			want = v.apps[1].Manifest.Desc.Digest
		}
		if h.Images[refApp] != string(want) || h.ImportedAt.IsZero() {
			t.Errorf("history %s: images %v at %v, want app:stable = %s", h.Version, h.Images, h.ImportedAt, want)
		}
	}
	if code, _, _ := get(t, a.URL+"/api/v1/kubepkgs/default/lib"); code != http.StatusNotFound {
		t.Errorf("default/lib: %d, want 404 (the package is in team-a)", code)
	}
	if code, _, _ := get(t, a.URL+"/api/v1/kubepkgs/ops/tool"); code != http.StatusOK {
		t.Errorf("ops/tool: %d", code)
	}
}
