// Package kubeclient owns how crpe reaches a Kubernetes cluster and the
// KubePkg object as the cluster holds it: the REST configuration (a
// kubeconfig or the pod's in-cluster identity, client-side throttling off),
// a controller-runtime client for unstructured objects (and typed
// coordination.k8s.io/v1 Leases: the agent's import locks), the KubePkg group,
// version and kind with the names put on KubePkg objects, and Upsert, the
// semver-gated create-or-update of a KubePkg object that the agent does
// after an import. The agent and the operator share it; it applies nothing
// (server-side apply of a package's manifests is the operator's).
package kubeclient

import (
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GVK of KubePkg objects.
var GVK = schema.GroupVersionKind{Group: "octohelm.tech", Version: "v1alpha1", Kind: "KubePkg"}

// AnnotationForceDowngrade on a KubePkg object lets the operator apply a
// version lower than the one it applied last; Upsert sets it on a forced
// write and drops it on an ordinary one.
const AnnotationForceDowngrade = "octohelm.tech/force-downgrade"

// NewKubePkg returns an empty KubePkg object (its kind set), to read into.
func NewKubePkg() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(GVK)
	return u
}

// RESTConfig loads a kubeconfig file, or the in-cluster configuration when
// path is empty (falling back to $KUBECONFIG and ~/.kube/config).
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			return unthrottled(c), nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return unthrottled(c), nil
}

// unthrottled turns off client-go's client-side rate limit (5 requests/s by
// default): an apply is already bounded by its concurrency, and the API
// server has its own priority and fairness.
func unthrottled(c *rest.Config) *rest.Config {
	c.QPS = -1
	c.Burst = 0
	return c
}

// NewClient returns a controller-runtime client for unstructured objects
// and coordination.k8s.io/v1 Leases (the agent's import locks).
func NewClient(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: Scheme()})
}

// Scheme knows the typed objects NewClient's client reads and writes:
// coordination.k8s.io/v1 (Lease).
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
