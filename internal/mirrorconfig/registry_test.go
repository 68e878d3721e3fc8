package mirrorconfig

import (
	"strings"
	"testing"
)

func TestSiteRegistry(t *testing.T) {
	o := Options{Hosts: []string{"docker.io", "10.0.0.1:5000"}, CAFile: "/etc/ssl/site.pem"}
	s, err := RegistryHostsTOML(o, SiteRegistry{URL: "reg.lan/crpe"}, "10.0.0.1:5000")
	if err != nil || !strings.Contains(s, `[host."https://reg.lan/v2/crpe/10.0.0.1_5000"]`) || !strings.Contains(s, "override_path = true") || !strings.Contains(s, `ca = "/etc/ssl/site.pem"`) {
		t.Errorf("hosts.toml: %v\n%s", err, s)
	}
	if _, err := RegistryHostsTOML(o, SiteRegistry{URL: "reg.lan/crpe", Flat: true}, "docker.io"); err == nil {
		t.Error("containerd with flattened names was written")
	}
	y, err := RegistryRegistriesYAML(o, SiteRegistry{URL: "reg.lan/crpe"})
	if err != nil || !strings.Contains(y, `^(.*)$: crpe/docker.io/$1`) || !strings.Contains(y, "ca_file: /etc/ssl/site.pem") {
		t.Errorf("registries.yaml: %v\n%s", err, y)
	}
	y, err = RegistryRegistriesYAML(o, SiteRegistry{URL: "http://reg.lan:5000", Flat: true})
	if err != nil || !strings.Contains(y, `^([^/]+)/([^/]+)$: docker.io_$1_$2`) || !strings.Contains(y, "- http://reg.lan:5000") {
		t.Errorf("flat registries.yaml: %v\n%s", err, y)
	}
}
