package kit

import (
	"fmt"
	"strings"
)

// Package names of the story.
const (
	PkgName      = "hello"
	PkgNamespace = "default"
	ConfigMap    = "hello-config"
)

// Versions of the story's package: v1 (hello:v1 with a ConfigMap) and v2
// (hello:v2, the ConfigMap dropped).
var Versions = map[string]string{"v1": "1.0.0", "v2": "2.0.0"}

// Package renders the KubePkg of a story version ("v1" or "v2"): a
// Deployment, a Service and (v1 only) a ConfigMap; its images are hello and
// the pod sandbox image, which an air-gapped cluster needs too.
func Package(v string) (string, error) {
	version, ok := Versions[v]
	if !ok {
		return "", fmt.Errorf("no story version %q (v1 or v2)", v)
	}
	image := HelloV1
	if v == "v2" {
		image = HelloV2
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: %[1]s
  namespace: %[2]s
  annotations:
    octohelm.tech/platform: linux/amd64
spec:
  version: %[3]s
  images:
    %[4]q: ""
    %[5]q: ""
  manifests:
    %[1]s.%[2]s.deployment:
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: %[1]s
        labels: {app: %[1]s}
      spec:
        replicas: 1
        selector:
          matchLabels: {app: %[1]s}
        strategy:
          type: RollingUpdate
          rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
        template:
          metadata:
            labels: {app: %[1]s}
          spec:
            terminationGracePeriodSeconds: 2
            enableServiceLinks: false
            containers:
              - name: %[1]s
                image: %[4]s
                ports: [{name: http, containerPort: %[6]d}]
                readinessProbe:
                  httpGet: {path: /, port: http}
                  periodSeconds: 1
`, PkgName, PkgNamespace, version, image, Pause, Port)
	if v == "v1" {
		fmt.Fprintf(&b, `                envFrom:
                  - configMapRef: {name: %[1]s}
    %[1]s.%[2]s.configmap:
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: %[1]s}
      data:
        GREETING: "configured by %[1]s"
`, ConfigMap, PkgNamespace)
	}
	fmt.Fprintf(&b, `    %[1]s.%[2]s.service:
      apiVersion: v1
      kind: Service
      metadata: {name: %[1]s}
      spec:
        selector: {app: %[1]s}
        ports: [{name: http, port: 80, targetPort: http}]
`, PkgName, PkgNamespace)
	return b.String(), nil
}
