package operator

import (
	"context"
	_ "embed"
	"fmt"
	"time"

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
	crd := CRD()
	res := &Result{}
	applied := a.applyAll(ctx, []*unstructured.Unstructured{crd}, Options{Concurrency: 1}, res)
	if len(res.Failed) > 0 {
		return fmt.Errorf("installing the KubePkg CRD: %s", res.Failed[0].Error)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return a.waitEstablished(wctx, applied)
}
