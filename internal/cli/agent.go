package cli

import (
	"encoding/json"
	"time"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/agent"
	"github.com/octohelm/crpe/internal/agentclient"
	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/storage"
)

func newAgentCmd(g *globals) *cobra.Command {
	cfg := agent.Config{}
	var reg registryFlags
	var regTokenFile string
	var vf verifyFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Serve the intranet registry that the nodes use as their containerd mirror",
		Long: `crpe agent serves an OCI Distribution API (spec v1.1) registry over a crash-safe
blob store in --data. Nodes pull through it as a containerd mirror
(GET /v2/library/nginx/manifests/alpine?ns=docker.io addresses docker.io/library/nginx).

Reads are anonymous unless --pull-token-required. Writes need a token from
--token-file (one per line, re-read when it changes), sent as
"Authorization: Bearer <token>" or as the password of HTTP Basic auth with any
user name (docker login, crane auth login and skopeo --creds work). Without
--token-file a random token is created in <data>/token on first start.
Pushes to /v2 answer 405 UNSUPPORTED unless --allow-push.

Also serves /healthz and Prometheus /metrics. SIGTERM shuts down gracefully.

Registry mode (--registry HOST[:PORT][/PREFIX]): the agent holds no blob.
An import (PUT /api/v1/kubepkgs, crpe import --to, the web UI) is pushed
into that site registry as crpe import --to-registry does (the same
--flatten, --username/--password, --registry-token-file, --ca-file,
--plain-http, --jobs and --chunk-size), the semver gate asked of the
KubePkg object before any blob goes; once every tag is set, the KubePkg
object is written. The package records are the cluster's KubePkg objects,
so registry mode needs --kubeconfig (or runs in a pod) and --token-file,
and any number of replicas behind one Service answer alike. The delta
(POST /api/v1/blobs/missing) and the inventory are asked of the site
registry (HEAD in the repositories of the packages' images). /v2 answers
404: the nodes pull from the site registry (crpe mirror-config --registry).

Signatures (--verify-key FILE, repeatable, or --verify-policy FILE): every
image of an import must carry a cosign signature (exported with it from the
pocket: crpe export --artifacts) that verifies, offline, with one of the
keys over a payload naming the image's digest; else the whole import is
refused (403 SIGNATURE_REFUSED, naming the image and why) and nothing is
published. A policy file says which keys for which repositories, required
or optional (docs/signatures.md). The verdicts are kept in each package's
status.signatures and its import history.`,
		Example: `  # on defaults: listen on :36060, data in ./crpe-data, token created there
  crpe agent

  # pushes allowed, explicit token file, TLS
  crpe agent --addr :36060 --data /var/lib/crpe --token-file /etc/crpe/token \
    --allow-push --tls-cert tls.crt --tls-key tls.key

  # the same through the environment
  CRPE_DATA=/var/lib/crpe CRPE_ALLOW_PUSH=true crpe agent

  # every image must carry a cosign signature by this key (checked offline at import)
  crpe agent --verify-key /etc/crpe/cosign.pub

  # registry mode: import into the site registry, package records as KubePkg objects
  CRPE_PASSWORD=... crpe agent --registry harbor.lan/crpe --username ci --ca-file /etc/ssl/site-ca.pem \
    --kubeconfig ~/.kube/config --token-file /etc/crpe/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Log = g.log
			var err error
			if cfg.Verify, err = vf.policy(); err != nil {
				return err
			}
			if reg.target != "" {
				token := ""
				if regTokenFile != "" {
					toks, err := auth.LoadTokens(regTokenFile)
					if err != nil {
						return err
					}
					token = toks.First()
				}
				o, err := reg.options(token)
				if err != nil {
					return err
				}
				o.Verify = cfg.Verify
				cfg.Registry = &o
			}
			serverGC()
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	vf.register(cmd)
	listenerFlags(f, &cfg.Listener, ":36060")
	f.StringVar(&cfg.Data, "data", "crpe-data", "data folder (blobs and index)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file of accepted tokens, one per line (default: <data>/token, created on first start)")
	f.BoolVar(&cfg.AllowPush, "allow-push", false, "accept pushes to /v2 (with a token)")
	f.BoolVar(&cfg.AllowSparse, "allow-sparse-manifests", false, "accept image manifests whose config or layers are not all pushed (default: MANIFEST_BLOB_UNKNOWN); index children may always be absent")
	f.BoolVar(&cfg.PullTokenRequired, "pull-token-required", false, "require a token for reads too")
	f.StringVar(&cfg.Namespace, "namespace", "", "namespace of packages whose metadata names none (default: the agent's own namespace in a cluster, else default)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig: every import becomes a KubePkg object in the cluster (in a pod, the in-cluster configuration is used)")
	f.IntVar(&cfg.KeepVersions, "keep-versions", 3, "versions of each package kept; older ones are garbage-collected")
	f.DurationVar(&cfg.GCInterval, "gc-interval", 24*time.Hour, "how often garbage collection runs besides after imports")
	f.DurationVar(&cfg.GCGrace, "gc-grace", time.Hour, "unreferenced blobs younger than this are kept (a push links its blobs a moment after storing them)")
	reg.addAs(f, "registry", "registry mode: import into this site registry, HOST[:PORT][/PREFIX], keep no blob; package records are KubePkg objects (needs --kubeconfig or a pod, and --token-file)")
	f.StringVar(&regTokenFile, "registry-token-file", "", "with --registry: file whose first line is a bearer token for the registry (instead of --username/--password)")
	cmd.AddCommand(newAgentInventoryCmd())
	return cmd
}

func newAgentInventoryCmd() *cobra.Command {
	var data, from, token string
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Print what an agent holds (blob digests and packages), for crpe export --since",
		Long: `crpe agent inventory prints, as JSON, the digests of every blob an agent holds
and its packages: from a data folder (--data, the agent stopped) or from a
running agent (--from URL). Carried to the pocket, it lets
"crpe export --since FILE" leave out the layers the agent already has, for a
disconnected handover.`,
		Example: `  crpe agent inventory --data /var/lib/crpe > inventory.json
  crpe agent inventory --from http://agent.lan:36060 > inventory.json
  crpe export -f demo.yaml --since inventory.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if from != "" {
				inv, err := (&agentclient.Client{URL: from, Token: token}).Inventory(ctx)
				if err != nil {
					return err
				}
				return enc.Encode(inv)
			}
			st, err := storage.OpenReadOnly(data)
			if err != nil {
				return err
			}
			defer st.Close()
			inv, err := agent.ReadInventory(ctx, st)
			if err != nil {
				return err
			}
			return enc.Encode(inv)
		},
	}
	cmd.Flags().StringVar(&data, "data", "crpe-data", "the agent's data folder")
	cmd.Flags().StringVar(&from, "from", "", "a running agent's URL")
	cmd.Flags().StringVar(&token, "token", "", "token, when the agent requires one for reads")
	return cmd
}
