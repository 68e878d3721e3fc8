//go:build linux

// Package operator tests the cluster side of crpe against a real control
// plane: Debian's etcd and a kube-apiserver built from the Go module proxy
// (test/peers/kube.sh), started once for the package on loopback
// (testenv.SharedKube). The crpe binary runs as real processes: `crpe
// operator` (one per test, watching the test's own namespace), `crpe apply`,
// `crpe install`, `crpe agent --kubeconfig`, `crpe export` and `crpe import`.
// No controllers or kubelet run: Deployments never become available,
// deleted Namespaces stay Terminating and nothing garbage-collects.
package operator

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/testenv"
)

func TestMain(m *testing.M) {
	code := testenv.Main(m)
	testenv.StopSharedKube()
	os.Exit(code)
}

// Names crpe puts on what it applies (spelled out, not imported, so that the
// tests check the contract rather than the code's constants).
const (
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelKubePkg   = "octohelm.tech/kubepkg"
	annForce       = "octohelm.tech/force-downgrade"
	annKeep        = "octohelm.tech/keep-resources"
)

// kube returns the package's shared control plane.
func kube(t *testing.T) *testenv.Kube { return testenv.SharedKube(t) }

func ctxFor(t *testing.T, d time.Duration) context.Context { return testenv.WaitCtx(t, d) }

// kubectl runs kubectl and fails the test on error.
func kubectl(ctx context.Context, t *testing.T, k *testenv.Kube, args ...string) string {
	t.Helper()
	out, err := k.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kubectlApply applies objects (YAML or JSON) with kubectl.
func kubectlApply(ctx context.Context, t *testing.T, k *testenv.Kube, doc string, args ...string) string {
	t.Helper()
	out, err := k.KubectlInput(ctx, doc, append([]string{"apply", "-f", "-"}, args...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return out
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// newNS creates a namespace of the test's own (left behind: without a
// namespace controller it would only stay Terminating).
func newNS(ctx context.Context, t *testing.T, k *testenv.Kube) string {
	t.Helper()
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "-"), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	ns := strings.Trim(base, "-") + "-" + hex.EncodeToString(b[:])
	kubectl(ctx, t, k, "create", "namespace", ns)
	return ns
}

// getObj returns an object as JSON (nil when not found).
func getObj(ctx context.Context, t *testing.T, k *testenv.Kube, args ...string) map[string]any {
	t.Helper()
	out, err := k.Kubectl(ctx, append([]string{"get", "-o", "json", "--ignore-not-found", "--show-managed-fields"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("kubectl get %v: %v\n%s", args, err, out)
	}
	return m
}

// at walks a JSON object (strings are map keys, ints slice indexes).
func at(v any, path ...any) any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		case int:
			s, ok := v.([]any)
			if !ok || p >= len(s) {
				return nil
			}
			v = s[p]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := at(v, path...).(string)
	return s
}

// cond returns the condition typ of an object's status.
func cond(obj map[string]any, typ string) map[string]any {
	cs, _ := at(obj, "status", "conditions").([]any)
	for _, c := range cs {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// condString renders the conditions for failure messages.
func condString(obj map[string]any) string {
	b, _ := json.MarshalIndent(at(obj, "status"), "", "  ")
	return string(b)
}

// kpkg returns a KubePkg object.
func kpkg(ctx context.Context, t *testing.T, k *testenv.Kube, ns, name string) map[string]any {
	t.Helper()
	return getObj(ctx, t, k, "-n", ns, "kubepkg.octohelm.tech", name)
}

// waitPkg waits until the KubePkg's status was written for its current
// generation and pred holds; it returns the object.
func waitPkg(ctx context.Context, t *testing.T, k *testenv.Kube, ns, name string, d time.Duration, what string, pred func(obj map[string]any) bool) map[string]any {
	t.Helper()
	var obj map[string]any
	testenv.Eventually(t, d, fmt.Sprintf("KubePkg %s/%s: %s", ns, name, what), func() (bool, string) {
		obj = kpkg(ctx, t, k, ns, name)
		if obj == nil {
			return false, "not found"
		}
		gen, _ := at(obj, "metadata", "generation").(float64)
		og, _ := at(obj, "status", "observedGeneration").(float64)
		if og != gen {
			return false, fmt.Sprintf("observedGeneration %v, generation %v; status %s", og, gen, condString(obj))
		}
		if !pred(obj) {
			return false, condString(obj)
		}
		return true, ""
	})
	return obj
}

// condIs is a waitPkg predicate: condition typ has status (and reason when
// given).
func condIs(typ, status, reason string) func(map[string]any) bool {
	return func(obj map[string]any) bool {
		c := cond(obj, typ)
		return c != nil && c["status"] == status && (reason == "" || c["reason"] == reason)
	}
}

func and(ps ...func(map[string]any) bool) func(map[string]any) bool {
	return func(obj map[string]any) bool {
		for _, p := range ps {
			if !p(obj) {
				return false
			}
		}
		return true
	}
}

func versionIs(v string) func(map[string]any) bool {
	return func(obj map[string]any) bool { return str(obj, "status", "appliedVersion") == v }
}

// startOperator runs `crpe operator` for ns until the test ends and waits
// until it has installed the CRD and started its controller.
func startOperator(ctx context.Context, t *testing.T, k *testenv.Kube, ns string, extra ...string) *testenv.Proc {
	t.Helper()
	return startOperatorWith(ctx, t, k.Kubeconfig, ns, extra...)
}

// startOperatorWith is startOperator with a kubeconfig of the test's.
func startOperatorWith(ctx context.Context, t *testing.T, kubeconfig, ns string, extra ...string) *testenv.Proc {
	t.Helper()
	return testenv.StartOperator(t, kubeconfig, ns, append([]string{"--resync", "5s", "--log-level", "debug"}, extra...)...)
}

// manifests of test packages
var (
	configMap  = testenv.ConfigMap
	secret     = testenv.Secret
	service    = testenv.Service
	deployment = testenv.Deployment
)

// pkgDoc renders a KubePkg as YAML; manifests get their keys
// (<name>.<namespace>.<lowercase kind>).
func pkgDoc(t *testing.T, ns, name, version string, annotations map[string]string, objs ...map[string]any) string {
	t.Helper()
	man := map[string]any{}
	for _, o := range objs {
		oname := str(o, "metadata", "name")
		ons := str(o, "metadata", "namespace")
		if ons == "" {
			ons = ns
		}
		man[oname+"."+ons+"."+strings.ToLower(str(o, "kind"))] = o
	}
	meta := map[string]any{"name": name, "namespace": ns}
	if len(annotations) > 0 {
		a := map[string]any{}
		for k, v := range annotations {
			a[k] = v
		}
		meta["annotations"] = a
	}
	doc := map[string]any{"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg", "metadata": meta,
		"spec": map[string]any{"version": version, "manifests": man}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type result = testenv.Result

// crpe runs the crpe binary to completion, without CRPE_ variables or
// $KUBECONFIG, and returns stdout, stderr and the exit code.
func crpe(ctx context.Context, t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return testenv.RunCrpe(ctx, t, testenv.CrpeOptions{Drop: []string{"KUBECONFIG"}, Stdin: stdin}, args...)
}

func mustCrpe(ctx context.Context, t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := crpe(ctx, t, stdin, args...)
	if r.Err != nil {
		t.Fatalf("%s", r)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// timed logs how long a test took (the report's per-test timings).
func timed(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() { t.Logf("took %s", time.Since(start).Round(time.Millisecond)) })
}

// apiCounter records the requests that go through a counting proxy.
type apiCounter struct {
	mu   sync.Mutex
	reqs []apiRequest
}

type apiRequest struct {
	method, path string
	dryRun       bool
	watch        bool
}

// take returns the requests recorded so far and forgets them.
func (c *apiCounter) take() apiRequests {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.reqs
	c.reqs = nil
	return out
}

type apiRequests []apiRequest

// requestCounts sums requests by what they do.
type requestCounts struct {
	applies, dryRuns, gets, lists, other int
}

func (c requestCounts) total() int { return c.applies + c.dryRuns + c.gets + c.lists + c.other }

func (c requestCounts) String() string {
	return fmt.Sprintf("%d applies, %d dry runs, %d GETs, %d LISTs, %d other", c.applies, c.dryRuns, c.gets, c.lists, c.other)
}

// on counts the requests on objects in namespace ns (KubePkgs, events and
// watches left out).
func (rs apiRequests) on(ns string) requestCounts {
	var c requestCounts
	prefix := "/namespaces/" + ns + "/"
	for _, r := range rs {
		i := strings.Index(r.path, prefix)
		if i < 0 || r.watch || strings.Contains(r.path, "/kubepkgs") || strings.Contains(r.path, "/events") {
			continue
		}
		named := strings.Count(r.path[i+len(prefix):], "/") > 0 // <resource>/<name>
		switch {
		case r.method == http.MethodPatch && r.dryRun:
			c.dryRuns++
		case r.method == http.MethodPatch:
			c.applies++
		case r.method == http.MethodGet && named:
			c.gets++
		case r.method == http.MethodGet:
			c.lists++
		default:
			c.other++
		}
	}
	return c
}

// writes returns the requests that may change something (dry runs left
// out).
func (rs apiRequests) writes() []string {
	var out []string
	for _, r := range rs {
		if r.method != http.MethodGet && r.method != http.MethodHead && !r.dryRun {
			out = append(out, r.method+" "+r.path)
		}
	}
	return out
}

// countingKubeconfig starts an HTTPS reverse proxy to k's API server on
// loopback (a certificate of its own; the admin's token passes through)
// that records every request, and returns a kubeconfig for it.
func countingKubeconfig(t *testing.T, k *testenv.Kube) (string, *apiCounter) {
	t.Helper()
	target, err := url.Parse(k.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = k.HTTPClient().Transport
	rp.FlushInterval = -1 // watches stream
	c := &apiCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		c.mu.Lock()
		c.reqs = append(c.reqs, apiRequest{method: r.Method, path: r.URL.Path, dryRun: q.Get("dryRun") != "", watch: q.Get("watch") == "true"})
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc := writeFile(t, "kubeconfig", fmt.Sprintf(`apiVersion: "v1"
kind: "Config"
clusters:
  - name: "counted"
    cluster: {server: %q, certificate-authority-data: %q}
users:
  - name: "admin"
    user: {token: %q}
contexts:
  - name: "counted"
    context: {cluster: "counted", user: "admin", namespace: "default"}
current-context: "counted"
`, srv.URL, base64.StdEncoding.EncodeToString(ca), k.Token))
	return kc, c
}
