//go:build linux

package operator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// putArchive hands an archive to the agent's import API directly, to read
// the agent's whole answer (kubepkgObjects included).
func putArchive(t *testing.T, agent *testenv.Proc, file string, force bool) (int, map[string]any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := agent.URL + "/api/v1/kubepkgs"
	if force {
		u += "?force=true"
	}
	req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+agent.Token)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

// TestAgentCreatesKubePkg: `crpe agent --kubeconfig K --namespace NS` turns
// each import (`crpe import --to`) of an archive made by `crpe export` from a
// docker-registry fixture into a KubePkg object that the operator applies:
// created on the first import (spec.images pinned to the digests), a lower
// version refused by the import gate, a forced one (`crpe import --force`)
// written with octohelm.tech/force-downgrade: "true" (and applied), the
// annotation dropped again by the next ordinary import; an import lower than
// the object's version is not written to the object (semver gate of the
// agent); a package without metadata.namespace goes to --namespace.
func TestAgentCreatesKubePkg(t *testing.T) {
	t.Parallel()
	timed(t)
	ctx := ctxFor(t, 120*time.Second)
	k := kube(t)
	reg := testenv.StartDistribution(t)
	im := testenv.NewImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"},
		[]testenv.Blob{testenv.RandomLayer(t, 8<<10, false)}, false)
	testenv.PushImage(t, reg.URL, "library/busybox", "1.36", im)

	ns := newNS(ctx, t, k)
	startOperator(ctx, t, k, ns)
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", k.Kubeconfig, "--namespace", ns}})

	data := t.TempDir()
	export := func(name, version string, withNS bool) string {
		meta := "  name: " + name + "\n"
		keyNS := "default"
		if withNS {
			meta += "  namespace: " + ns + "\n"
			keyNS = ns
		}
		src := writeFile(t, name+"-"+version+".yaml", fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
%sspec:
  version: %s
  images:
    "docker.io/library/busybox:1.36": ""
  manifests:
    %s-config.%s.configmap: {apiVersion: v1, kind: ConfigMap, metadata: {name: %s-config}, data: {version: %q}}
`, meta, version, name, keyNS, name, version))
		out := filepath.Join(t.TempDir(), name+"-"+version+".kubepkg.tgz")
		mustCrpe(ctx, t, "", "export", "-f", src, "-o", out, "--data", data, "--registry-endpoint", "docker.io="+reg.URL)
		return out
	}
	v100, v090, v110, v120 := export("shop", "1.0.0", true), export("shop", "0.9.0", true), export("shop", "1.1.0", true), export("shop", "1.2.0", true)
	importTo := func(file string, extra ...string) result {
		return crpe(ctx, t, "", append([]string{"import", file, "--to", agent.URL, "--token", agent.Token, "--json"}, extra...)...)
	}
	configVersion := func() string {
		return str(getObj(ctx, t, k, "-n", ns, "configmap", "shop-config"), "data", "version")
	}

	// first import: the object is created and applied
	r := importTo(v100)
	if r.Err != nil {
		t.Fatalf("%s\nagent:\n%s", r, agent.Logs())
	}
	// `crpe import --to --json` prints the agent's kubepkgObjects (it once
	// dropped them, so a KubePkg object the agent could not write went
	// unnoticed)
	if sum := importJSON(t, r); sum.Import.KubePkgObjects[ns+"/shop"] != "created" {
		t.Errorf("kubepkgObjects %v, want %s/shop created:\n%s", sum.Import.KubePkgObjects, ns, r)
	}
	obj := kpkg(ctx, t, k, ns, "shop")
	if obj == nil {
		t.Fatalf("no KubePkg %s/shop after the import\nagent:\n%s", ns, agent.Logs())
	}
	if got := str(obj, "spec", "version"); got != "1.0.0" {
		t.Errorf("spec.version %q, want 1.0.0", got)
	}
	if got := str(obj, "spec", "images", "docker.io/library/busybox:1.36"); got != string(im.Manifest.Desc.Digest) {
		t.Errorf("spec.images pin %q, want %s", got, im.Manifest.Desc.Digest)
	}
	if a := str(obj, "metadata", "annotations", annForce); a != "" {
		t.Errorf("an ordinary import set %s=%q", annForce, a)
	}
	waitPkg(ctx, t, k, ns, "shop", 30*time.Second, "1.0.0 applied", and(condIs("Applied", "True", "Applied"), versionIs("1.0.0")))
	if v := configVersion(); v != "1.0.0" {
		t.Errorf("shop-config version %q", v)
	}

	// a lower version: refused by the import, the object untouched
	if r := importTo(v090); r.Code == 0 {
		t.Errorf("import of 0.9.0 after 1.0.0 without --force succeeded:\n%s", r)
	}
	if got := str(kpkg(ctx, t, k, ns, "shop"), "spec", "version"); got != "1.0.0" {
		t.Errorf("a refused import changed the object to %q", got)
	}

	// forced: the object follows with the annotation, and the operator too
	if r := importTo(v090, "--force"); r.Err != nil {
		t.Fatalf("%s", r)
	}
	obj = kpkg(ctx, t, k, ns, "shop")
	if got := str(obj, "spec", "version"); got != "0.9.0" {
		t.Errorf("forced import: spec.version %q, want 0.9.0", got)
	}
	if a := str(obj, "metadata", "annotations", annForce); a != "true" {
		t.Errorf("forced import: annotation %s=%q, want \"true\"", annForce, a)
	}
	waitPkg(ctx, t, k, ns, "shop", 30*time.Second, "0.9.0 applied", and(condIs("Applied", "True", "Applied"), versionIs("0.9.0")))
	if v := configVersion(); v != "0.9.0" {
		t.Errorf("shop-config version %q after the forced downgrade", v)
	}

	// the next ordinary import drops the annotation
	if r := importTo(v110); r.Err != nil {
		t.Fatalf("%s", r)
	}
	obj = kpkg(ctx, t, k, ns, "shop")
	if a, ok := at(obj, "metadata", "annotations", annForce).(string); ok {
		t.Errorf("an ordinary import after a forced one kept %s=%q", annForce, a)
	}
	waitPkg(ctx, t, k, ns, "shop", 30*time.Second, "1.1.0 applied", and(condIs("Applied", "True", "Applied"), versionIs("1.1.0")))

	// someone moved the object past what is imported: the agent does not
	// lower it, and says so
	kubectl(ctx, t, k, "patch", "kubepkg.octohelm.tech", "shop", "-n", ns, "--type=merge", "-p", `{"spec":{"version":"3.0.0"}}`)
	code, body := putArchive(t, agent, v120, false)
	if code != http.StatusCreated {
		t.Fatalf("import of 1.2.0: %d %v", code, body)
	}
	objs, _ := body["kubepkgObjects"].(map[string]any)
	if msg, _ := objs[ns+"/shop"].(string); !strings.HasPrefix(msg, "error: ") || !strings.Contains(msg, "3.0.0") {
		t.Errorf("kubepkgObjects %v: want an error naming 3.0.0", body["kubepkgObjects"])
	}
	if got := str(kpkg(ctx, t, k, ns, "shop"), "spec", "version"); got != "3.0.0" {
		t.Errorf("the agent lowered the object to %q", got)
	}

	// a package without metadata.namespace goes to the agent's --namespace
	// (its manifest keys name "default": that is what Validate asks of a
	// package without a namespace at export)
	if r := importTo(export("bare", "1.0.0", false)); r.Err != nil {
		t.Fatalf("%s", r)
	}
	if obj := kpkg(ctx, t, k, ns, "bare"); obj == nil {
		t.Fatalf("no KubePkg %s/bare: a package without a namespace should go to --namespace", ns)
	}
	testenv.Eventually(t, 30*time.Second, "bare applied or refused", func() (bool, string) {
		obj = kpkg(ctx, t, k, ns, "bare")
		return cond(obj, "Applied") != nil, condString(obj)
	})
	// (its keys once stayed <name>.default.<kind> in the object, which the
	// operator refused as Invalid: "key does not match")
	if c := cond(obj, "Applied"); c["status"] != "True" {
		t.Errorf("bare, imported into %s: Applied %v", ns, c)
	} else if v := str(getObj(ctx, t, k, "-n", ns, "configmap", "bare-config"), "data", "version"); v != "1.0.0" {
		t.Errorf("bare-config in %s: version %q", ns, v)
	}

	// a package taken from a cluster (`kubectl get kpkg -o yaml` served by a
	// deployments center) carries server-set metadata and a status, which
	// crpe export keeps: the agent must still create the object
	src := writeFile(t, "fromcluster.yaml", fmt.Sprintf(`apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata:
  name: fromcluster
  namespace: %s
  resourceVersion: "4711"
  uid: 0b059987-bc69-4675-8f6d-d41742c08f46
  generation: 3
  creationTimestamp: "2025-01-01T00:00:00Z"
  finalizers: [octohelm.tech/finalizer]
spec:
  version: 1.0.0
  manifests:
    fromcluster.%s.configmap: {apiVersion: v1, kind: ConfigMap, metadata: {name: fromcluster}}
status:
  appliedVersion: 1.0.0
`, ns, ns))
	fc := filepath.Join(t.TempDir(), "fromcluster.kubepkg.tgz")
	mustCrpe(ctx, t, "", "export", "-f", src, "-o", fc, "--data", data)
	code, body = putArchive(t, agent, fc, false)
	objs, _ = body["kubepkgObjects"].(map[string]any)
	if code != http.StatusCreated {
		t.Errorf("import of fromcluster: %d %v", code, body)
	} else if msg, _ := objs[ns+"/fromcluster"].(string); msg != "created" {
		// (the server-set metadata once made the create fail, naming resourceVersion)
		t.Errorf("fromcluster: kubepkgObjects %q, want created", msg)
	} else {
		waitPkg(ctx, t, k, ns, "fromcluster", 30*time.Second, "applied",
			and(condIs("Applied", "True", "Applied"), versionIs("1.0.0")))
		if getObj(ctx, t, k, "-n", ns, "configmap", "fromcluster") == nil {
			t.Error("ConfigMap fromcluster not applied")
		}
	}
}
