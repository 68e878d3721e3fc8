// Package depcheck guards the arrows between crpe's packages (as
// go-containerregistry's pkg/registry/depcheck_test.go does): each package
// may import only the crpe packages its layer allows, and the data path
// (store, index, registry, archive, import, export) links no Kubernetes
// library. docs/architecture.md draws the same table.
package depcheck

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/octohelm/crpe/internal/"

// allowed lists, for each package under internal/, the crpe packages it may
// import. A package missing here fails the test: a new package says where
// it stands.
var allowed = map[string][]string{
	// the vocabulary and the bottom layer
	"oci":         {},
	"cas":         {"oci"},
	"cas/castest": {"cas", "oci"},
	"casfs":       {"cas", "oci"},
	"repodb":      {"oci"},
	"kubepkg":     {"atomicfile", "oci"},
	// utilities that know nothing of images
	"httpx":        {},
	"atomicfile":   {},
	"parts":        {"atomicfile"},
	"auth":         {"atomicfile"},
	"diskfree":     {},
	"version":      {},
	"mirrorconfig": {"atomicfile"},
	"selfimage":    {},
	"webui":        {"httpx"},
	"storage":      {"atomicfile", "cas", "casfs", "repodb"},
	// protocols and formats
	"registry": {"cas", "httpx", "oci", "repodb"},
	"upstream": {"cas", "oci"},
	"archive":  {"cas", "kubepkg", "oci"},
	// what builds on them: none of these imports registry (the HTTP server)
	"inspect": {"archive", "kubepkg", "oci", "sigverify"},
	// cosign's key pair format (crpe keygen, export --sign-key)
	"cosignkey": {},
	// the signatures carried with an archive's images, checked offline
	"sigverify":   {"archive", "kubepkg", "oci"},
	"pullthrough": {"cas", "httpx", "oci", "registry", "repodb", "upstream"},
	"export":      {"archive", "cas", "kubepkg", "oci", "pullthrough"},
	"importer":    {"archive", "cas", "casfs", "diskfree", "inspect", "kubepkg", "oci", "repodb", "sigverify"},
	"fsck":        {"cas", "casfs", "oci", "repodb"},
	"agentclient": {"archive", "kubepkg", "oci"},
	// crpe import --to-registry: an archive into a site registry
	"registrypush": {"archive", "inspect", "kubepkg", "oci", "sigverify"},
	// a client of the pocket that holds a data folder (crpe export)
	"pocketclient": {"auth", "httpx", "storage"},
	// Kubernetes: the client the agent and the operator share, the operator
	"kubeclient": {"kubepkg"},
	"operator":   {"applyorder", "kubeclient", "kubepkg"},
	// the order of an apply, shared by the operator and `crpe manifests`
	"applyorder": {"kubepkg"},
	// servers: the agent does not import the operator; the pocket's JSON API
	// does not serve /v2 (pocket wires the registry and the cache)
	"agent":     {"auth", "cas", "diskfree", "httpx", "importer", "kubeclient", "kubepkg", "mirrorconfig", "oci", "parts", "registry", "registrypush", "repodb", "sigverify", "storage", "version", "webui"},
	"pocketapi": {"agentclient", "auth", "cas", "chart", "diskfree", "export", "httpx", "kubepkg", "oci", "pullthrough", "repodb", "storage", "upstream"},
	"chart":     {"atomicfile", "cas", "kubepkg", "oci", "repodb"},
	"pocket":    {"auth", "httpx", "pocketapi", "pullthrough", "registry", "storage", "upstream", "version", "webui"},
	// wiring: one file per subcommand; testenv serves the tests
	"cli":                         {"*"},
	"testenv":                     {"*"},
	"pullthrough/pullthroughtest": {"*"},
	"archive/seedtest":            {},
	"chart/charttest":             {},
}

// dataPath are the packages that must link no Kubernetes library.
var dataPath = []string{"oci", "cas", "casfs", "repodb", "registry", "upstream", "archive", "inspect", "pullthrough", "export", "importer", "fsck", "agentclient", "registrypush", "storage", "kubepkg", "sigverify"}

// kubernetes are import path prefixes of the Kubernetes libraries.
var kubernetes = []string{"k8s.io/", "sigs.k8s.io/controller-runtime", "github.com/fluxcd/"}

// notKubernetes are k8s.io modules that are not Kubernetes' machinery: klog,
// a logging library, which certificate-transparency-go (sigstore-go's check
// of certificates' SCTs, in sigverify) links.
var notKubernetes = []string{"k8s.io/klog/v2"}

type pkg struct {
	imports []string // direct crpe imports, relative to internal/
	deps    []string // every dependency, full paths
}

func list(t *testing.T) map[string]pkg {
	t.Helper()
	// go test puts its own GOROOT/bin first in PATH
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		name, ok := strings.CutPrefix(parts[0], module)
		if !ok || name == "depcheck" {
			continue
		}
		var p pkg
		for _, imp := range strings.Fields(parts[1]) {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				p.imports = append(p.imports, rel)
			}
		}
		p.deps = strings.Fields(parts[2])
		pkgs[name] = p
	}
	return pkgs
}

func TestArrows(t *testing.T) {
	pkgs := list(t)
	var names []string
	for n := range pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		allow, ok := allowed[n]
		if !ok {
			t.Errorf("internal/%s is not in depcheck's table: say which packages it may import", n)
			continue
		}
		if len(allow) == 1 && allow[0] == "*" {
			continue
		}
		for _, imp := range pkgs[n].imports {
			if imp == "testenv" || !contains(allow, imp) {
				t.Errorf("internal/%s imports internal/%s, which its layer does not allow", n, imp)
			}
		}
	}
}

func TestDataPathKnowsNoKubernetes(t *testing.T) {
	pkgs := list(t)
	for _, n := range dataPath {
		p, ok := pkgs[n]
		if !ok {
			t.Errorf("data path package internal/%s not found", n)
			continue
		}
	next:
		for _, d := range p.deps {
			for _, k := range notKubernetes {
				if d == k || strings.HasPrefix(d, k+"/") {
					continue next
				}
			}
			for _, k := range kubernetes {
				if strings.HasPrefix(d, k) {
					t.Errorf("internal/%s links %s: the data path knows no Kubernetes", n, d)
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
