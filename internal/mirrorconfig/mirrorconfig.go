// Package mirrorconfig renders what the nodes need to pull through the
// agent: containerd's certs.d/<host>/hosts.toml files, or k3s's
// registries.yaml, naming the agent as the mirror of each registry host.
package mirrorconfig

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/atomicfile"
)

// Options say what to render.
type Options struct {
	// Agent is the agent's base URL as the nodes reach it.
	Agent string
	// Hosts are the registry hosts to mirror; "*" is every host.
	Hosts []string
	// CAFile is a CA bundle path on the nodes, for an https agent.
	CAFile string
	// SkipVerify turns off TLS verification of the agent.
	SkipVerify bool
	// PullToken, when the agent requires one for pulls.
	PullToken string
}

func (o Options) agentURL() (*url.URL, error) {
	u, err := url.Parse(o.Agent)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("agent URL %q: want http(s)://host[:port]", o.Agent)
	}
	return u, nil
}

func (o Options) hosts() ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, h := range o.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || seen[h] {
			continue
		}
		if h != "*" && strings.ContainsAny(h, "/ \\") {
			return nil, fmt.Errorf("registry host %q: want a host[:port]", h)
		}
		seen[h] = true
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no registry host given")
	}
	sort.Strings(out)
	return out, nil
}

func upstreamServer(host string) string {
	if host == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

func basic(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("crpe:"+token))
}

// HostsTOML renders the hosts.toml of one registry host ("*" renders the
// _default one).
func HostsTOML(o Options, host string) (string, error) {
	u, err := o.agentURL()
	if err != nil {
		return "", err
	}
	agent := u.Scheme + "://" + u.Host
	var b strings.Builder
	b.WriteString("# written by crpe mirror-config: pull " + host + " through the crpe agent\n")
	if host != "*" {
		fmt.Fprintf(&b, "server = %q\n", upstreamServer(host))
	}
	fmt.Fprintf(&b, "\n[host.%q]\n", agent)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if u.Scheme == "https" {
		if o.CAFile != "" {
			fmt.Fprintf(&b, "  ca = %q\n", o.CAFile)
		}
		if o.SkipVerify {
			b.WriteString("  skip_verify = true\n")
		}
	}
	if o.PullToken != "" {
		fmt.Fprintf(&b, "\n[host.%q.header]\n", agent)
		fmt.Fprintf(&b, "  Authorization = [%q]\n", basic(o.PullToken))
	}
	return b.String(), nil
}

// WriteContainerd writes dir/<host>/hosts.toml for every host (dir is the
// certs.d folder itself, as containerd's config_path or ctr --hosts-dir
// take it) and returns the files written.
func WriteContainerd(o Options, dir string) ([]string, error) {
	hosts, err := o.hosts()
	if err != nil {
		return nil, err
	}
	var files []string
	for _, h := range hosts {
		body, err := HostsTOML(o, h)
		if err != nil {
			return nil, err
		}
		sub := h
		if h == "*" {
			sub = "_default"
		}
		// containerd names a host:port folder with the port as is
		p := filepath.Join(dir, sub, "hosts.toml")
		if err := atomicfile.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
		files = append(files, p)
	}
	return files, nil
}

// RegistriesYAML renders a k3s registries.yaml.
func RegistriesYAML(o Options) (string, error) {
	u, err := o.agentURL()
	if err != nil {
		return "", err
	}
	hosts, err := o.hosts()
	if err != nil {
		return "", err
	}
	agent := u.Scheme + "://" + u.Host
	mirrors := map[string]any{}
	for _, h := range hosts {
		mirrors[h] = map[string]any{"endpoint": []string{agent}}
	}
	doc := map[string]any{"mirrors": mirrors}
	cfg := map[string]any{}
	if o.PullToken != "" {
		cfg["auth"] = map[string]string{"username": "crpe", "password": o.PullToken}
	}
	if u.Scheme == "https" && (o.CAFile != "" || o.SkipVerify) {
		tls := map[string]any{}
		if o.CAFile != "" {
			tls["ca_file"] = o.CAFile
		}
		if o.SkipVerify {
			tls["insecure_skip_verify"] = true
		}
		cfg["tls"] = tls
	}
	if len(cfg) > 0 {
		doc["configs"] = map[string]any{u.Host: cfg}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	return "# written by crpe mirror-config: pull through the crpe agent\n" + string(b), nil
}
