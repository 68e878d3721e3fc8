package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/agentclient"
	"github.com/octohelm/crpe/internal/applyorder"
	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/chart"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/parts"
)

func newManifestsCmd(g *globals) *cobra.Command {
	var (
		agentURL, token, tokenFile string
		helmChart, out             string
		noHooks                    bool
	)
	cmd := &cobra.Command{
		Use:   "manifests SRC | --agent URL NAMESPACE/NAME",
		Short: "Print a package's manifests in apply order (for kubectl apply), or write them as a Helm chart",
		Long: `crpe manifests prints the Kubernetes objects of a package as YAML
documents, in the order crpe's operator applies them, so that a cluster
without the operator takes them with 'kubectl apply -f -'. SRC is:

  a KubePkg or KubePkgList file, JSON or YAML (or "-" for stdin, or an
  http(s) URL of a deployments center);
  a kubepkg.tgz (crpe's, or one of the seed's layouts: the crpe phone app's,
  octohelm/kubepkg's gzip or plain tar), a split one by its parts file, its
  first part or all its parts; only kubepkg.json, the archive's first entry,
  is read ('crpe inspect --verify' checks the rest);
  with --agent, NAMESPACE/NAME of a package installed on that agent (the
  version it imported, read from its API).

The order is the operator's: CustomResourceDefinitions and Namespaces
first, then ClusterRoles, classes (StorageClass, IngressClass, ...), then by
kind (ServiceAccounts, Roles, ConfigMaps, Secrets, Services, Deployments,
..., webhook configurations last), then namespace and name.

Helm hooks (objects annotated helm.sh/hook, kept by 'crpe package') are
printed where a Helm install runs them: pre-install and pre-upgrade hooks
after the CRDs and Namespaces and before every other object, by
helm.sh/hook-weight then name; post-install and post-upgrade hooks last, by
weight then name. Hooks an install never runs (pre/post-delete, rollback,
test, or an event Helm does not know) are left out. --no-hooks leaves every
hook out. What is left out is named on stderr.

The objects are printed exactly as the package holds them: nothing is added
and no namespace is set. An object that names no namespace goes where
kubectl puts it: give the package's namespace (each package's first comment
line names it) with 'kubectl apply -n NAMESPACE'.

--helm-chart DIR|FILE writes the manifests as a Helm chart instead: Chart.yaml
(apiVersion v2) with the package's name and version, and one template per
manifest under templates/, named from its manifest key, in which every "{{"
is escaped, so that 'helm template' and 'helm install' print and apply
exactly the package's objects (hooks stay hooks, which Helm runs in its
place; --no-hooks leaves them out). A FILE ending .tgz is a chart archive
(as 'helm package' writes it); anything else is a chart folder, which must
not exist or be empty.`,
		Example: `  crpe manifests demo.kubepkg.yaml | kubectl apply -n default -f -
  crpe manifests demo-1.0.0.kubepkg.tgz --no-hooks > demo.yaml
  crpe manifests /media/usb/demo-1.0.0.kubepkg.tgz.parts | kubectl apply -f -
  crpe manifests --agent http://agent.lan:36060 --token-file /etc/crpe/token default/demo
  crpe manifests demo-1.0.0.kubepkg.tgz --helm-chart demo-1.0.0.tgz && helm install demo demo-1.0.0.tgz`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var (
				pkgs []*kubepkg.KubePkg
				nss  []string // the namespace each package is applied in
				err  error
			)
			if agentURL != "" {
				ns, name, ok := strings.Cut(args[0], "/")
				if len(args) != 1 || !ok || ns == "" || name == "" || strings.Contains(name, "/") {
					return fmt.Errorf("with --agent, name one package as NAMESPACE/NAME (as 'crpe agent inventory' lists them), not %q", strings.Join(args, " "))
				}
				tok := token
				if tok == "" && tokenFile != "" {
					toks, err := auth.LoadTokens(tokenFile)
					if err != nil {
						return err
					}
					tok = toks.First()
				}
				p, err := (&agentclient.Client{URL: agentURL, Token: tok}).Package(ctx, ns, name)
				if err != nil {
					return fmt.Errorf("agent %s: %w", agentURL, err)
				}
				pkgs, nss = []*kubepkg.KubePkg{p}, []string{ns}
			} else {
				if pkgs, err = loadManifestsSource(ctx, args, cmd.InOrStdin()); err != nil {
					return err
				}
				for _, p := range pkgs {
					nss = append(nss, p.Namespace("default"))
				}
			}
			for _, p := range pkgs {
				if err := p.Validate(); err != nil {
					return fmt.Errorf("package %s: %w", p.Metadata.Name, err)
				}
			}
			stderr := cmd.ErrOrStderr()
			if helmChart != "" {
				if len(pkgs) != 1 {
					return fmt.Errorf("%s holds %d packages: --helm-chart writes the chart of one", strings.Join(args, " "), len(pkgs))
				}
				p := pkgs[0]
				objs, err := applyorder.Objects(p)
				if err != nil {
					return fmt.Errorf("package %s: %w", p.Metadata.Name, err)
				}
				if noHooks {
					cp := *p
					cp.Spec.Manifests = map[string]kubepkg.Manifest{}
					for _, o := range objs {
						if o.Phase == applyorder.Manifest {
							cp.Spec.Manifests[o.Key] = p.Spec.Manifests[o.Key]
						} else {
							fmt.Fprintf(stderr, "left out: %s (hook %s)\n", o.Key, o.Hook)
						}
					}
					p = &cp
				}
				if err := chart.WriteChart(p, helmChart); err != nil {
					return err
				}
				fmt.Fprintf(stderr, "wrote chart %s %s (%d templates) to %s\n", p.Metadata.Name, p.Spec.Version, len(p.Spec.Manifests), helmChart)
				return nil
			}
			var buf bytes.Buffer
			for i, p := range pkgs {
				objs, err := applyorder.Objects(p)
				if err != nil {
					return fmt.Errorf("package %s: %w", p.Metadata.Name, err)
				}
				ordered, left := applyorder.WithHooks(objs, !noHooks)
				fmt.Fprintf(&buf, "# KubePkg %s %s: %d objects in apply order; objects naming no namespace belong in namespace %s (kubectl apply -n %s)\n",
					p.Metadata.Name, p.Spec.Version, len(ordered), nss[i], nss[i])
				for _, o := range ordered {
					y, err := chart.ManifestYAML(p.Spec.Manifests[o.Key])
					if err != nil {
						return fmt.Errorf("package %s: spec.manifests[%q]: %w", p.Metadata.Name, o.Key, err)
					}
					fmt.Fprintf(&buf, "---\n# %s\n", o.Key)
					buf.Write(y)
				}
				for _, o := range left {
					fmt.Fprintf(stderr, "left out: package %s: %s (hook %s)\n", p.Metadata.Name, o.Key, o.Hook)
				}
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			return atomicfile.WriteFile(out, buf.Bytes(), 0o644)
		},
	}
	f := cmd.Flags()
	f.StringVar(&agentURL, "agent", "", "read the package installed on this agent (SRC is NAMESPACE/NAME)")
	f.StringVar(&token, "token", "", "the agent's token, when it requires one for reads")
	f.StringVar(&tokenFile, "token-file", "", "file holding the agent's token")
	f.BoolVar(&noHooks, "no-hooks", false, "leave out Helm hooks (objects annotated helm.sh/hook)")
	f.StringVar(&helmChart, "helm-chart", "", "write a Helm chart instead: a folder, or FILE.tgz for a chart archive")
	f.StringVarP(&out, "output", "o", "", "write the YAML to this file (default: stdout)")
	return cmd
}

// loadManifestsSource reads the packages of a KubePkg file, URL or stdin,
// or of a kubepkg.tgz (plain or split).
func loadManifestsSource(ctx context.Context, args []string, stdin io.Reader) ([]*kubepkg.KubePkg, error) {
	src := args[0]
	if len(args) == 1 && src == "-" {
		br := bufio.NewReaderSize(stdin, 1024)
		if isArchive(br) {
			return archivePackages(ctx, br, "stdin", nil)
		}
		return kubepkg.Load(ctx, "-", kubepkg.LoadOptions{Stdin: br})
	}
	if len(args) == 1 && (strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")) {
		return kubepkg.Load(ctx, src, kubepkg.LoadOptions{})
	}
	if len(args) == 1 && !strings.HasSuffix(src, parts.FileSuffix) {
		if _, _, isPart := parts.SplitName(filepath.Base(src)); !isPart {
			if f, err := os.Open(src); err == nil {
				defer f.Close()
				br := bufio.NewReaderSize(f, 1024)
				if isArchive(br) {
					return archivePackages(ctx, br, src, nil)
				}
				return kubepkg.Load(ctx, src, kubepkg.LoadOptions{})
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	set, err := parts.Resolve(args...)
	if err != nil {
		return nil, err
	}
	r, err := set.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return archivePackages(ctx, r, set.Name, r)
}

// isArchive tells a kubepkg.tgz (gzip, or a plain tar) from a package
// document by its first bytes.
func isArchive(br *bufio.Reader) bool {
	head, _ := br.Peek(512)
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		return true
	}
	return len(head) >= 262 && string(head[257:262]) == "ustar"
}

// errPackageRead stops an archive's read once its kubepkg.json is had.
var errPackageRead = errors.New("kubepkg.json read")

// packageOnly is an archive.Handler that takes kubepkg.json and stops.
type packageOnly struct{ data []byte }

func (h *packageOnly) Package(b []byte) error {
	h.data = b
	return errPackageRead
}
func (h *packageOnly) Index(ocispec.Index) error { return nil }
func (h *packageOnly) Blob(context.Context, ocispec.Descriptor, oci.Kind, io.Reader) error {
	return nil
}

// archivePackages reads the packages of an archive's kubepkg.json (its
// first entry: the rest is not read).
func archivePackages(ctx context.Context, r io.Reader, name string, src io.Reader) ([]*kubepkg.KubePkg, error) {
	h := &packageOnly{}
	_, err := archive.Read(ctx, r, h, archive.Limits{})
	if err == nil || !errors.Is(err, errPackageRead) {
		if err == nil {
			err = errors.New("no kubepkg.json")
		}
		return nil, fmt.Errorf("%s: %w", name, explainPart(src, err))
	}
	pkgs, err := kubepkg.Parse(h.data)
	if err != nil {
		return nil, fmt.Errorf("%s: kubepkg.json: %w", name, err)
	}
	return pkgs, nil
}
