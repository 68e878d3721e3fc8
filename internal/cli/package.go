package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/chart"
	"github.com/octohelm/crpe/internal/kubepkg"
)

func newPackageCmd(g *globals) *cobra.Command {
	var (
		o          chart.Options
		out        string
		data       string
		asJSON     bool
		noArtifact bool
	)
	cmd := &cobra.Command{
		Use:   "package SOURCE",
		Short: "Make a KubePkg from a Helm chart, a folder of YAML files or a kustomization",
		Long: `crpe package renders SOURCE once, on the internet side, into a KubePkg of
plain manifests, with helm template's habits:

  a chart folder (with Chart.yaml) or a chart archive (.tgz);
  a chart NAME with --repo URL (and --version, a version or a constraint);
  oci://host/path/chart with --version;
  a kustomization folder (kustomization.yaml; kustomize's API, no plugins);
  any other folder: every .yaml, .yml and .json file in it, multi-document.

Charts are rendered with Helm's SDK: the objects are those of
'helm template --include-crds --skip-tests' with the same values and flags
(subcharts, library charts, conditions and tags, CRDs of crds/ included);
lookup renders empty, as in helm template. Install and upgrade hooks are
kept with their annotations; test hooks are left out.

spec.images lists every image of every pod template, the chart's
helm.sh/images annotation and --image, in full form (docker.io/library/x:1),
each with "" (the tag is resolved at export); where each was found is
printed on stderr. A package made from a chart records the chart's name,
version, digest and source and the digest of the merged values as
annotations (octohelm.tech/chart, ...), and the chart itself travels with
the package: it is kept in --data as an OCI artifact in Helm's layout,
crpe.local/charts/NAME:VERSION, listed in spec.images with its digest, so
that crpe export puts it in the archive and the agent serves it (helm pull
oci://AGENT/crpe.local/charts/NAME --version VERSION).`,
		Example: `  crpe package ./mychart -f values-prod.yaml --set replicaCount=2 > mychart.kubepkg.yaml
  crpe package mychart-1.2.0.tgz -o mychart.kubepkg.yaml
  crpe package ingress-nginx --repo https://kubernetes.github.io/ingress-nginx --version '~4.11'
  crpe package oci://registry.example/charts/app --version 1.0.0
  crpe package ./overlays/prod --name app --version 1.0.0
  crpe package ./manifests/ --name tools --version 0.3.0 --image docker.io/library/busybox:1.36`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.CacheDir = filepath.Join(data, "charts")
			o.OnFallback = func(source, version string, fetched time.Time, err error) {
				g.log.Warn("the chart's source cannot be reached: using the chart cached in the data folder",
					"source", source, "version", version, "cached", fetched.Format(time.RFC3339), "error", err)
			}
			res, err := chart.Package(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if res.Chart != nil && !noArtifact {
				if err := keepChart(cmd.Context(), g, data, res); err != nil {
					return err
				}
			}
			pkgJSON, err := kubepkg.Marshal([]*kubepkg.KubePkg{res.Package})
			if err != nil {
				return err
			}
			var body []byte
			if asJSON {
				body, err = json.MarshalIndent(map[string]any{"package": json.RawMessage(pkgJSON), "images": res.Images, "chart": res.Chart, "skipped": res.Skipped}, "", "  ")
				body = append(body, '\n')
			} else {
				body, err = yaml.JSONToYAML(pkgJSON)
			}
			if err != nil {
				return err
			}
			if !asJSON {
				for _, im := range res.Images {
					fmt.Fprintf(cmd.ErrOrStderr(), "image %s: %s\n", im.Ref, strings.Join(im.Found, "; "))
				}
				for _, s := range res.Skipped {
					fmt.Fprintf(cmd.ErrOrStderr(), "left out: %s\n", s)
				}
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			return atomicfile.WriteFile(out, body, 0o644)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Repo, "repo", "", "chart repository URL: SOURCE is a chart name in it")
	f.StringVar(&o.Version, "version", "", "chart version or constraint (--repo, oci://); with a folder or a file: the package's version")
	f.StringArrayVarP(&o.ValuesFiles, "values", "f", nil, "values file (repeatable)")
	f.StringArrayVar(&o.Set, "set", nil, "set a value, key=value (repeatable)")
	f.StringVar(&o.ReleaseName, "release-name", "", "release name the templates see (default: the chart's name)")
	f.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace of the release and of objects that name none")
	f.StringVar(&o.KubeVersion, "kube-version", "", "Kubernetes version for .Capabilities.KubeVersion")
	f.StringSliceVar(&o.APIVersions, "api-versions", nil, "API versions for .Capabilities.APIVersions (repeatable, or comma-separated)")
	f.StringArrayVar(&o.Images, "image", nil, "an image the manifests do not name (repeatable)")
	f.StringVar(&o.Name, "name", "", "package name (default: the chart's, or the folder's)")
	f.StringVar(&o.PackageVersion, "package-version", "", "package version (default: the chart's, or 0.0.0 for a folder)")
	f.BoolVar(&o.PlainHTTP, "plain-http", false, "reach an OCI registry over plain HTTP")
	f.StringVar(&o.Username, "username", "", "chart repository or registry user")
	f.StringVar(&o.Password, "password", "", "chart repository or registry password")
	f.StringVar(&data, "data", defaultPocketData(), "the pocket's data folder: the chart is kept there as an OCI artifact for export, and a chart fetched once packages again with no network")
	f.BoolVar(&noArtifact, "no-chart-artifact", false, "do not carry the chart itself (crpe.local/charts/NAME:VERSION in spec.images)")
	f.StringVarP(&out, "output", "o", "", "write the package to this file (default: stdout)")
	f.BoolVar(&asJSON, "json", false, "print the package, its images with where each was found, and the chart, as JSON")
	return cmd
}

// keepChart keeps the chart of res as an OCI artifact in the data folder
// (through the running pocket when one holds the folder) and lists it in
// the package's spec.images, pinned.
func keepChart(ctx context.Context, g *globals, data string, res *chart.Result) error {
	st, pocket, err := openExportData(ctx, data, g.log)
	if err != nil {
		return err
	}
	if pocket != nil {
		ref, d, err := pocket.KeepChart(ctx, res.Chart.Archive)
		if err != nil {
			return fmt.Errorf("keeping the chart in the running pocket (%s): %w", pocket.URL, err)
		}
		chart.Pin(res, ref, digest.Digest(d), "the running pocket's cache ("+data+")")
		return nil
	}
	defer st.Close()
	return chart.KeepWith(res, data, func(a *chart.Artifact) error { return chart.Keep(ctx, st.Store, st.DB, a) })
}
