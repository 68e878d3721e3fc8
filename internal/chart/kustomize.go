package chart

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomize builds the kustomization in dir with kustomize's API, as
// `kubectl kustomize` does, with no plugins (no exec, no containers) and
// no remote bases reached.
func kustomize(dir string) ([]object, error) {
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig = types.DisabledPluginConfig()
	k := krusty.MakeKustomizer(opts)
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	b, err := rm.AsYaml()
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRendered {
		return nil, fmt.Errorf("kustomize %s: more than %d bytes", dir, MaxRendered)
	}
	return parseDocuments(b, dir)
}
