package importbad

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestSemverGate: a lower version is refused with 409 VERSION_CONFLICT
// (before any blob is stored, nothing published) unless forced; the same
// version again is idempotent; the CLI follows (--force).
func TestSemverGate(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startAgent(t, data)
	v100 := newFixture(t, "gate", "1.0.0", fixtureOptions{})
	v090 := newFixture(t, "gate", "0.9.0", fixtureOptions{})
	files := t.TempDir()
	f090 := filepath.Join(files, "gate-0.9.0.kubepkg.tgz")
	arch090 := v090.archive(t)
	writeFile(t, f090, arch090)
	arch100 := v100.archive(t)

	r := mustImport(t, p, arch100, putOptions{})
	if len(r.Packages) != 1 || r.Packages[0].Version != "1.0.0" || r.Packages[0].Unchanged {
		t.Fatalf("first import: %+v", r.Packages)
	}
	requirePublished(t, p, v100)
	first := packageDetail(t, p, "default", "gate")

	// the same version again: 201, unchanged, nothing received
	r = mustImport(t, p, arch100, putOptions{})
	if len(r.Packages) != 1 || !r.Packages[0].Unchanged || r.Packages[0].Version != "1.0.0" {
		t.Errorf("same version again: packages %+v, want 1.0.0 unchanged", r.Packages)
	}
	if r.BlobsReceived != 0 || r.BlobsPresent != len(v100.allBlobs()) {
		t.Errorf("same version again: blobsReceived %d blobsPresent %d, want 0 and %d", r.BlobsReceived, r.BlobsPresent, len(v100.allBlobs()))
	}
	if again := packageDetail(t, p, "default", "gate"); again["importedAt"] != first["importedAt"] || len(history(again)) != len(history(first)) {
		t.Errorf("same version again changed the record: importedAt %v -> %v, history %d -> %d entries",
			first["importedAt"], again["importedAt"], len(history(first)), len(history(again)))
	}

	// a lower version: 409, before any of its blobs is stored
	blobsBefore := storedBlobs(t, data)
	before := state(t, p, v100, v090)
	a := putBytes(t, p, arch090, putOptions{})
	e, _ := a.apiError()
	if a.status != http.StatusConflict || e.Code != "VERSION_CONFLICT" {
		t.Fatalf("downgrade: %s, want 409 VERSION_CONFLICT", a)
	}
	if !strings.Contains(e.Message, "0.9.0") || !strings.Contains(e.Message, "1.0.0") {
		t.Errorf("the 409 does not name both versions: %s", e.Message)
	}
	if after := state(t, p, v100, v090); after != before {
		t.Errorf("a refused downgrade changed what is published:\n%s\n%s", before, after)
	}
	for d := range storedBlobs(t, data) {
		if !blobsBefore[d] {
			t.Errorf("a refused downgrade stored blob %s", d)
		}
	}
	for _, ref := range v090.refs() {
		tags, _ := tagsOf(t, p, v090.repos[ref])
		if slices.Contains(tags, "0.9.0") {
			t.Errorf("%s: tag 0.9.0 published by a refused downgrade", v090.repos[ref])
		}
	}
	requirePublished(t, p, v100)

	// the CLI refuses it too
	out, code := runCrpe(t, 30*time.Second, "import", f090, "--to", p.URL, "--token", token)
	if code == 0 || !strings.Contains(out, "409") || !strings.Contains(out, "VERSION_CONFLICT") {
		t.Errorf("crpe import of a lower version: exit %d, want non-zero with 409 VERSION_CONFLICT:\n%s", code, out)
	}
	requirePublished(t, p, v100)

	// forced: 201, recorded as forced
	r = mustImport(t, p, arch090, putOptions{query: "force=true"})
	if len(r.Packages) != 1 || r.Packages[0].Version != "0.9.0" || !r.Packages[0].Forced || r.Packages[0].Previous != "1.0.0" {
		t.Errorf("forced downgrade: packages %+v, want 0.9.0 forced, previous 1.0.0", r.Packages)
	}
	requirePublished(t, p, v090)
	// 1.0.0's tags stay (other tags of the same repositories)
	for _, ref := range v100.refs() {
		if g := get(t, p, "/v2/"+v100.repos[ref]+"/manifests/1.0.0", manifestTypes...); g.status != http.StatusOK {
			t.Errorf("%s:1.0.0 gone after the forced downgrade: %d", v100.repos[ref], g.status)
		}
	}

	// the same (forced) version again through the CLI with --force: unchanged
	out, code = runCrpe(t, 30*time.Second, "import", f090, "--to", p.URL, "--token", token, "--force")
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Errorf("crpe import --force of the current version: exit %d, want 0 and \"unchanged\":\n%s", code, out)
	}
	// and without --force: the same version is not lower, so no 409
	out, code = runCrpe(t, 30*time.Second, "import", f090, "--to", p.URL, "--token", token, "--json")
	if code != 0 {
		t.Errorf("crpe import of the current version: exit %d:\n%s", code, out)
	} else {
		var res struct {
			Import importResult `json:"import"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Import.Packages) != 1 || !res.Import.Packages[0].Unchanged {
			t.Errorf("crpe import --json of the current version: want one unchanged package: %v\n%s", err, out)
		}
	}
	if items := listPackages(t, p); len(items) != 1 || items[0].Version != "0.9.0" {
		t.Errorf("packages %+v, want gate@0.9.0", items)
	}
	detail := packageDetail(t, p, "default", "gate")
	var versions []string
	for _, h := range history(detail) {
		if m, ok := h.(map[string]any); ok {
			versions = append(versions, m["version"].(string))
		}
	}
	if !slices.Equal(versions, []string{"1.0.0", "0.9.0"}) {
		t.Errorf("history versions %v, want [1.0.0 0.9.0]", versions)
	}
	stopAgent(t, p)
	requireFsckClean(t, "semver", data)
}

func packageDetail(t *testing.T, p *testenv.Proc, ns, name string) map[string]any {
	t.Helper()
	g := get(t, p, "/api/v1/kubepkgs/"+ns+"/"+name)
	if g.status != http.StatusOK {
		t.Fatalf("GET /api/v1/kubepkgs/%s/%s: %d %s", ns, name, g.status, g.body)
	}
	var m map[string]any
	if err := json.Unmarshal(g.body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func history(m map[string]any) []any {
	h, _ := m["history"].([]any)
	return h
}
