package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/mirrorconfig"
)

func newMirrorConfigCmd() *cobra.Command {
	var (
		o                  mirrorconfig.Options
		hosts, format, out string
		pullTokenFile      string
		site               mirrorconfig.SiteRegistry
	)
	cmd := &cobra.Command{
		Use:   "mirror-config --agent URL | --registry HOST/PREFIX",
		Short: "Write the nodes' containerd hosts.toml (or k3s registries.yaml) naming the agent as mirror",
		Long: `crpe mirror-config tells the nodes' containerd to pull through the agent, so
pods keep their image references (docker.io/library/nginx:alpine) and need no
internet. --format containerd writes DIR/<host>/hosts.toml, where DIR is the
certs.d folder itself (containerd's config_path, or ctr --hosts-dir); --hosts
'*' writes _default/hosts.toml. --format k3s writes a registries.yaml (to stdout
or -o FILE).

With --registry HOST[/PREFIX] (a site registry crpe import --to-registry
filled) each source host is sent to that registry's path for it:
containerd's hosts.toml gets the server URL https://HOST/v2/PREFIX/docker.io
with override_path = true (containerd 1.6 and later), k3s's registries.yaml a
rewrite rule (^(.*)$ → PREFIX/docker.io/$1). Pods keep
docker.io/library/nginx:alpine; nothing is mutated. Names pushed with
--flatten can be pulled by k3s only (one rewrite rule per path depth, up to
6): containerd has no rewrite. Give every source host the packages use.`,
		Example: `  crpe mirror-config --agent http://10.0.0.5:36060 --hosts docker.io,ghcr.io,quay.io -o /etc/containerd/certs.d
  crpe mirror-config --agent http://10.0.0.5:36060 --hosts '*' --format k3s -o /etc/rancher/k3s/registries.yaml
  crpe mirror-config --agent https://agent.lan:36060 --ca-file /etc/crpe/ca.crt --pull-token-file token -o certs.d
  crpe mirror-config --registry harbor.lan/crpe --hosts docker.io,ghcr.io --ca-file /etc/ssl/site-ca.pem -o /etc/containerd/certs.d
  crpe mirror-config --registry harbor.lan/crpe --flatten --hosts docker.io,ghcr.io --format k3s -o /etc/rancher/k3s/registries.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Hosts = strings.Split(hosts, ",")
			if pullTokenFile != "" {
				toks, err := auth.LoadTokens(pullTokenFile)
				if err != nil {
					return err
				}
				o.PullToken = toks.First()
			}
			if (o.Agent == "") == (site.URL == "") {
				return fmt.Errorf("give one of --agent URL or --registry HOST/PREFIX")
			}
			// the agent as the nodes' mirror, or the site registry
			writeContainerd := func(dir string) ([]string, error) { return mirrorconfig.WriteContainerd(o, dir) }
			registriesYAML := func() (string, error) { return mirrorconfig.RegistriesYAML(o) }
			if site.URL != "" {
				writeContainerd = func(dir string) ([]string, error) { return mirrorconfig.WriteRegistryContainerd(o, site, dir) }
				registriesYAML = func() (string, error) { return mirrorconfig.RegistryRegistriesYAML(o, site) }
			}
			switch format {
			case "containerd":
				if out == "" {
					return fmt.Errorf("-o DIR is required for --format containerd (the certs.d folder)")
				}
				files, err := writeContainerd(out)
				if err != nil {
					return err
				}
				for _, f := range files {
					fmt.Fprintln(cmd.OutOrStdout(), f)
				}
				return nil
			case "k3s":
				s, err := registriesYAML()
				if err != nil {
					return err
				}
				if out == "" || out == "-" {
					_, err = fmt.Fprint(cmd.OutOrStdout(), s)
					return err
				}
				return atomicfile.WriteFile(out, []byte(s), 0o600)
			}
			return fmt.Errorf("--format %q: want containerd or k3s", format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Agent, "agent", "", "the agent's URL as the nodes reach it (http(s)://host:port)")
	f.StringVar(&hosts, "hosts", "docker.io", "registry hosts to mirror, comma-separated; '*' for every host")
	f.StringVar(&format, "format", "containerd", "containerd (hosts.toml files) or k3s (registries.yaml)")
	f.StringVarP(&out, "output", "o", "", "certs.d folder (containerd) or registries.yaml file (k3s; default stdout)")
	f.StringVar(&o.CAFile, "ca-file", "", "CA bundle path on the nodes, for an https agent")
	f.BoolVar(&o.SkipVerify, "skip-verify", false, "do not verify the agent's TLS certificate")
	f.StringVar(&pullTokenFile, "pull-token-file", "", "token file, when the agent requires a token for pulls")
	f.StringVar(&site.URL, "registry", "", "a site registry filled by crpe import --to-registry: [https://]HOST[:PORT][/PREFIX]")
	f.BoolVar(&site.Flat, "flatten", false, "with --registry: the names were flattened (crpe import --flatten; k3s only)")
	return cmd
}
