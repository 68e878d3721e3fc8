package operator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// InstallOptions shape `crpe install`.
type InstallOptions struct {
	Namespace    string
	Image        string
	NodePort     int
	StorageSize  string
	StorageClass string
	// Token is the agent's write token (random when empty).
	Token string
	// AllowPush lets the agent take /v2 pushes too.
	AllowPush bool
}

// InstallManifests renders everything crpe needs in a cluster, as one YAML
// stream: Namespace, CRD, ServiceAccounts, RBAC, the agent (Deployment,
// PVC, token Secret, NodePort Service) and the operator.
func InstallManifests(o InstallOptions) ([]byte, error) {
	if o.Namespace == "" {
		o.Namespace = "crpe-system"
	}
	if o.NodePort == 0 {
		o.NodePort = 30660
	}
	if o.StorageSize == "" {
		o.StorageSize = "20Gi"
	}
	if o.Token == "" {
		var b [24]byte
		_, _ = rand.Read(b[:])
		o.Token = hex.EncodeToString(b[:])
	}
	ns := o.Namespace
	labels := func(component string) map[string]any {
		return map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "crpe"}
	}
	podSecurity := map[string]any{"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
		"seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	containerSecurity := map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
		"capabilities": map[string]any{"drop": []any{"ALL"}}}
	probe := func(port any) map[string]any {
		return map[string]any{"httpGet": map[string]any{"path": "/healthz", "port": port}, "periodSeconds": 10, "failureThreshold": 3}
	}
	agentArgs := []any{"agent", "--addr", ":36060", "--data", "/data", "--token-file", "/etc/crpe/token/token", "--log-format", "json"}
	if o.AllowPush {
		agentArgs = append(agentArgs, "--allow-push")
	}
	pvc := map[string]any{"accessModes": []any{"ReadWriteOnce"}, "resources": map[string]any{"requests": map[string]any{"storage": o.StorageSize}}}
	if o.StorageClass != "" {
		pvc["storageClassName"] = o.StorageClass
	}
	objs := []map[string]any{
		{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": labels("namespace")}},
		nil, // the CRD
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "crpe-agent", "namespace": ns, "labels": labels("agent")}},
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "crpe-operator", "namespace": ns, "labels": labels("operator")}},
		// the agent only creates and updates KubePkg objects
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "crpe-agent", "labels": labels("agent")},
			"rules": []any{
				map[string]any{"apiGroups": []any{"octohelm.tech"}, "resources": []any{"kubepkgs"}, "verbs": []any{"get", "list", "watch", "create", "update", "patch"}},
				map[string]any{"apiGroups": []any{"octohelm.tech"}, "resources": []any{"kubepkgs/status"}, "verbs": []any{"get"}},
			}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "crpe-agent", "labels": labels("agent")},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crpe-agent"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "crpe-agent", "namespace": ns}}},
		// the operator manages KubePkg objects and their CRD...
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "crpe-operator", "labels": labels("operator")},
			"rules": []any{
				map[string]any{"apiGroups": []any{"octohelm.tech"}, "resources": []any{"kubepkgs", "kubepkgs/status", "kubepkgs/finalizers"}, "verbs": []any{"get", "list", "watch", "update", "patch"}},
				map[string]any{"apiGroups": []any{"apiextensions.k8s.io"}, "resources": []any{"customresourcedefinitions"}, "verbs": []any{"get", "list", "watch", "create", "update", "patch"}},
				map[string]any{"apiGroups": []any{""}, "resources": []any{"events"}, "verbs": []any{"create", "patch"}},
				map[string]any{"apiGroups": []any{"events.k8s.io"}, "resources": []any{"events"}, "verbs": []any{"create", "patch"}},
				map[string]any{"apiGroups": []any{"coordination.k8s.io"}, "resources": []any{"leases"}, "verbs": []any{"get", "list", "watch", "create", "update", "patch", "delete"}},
			}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "crpe-operator", "labels": labels("operator")},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crpe-operator"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "crpe-operator", "namespace": ns}}},
		// ...and applies what packages contain: any kind. Narrow this role to
		// the kinds your packages hold for a tighter grant.
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "crpe-operator-apply", "labels": labels("operator")},
			"rules": []any{map[string]any{"apiGroups": []any{"*"}, "resources": []any{"*"}, "verbs": []any{"get", "list", "watch", "create", "update", "patch", "delete"}}}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "crpe-operator-apply", "labels": labels("operator")},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crpe-operator-apply"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "crpe-operator", "namespace": ns}}},
		{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "crpe-agent-token", "namespace": ns, "labels": labels("agent")},
			"type": "Opaque", "stringData": map[string]any{"token": o.Token}},
		{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": map[string]any{"name": "crpe-agent-data", "namespace": ns, "labels": labels("agent")}, "spec": pvc},
		{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "crpe-agent", "namespace": ns, "labels": labels("agent")},
			"spec": map[string]any{
				"replicas": 1, "strategy": map[string]any{"type": "Recreate"},
				"selector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": "agent"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels("agent")},
					"spec": map[string]any{
						"serviceAccountName": "crpe-agent", "securityContext": podSecurity,
						"containers": []any{map[string]any{
							"name": "agent", "image": o.Image, "imagePullPolicy": "IfNotPresent", "args": agentArgs,
							"env":            []any{map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}}},
							"ports":          []any{map[string]any{"name": "registry", "containerPort": 36060}},
							"livenessProbe":  probe("registry"),
							"readinessProbe": probe("registry"),
							"resources": map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"},
								"limits": map[string]any{"memory": "512Mi"}},
							"securityContext": containerSecurity,
							"volumeMounts": []any{
								map[string]any{"name": "data", "mountPath": "/data"},
								map[string]any{"name": "token", "mountPath": "/etc/crpe/token", "readOnly": true},
							},
						}},
						"volumes": []any{
							map[string]any{"name": "data", "persistentVolumeClaim": map[string]any{"claimName": "crpe-agent-data"}},
							map[string]any{"name": "token", "secret": map[string]any{"secretName": "crpe-agent-token"}},
						},
					},
				},
			}},
		// the nodes' containerd reaches the agent on every node's port
		{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "crpe-agent", "namespace": ns, "labels": labels("agent")},
			"spec": map[string]any{"type": "NodePort",
				"selector": map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": "agent"},
				"ports":    []any{map[string]any{"name": "registry", "port": 36060, "targetPort": "registry", "nodePort": o.NodePort}}}},
		{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "crpe-operator", "namespace": ns, "labels": labels("operator")},
			"spec": map[string]any{
				"replicas": 1,
				"selector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": "operator"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels("operator")},
					"spec": map[string]any{
						"serviceAccountName": "crpe-operator", "securityContext": podSecurity,
						"containers": []any{map[string]any{
							"name": "operator", "image": o.Image, "imagePullPolicy": "IfNotPresent",
							"args":           []any{"operator", "--health-addr", ":8081", "--log-format", "json"},
							"ports":          []any{map[string]any{"name": "health", "containerPort": 8081}},
							"livenessProbe":  probe("health"),
							"readinessProbe": probe("health"),
							"resources": map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"},
								"limits": map[string]any{"memory": "256Mi"}},
							"securityContext": containerSecurity,
						}},
					},
				},
			}},
	}
	var buf bytes.Buffer
	buf.WriteString("# crpe: the agent (registry + import) and the operator, written by crpe install\n")
	for i, o := range objs {
		buf.WriteString("---\n")
		if i == 1 {
			buf.Write(bytes.TrimSpace(CRDYAML()))
			buf.WriteString("\n")
			continue
		}
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// ImageName is the default image reference crpe install names.
func ImageName(version string) string {
	v := strings.TrimPrefix(version, "v")
	if v == "" || v == "dev" {
		v = "latest"
	}
	return fmt.Sprintf("ghcr.io/octohelm/crpe:%s", v)
}
