package operator

import (
	"context"
	_ "embed"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

//go:embed crd.yaml
var crdYAML []byte

// CRD returns the KubePkg CustomResourceDefinition.
func CRD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crdYAML, &u.Object); err != nil {
		panic(err)
	}
	return u
}

// CRDYAML is the CRD as YAML.
func CRDYAML() []byte { return crdYAML }

// InstallCRD applies the KubePkg CRD and waits until it is established.
func InstallCRD(ctx context.Context, c client.Client) error {
	a := NewApplier(c)
	res, err := a.applyObjects(ctx, []*unstructured.Unstructured{CRD()}, liveSet{}, Options{Concurrency: 1})
	if err != nil {
		return fmt.Errorf("installing the KubePkg CRD: %w", err)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("installing the KubePkg CRD: %s", res.Failed[0].Error)
	}
	return nil
}
