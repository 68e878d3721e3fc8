package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/operator"
)

func newApplyCmd(g *globals) *cobra.Command {
	var (
		src, kubeconfig, dryRun, namespace, sourceToken string
		prune, force, asJSON                            bool
		hookTimeout                                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f SRC",
		Short: "Apply a package's manifests directly, with the operator's engine",
		Long: `crpe apply applies a KubePkg's manifests to the cluster with the same engine as
the operator (server-side apply, field manager crpe, CRDs and Namespaces first)
and prints what was created, configured, unchanged and pruned. --prune deletes
what an earlier apply of this package left and this version no longer has
(found by the octohelm.tech/kubepkg label). --dry-run=server asks the API
server and changes nothing.

Helm hooks in the package (objects annotated helm.sh/hook, as crpe package
keeps them) run as Helm runs them: pre-install (or pre-upgrade, when the
package is in the cluster already) after its CRDs and Namespaces and before
the rest, each waited for (a Job until Complete, a Pod until Succeeded), by
weight; post-install (post-upgrade) once the rest is applied and ready. The
ConfigMap crpe-hooks.<name> records them: the same version applied again runs
none. A failed hook stops there (exit code 1); pre-delete, rollback and test
hooks are not run.`,
		Example: `  crpe apply -f demo.kubepkg.json
  crpe apply -f demo.yaml --dry-run=server
  crpe apply -f https://center.example/kubepkgs/demo --prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if src == "" {
				return fmt.Errorf("-f is required")
			}
			if dryRun != "" && dryRun != "server" && dryRun != "none" {
				return fmt.Errorf("--dry-run=%q: only server (or none) is supported", dryRun)
			}
			pkgs, err := kubepkg.Load(ctx, src, kubepkg.LoadOptions{Token: sourceToken, Stdin: cmd.InOrStdin()})
			if err != nil {
				return err
			}
			cfg, err := kubeclient.RESTConfig(kubeconfig)
			if err != nil {
				return err
			}
			c, err := kubeclient.NewClient(cfg)
			if err != nil {
				return err
			}
			a := operator.NewApplier(c)
			out := cmd.OutOrStdout()
			failed, hooksFailed := 0, 0
			var results []any
			for _, p := range pkgs {
				if err := p.Validate(); err != nil {
					return fmt.Errorf("package %s: %w", p.Metadata.Name, err)
				}
				ns := p.Namespace(namespace)
				o := operator.Options{DryRun: dryRun == "server", Force: force, HookTimeout: hookTimeout}
				if prune {
					prev, err := a.Owned(ctx, ns+"."+p.Metadata.Name)
					if err != nil {
						return err
					}
					o.Prune, o.Previous = true, prev
				}
				res, err := a.Apply(ctx, p, ns, o)
				var hookErr *operator.HookError
				if err != nil && (res == nil || !errors.As(err, &hookErr)) {
					return err
				}
				if hookErr != nil {
					hooksFailed++
				}
				failed += len(res.Failed)
				if asJSON {
					results = append(results, map[string]any{"namespace": ns, "name": p.Metadata.Name, "version": p.Spec.Version, "result": res})
					continue
				}
				suffix := ""
				if o.DryRun {
					suffix = " (server dry run)"
				}
				for _, ch := range res.Changes {
					fmt.Fprintf(out, "%s %s%s\n", ch.Object, ch.Action, suffix)
				}
				for _, f := range res.Failed {
					fmt.Fprintf(out, "%s FAILED: %s\n", f.Object, f.Error)
				}
				printHooks(cmd, res, o.DryRun)
				if hookErr != nil {
					fmt.Fprintf(out, "%s FAILED: %s hook: %s\n", hookErr.Run.Object, hookErr.Run.Event, hookErr.Run.Message)
				}
				fmt.Fprintf(out, "%s/%s@%s: %d created, %d configured, %d unchanged, %d pruned, %d failed%s\n", ns, p.Metadata.Name, p.Spec.Version,
					res.Count("created"), res.Count("configured"), res.Count("unchanged"), res.Count("pruned"), len(res.Failed), suffix)
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				_ = enc.Encode(results)
			}
			var msgs []string
			if failed > 0 {
				msgs = append(msgs, fmt.Sprintf("%d objects were refused", failed))
			}
			if hooksFailed > 0 {
				msgs = append(msgs, fmt.Sprintf("%d hooks failed", hooksFailed))
			}
			if len(msgs) > 0 {
				return &exitError{code: 1, msg: strings.Join(msgs, "; ")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&src, "file", "f", "", "package source: file, - (stdin) or http(s) URL")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config)")
	f.StringVar(&dryRun, "dry-run", "", "server: ask the API server what would change")
	f.StringVar(&namespace, "namespace", "default", "namespace of packages whose metadata names none")
	f.StringVar(&sourceToken, "source-token", "", "bearer token for a deployments center URL")
	f.BoolVar(&prune, "prune", false, "delete what this package applied before and no longer has")
	f.BoolVar(&force, "force", false, "recreate objects whose immutable fields changed")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.DurationVar(&hookTimeout, "hook-timeout", operator.DefaultHookTimeout, "how long each Helm hook may run, and the package may take to be ready before its post hooks")
	return cmd
}

// printHooks prints the hooks an apply ran ("Job/ns/migrate pre-install hook
// Succeeded"), or would run in a dry run, and warns about those not run.
func printHooks(cmd *cobra.Command, res *operator.Result, dryRun bool) {
	hs := res.Hooks
	if hs == nil {
		return
	}
	for _, w := range hs.Ignored {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
	}
	out := cmd.OutOrStdout()
	for _, r := range hs.Runs {
		switch {
		case dryRun:
			fmt.Fprintf(out, "%s %s hook would run (server dry run)\n", r.Object, r.Event)
		case r.Phase != operator.HookPhaseFailed: // a failure is printed as such
			fmt.Fprintf(out, "%s %s hook %s\n", r.Object, r.Event, r.Phase)
		}
	}
}
