package mirrorconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestHostsTOML(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteContainerd(Options{Agent: "https://agent.lan:36060", Hosts: []string{"docker.io", "ghcr.io", "*"}, CAFile: "/etc/crpe/ca.crt", PullToken: "t0k"}, dir)
	if err != nil || len(files) != 3 {
		t.Fatalf("%v %v", files, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
	s := string(b)
	for _, want := range []string{`server = "https://registry-1.docker.io"`, `[host."https://agent.lan:36060"]`, `capabilities = ["pull", "resolve"]`, `ca = "/etc/crpe/ca.crt"`, `Authorization = ["Basic Y3JwZTp0MGs="]`} {
		if !strings.Contains(s, want) {
			t.Errorf("docker.io hosts.toml lacks %s:\n%s", want, s)
		}
	}
	b, _ = os.ReadFile(filepath.Join(dir, "_default", "hosts.toml"))
	if strings.Contains(string(b), "server =") {
		t.Errorf("_default names a server:\n%s", b)
	}
	if _, err := WriteContainerd(Options{Agent: "agent:36060", Hosts: []string{"docker.io"}}, dir); err == nil {
		t.Error("agent URL without scheme accepted")
	}
	if _, err := WriteContainerd(Options{Agent: "http://a:1", Hosts: []string{"a/b"}}, dir); err == nil {
		t.Error("bad host accepted")
	}
}

func TestRegistriesYAML(t *testing.T) {
	s, err := RegistriesYAML(Options{Agent: "http://10.1.2.3:36060", Hosts: []string{"docker.io", "*"}, PullToken: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mirrors map[string]struct{ Endpoint []string } `json:"mirrors"`
		Configs map[string]struct {
			Auth struct{ Username, Password string } `json:"auth"`
		} `json:"configs"`
	}
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Mirrors["docker.io"].Endpoint[0] != "http://10.1.2.3:36060" || doc.Mirrors["*"].Endpoint[0] != "http://10.1.2.3:36060" {
		t.Fatalf("%s", s)
	}
	if doc.Configs["10.1.2.3:36060"].Auth.Password != "x" {
		t.Fatalf("%s", s)
	}
}
