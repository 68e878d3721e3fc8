package testenv

// Manifests of the Kubernetes objects the operator's tests put in packages,
// as the JSON maps a KubePkg's spec.manifests holds (no namespace: they
// follow the package's).

// ConfigMap returns a ConfigMap manifest.
func ConfigMap(name string, data map[string]string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name}, "data": stringMap(data)}
}

// Secret returns an Opaque Secret manifest with data as stringData.
func Secret(name string, data map[string]string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": name}, "type": "Opaque", "stringData": stringMap(data)}
}

// Service returns a ClusterIP Service manifest selecting app=name, with one
// port named http.
func Service(name string, port int) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"selector": map[string]any{"app": name},
			"ports": []any{map[string]any{"name": "http", "port": port, "targetPort": port}}}}
}

// Deployment returns a one-replica Deployment manifest of one container.
func Deployment(name, image string) map[string]any {
	labels := map[string]any{"app": name}
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"replicas": 1, "selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "main", "image": image}}}}}}
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
