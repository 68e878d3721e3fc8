// Package cli owns crpe's command line: one file per subcommand, the root
// command with its global flags, logging set-up, and reading every flag also
// from the environment as CRPE_<FLAG> (dashes become underscores).
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// globals are the root command's flags.
type globals struct {
	logLevel  string
	logFormat string
	log       *slog.Logger
}

// NewRoot builds the crpe command tree.
func NewRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "crpe",
		Short: "Container Registry Pocket Edition: carry Kubernetes apps and their images across an air gap",
		Long: `crpe carries Kubernetes applications and their container images across an air gap.

  crpe agent    runs inside the intranet cluster: an OCI registry the nodes use as
                their containerd mirror, fed by kubepkg.tgz imports.
  crpe serve    runs the pocket: a pull-through cache of any number of registries.
  crpe export   writes a package and every image blob it needs into one kubepkg.tgz.
  crpe import   hands a kubepkg.tgz to an agent (only what it lacks) or a data folder.
  crpe operator applies KubePkg objects in the cluster: upgrades, prunes.
  crpe fsck     checks (and repairs) a data folder.
  crpe package  makes a package of a Helm chart, a kustomization or YAML files.
  crpe manifests prints a package's manifests in apply order, or writes a Helm chart.

Every flag can also be set from the environment as CRPE_<FLAG>, e.g.
CRPE_LOG_LEVEL=debug or CRPE_TOKEN_FILE=/etc/crpe/token.`,
		Example: `  # run the agent with pushes allowed and a token file
  crpe agent --addr :36060 --data /var/lib/crpe --token-file /etc/crpe/token --allow-push

  # check a data folder after a crash
  crpe fsck --data /var/lib/crpe`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := bindEnv(cmd); err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), g.logLevel, g.logFormat)
			if err != nil {
				return err
			}
			g.log = log
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "log format: text or json (default: text on a terminal, json otherwise)")
	root.AddCommand(newAgentCmd(g), newServeCmd(g), newExportCmd(g), newInspectCmd(g), newImportCmd(g), newMirrorConfigCmd(), newOperatorCmd(g), newApplyCmd(g), newInstallCmd(), newFsckCmd(g), newVersionCmd(), newPackageCmd(g), newManifestsCmd(g), newKeygenCmd())
	return root
}

// EnvName is the environment variable that sets a flag.
func EnvName(flag string) string {
	return "CRPE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv sets every flag not given on the command line from CRPE_<FLAG>.
func bindEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if serr := cmd.Flags().Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, serr)
			}
		}
	})
	return err
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// Execute runs the command tree and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	defer startProfiles(stderr)()
	root := NewRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		var ec interface{ ExitCode() int }
		if as(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}
