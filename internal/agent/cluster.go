package agent

import (
	"context"
	"log/slog"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
)

// clusterSync turns imports into KubePkg objects.
type clusterSync struct {
	c   client.Client
	log *slog.Logger
}

func newClusterSync(kubeconfig string, log *slog.Logger) (*clusterSync, error) {
	cfg, err := kubeclient.RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := kubeclient.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &clusterSync{c: c, log: log}, nil
}

// onImport creates or updates the KubePkg object of every imported package
// (the semver gate applies; a forced import annotates the object so the
// operator follows) and returns, per package, what happened.
func (s *clusterSync) onImport(ctx context.Context, res *importer.Result) map[string]string {
	out := map[string]string{}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, p := range res.Packages {
		key := p.Namespace + "/" + p.Name
		pkgs, err := kubepkg.Parse(p.Object)
		if err != nil || len(pkgs) != 1 {
			out[key] = "error: the imported package cannot be read back"
			continue
		}
		what, err := kubeclient.Upsert(ctx, s.c, pkgs[0], p.Namespace, p.Forced)
		if err != nil {
			s.log.Error("KubePkg object not written", "kubepkg", key, "error", err)
			out[key] = "error: " + err.Error()
			continue
		}
		s.log.Info("KubePkg object written", "kubepkg", key, "version", p.Version, "action", what)
		out[key] = what
	}
	return out
}
