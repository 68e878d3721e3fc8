// Package applyorder is the order in which crpe applies a package's
// objects: the operator's stages (fluxcd/pkg/ssa's cluster definitions —
// CRDs, Namespaces, ClusterRoles — then class definitions, then the rest),
// each sorted by ssa's kind order (SortableUnstructureds). The operator
// applies in this order and `crpe manifests` prints in it, so that
// `kubectl apply -f -` meets a kind's definition and a namespace before
// the objects that need them.
//
// It is apart from the operator so that a command printing manifests need
// not link the controller; like the operator, it is off the data path.
package applyorder

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/octohelm/crpe/internal/kubepkg"
)

// Sort sorts one stage's objects in ssa's order: by kind (CRDs, Namespaces,
// ClusterRoles, ..., ServiceAccounts, ConfigMaps, Secrets, Services,
// Deployments, ..., webhooks last), then namespace and name.
func Sort(objs []*unstructured.Unstructured) {
	sort.Sort(ssa.SortableUnstructureds(objs))
}

// Stages splits objs into the operator's stages, each sorted: cluster
// definitions (CRDs, Namespaces, ClusterRoles), class definitions
// (StorageClass, IngressClass, ...: kinds ending in Class), and the rest.
// The operator waits for each of the first two stages to be ready before
// the next.
func Stages(objs []*unstructured.Unstructured) (defs, classes, rest []*unstructured.Unstructured) {
	for _, u := range objs {
		switch {
		case utils.IsClusterDefinition(u):
			defs = append(defs, u)
		case utils.IsClassDefinition(u):
			classes = append(classes, u)
		default:
			rest = append(rest, u)
		}
	}
	Sort(defs)
	Sort(classes)
	Sort(rest)
	return defs, classes, rest
}

// Order returns objs in the operator's apply order: its stages one after
// the other.
func Order(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	defs, classes, rest := Stages(objs)
	out := make([]*unstructured.Unstructured, 0, len(objs))
	out = append(out, defs...)
	out = append(out, classes...)
	return append(out, rest...)
}

// Helm's hook annotations.
const (
	AnnotationHook       = "helm.sh/hook"
	AnnotationHookWeight = "helm.sh/hook-weight"
)

// Phase is where an object goes among a Helm install's steps.
type Phase int

const (
	// Manifest is an object that is not a hook.
	Manifest Phase = iota
	// PreInstall is a hook Helm runs before the manifests on an install or
	// an upgrade (pre-install, pre-upgrade).
	PreInstall
	// PostInstall is a hook Helm runs after them (post-install,
	// post-upgrade).
	PostInstall
	// OtherHook is a hook an install or upgrade does not run (delete,
	// rollback, test), or one naming an event Helm does not know (Helm
	// leaves those out).
	OtherHook
)

// HookPhase tells where u goes, from its helm.sh/hook annotation, and the
// annotation's value.
func HookPhase(u *unstructured.Unstructured) (Phase, string) {
	v, ok := u.GetAnnotations()[AnnotationHook]
	if !ok {
		return Manifest, ""
	}
	known := map[string]bool{"pre-install": true, "post-install": true, "pre-delete": true, "post-delete": true,
		"pre-upgrade": true, "post-upgrade": true, "pre-rollback": true, "post-rollback": true, "test": true,
		"test-success": true} // Helm 2's name of test, which Helm still reads
	pre, post := false, false
	for _, e := range strings.Split(v, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		if !known[e] {
			return OtherHook, v // Helm skips a hook with an unknown event
		}
		switch e {
		case "pre-install", "pre-upgrade":
			pre = true
		case "post-install", "post-upgrade":
			post = true
		}
	}
	switch {
	case pre:
		return PreInstall, v
	case post:
		return PostInstall, v
	}
	return OtherHook, v
}

// hookWeight is Helm's: the helm.sh/hook-weight annotation as an integer,
// 0 when absent or not a number.
func hookWeight(u *unstructured.Unstructured) int {
	w, err := strconv.Atoi(u.GetAnnotations()[AnnotationHookWeight])
	if err != nil {
		return 0
	}
	return w
}

// helmInstallOrder is Helm's InstallOrder (helm.sh/helm/v4
// pkg/release/v1/util/kind_sorter.go): hooks of one weight and name run in
// this order of kinds.
var helmInstallOrder = func() map[string]int {
	kinds := []string{"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
		"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap",
		"StorageClass", "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
		"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
		"RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
		"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
		"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
	m := make(map[string]int, len(kinds))
	for i, k := range kinds {
		m[k] = i
	}
	return m
}()

// HookLess tells whether hook a runs before hook b, as Helm runs a stage's
// hooks: by weight (helm.sh/hook-weight; 0 when absent or not a number),
// then name, then kind in Helm's install order (kinds it does not list
// last, by name). Hooks equal in all three keep their order: sort stably.
func HookLess(a, b *unstructured.Unstructured) bool {
	if wa, wb := hookWeight(a), hookWeight(b); wa != wb {
		return wa < wb
	}
	if a.GetName() != b.GetName() {
		return a.GetName() < b.GetName()
	}
	ka, kb := a.GetKind(), b.GetKind()
	ra, aok := helmInstallOrder[ka]
	rb, bok := helmInstallOrder[kb]
	switch {
	case aok && bok:
		return ra < rb
	case aok != bok:
		return aok
	default:
		return ka < kb
	}
}

// Object is a manifest of a package, as an object, with its key.
type Object struct {
	// Key is the manifest's key in spec.manifests.
	Key    string
	Object *unstructured.Unstructured
	Phase  Phase
	// Hook is the helm.sh/hook annotation's value, for a hook.
	Hook string
}

// Objects turns a package's manifests into objects, exactly as they are
// (nothing added, no namespace set), in key order.
func Objects(p *kubepkg.KubePkg) ([]*Object, error) {
	keys := make([]string, 0, len(p.Spec.Manifests))
	for k := range p.Spec.Manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*Object, 0, len(keys))
	for _, k := range keys {
		b, err := json.Marshal(p.Spec.Manifests[k])
		if err != nil {
			return nil, fmt.Errorf("spec.manifests[%q]: %w", k, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			return nil, fmt.Errorf("spec.manifests[%q]: not a Kubernetes object: %w", k, err)
		}
		phase, hook := HookPhase(u)
		out = append(out, &Object{Key: k, Object: u, Phase: phase, Hook: hook})
	}
	return out, nil
}

// WithHooks orders a package's objects for a plain `kubectl apply`, with
// Helm's hooks where a Helm install runs them:
//
//  1. the package's CustomResourceDefinitions and Namespaces that are not
//     hooks (Helm installs a chart's CRDs and its namespace before any
//     hook);
//  2. pre-install and pre-upgrade hooks, by weight, then name, then kind
//     (HookLess);
//  3. every other object that is not a hook, in the operator's order;
//  4. post-install and post-upgrade hooks, by weight, then name, then kind.
//
// With hooks false, hooks are left out (steps 2 and 4). Hooks an install
// never runs (delete, rollback, test, unknown events) are always left out.
// left lists the objects left out.
func WithHooks(objs []*Object, hooks bool) (ordered, left []*Object) {
	byObj := map[*unstructured.Unstructured]*Object{}
	var plain []*unstructured.Unstructured
	var pre, post []*Object
	for _, o := range objs {
		switch o.Phase {
		case Manifest:
			byObj[o.Object] = o
			plain = append(plain, o.Object)
		case PreInstall:
			pre = append(pre, o)
		case PostInstall:
			post = append(post, o)
		default:
			left = append(left, o)
		}
	}
	if !hooks {
		left = append(left, pre...)
		left = append(left, post...)
		pre, post = nil, nil
	}
	// hooks among themselves: Helm's order (the operator runs them in it)
	for _, hs := range [][]*Object{pre, post} {
		sort.SliceStable(hs, func(i, j int) bool { return HookLess(hs[i].Object, hs[j].Object) })
	}
	order := Order(plain)
	i := 0
	for ; i < len(order) && (utils.IsCRD(order[i]) || utils.IsNamespace(order[i])); i++ {
		ordered = append(ordered, byObj[order[i]])
	}
	ordered = append(ordered, pre...)
	for _, u := range order[i:] {
		ordered = append(ordered, byObj[u])
	}
	ordered = append(ordered, post...)
	sort.SliceStable(left, func(i, j int) bool { return left[i].Key < left[j].Key })
	return ordered, left
}
