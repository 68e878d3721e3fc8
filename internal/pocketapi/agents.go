package pocketapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/agentclient"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/repodb"
)

// AgentView is an agent as the API lists it (its token is never shown).
type AgentView struct {
	Name     string    `json:"name"`
	URL      string    `json:"url"`
	HasToken bool      `json:"hasToken"`
	AddedAt  time.Time `json:"addedAt"`
}

// AgentStatus is what an agent said when asked just now.
type AgentStatus struct {
	AgentView
	Reachable bool `json:"reachable"`
	// TokenAccepted is false when the agent refused the token (or no
	// token is known: writes will be refused).
	TokenAccepted bool                 `json:"tokenAccepted"`
	Error         string               `json:"error,omitempty"`
	CheckedAt     time.Time            `json:"checkedAt"`
	Packages      []AgentPackageStatus `json:"packages"`
}

// AgentPackageStatus compares a package on an agent with the pocket's.
// Action is "upgrade" (the pocket has a higher version), "current",
// "newer-on-agent", "install" (the pocket has it, the agent not) or
// "agent-only".
type AgentPackageStatus struct {
	Namespace     string `json:"namespace,omitempty"`
	Name          string `json:"name"`
	Version       string `json:"version,omitempty"`
	PocketVersion string `json:"pocketVersion,omitempty"`
	Action        string `json:"action"`
}

var agentName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

func (a *API) loadAgent(name string) (*repodb.PocketAgent, bool, error) {
	var ag *repodb.PocketAgent
	var ok bool
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		ag, ok, err = tx.PocketAgent(name)
		return err
	})
	return ag, ok, err
}

func viewAgent(ag *repodb.PocketAgent) AgentView {
	return AgentView{Name: ag.Name, URL: ag.URL, HasToken: ag.Token != "", AddedAt: ag.AddedAt}
}

func (a *API) listAgents(w http.ResponseWriter, r *http.Request) {
	var ags []*repodb.PocketAgent
	if err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		ags, err = tx.PocketAgents()
		return err
	}); err != nil {
		internal(w, r, err)
		return
	}
	items := make([]AgentView, 0, len(ags))
	for _, ag := range ags {
		items = append(items, viewAgent(ag))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// addAgent registers (or updates) an agent: {"name", "url", "token"}. A
// token left out keeps the one known.
func (a *API) addAgent(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string  `json:"name"`
		URL   string  `json:"url"`
		Token *string `json:"token"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	u, err := url.Parse(strings.TrimSpace(req.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", fmt.Sprintf("url %q: want the agent's base URL, http(s)://host[:port]", req.URL), map[string]string{"field": "url"})
		return
	}
	base := u.Scheme + "://" + u.Host
	if req.Name == "" {
		req.Name = strings.ToLower(strings.NewReplacer(":", "-", "[", "", "]", "").Replace(u.Host))
	}
	if !agentName.MatchString(req.Name) {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", fmt.Sprintf("name %q: lowercase letters, digits, '-' and '.', at most 63", req.Name), map[string]string{"field": "name"})
		return
	}
	var ag *repodb.PocketAgent
	err = a.st.DB.Update(func(tx *repodb.Tx) error {
		old, ok, err := tx.PocketAgent(req.Name)
		if err != nil {
			return err
		}
		ag = &repodb.PocketAgent{Name: req.Name, URL: base, AddedAt: time.Now().UTC()}
		if ok {
			ag.AddedAt, ag.Token = old.AddedAt, old.Token
		}
		if req.Token != nil {
			ag.Token = strings.TrimSpace(*req.Token)
		}
		return tx.PutPocketAgent(ag)
	})
	if err != nil {
		internal(w, r, err)
		return
	}
	a.log.Info("agent registered", "agent", ag.Name, "url", ag.URL)
	a.changed("agents")
	writeJSON(w, http.StatusCreated, a.agentStatus(r.Context(), ag))
}

func (a *API) agentFor(w http.ResponseWriter, r *http.Request, name string) (*repodb.PocketAgent, bool) {
	ag, ok, err := a.loadAgent(name)
	if err != nil {
		internal(w, r, err)
		return nil, false
	}
	if !ok {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no agent %q is registered", name), map[string]string{"agent": name})
		return nil, false
	}
	return ag, true
}

// getAgent asks the agent now whether it is alive, takes the token, and
// which packages it holds.
func (a *API) getAgent(w http.ResponseWriter, r *http.Request) {
	ag, ok := a.agentFor(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, a.agentStatus(r.Context(), ag))
}

func (a *API) deleteAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var found bool
	if err := a.st.DB.Update(func(tx *repodb.Tx) error {
		var err error
		found, err = tx.DeletePocketAgent(name)
		return err
	}); err != nil {
		internal(w, r, err)
		return
	}
	if !found {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no agent %q is registered", name), map[string]string{"agent": name})
		return
	}
	a.changed("agents")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) agentClient(ag *repodb.PocketAgent) *agentclient.Client {
	return &agentclient.Client{URL: ag.URL, Token: ag.Token, HTTP: a.client}
}

// describeAgentError says plainly what went wrong with an agent.
func describeAgentError(ag *repodb.PocketAgent, err error) error {
	var ae *agentclient.Error
	if errors.As(err, &ae) {
		if ae.Status == http.StatusUnauthorized {
			return fmt.Errorf("agent %s refused the token (%s): set the agent's token again", ag.Name, ae.Message)
		}
		return fmt.Errorf("agent %s answered %d %s: %s", ag.Name, ae.Status, ae.Code, ae.Message)
	}
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("agent %s at %s cannot be reached: %v", ag.Name, ag.URL, err)
	}
	return fmt.Errorf("agent %s: %w", ag.Name, err)
}

// agentStatus asks the agent for its packages (the token, if any, is sent:
// a refused token shows here) and compares them with the library.
func (a *API) agentStatus(ctx context.Context, ag *repodb.PocketAgent) AgentStatus {
	st := AgentStatus{AgentView: viewAgent(ag), CheckedAt: time.Now().UTC(), Packages: []AgentPackageStatus{}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	inv, err := a.agentPackages(ctx, ag)
	if err != nil {
		var ae *agentclient.Error
		st.Reachable = errors.As(err, &ae)
		st.Error = describeAgentError(ag, err).Error()
		return st
	}
	st.Reachable, st.TokenAccepted = true, ag.Token != ""
	if ag.Token == "" {
		st.Error = "no token is known for this agent: sending will be refused"
	}
	recs, _ := a.allPackages() // none known: everything on the agent is agent-only
	mine := map[string]*repodb.PocketPackage{}
	for _, rec := range recs {
		mine[rec.Name] = rec
	}
	onAgent := map[string]bool{}
	for _, p := range inv {
		ps := AgentPackageStatus{Namespace: p.Namespace, Name: p.Name, Version: p.Version, Action: "agent-only"}
		if rec := mine[p.Name]; rec != nil && (rec.Namespace == "" || rec.Namespace == p.Namespace) {
			onAgent[p.Name] = true
			ps.PocketVersion = rec.Version
			ps.Action = compareVersions(rec.Version, p.Version)
		}
		st.Packages = append(st.Packages, ps)
	}
	for _, rec := range recs {
		if !onAgent[rec.Name] {
			st.Packages = append(st.Packages, AgentPackageStatus{Namespace: rec.Namespace, Name: rec.Name, PocketVersion: rec.Version, Action: "install"})
		}
	}
	return st
}

type agentPackage struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   string `json:"version"`
}

// agentPackages reads GET /api/v1/kubepkgs of the agent, sending the token.
func (a *API) agentPackages(ctx context.Context, ag *repodb.PocketAgent) ([]agentPackage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ag.URL+"/api/v1/kubepkgs", nil)
	if err != nil {
		return nil, err
	}
	if ag.Token != "" {
		req.Header.Set("Authorization", "Bearer "+ag.Token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, agentclient.ParseError(resp.StatusCode, body)
	}
	var out struct {
		Items []agentPackage `json:"items"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("not a crpe agent? %w", err)
	}
	return out.Items, nil
}

// compareVersions says what sending pocket over agent would do.
func compareVersions(pocket, agent string) string {
	pv, err1 := kubepkg.ParseVersion(pocket)
	av, err2 := kubepkg.ParseVersion(agent)
	switch {
	case err1 != nil || err2 != nil:
		if pocket == agent {
			return "current"
		}
		return "upgrade"
	case pv.GreaterThan(av):
		return "upgrade"
	case pv.LessThan(av):
		return "newer-on-agent"
	}
	return "current"
}

// SendResult is what a send did.
type SendResult struct {
	Agent string `json:"agent"`
	// BytesSent counts the archive bytes put on the wire (compressed, last
	// attempt); BlobsOmitted and BytesOmitted count the layers the agent
	// had already (the delta's saving).
	BytesSent    int64           `json:"bytesSent"`
	BlobsSent    int             `json:"blobsSent"`
	BlobsOmitted int             `json:"blobsOmitted"`
	BytesOmitted int64           `json:"bytesOmitted"`
	Attempts     int             `json:"attempts"`
	Import       json.RawMessage `json:"import,omitempty"`
}

func (a *API) sendPackage(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := a.packageFor(w, r)
	if !ok {
		return
	}
	name := r.URL.Query().Get("agent")
	if name == "" {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "agent: name a registered agent (?agent=NAME)", map[string]string{"field": "agent"})
		return
	}
	ag, ok := a.agentFor(w, r, name)
	if !ok {
		return
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	a.startJob(w, KindSend, rec.Name, ag.Name, func(ctx context.Context, j *Job) (any, error) {
		return a.runSend(ctx, j, rec.Name, ag, force)
	})
}

// sendAttempts bounds the tries of a send whose connection breaks.
const sendAttempts = 3

// runSend hands the package to the agent with only the layers it lacks: it
// asks which ones it lacks, exports the package from the cache leaving the
// others out, and streams the archive into the agent's import. A broken
// connection is retried with a fresh delta: what the agent committed before
// the break is not sent again.
func (a *API) runSend(ctx context.Context, j *Job, name string, ag *repodb.PocketAgent, force bool) (any, error) {
	cl := a.agentClient(ag)
	j.SetPhase("checking agent")
	if _, err := cl.Missing(ctx, nil); err != nil {
		return nil, describeAgentError(ag, err)
	}
	if ag.Token == "" {
		return nil, fmt.Errorf("no token is known for agent %s: register it again with its token", ag.Name)
	}
	rec, pkg, err := a.loadPackage(name)
	if err != nil {
		return nil, err
	}
	pl, _, _, err := a.prepare(ctx, j, rec, pkg, nil)
	if err != nil {
		return nil, err
	}
	pinned, err := kubepkg.Marshal([]*kubepkg.KubePkg{pkg})
	if err != nil {
		return nil, err
	}
	layers := map[digest.Digest]int64{}
	var total int64
	seen := map[digest.Digest]bool{}
	for _, im := range pl.Images {
		for _, b := range im.Blobs {
			if seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			total += b.Size
			if b.Layer {
				layers[b.Digest] = b.Size
			}
		}
	}
	j.SetImages(nil)
	var last error
	for attempt := 1; attempt <= sendAttempts; attempt++ {
		res, err := a.sendOnce(ctx, j, cl, ag, pinned, layers, total, len(seen), force)
		if err == nil {
			res.Attempts = attempt
			a.log.Info("package sent", "kubepkg", name, "agent", ag.Name, "bytes_sent", res.BytesSent, "bytes_omitted", res.BytesOmitted, "attempts", attempt)
			a.changed("agents")
			return res, nil
		}
		last = err
		var ae *agentclient.Error
		if errors.As(err, &ae) || ctx.Err() != nil {
			return nil, describeAgentError(ag, err) // the agent answered: no retry
		}
		a.log.Warn("send broken; retrying with a fresh delta", "kubepkg", name, "agent", ag.Name, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("sending to agent %s failed after %d attempts: %w", ag.Name, sendAttempts, describeAgentError(ag, last))
}

func (a *API) sendOnce(ctx context.Context, j *Job, cl *agentclient.Client, ag *repodb.PocketAgent, pinned []byte, layers map[digest.Digest]int64, total int64, blobs int, force bool) (*SendResult, error) {
	j.SetPhase("comparing")
	ds := make([]digest.Digest, 0, len(layers))
	for d := range layers {
		ds = append(ds, d)
	}
	missing, err := cl.Missing(ctx, ds)
	if err != nil {
		return nil, err
	}
	res := &SendResult{Agent: ag.Name}
	exclude := map[digest.Digest]bool{}
	for d, size := range layers {
		if !missing[d] {
			exclude[d] = true
			res.BlobsOmitted++
			res.BytesOmitted += size
		}
	}
	res.BlobsSent = blobs - res.BlobsOmitted
	// a fresh copy each attempt: an export annotates the package it writes
	pkgs, err := kubepkg.Parse(pinned)
	if err != nil {
		return nil, err
	}
	j.SetTotal(total-res.BytesOmitted, 0)
	j.SetPhase("sending")
	pr, pw := io.Pipe()
	cw := &countingWriter{w: pw}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, err := export.Export(ectx, a.ups.Cache(), a.st.Store, pkgs, cw, export.Options{Exclude: exclude, Progress: &exportProgress{j: j}, Parallel: fetchParallel})
		pw.CloseWithError(err)
	}()
	path := ag.URL + "/api/v1/kubepkgs"
	if force {
		path += "?force=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, path, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/gzip")
	req.Header.Set("Authorization", "Bearer "+ag.Token)
	resp, err := a.client.Do(req)
	res.BytesSent = cw.n.Load()
	if err != nil {
		pr.CloseWithError(err)
		return nil, err
	}
	defer resp.Body.Close()
	j.SetPhase("importing")
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, agentclient.ParseError(resp.StatusCode, body)
	}
	res.BytesSent = cw.n.Load()
	res.Import = json.RawMessage(body)
	return res, nil
}
