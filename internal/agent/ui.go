package agent

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/mirrorconfig"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/version"
)

// uiAPI are the read endpoints the agent's web UI needs besides the import
// API: what the agent is, the mirror configuration for the nodes and, when
// the agent has cluster access, the packages' Applied/Ready state.
type uiAPI struct {
	cluster           *clusterSync // nil: no Kubernetes access
	registry          *regMode     // registry mode
	pullTokenRequired bool
	allowPush         bool
}

func (u *uiAPI) routes(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("GET /api/v1/agent", guard(http.HandlerFunc(u.info)))
	mux.Handle("GET /api/v1/mirror-config", guard(http.HandlerFunc(u.mirrorConfig)))
	mux.Handle("GET /api/v1/cluster/kubepkgs", guard(http.HandlerFunc(u.clusterPackages)))
}

// AgentInfo is GET /api/v1/agent.
type AgentInfo struct {
	Version string `json:"version"`
	// Cluster tells whether the agent writes KubePkg objects (and can tell
	// their state): the UI asks /api/v1/cluster/kubepkgs only then.
	Cluster           bool `json:"cluster"`
	PullTokenRequired bool `json:"pullTokenRequired"`
	AllowPush         bool `json:"allowPush"`
	// Registry is the site registry of registry mode (HOST[/PREFIX]):
	// the nodes pull from it, not from the agent.
	Registry string `json:"registry,omitempty"`
}

func (u *uiAPI) info(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "agent_info")
	info := AgentInfo{Version: version.Get().Version, Cluster: u.cluster != nil,
		PullTokenRequired: u.pullTokenRequired, AllowPush: u.allowPush}
	if u.registry != nil {
		info.Registry = u.registry.push.Target.String()
	}
	writeJSON(w, http.StatusOK, info)
}

// mirrorConfig renders the nodes' configuration: ?format=containerd (the
// hosts.toml of each host, default) or k3s (registries.yaml), for
// ?hosts=a,b (default docker.io,ghcr.io,quay.io) and ?agent=URL (default:
// this agent as the request reached it).
func (u *uiAPI) mirrorConfig(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "mirror_config")
	q := r.URL.Query()
	agentURL := q.Get("agent")
	if agentURL == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		agentURL = scheme + "://" + r.Host
	}
	hosts := strings.Split(q.Get("hosts"), ",")
	if q.Get("hosts") == "" {
		hosts = []string{"docker.io", "ghcr.io", "quay.io"}
	}
	o := mirrorconfig.Options{Agent: agentURL, Hosts: hosts}
	var site *mirrorconfig.SiteRegistry
	if u.registry != nil {
		// registry mode: the nodes pull from the site registry
		site = siteRegistry(u.registry.push)
	}
	var out strings.Builder
	switch q.Get("format") {
	case "", "containerd":
		hs := append([]string(nil), hosts...)
		sort.Strings(hs)
		for _, h := range hs {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			var s string
			var err error
			if site != nil {
				s, err = mirrorconfig.RegistryHostsTOML(o, *site, h)
			} else {
				s, err = mirrorconfig.HostsTOML(o, h)
			}
			if err != nil {
				httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), nil)
				return
			}
			dir := h
			if h == "*" {
				dir = "_default"
			}
			fmt.Fprintf(&out, "# /etc/containerd/certs.d/%s/hosts.toml\n%s\n", dir, s)
		}
	case "k3s":
		var s string
		var err error
		if site != nil {
			s, err = mirrorconfig.RegistryRegistriesYAML(o, *site)
		} else {
			s, err = mirrorconfig.RegistriesYAML(o)
		}
		if err != nil {
			httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), nil)
			return
		}
		out.WriteString("# /etc/rancher/k3s/registries.yaml\n" + s)
	default:
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "format: containerd or k3s", map[string]string{"field": "format"})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(out.String()))
}

// siteRegistry is the registry the agent imports into, as the nodes reach
// it: over plain HTTP when the agent was told --plain-http (a site registry
// on a loopback address is reached over HTTPS by the nodes, as by
// containerd, unless told so).
func siteRegistry(o registrypush.Options) *mirrorconfig.SiteRegistry {
	url := o.Target.String()
	if o.PlainHTTP {
		url = "http://" + url
	}
	return &mirrorconfig.SiteRegistry{URL: url, Flat: o.Naming == registrypush.Flat}
}

// ClusterPackage is a KubePkg object's state in the cluster.
type ClusterPackage struct {
	Namespace      string     `json:"namespace"`
	Name           string     `json:"name"`
	Version        string     `json:"version"`
	AppliedVersion string     `json:"appliedVersion,omitempty"`
	Applied        *Condition `json:"applied,omitempty"`
	Ready          *Condition `json:"ready,omitempty"`
}

// Condition is a status condition, shortened.
type Condition struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func (u *uiAPI) clusterPackages(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "cluster_kubepkgs")
	if u.cluster == nil {
		httpx.WriteError(w, r, http.StatusNotFound, "NO_CLUSTER", "this agent has no Kubernetes access (no --kubeconfig, not in a pod)", nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	list := &unstructured.UnstructuredList{}
	gvk := kubeclient.GVK
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind + "List"})
	if err := u.cluster.c.List(ctx, list); err != nil {
		httpx.WriteError(w, r, http.StatusBadGateway, "CLUSTER_UNAVAILABLE", err.Error(), nil)
		return
	}
	items := []ClusterPackage{}
	for _, o := range list.Items {
		cp := ClusterPackage{Namespace: o.GetNamespace(), Name: o.GetName()}
		cp.Version, _, _ = unstructured.NestedString(o.Object, "spec", "version")
		cp.AppliedVersion, _, _ = unstructured.NestedString(o.Object, "status", "appliedVersion")
		conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
		for _, c := range conds {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			cond := &Condition{}
			cond.Status, _ = m["status"].(string)
			cond.Reason, _ = m["reason"].(string)
			cond.Message, _ = m["message"].(string)
			switch m["type"] {
			case "Applied":
				cp.Applied = cond
			case "Ready":
				cp.Ready = cond
			}
		}
		items = append(items, cp)
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}
