package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/upstream"
	"github.com/octohelm/crpe/internal/version"
)

// upstreamFlags are the flags of every command that reaches registries.
type upstreamFlags struct {
	endpoints []string
	insecure  []string
	config    string
	offline   bool
}

func (u *upstreamFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&u.endpoints, "registry-endpoint", nil, "send a registry's traffic to a mirror: HOST=URL (repeatable)")
	f.StringSliceVar(&u.insecure, "insecure-registry", nil, "hosts reached over plain HTTP (loopback always is)")
	f.StringVar(&u.config, "upstream-config", "", "YAML file with endpoints: {HOST: URL} and insecure: [HOST]")
	f.BoolVar(&u.offline, "offline", false, "never ask an upstream: serve only what is cached")
}

// upstreamConfig is the --upstream-config file.
type upstreamConfig struct {
	Endpoints map[string]string `json:"endpoints"`
	Insecure  []string          `json:"insecure"`
}

func (u *upstreamFlags) options() (upstream.Options, error) {
	o := upstream.Options{Endpoints: map[string]string{}, UserAgent: "crpe/" + version.Get().Version}
	if u.config != "" {
		b, err := os.ReadFile(u.config)
		if err != nil {
			return o, err
		}
		var c upstreamConfig
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			return o, fmt.Errorf("%s: %w", u.config, err)
		}
		for h, ep := range c.Endpoints {
			host, base, err := upstream.ParseEndpoint(h + "=" + ep)
			if err != nil {
				return o, fmt.Errorf("%s: %w", u.config, err)
			}
			o.Endpoints[host] = base
		}
		o.Insecure = append(o.Insecure, c.Insecure...)
	}
	for _, e := range u.endpoints {
		host, base, err := upstream.ParseEndpoint(e)
		if err != nil {
			return o, err
		}
		o.Endpoints[host] = base
	}
	o.Insecure = append(o.Insecure, u.insecure...)
	return o, nil
}

// defaultPocketData is where the pocket keeps its cache unless --data says.
func defaultPocketData() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "crpe")
	}
	return "crpe-data"
}
