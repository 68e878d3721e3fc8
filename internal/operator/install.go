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
	// Registry (HOST[:PORT][/PREFIX]) writes the agent in registry mode:
	// Replicas agents, no volume, importing into that site registry, the
	// package records as KubePkg objects.
	Registry string
	Replicas int
	// Flatten: the registry's repositories are PREFIX/docker.io_library_nginx.
	Flatten bool
	// RegistryUsername and RegistryPassword go into the Secret
	// crpe-agent-registry (else it is left for the site to create: the
	// agent reads it when it is there, Docker's config.json otherwise).
	RegistryUsername, RegistryPassword string
	// RegistryCA is the PEM of the site registry's CA, put in the ConfigMap
	// crpe-agent-registry-ca.
	RegistryCA []byte
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
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Registry == "" && o.Replicas > 1 {
		return nil, fmt.Errorf("--replicas %d needs --registry: an agent with its own store is one pod on one volume", o.Replicas)
	}
	if o.Registry != "" && o.AllowPush {
		return nil, fmt.Errorf("--allow-push is for an agent with its own store; in registry mode push to the site registry")
	}
	agentArgs := []any{"agent", "--addr", ":36060", "--data", "/data", "--token-file", "/etc/crpe/token/token", "--log-format", "json"}
	if o.AllowPush {
		agentArgs = append(agentArgs, "--allow-push")
	}
	env := []any{map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}}}
	mounts := []any{
		map[string]any{"name": "data", "mountPath": "/data"},
		map[string]any{"name": "token", "mountPath": "/etc/crpe/token", "readOnly": true},
	}
	volumes := []any{
		map[string]any{"name": "data", "persistentVolumeClaim": map[string]any{"claimName": "crpe-agent-data"}},
		map[string]any{"name": "token", "secret": map[string]any{"secretName": "crpe-agent-token"}},
	}
	strategy := map[string]any{"type": "Recreate"}
	var affinity map[string]any
	var registryObjs []map[string]any
	if o.Registry != "" {
		// registry mode: stateless importers, any number behind the Service
		agentArgs = []any{"agent", "--addr", ":36060", "--token-file", "/etc/crpe/token/token", "--registry", o.Registry, "--log-format", "json"}
		if o.Flatten {
			agentArgs = append(agentArgs, "--flatten")
		}
		secretRef := func(key string) map[string]any {
			return map[string]any{"secretKeyRef": map[string]any{"name": "crpe-agent-registry", "key": key, "optional": true}}
		}
		// the replica names itself in the import locks it holds
		env = append(env, map[string]any{"name": "POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}})
		// the import locks: one Lease per package, in the agents' namespace
		registryObjs = append(registryObjs,
			map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
				"metadata": map[string]any{"name": "crpe-agent-import-locks", "namespace": ns, "labels": labels("agent")},
				"rules": []any{map[string]any{"apiGroups": []any{"coordination.k8s.io"}, "resources": []any{"leases"},
					"verbs": []any{"get", "create", "update", "delete"}}}},
			map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
				"metadata": map[string]any{"name": "crpe-agent-import-locks", "namespace": ns, "labels": labels("agent")},
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "crpe-agent-import-locks"},
				"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "crpe-agent", "namespace": ns}}})
		env = append(env, map[string]any{"name": "CRPE_USERNAME", "valueFrom": secretRef("username")},
			map[string]any{"name": "CRPE_PASSWORD", "valueFrom": secretRef("password")})
		mounts = []any{map[string]any{"name": "token", "mountPath": "/etc/crpe/token", "readOnly": true}}
		volumes = []any{map[string]any{"name": "token", "secret": map[string]any{"secretName": "crpe-agent-token"}}}
		if o.RegistryUsername != "" {
			registryObjs = append(registryObjs, map[string]any{"apiVersion": "v1", "kind": "Secret",
				"metadata": map[string]any{"name": "crpe-agent-registry", "namespace": ns, "labels": labels("agent")},
				"type":     "Opaque", "stringData": map[string]any{"username": o.RegistryUsername, "password": o.RegistryPassword}})
		}
		if len(o.RegistryCA) > 0 {
			registryObjs = append(registryObjs, map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": "crpe-agent-registry-ca", "namespace": ns, "labels": labels("agent")},
				"data":     map[string]any{"ca.crt": string(o.RegistryCA)}})
			agentArgs = append(agentArgs, "--ca-file", "/etc/crpe/registry-ca/ca.crt")
			mounts = append(mounts, map[string]any{"name": "registry-ca", "mountPath": "/etc/crpe/registry-ca", "readOnly": true})
			volumes = append(volumes, map[string]any{"name": "registry-ca", "configMap": map[string]any{"name": "crpe-agent-registry-ca"}})
		}
		strategy = map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": 0, "maxSurge": 1}}
		// replicas on different nodes where there are several
		affinity = map[string]any{"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{
			map[string]any{"weight": 100, "podAffinityTerm": map[string]any{"topologyKey": "kubernetes.io/hostname",
				"labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": "agent"}}}}}}}
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
		// the agent only creates and updates KubePkg objects (and records
		// its signature verdicts in their status)
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "crpe-agent", "labels": labels("agent")},
			"rules": []any{
				map[string]any{"apiGroups": []any{"octohelm.tech"}, "resources": []any{"kubepkgs"}, "verbs": []any{"get", "list", "watch", "create", "update", "patch"}},
				// the import's signature verdicts (status.signatures)
				map[string]any{"apiGroups": []any{"octohelm.tech"}, "resources": []any{"kubepkgs/status"}, "verbs": []any{"get", "patch"}},
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
				"replicas": o.Replicas, "strategy": strategy,
				"selector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "crpe", "app.kubernetes.io/component": "agent"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels("agent")},
					"spec": map[string]any{
						"serviceAccountName": "crpe-agent", "securityContext": podSecurity,
						"containers": []any{map[string]any{
							"name": "agent", "image": o.Image, "imagePullPolicy": "IfNotPresent", "args": agentArgs,
							"env":            env,
							"ports":          []any{map[string]any{"name": "registry", "containerPort": 36060}},
							"livenessProbe":  probe("registry"),
							"readinessProbe": probe("registry"),
							"resources": map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"},
								"limits": map[string]any{"memory": "512Mi"}},
							"securityContext": containerSecurity,
							"volumeMounts":    mounts,
						}},
						"volumes": volumes,
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
	if o.Registry != "" {
		// no volume: the PVC goes, the registry's Secret and CA come
		var kept []map[string]any
		for _, obj := range objs { // the CRD's nil stays at 1
			if obj != nil && obj["kind"] == "PersistentVolumeClaim" {
				kept = append(kept, registryObjs...)
				continue
			}
			kept = append(kept, obj)
		}
		objs = kept
		for _, obj := range objs {
			if obj != nil && obj["kind"] == "Deployment" && affinity != nil && strAt(obj, "metadata", "name") == "crpe-agent" {
				spec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
				spec["affinity"] = affinity
			}
		}
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

func strAt(obj map[string]any, path ...string) string {
	var v any = obj
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}
