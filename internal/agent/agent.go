// Package agent owns the `crpe agent` server of the intranet side: it wires
// the data folder, the OCI registry, token auth, /healthz and /metrics into
// one HTTP server, with the import API (/api/v1) and the web UI at /.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/sigverify"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/webui"
)

// Config is what `crpe agent` takes.
type Config struct {
	httpx.Listener
	Data              string
	TokenFile         string
	AllowPush         bool
	AllowSparse       bool
	PullTokenRequired bool
	// Namespace is where packages without metadata.namespace go (default:
	// the agent's own namespace in a cluster, else "default").
	Namespace string
	// Kubeconfig, or in-cluster configuration when running in a pod, lets
	// the agent create a KubePkg object for every imported package.
	Kubeconfig string
	// KeepVersions is how many versions of each package are kept.
	KeepVersions int
	// GCInterval runs garbage collection periodically (besides after an
	// import expired versions); GCGrace spares unreferenced blobs younger
	// than it.
	GCInterval time.Duration
	GCGrace    time.Duration
	Log        *slog.Logger
	// Registry, when set, is registry mode: imports go into this site
	// registry (registrypush) instead of a data folder, and the package
	// records are the cluster's KubePkg objects (Kubeconfig or the pod's
	// in-cluster identity is required; --token-file too, shared by the
	// replicas). /v2 answers 404: the nodes pull from the site registry.
	Registry *registrypush.Options
	// Verify, when set, checks the cosign signatures carried with every
	// image of an import, offline, before anything is published: keys
	// (--verify-key) or a policy file (--verify-policy).
	Verify *sigverify.Policy
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Registry != nil {
		return runRegistryMode(ctx, cfg)
	}
	st, log, reg, err := storage.OpenServer(ctx, cfg.Data, cfg.Log)
	if err != nil {
		return err
	}
	defer st.Close()

	tokenPath, created, err := auth.EnsureTokenFile(cfg.TokenFile, cfg.Data)
	if err != nil {
		return err
	}
	if created {
		log.Warn("no --token-file given: created a random token; writes need it", "token_file", tokenPath)
	}
	tokens, err := auth.LoadTokens(tokenPath)
	if err != nil {
		return err
	}

	rg := registry.New(st.Store, st.DB, registry.Options{AllowPush: cfg.AllowPush, AllowSparseManifests: cfg.AllowSparse})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go rg.Run(rctx)

	if cfg.Namespace == "" {
		cfg.Namespace = ownNamespace()
	}
	imp := importer.New(st.Store, st.DB, importer.Options{Namespace: cfg.Namespace, KeepVersions: cfg.KeepVersions, Dir: cfg.Data, Verify: cfg.Verify})
	gc := newCollector(log, imp, cfg.GCGrace, reg)
	imp.OnExpired = gc.trigger
	go gc.run(rctx, cfg.GCInterval)

	guard := &auth.Guard{Tokens: tokens, PullTokenRequired: cfg.PullTokenRequired}
	mux := httpx.NewMux(reg)
	a := newAPI(st, imp, reg)
	ui := &uiAPI{pullTokenRequired: cfg.PullTokenRequired, allowPush: cfg.AllowPush}
	if cfg.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		sync, err := newClusterSync(cfg.Kubeconfig, log)
		if err != nil {
			return err
		}
		a.OnImport = sync.onImport
		ui.cluster = sync
		log.Info("imports become KubePkg objects in the cluster")
	}
	apiGuard := func(h http.Handler) http.Handler { return guard.Middleware(IsWrite, denyAPI, h) }
	a.routes(mux, apiGuard)
	ui.routes(mux, apiGuard)
	webui.Register(mux, webui.Agent)
	v2 := guard.Middleware(registry.IsWrite, registry.DenyUnauthorized, rg)
	mux.Handle("/v2/", v2)
	mux.Handle("/v2", v2)

	return cfg.Listener.Run(ctx, log, reg, mux, "crpe agent listening", "data", cfg.Data, "allow_push", cfg.AllowPush)
}

// runRegistryMode serves the agent in registry mode: no data folder, no
// blob; the import API, the package records (KubePkg objects), the delta
// and the inventory (asked of the site registry), the web UI.
func runRegistryMode(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return errors.New("registry mode keeps the package records as KubePkg objects in the cluster: give --kubeconfig, or run the agent in a pod")
	}
	if cfg.TokenFile == "" {
		return errors.New("registry mode needs --token-file: every replica must accept the same token (crpe install puts it in a Secret)")
	}
	tokens, err := auth.LoadTokens(cfg.TokenFile)
	if err != nil {
		return err
	}
	sync, err := newClusterSync(cfg.Kubeconfig, log)
	if err != nil {
		return err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = ownNamespace()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// the import locks: Leases in the agents' own namespace (where
	// crpe install grants them), else in --namespace
	leaseNS := podNamespace()
	if leaseNS == "" {
		leaseNS = cfg.Namespace
	}
	rm := &regMode{push: *cfg.Registry, cluster: sync, ns: cfg.Namespace,
		locks: newImportLocks(sync.c, leaseNS, replicaIdentity())}

	guard := &auth.Guard{Tokens: tokens, PullTokenRequired: cfg.PullTokenRequired}
	mux := httpx.NewMux(reg)
	a := newAPI(nil, nil, reg)
	a.rm = rm
	ui := &uiAPI{pullTokenRequired: cfg.PullTokenRequired, cluster: sync, registry: rm}
	apiGuard := func(h http.Handler) http.Handler { return guard.Middleware(IsWrite, denyAPI, h) }
	a.routes(mux, apiGuard)
	ui.routes(mux, apiGuard)
	webui.Register(mux, webui.Agent)
	mux.HandleFunc("/v2/", rm.noV2)
	mux.HandleFunc("/v2", rm.noV2)
	return cfg.Listener.Run(ctx, log, reg, mux, "crpe agent listening in registry mode", "registry", cfg.Registry.Target.String(),
		"namespace", cfg.Namespace, "lease_namespace", leaseNS, "replica", rm.locks.holder)
}

// denyAPI answers an /api request the guard refused.
func denyAPI(w http.ResponseWriter, r *http.Request, err error) {
	httpx.SetRoute(r, "unauthorized")
	if r.Header.Get("X-Crpe-UI") == "" {
		// not for the web UI: a browser would pop up its own login box
		w.Header().Set("WWW-Authenticate", `Basic realm="crpe"`)
	}
	httpx.WriteError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", err.Error(), nil)
}

// ownNamespace is the agent's namespace in a cluster, else "default".
func ownNamespace() string {
	if ns := podNamespace(); ns != "" {
		return ns
	}
	return "default"
}

// podNamespace is the namespace of the agent's pod (POD_NAMESPACE, or the
// service account's); "" outside a pod.
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return ""
}
