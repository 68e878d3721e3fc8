package pocketapi

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/upstream"
)

// RegistryView is an upstream registry's settings (the password is never
// shown). Source is "flag" for the command line's, "api" for stored ones.
type RegistryView struct {
	Host        string     `json:"host"`
	Endpoint    string     `json:"endpoint,omitempty"`
	Insecure    bool       `json:"insecure,omitempty"`
	Username    string     `json:"username,omitempty"`
	HasPassword bool       `json:"hasPassword"`
	Source      string     `json:"source"`
	AddedAt     *time.Time `json:"addedAt,omitempty"`
}

var hostPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$`)

func (a *API) listRegistries(w http.ResponseWriter, r *http.Request) {
	var regs []*repodb.PocketRegistry
	if err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		regs, err = tx.PocketRegistries()
		return err
	}); err != nil {
		internal(w, r, err)
		return
	}
	items := []RegistryView{}
	stored := map[string]bool{}
	for _, rg := range regs {
		stored[rg.Host] = true
		at := rg.AddedAt
		items = append(items, RegistryView{Host: rg.Host, Endpoint: rg.Endpoint, Insecure: rg.Insecure, Username: rg.Username,
			HasPassword: rg.Password != "", Source: "api", AddedAt: &at})
	}
	flags := map[string]*RegistryView{}
	for h, e := range a.ups.base.Endpoints {
		flags[h] = &RegistryView{Host: h, Endpoint: e, Source: "flag"}
	}
	for _, h := range a.ups.base.Insecure {
		h = oci.CanonicalHost(h)
		if flags[h] == nil {
			flags[h] = &RegistryView{Host: h, Source: "flag"}
		}
		flags[h].Insecure = true
	}
	for h, v := range flags {
		if !stored[h] {
			items = append(items, *v)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Host < items[j].Host })
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "offline": a.ups.Offline()})
}

// putRegistry stores a registry's settings: {"endpoint", "insecure",
// "username", "password"}. A password left out keeps the one stored.
func (a *API) putRegistry(w http.ResponseWriter, r *http.Request) {
	host := oci.CanonicalHost(strings.TrimSpace(r.PathValue("host")))
	if !hostPattern.MatchString(host) {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", fmt.Sprintf("host %q: want a registry host[:port] such as ghcr.io", host), map[string]string{"field": "host"})
		return
	}
	var req struct {
		Endpoint string  `json:"endpoint"`
		Insecure bool    `json:"insecure"`
		Username string  `json:"username"`
		Password *string `json:"password"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	rg := &repodb.PocketRegistry{Host: host, Insecure: req.Insecure, Username: strings.TrimSpace(req.Username), AddedAt: time.Now().UTC()}
	if req.Endpoint != "" {
		_, base, err := upstream.ParseEndpoint(host + "=" + strings.TrimSpace(req.Endpoint))
		if err != nil {
			httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), map[string]string{"field": "endpoint"})
			return
		}
		rg.Endpoint = base
	}
	err := a.st.DB.Update(func(tx *repodb.Tx) error {
		old, ok, err := tx.PocketRegistry(host)
		if err != nil {
			return err
		}
		if ok {
			rg.AddedAt = old.AddedAt
			if req.Password == nil && old.Username == rg.Username {
				rg.Password = old.Password
			}
		}
		if req.Password != nil {
			rg.Password = *req.Password
		}
		return tx.PutPocketRegistry(rg)
	})
	if err != nil {
		internal(w, r, err)
		return
	}
	if err := a.ups.Reload(); err != nil {
		internal(w, r, err)
		return
	}
	a.log.Info("registry settings stored", "host", host, "endpoint", rg.Endpoint, "insecure", rg.Insecure, "credentials", rg.Username != "" || rg.Password != "")
	a.changed("registries")
	at := rg.AddedAt
	writeJSON(w, http.StatusOK, RegistryView{Host: rg.Host, Endpoint: rg.Endpoint, Insecure: rg.Insecure, Username: rg.Username,
		HasPassword: rg.Password != "", Source: "api", AddedAt: &at})
}

func (a *API) deleteRegistry(w http.ResponseWriter, r *http.Request) {
	host := oci.CanonicalHost(r.PathValue("host"))
	var found bool
	if err := a.st.DB.Update(func(tx *repodb.Tx) error {
		var err error
		found, err = tx.DeletePocketRegistry(host)
		return err
	}); err != nil {
		internal(w, r, err)
		return
	}
	if !found {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no stored settings for registry %q", host), map[string]string{"host": host})
		return
	}
	if err := a.ups.Reload(); err != nil {
		internal(w, r, err)
		return
	}
	a.changed("registries")
	w.WriteHeader(http.StatusNoContent)
}
