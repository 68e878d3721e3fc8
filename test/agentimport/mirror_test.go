package agentimport

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/testenv"
)

// ctrImages parses `ctr images ls` into ref → fields (REF TYPE DIGEST ...).
func ctrImages(out string) map[string][]string {
	res := map[string][]string{}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 3 {
			continue
		}
		res[f[0]] = f
	}
	return res
}

// TestContainerdMirror: the nodes' containerd pulls an imported image from
// the agent, by its original name, with no upstream reachable.
//
//	docker-registry ── crpe export --platform linux/amd64 ──▶ kubepkg.tgz
//	(registry stopped)   crpe import --to agent
//	crpe mirror-config --hosts docker.io -o certs.d
//	ctr images pull --hosts-dir certs.d docker.io/library/nginx:alpine
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	ctd := testenv.StartContainerd(t)
	reg := testenv.StartDistribution(t)

	// a multi-arch OCI index docker.io/library/nginx:alpine (linux/amd64 +
	// linux/arm64) of unpackable images
	imA := realImage(t, amd64, map[string][]byte{"etc/arch": []byte("amd64\n"), "usr/share/nginx/blob": randBytes(256 << 10)})
	imB := realImage(t, arm64, map[string][]byte{"etc/arch": []byte("arm64\n"), "usr/share/nginx/blob": randBytes(256 << 10)})
	idx := testenv.NewIndex([]testenv.Image{imA, imB}, false)
	testenv.PushIndex(t, reg.URL, "library/nginx", "alpine", []testenv.Image{imA, imB}, idx)

	file := exportPkg(ctx, t, reg, `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: web
  namespace: default
spec:
  version: 1.0.0
  images:
    "docker.io/library/nginx:alpine": ""
`, t.TempDir(), "--platform", "linux/amd64")
	reg.Stop() // from here on, no upstream is reachable

	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--log-level", "debug"}})
	sum := importTo(ctx, t, file, agent.URL, agent.Token)
	if got := sum.Import.Images["docker.io/library/nginx:alpine"]; got != string(idx.Desc.Digest) {
		t.Fatalf("import: nginx:alpine = %q, want the upstream index %s", got, idx.Desc.Digest)
	}

	// containerd reaches the agent through a proxy that keeps the HTTP
	// exchange, to see the ?ns= dialect on the wire
	px := testenv.StartProxy(t, agent.Addr, 0, 4<<20)
	certs := filepath.Join(t.TempDir(), "certs.d")
	r := mustCrpe(ctx, t, "mirror-config", "--agent", px.URL, "--hosts", "docker.io", "-o", certs)
	hostsFile := filepath.Join(certs, "docker.io", "hosts.toml")
	if strings.TrimSpace(r.Stdout) != hostsFile {
		t.Errorf("mirror-config printed %q, want %q", r.Stdout, hostsFile)
	}
	toml, err := os.ReadFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(toml), `[host."`+px.URL+`"]`) || !strings.Contains(string(toml), `capabilities = ["pull", "resolve"]`) {
		t.Errorf("hosts.toml does not name the agent with pull and resolve:\n%s", toml)
	}

	out, err := ctd.Ctr(ctx, "images", "pull", "--platform", "linux/amd64", "--hosts-dir", certs,
		"--snapshotter", "native", "docker.io/library/nginx:alpine")
	if err != nil {
		t.Fatalf("ctr images pull through the agent: %v\nagent log:\n%s", err, agent.Logs())
	}
	t.Logf("ctr images pull: %s", lastLine(out))
	out, err = ctd.Ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	if f := ctrImages(out)["docker.io/library/nginx:alpine"]; len(f) < 3 || f[2] != string(idx.Desc.Digest) {
		t.Errorf("ctr images ls: nginx:alpine is %v, want the exported index %s\n%s", f, idx.Desc.Digest, out)
	}
	out, err = ctd.Ctr(ctx, "images", "check", "--snapshotter", "native")
	if err != nil {
		t.Fatal(err)
	}
	if f := ctrImages(out)["docker.io/library/nginx:alpine"]; len(f) < 4 || f[3] != "complete" || f[len(f)-1] != "true" {
		t.Errorf("ctr images check: nginx:alpine is %v, want complete and unpacked\n%s", f, out)
	}

	// on the wire: containerd asked for /v2/library/nginx/...?ns=docker.io,
	// and the agent answered OCI-Namespace: docker.io
	up, down := px.Captured()
	if !strings.Contains(up, "/v2/library/nginx/manifests/alpine?ns=docker.io") {
		t.Errorf("containerd's requests do not carry ?ns=docker.io:\n%s", truncate(requestLines(up), 2000))
	}
	if !strings.Contains(up, "/v2/library/nginx/blobs/"+string(imA.Layers[0].Desc.Digest)+"?ns=docker.io") &&
		!strings.Contains(up, "/v2/library/nginx/blobs/"+string(imA.Layers[1].Desc.Digest)+"?ns=docker.io") {
		t.Errorf("containerd fetched no layer with ?ns=docker.io:\n%s", truncate(requestLines(up), 2000))
	}
	if !strings.Contains(strings.ToLower(down), "oci-namespace: docker.io") {
		t.Errorf("the agent's answers lack OCI-Namespace: docker.io")
	}
	// the agent's request log (debug) has the mirror requests, query included
	if !strings.Contains(agent.Logs(), "/v2/library/nginx/manifests/alpine?ns=docker.io") {
		t.Errorf("the agent's request log lacks /v2/library/nginx/manifests/alpine:\n%s", truncate(agent.Logs(), 3000))
	}
	t.Logf("containerd's requests to the agent:\n%s", requestLines(up))

	// the other way in: gzip -dc FILE | ctr images import --platform linux/amd64 -
	// (containerd 1.6 reads a plain tar only), in a namespace of its own
	gz, err := exec.CommandContext(ctx, "gzip", "-dc", file).Output()
	if err != nil {
		t.Fatalf("gzip -dc: %v", err)
	}
	ns := "crpe-import"
	out, err = ctrNS(ctx, t, ctd, ns, gz, "images", "import", "--platform", "linux/amd64", "--snapshotter", "native", "-")
	if err != nil {
		t.Fatalf("gzip -dc FILE | ctr images import --platform linux/amd64 -: %v", err)
	}
	out, err = ctrNS(ctx, t, ctd, ns, nil, "images", "check", "--snapshotter", "native")
	if err != nil {
		t.Fatal(err)
	}
	if f := ctrImages(out)["docker.io/library/nginx:alpine"]; len(f) < 4 || f[2] != string(idx.Desc.Digest) || f[3] != "complete" {
		t.Errorf("after ctr images import: nginx:alpine is %v, want %s complete\n%s", f, idx.Desc.Digest, out)
	}

	// k3s: registries.yaml with a "*" mirror naming the agent
	r = mustCrpe(ctx, t, "mirror-config", "--agent", agent.URL, "--format", "k3s", "--hosts", "*")
	var reg3s struct {
		Mirrors map[string]struct {
			Endpoint []string `json:"endpoint"`
		} `json:"mirrors"`
	}
	if err := yaml.UnmarshalStrict([]byte(r.Stdout), &reg3s); err != nil {
		t.Fatalf("k3s registries.yaml does not parse: %v\n%s", err, r.Stdout)
	}
	if m, ok := reg3s.Mirrors["*"]; !ok || len(m.Endpoint) != 1 || m.Endpoint[0] != agent.URL {
		t.Errorf("registries.yaml mirrors = %+v, want \"*\": endpoint [%s]\n%s", reg3s.Mirrors, agent.URL, r.Stdout)
	}
}

// ctrNS runs ctr in namespace ns (Containerd.Ctr always uses crpe-test).
func ctrNS(ctx context.Context, t *testing.T, ctd *testenv.Containerd, ns string, stdin []byte, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Peer(t, "ctr", "apt-get install containerd")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--address", ctd.Socket, "--namespace", ns}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &ctrError{args: args, out: string(out), err: err}
	}
	return string(out), nil
}

type ctrError struct {
	args []string
	out  string
	err  error
}

func (e *ctrError) Error() string {
	return "ctr " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.out
}

// requestLines keeps the HTTP request lines of a captured client stream.
func requestLines(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\r\n") {
		for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT "} {
			if strings.HasPrefix(line, m) && strings.HasSuffix(line, " HTTP/1.1") {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
