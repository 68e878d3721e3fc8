package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/operator"
	"github.com/octohelm/crpe/internal/selfimage"
	"github.com/octohelm/crpe/internal/version"
)

func newInstallCmd() *cobra.Command {
	var (
		o            operator.InstallOptions
		imageArchive string
		caFile       string
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the manifests that run crpe (agent and operator) in a cluster",
		Long: `crpe install prints everything crpe needs in a cluster: the Namespace, the
KubePkg CRD, ServiceAccounts and least-privilege RBAC for the agent (KubePkg
objects only) and the operator (KubePkg objects, their CRD, events, leases,
plus a separate role to apply what packages contain), the agent (Deployment,
PersistentVolumeClaim for its data, Secret with its token, NodePort Service
the nodes' containerd reaches) and the operator, with /healthz probes and
resource requests.

An air-gapped cluster cannot pull crpe's image before the agent runs:
--image-archive FILE also writes crpe's own image, built from this (static)
binary on an empty base, as an OCI layout tar for "ctr images import" or k3s's
airgap images folder.

--registry HOST[:PORT][/PREFIX] writes the agent in registry mode instead
(docs/site-registry.md): --replicas agents (a Deployment, rolling updates,
spread over nodes) with no volume, importing into the site registry, their
package records the cluster's KubePkg objects. The registry's credentials
come from the Secret crpe-agent-registry (username, password; written from
--registry-username/--registry-password, else create it yourself), its CA
from the ConfigMap crpe-agent-registry-ca (--registry-ca-file). The nodes
pull from the site registry: crpe mirror-config --registry.`,
		Example: `  crpe install | kubectl apply -f -
  crpe install --namespace crpe-system --node-port 30660 --image-archive crpe-image.tar > crpe.yaml
  ctr -n k8s.io images import crpe-image.tar     # on each node, then: kubectl apply -f crpe.yaml

  # registry mode: three stateless agents importing into the site's registry
  CRPE_REGISTRY_PASSWORD=... crpe install --registry harbor.lan/crpe --replicas 3 \
    --registry-username ci --registry-ca-file site-ca.pem | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Image == "" {
				o.Image = operator.ImageName(version.Get().Version)
			}
			if imageArchive != "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				f, err := atomicfile.Create(imageArchive, 0o644)
				if err != nil {
					return err
				}
				defer f.Abort()
				if err := selfimage.Write(f, exe, o.Image); err != nil {
					return err
				}
				if err := f.Commit(false); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (image %s)\n", imageArchive, o.Image)
			}
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				o.RegistryCA = b
			}
			if (o.RegistryUsername != "" || len(o.RegistryCA) > 0 || o.Flatten) && o.Registry == "" {
				return fmt.Errorf("--registry-username, --registry-ca-file and --flatten go with --registry")
			}
			b, err := operator.InstallManifests(o)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Namespace, "namespace", "crpe-system", "namespace of the agent and the operator")
	f.StringVar(&o.Image, "image", "", "crpe image (default ghcr.io/octohelm/crpe:<version>)")
	f.IntVar(&o.NodePort, "node-port", 30660, "node port of the agent's registry")
	f.StringVar(&o.StorageSize, "storage-size", "20Gi", "size of the agent's data volume")
	f.StringVar(&o.StorageClass, "storage-class", "", "storage class of the agent's data volume")
	f.StringVar(&o.Token, "token", "", "the agent's write token (default: random)")
	f.BoolVar(&o.AllowPush, "allow-push", false, "let the agent take /v2 pushes too")
	f.StringVar(&imageArchive, "image-archive", "", "also write crpe's own image (OCI layout tar) to this file")
	f.StringVar(&o.Registry, "registry", "", "registry mode: the agents import into this site registry, HOST[:PORT][/PREFIX], and hold no blob")
	f.IntVar(&o.Replicas, "replicas", 1, "agents behind the Service (more than 1 needs --registry)")
	f.BoolVar(&o.Flatten, "flatten", false, "with --registry: repositories are PREFIX/docker.io_library_nginx")
	f.StringVar(&o.RegistryUsername, "registry-username", "", "with --registry: written to the Secret crpe-agent-registry")
	f.StringVar(&o.RegistryPassword, "registry-password", "", "with --registry: written to the Secret crpe-agent-registry (CRPE_REGISTRY_PASSWORD keeps it off the command line)")
	f.StringVar(&caFile, "registry-ca-file", "", "with --registry: PEM CA of the site registry, written to the ConfigMap crpe-agent-registry-ca")
	return cmd
}
