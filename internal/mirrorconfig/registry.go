package mirrorconfig

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/atomicfile"
)

// SiteRegistry says how the nodes reach a site registry that `crpe import
// --to-registry` filled: its URL (https://reg.lan[:port]), the prefix the
// packages went under, and whether their names were flattened.
type SiteRegistry struct {
	// URL is scheme://host[:port][/PREFIX] (https:// when no scheme is
	// given).
	URL string
	// Flat: repositories are PREFIX/docker.io_library_nginx (crpe import
	// --flatten). containerd has no rewrite: only k3s can pull those.
	Flat bool
}

// parse splits the site registry's URL into scheme://host and the prefix.
func (s SiteRegistry) parse() (base, prefix string, err error) {
	raw := s.URL
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", "", fmt.Errorf("registry %q: want [https://]HOST[:PORT][/PREFIX]", s.URL)
	}
	return u.Scheme + "://" + u.Host, strings.Trim(u.Path, "/"), nil
}

// hostComponent is a source host as a path component (registrypush's
// HostComponent: a port's colon becomes "_").
func hostComponent(h string) string { return strings.ReplaceAll(strings.ToLower(h), ":", "_") }

// RegistryHostsTOML renders the hosts.toml of source host for a site
// registry: containerd sends docker.io/library/nginx to
// <base>/v2/PREFIX/docker.io/library/nginx (override_path, containerd
// ≥ 1.6), so pods keep their references.
func RegistryHostsTOML(o Options, s SiteRegistry, host string) (string, error) {
	base, prefix, err := s.parse()
	if err != nil {
		return "", err
	}
	if s.Flat {
		return "", fmt.Errorf("containerd cannot pull flattened names (it has no rewrite): use the nested naming, or k3s's registries.yaml (--format k3s)")
	}
	if host == "*" {
		return "", fmt.Errorf("a site registry needs each source host named (--hosts docker.io,ghcr.io): its path holds the host")
	}
	path := "/v2/" + hostComponent(host)
	if prefix != "" {
		path = "/v2/" + prefix + "/" + hostComponent(host)
	}
	var b strings.Builder
	b.WriteString("# written by crpe mirror-config --registry: pull " + host + " from the site registry\n")
	fmt.Fprintf(&b, "server = %q\n", upstreamServer(host))
	fmt.Fprintf(&b, "\n[host.%q]\n", base+path)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	b.WriteString("  override_path = true\n")
	if strings.HasPrefix(base, "https://") {
		if o.CAFile != "" {
			fmt.Fprintf(&b, "  ca = %q\n", o.CAFile)
		}
		if o.SkipVerify {
			b.WriteString("  skip_verify = true\n")
		}
	}
	return b.String(), nil
}

// WriteRegistryContainerd writes dir/<host>/hosts.toml for every host.
func WriteRegistryContainerd(o Options, s SiteRegistry, dir string) ([]string, error) {
	hosts, err := o.hosts()
	if err != nil {
		return nil, err
	}
	var files []string
	for _, h := range hosts {
		body, err := RegistryHostsTOML(o, s, h)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, h, "hosts.toml")
		if err := atomicfile.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
		files = append(files, p)
	}
	return files, nil
}

// maxFlatDepth is how deep a source path the flattened rewrite rules of k3s
// cover (k3s's rewrite is one regular expression per rule).
const maxFlatDepth = 6

// RegistryRegistriesYAML renders a k3s registries.yaml pulling every host
// from the site registry with rewrite rules: library/nginx →
// PREFIX/docker.io/library/nginx (or PREFIX/docker.io_library_nginx when
// flat).
func RegistryRegistriesYAML(o Options, s SiteRegistry) (string, error) {
	base, prefix, err := s.parse()
	if err != nil {
		return "", err
	}
	hosts, err := o.hosts()
	if err != nil {
		return "", err
	}
	pre := ""
	if prefix != "" {
		pre = prefix + "/"
	}
	mirrors := map[string]any{}
	for _, h := range hosts {
		if h == "*" {
			return "", fmt.Errorf("a site registry needs each source host named (--hosts docker.io,ghcr.io): its path holds the host")
		}
		hc := hostComponent(h)
		rw := map[string]string{}
		if s.Flat {
			// one rule per depth: "_" joins the components
			for n := 1; n <= maxFlatDepth; n++ {
				re := "^" + strings.TrimSuffix(strings.Repeat("([^/]+)/", n), "/") + "$"
				var to []string
				for i := 1; i <= n; i++ {
					to = append(to, fmt.Sprintf("$%d", i))
				}
				rw[re] = pre + hc + "_" + strings.Join(to, "_")
			}
		} else {
			rw["^(.*)$"] = pre + hc + "/$1"
		}
		mirrors[h] = map[string]any{"endpoint": []string{base}, "rewrite": rw}
	}
	doc := map[string]any{"mirrors": mirrors}
	u, _ := url.Parse(base)
	if u.Scheme == "https" && (o.CAFile != "" || o.SkipVerify) {
		tls := map[string]any{}
		if o.CAFile != "" {
			tls["ca_file"] = o.CAFile
		}
		if o.SkipVerify {
			tls["insecure_skip_verify"] = true
		}
		doc["configs"] = map[string]any{u.Host: map[string]any{"tls": tls}}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	return "# written by crpe mirror-config --registry: pull from the site registry, references unchanged\n" + string(b), nil
}
