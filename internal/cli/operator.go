package cli

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/operator"
)

func newOperatorCmd(g *globals) *cobra.Command {
	var (
		kubeconfig, namespace, healthAddr, metricsAddr string
		resync, hookTimeout                            time.Duration
		skipCRD, leaderElect                           bool
	)
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Watch KubePkg objects: apply their manifests, upgrade, prune",
		Long: `crpe operator installs (or updates) the KubePkg CRD, then reconciles every
KubePkg: server-side apply of spec.manifests with field manager "crpe"
(conflicts forced; CRDs and Namespaces first), labels
app.kubernetes.io/managed-by=crpe and octohelm.tech/kubepkg=<ns>.<name>, an
inventory in status, pruning of what a new version dropped, a semver gate
(octohelm.tech/force-downgrade: "true" lets a lower version through), a
finalizer that deletes what was applied (unless octohelm.tech/keep-resources),
conditions Applied, Ready and Stalled (an invalid package or a refused
downgrade waits for the object to change), events, and a check at every resync
that puts drifted objects back (nothing is written when nothing drifted).

Helm hooks in a package (helm.sh/hook, as crpe package keeps them) run once
per version, as Helm runs them: pre-install or pre-upgrade before the rest,
post-install or post-upgrade once it is applied and ready, by weight, each
waited for (a Job until Complete, a Pod until Succeeded) with their delete
policies; status.hooks tells where they stand. A failed hook is reported
(Applied=False, HookFailed) and retried at the next resync. pre-delete,
rollback and test hooks are not run.`,
		Example: `  crpe operator --kubeconfig ~/.kube/config
  crpe operator --namespace team-a --resync 5m     # watch one namespace
  crpe operator --skip-crd-install                 # the CRD is managed elsewhere`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := kubeclient.RESTConfig(kubeconfig)
			if err != nil {
				return err
			}
			ctrl.SetLogger(logr.FromSlogHandler(g.log.Handler()))
			if !skipCRD {
				c, err := kubeclient.NewClient(cfg)
				if err != nil {
					return err
				}
				if err := operator.InstallCRD(ctx, c); err != nil {
					return err
				}
				g.log.Info("KubePkg CRD installed")
			}
			opts := ctrl.Options{
				Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
				HealthProbeBindAddress:  healthAddr,
				LeaderElection:          leaderElect,
				LeaderElectionID:        "crpe-operator.octohelm.tech",
				LeaderElectionNamespace: namespace,
			}
			// the cache holds KubePkgs, which can be large: without their
			// managedFields (kubectl's server-side apply of one lists every
			// field of every manifest)
			opts.Cache = cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
			if namespace != "" {
				opts.Cache.DefaultNamespaces = map[string]cache.Config{namespace: {}}
			}
			mgr, err := ctrl.NewManager(cfg, opts)
			if err != nil {
				return err
			}
			if healthAddr != "0" {
				_ = mgr.AddHealthzCheck("healthz", healthz.Ping)
				_ = mgr.AddReadyzCheck("readyz", healthz.Ping)
			}
			r := &operator.Reconciler{Client: mgr.GetClient(), Reader: mgr.GetCache(), Applier: operator.NewApplier(mgr.GetClient()),
				Recorder: mgr.GetEventRecorderFor("crpe"), Resync: resync, HookTimeout: hookTimeout}
			if err := r.SetupWithManager(mgr); err != nil {
				return err
			}
			g.log.Info("crpe operator starting", "namespace", namespace, "resync", resync.String())
			if err := mgr.Start(ctx); err != nil {
				return fmt.Errorf("operator: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config)")
	f.StringVar(&namespace, "namespace", "", "watch only this namespace (default: all)")
	f.DurationVar(&resync, "resync", 10*time.Minute, "re-apply every package this often (drift correction)")
	f.BoolVar(&skipCRD, "skip-crd-install", false, "do not install or update the KubePkg CRD at start")
	f.StringVar(&healthAddr, "health-addr", ":8081", "address of /healthz and /readyz (0 disables)")
	f.StringVar(&metricsAddr, "metrics-addr", "0", "address of Prometheus /metrics (0 disables)")
	f.BoolVar(&leaderElect, "leader-elect", false, "elect a leader among replicas")
	f.DurationVar(&hookTimeout, "hook-timeout", operator.DefaultHookTimeout, "how long each Helm hook of a package may run before it counts as failed")
	return cmd
}
