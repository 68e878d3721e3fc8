package operator

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestCompare: the local drift check against live copies shaped as
// kube-apiserver v1.34 returns them after `crpe apply` (managedFields
// copied from a real server: defaulted list keys such as a port's
// protocol, atomic selectors, stringData kept in crpe's field set while
// the object holds only data, creationTimestamp: null owned in a pod
// template).
func TestCompare(t *testing.T) {
	const cm = `
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
  namespace: ns
  labels: {octohelm.tech/kubepkg: ns.p, other: x}
  managedFields:
  - {manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1,
     fieldsV1: {"f:data": {"f:k": {}, "f:num": {}}, "f:metadata": {"f:labels": {"f:octohelm.tech/kubepkg": {}}}}}
  %s
data: {k: v, num: "1"}
`
	const svc = `
apiVersion: v1
kind: Service
metadata:
  name: svc
  namespace: ns
  managedFields:
  - {manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1,
     fieldsV1: {"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}}, "f:selector": {}}}}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
  selector: {app: x%s}
  type: ClusterIP
`
	const deploy = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ns
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    manager: crpe
    operation: Apply
    fieldsV1:
      f:spec:
        f:replicas: {}
        f:selector: {}
        f:template:
          f:metadata: {f:creationTimestamp: {}, f:labels: {f:app: {}}}
          f:spec:
            f:containers:
              k:{"name":"main"}:
                .: {}
                f:image: {}
                f:name: {}
                f:ports:
                  k:{"containerPort":80,"protocol":"TCP"}: {.: {}, f:containerPort: {}}
                f:resources: {f:requests: {f:cpu: {}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: nginx
        imagePullPolicy: Always
        ports: [{containerPort: 80, protocol: TCP}]
        resources: {requests: {cpu: "1"}}
      restartPolicy: Always
`
	const secret = `
apiVersion: v1
kind: Secret
metadata:
  name: s
  namespace: ns
  managedFields:
  - {manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1,
     fieldsV1: {"f:stringData": {"f:password": {}}, "f:type": {}}}
data: {password: cA==}
type: Opaque
`
	cases := []struct {
		name          string
		desired, live string
		want          verdict
	}{
		{"in sync", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: v, num: "1"}}`,
			fmtYAML(cm, ""), inSync},
		{"value changed", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: w, num: "1"}}`,
			fmtYAML(cm, ""), drifted},
		{"a key dropped: crpe owns it", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: v}}`,
			fmtYAML(cm, ""), drifted},
		{"a key crpe does not own, another value", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: v, num: "1", m: z}}`,
			fmtYAML(cm, ""), drifted},
		{"a label crpe does not own, same value", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p, other: x}}, data: {k: v, num: "1"}}`,
			fmtYAML(cm, ""), unsure},
		{"being deleted", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: v, num: "1"}}`,
			fmtYAML(cm, `deletionTimestamp: "2026-01-01T00:00:00Z"`), drifted},
		{"a status in the manifest", `{apiVersion: v1, kind: ConfigMap, metadata: {name: a, labels: {octohelm.tech/kubepkg: ns.p}}, data: {k: v, num: "1"}, status: {x: 1}}`,
			fmtYAML(cm, ""), unsure},
		{"not applied by crpe", `{apiVersion: v1, kind: ConfigMap, metadata: {name: b}}`,
			`{apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: ns}}`, drifted},
		{"applied by crpe in another version", `{apiVersion: example.com/v2, kind: W, metadata: {name: w}, spec: {a: 1}}`,
			`{apiVersion: example.com/v2, kind: W, metadata: {name: w, managedFields: [{manager: crpe, operation: Apply, apiVersion: example.com/v1, fieldsType: FieldsV1, fieldsV1: {"f:spec": {"f:a": {}}}}]}, spec: {a: 1}}`, unsure},
		{"service: defaulted key and fields", `{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {selector: {app: x}, ports: [{name: http, port: 80, targetPort: 8080}]}}`,
			fmtYAML(svc, ""), inSync},
		{"service: port changed", `{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {selector: {app: x}, ports: [{name: http, port: 80, targetPort: 8081}]}}`,
			fmtYAML(svc, ""), drifted},
		{"service: another port", `{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {selector: {app: x}, ports: [{name: http, port: 81, targetPort: 8080}]}}`,
			fmtYAML(svc, ""), unsure},
		{"service: atomic selector with a key more", `{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {selector: {app: x}, ports: [{name: http, port: 80, targetPort: 8080}]}}`,
			fmtYAML(svc, ", tier: web"), unsure},
		{"service: atomic selector changed", `{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {selector: {app: other}, ports: [{name: http, port: 80, targetPort: 8080}]}}`,
			fmtYAML(svc, ""), drifted},
		{"deployment: a quantity written otherwise", `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, creationTimestamp: null},
			spec: {replicas: 1, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}, creationTimestamp: null},
			spec: {containers: [{name: main, image: nginx, ports: [{containerPort: 80}], resources: {requests: {cpu: 1000m}}}]}}}, status: {}}`,
			deploy, unsure},
		{"deployment: in sync", `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, creationTimestamp: null},
			spec: {replicas: 1, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}, creationTimestamp: null},
			spec: {containers: [{name: main, image: nginx, ports: [{containerPort: 80}], resources: {requests: {cpu: "1"}}}]}}}, status: {}}`,
			deploy, inSync},
		{"deployment: image changed", `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web},
			spec: {replicas: 1, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}, creationTimestamp: null},
			spec: {containers: [{name: main, image: nginx:2, ports: [{containerPort: 80}], resources: {requests: {cpu: "1"}}}]}}}}`,
			deploy, drifted},
		{"deployment: replicas changed by someone", `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web},
			spec: {replicas: 2, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}, creationTimestamp: null},
			spec: {containers: [{name: main, image: nginx, ports: [{containerPort: 80}], resources: {requests: {cpu: "1"}}}]}}}}`,
			deploy, drifted},
		{"secret: stringData against data", `{apiVersion: v1, kind: Secret, metadata: {name: s}, type: Opaque, stringData: {password: p}}`,
			secret, inSync},
		{"secret: stringData changed", `{apiVersion: v1, kind: Secret, metadata: {name: s}, type: Opaque, stringData: {password: q}}`,
			secret, drifted},
		{"an empty status crpe owns (a client that records the type's empty status)", `{apiVersion: v1, kind: ConfigMap, metadata: {name: e}, data: {k: v}}`,
			`{apiVersion: v1, kind: ConfigMap, metadata: {name: e, managedFields: [{manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {"f:data": {"f:k": {}}, "f:status": {"f:loadBalancer": {}}}}]}, data: {k: v}, status: {loadBalancer: {}}}`, inSync},
		{"a status crpe owns, not empty", `{apiVersion: v1, kind: ConfigMap, metadata: {name: e}, data: {k: v}}`,
			`{apiVersion: v1, kind: ConfigMap, metadata: {name: e, managedFields: [{manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {"f:data": {"f:k": {}}, "f:status": {"f:phase": {}}}}]}, data: {k: v}, status: {phase: x}}`, unsure},
		{"finalizers: a set", `{apiVersion: v1, kind: ConfigMap, metadata: {name: f, finalizers: [x/y]}}`,
			`{apiVersion: v1, kind: ConfigMap, metadata: {name: f, finalizers: [x/y, a/b], managedFields: [{manager: crpe, operation: Apply, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {"f:metadata": {"f:finalizers": {".": {}, "v:\"x/y\"": {}}}}}]}}`, inSync},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, l := &unstructured.Unstructured{}, &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(c.desired), &d.Object); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(c.live), &l.Object); err != nil {
				t.Fatal(err)
			}
			// as the engine sees them: JSON numbers as int64
			d, l = roundTrip(t, d), roundTrip(t, l)
			if got := compare(d, l); got != c.want {
				t.Errorf("compare = %v, want %v", got, c.want)
			}
		})
	}
}

func fmtYAML(format, arg string) string {
	out := []byte{}
	for i := 0; i < len(format); i++ {
		if format[i] == '%' && i+1 < len(format) && format[i+1] == 's' {
			out = append(out, arg...)
			i++
			continue
		}
		out = append(out, format[i])
	}
	return string(out)
}

func roundTrip(t *testing.T, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	b, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	out := &unstructured.Unstructured{}
	if err := out.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return out
}

func (v verdict) String() string {
	return [...]string{"inSync", "unsure", "drifted"}[v]
}
