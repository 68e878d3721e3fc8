package toregistry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

// A real containerd fetches docker.io/library/nginx:alpine and
// ghcr.io/octohelm/app:v1, references unchanged, from the site registry
// (distribution v3 over TLS from the test's CA) through the hosts.toml that
// `crpe mirror-config --registry` wrote (override_path).
func TestContainerdPullsThroughMirrorConfig(t *testing.T) {
	reg := testenv.StartRegistry3(t, testenv.Registry3Options{TLS: true})
	p, file := fixture(t, 21)
	push(t, nil, file, "--to-registry", reg.Addr+"/site", "--ca-file", reg.CAFile)
	certs := filepath.Join(t.TempDir(), "certs.d")
	r := crpe(t, nil, "mirror-config", "--registry", reg.Addr+"/site", "--hosts", "docker.io,ghcr.io", "--ca-file", reg.CAFile, "-o", certs)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	toml, _ := os.ReadFile(filepath.Join(certs, "docker.io", "hosts.toml"))
	if !strings.Contains(string(toml), `[host."https://`+reg.Addr+`/v2/site/docker.io"]`) || !strings.Contains(string(toml), "override_path = true") {
		t.Fatalf("hosts.toml:\n%s", toml)
	}
	ctd := testenv.StartContainerd(t)
	ctx := testenv.WaitCtx(t, 2*time.Minute)
	for _, im := range p.Images {
		ref := im.Name + ":" + im.Tag
		if out, err := ctd.Ctr(ctx, "content", "fetch", "--hosts-dir", certs, "--platform", "linux/amd64", ref); err != nil {
			t.Fatalf("fetch %s: %v\n%s", ref, err, out)
		}
	}
	out, err := ctd.Ctr(ctx, "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range p.Images {
		for _, l := range im.Children[0].Layers {
			if !strings.Contains(out, string(l.Desc.Digest)) {
				t.Errorf("containerd lacks layer %s of %s", l.Desc.Digest, im.Ref)
			}
		}
	}
	if n := strings.Count(reg.Logs(), "/v2/site/docker.io/library/nginx/manifests/alpine"); n == 0 {
		t.Error("the registry saw no request for site/docker.io/library/nginx:alpine")
	}
}
