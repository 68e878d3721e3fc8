package cli

import (
	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/pocket"
)

func newServeCmd(g *globals) *cobra.Command {
	cfg := pocket.Config{}
	var up upstreamFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the pocket: a pull-through cache of any number of registries",
		Long: `crpe serve runs the pocket on a laptop, a phone or a small board. It serves a
read-only OCI registry over its cache in --data and fills the cache from the
upstream registries on demand:

  /v2/docker.io/library/nginx/manifests/alpine
  /v2/library/nginx/manifests/alpine?ns=docker.io      (containerd's mirror dialect)
  /v2/library/nginx/manifests/alpine                   (Docker's registry-mirrors:
                                                        --default-registry, docker.io)

Digests are served from the cache first; tags are resolved upstream first and
fall back to the cache when the upstream cannot be reached (--offline never
asks). A missing blob is fetched once, however many clients want it, and
streamed to all of them as it arrives; the cache copy is verified before it is
kept. Pushes answer 405 UNSUPPORTED.

The web UI at / (for a phone's browser, installable to the home screen) and
the JSON API under /api/v1 (docs/api.md) keep a package library: add
packages (pasted, or from a deployments center URL), sync their images into
the cache, download their kubepkg.tgz, send them to agents with only the
layers each lacks. Reads are anonymous; changes from other devices need the
token (--token-file, else <data>/token), which the UI's QR code carries.

Credentials come from Docker's config.json and its credential helpers, and
from the registries set through the API.

The pocket holds --data while it runs (no other crpe process can open it).
Once it listens it writes <data>/pocket.json (mode 0600; removed when it
stops cleanly) with its addresses: crpe export on the same data folder finds
the pocket there and exports through it.`,
		Example: `  # on defaults: listen on :6060, cache in the user cache folder; open
  # http://127.0.0.1:6060/ in a browser
  crpe serve

  # send docker.io's traffic to a local mirror, allow a plain-HTTP registry
  crpe serve --registry-endpoint docker.io=http://127.0.0.1:5000 --insecure-registry registry.lan:5000

  # pull through it
  crane pull 127.0.0.1:6060/docker.io/library/alpine:3 alpine.tar

  # Docker as a client: /etc/docker/daemon.json {"registry-mirrors": ["http://POCKET:6060"]}
  # (with "insecure-registries": ["POCKET:6060"] for plain HTTP), then: docker pull nginx:alpine`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := up.options()
			if err != nil {
				return err
			}
			cfg.Upstream, cfg.Offline, cfg.Log = o, up.offline, g.log
			serverGC()
			return pocket.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	listenerFlags(f, &cfg.Listener, ":6060")
	f.StringVar(&cfg.Data, "data", defaultPocketData(), "data folder (the cache)")
	f.StringVar(&cfg.DefaultRegistry, "default-registry", "docker.io", "registry of a /v2 request that names none and has no ?ns= (Docker's registry-mirrors send Docker Hub's images so); empty: none")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file of accepted tokens, one per line, for API changes from other devices (default: <data>/token, created on first start)")
	up.register(cmd)
	return cmd
}
