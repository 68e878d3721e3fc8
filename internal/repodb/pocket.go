package repodb

import (
	"encoding/json"
	"fmt"
	"time"
)

// The pocket's own records (crpe serve): its package library, the agents it
// hands packages to and the upstream registries it was told about. They live
// in buckets of their own, apart from the repository index and from the
// agent's imported packages.
var (
	bPocketPackages   = []byte("pocket.kubepkgs")
	bPocketAgents     = []byte("pocket.agents")
	bPocketRegistries = []byte("pocket.registries")
)

// PocketPackage is a package of the pocket's library, keyed by its name.
type PocketPackage struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Version   string `json:"version"`
	// Platforms is the octohelm.tech/platform annotation as given ("" when
	// the package names none).
	Platforms string `json:"platforms,omitempty"`
	// Source is the deployments center URL the package came from (empty when
	// it was pasted); SourceToken is sent to it as a Bearer token.
	Source      string    `json:"source,omitempty"`
	SourceToken string    `json:"sourceToken,omitempty"`
	AddedAt     time.Time `json:"addedAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	// Object is the KubePkg as given (JSON).
	Object json.RawMessage `json:"object"`
	// Resolved maps each image reference to the digest it resolved to at
	// the last sync.
	Resolved map[string]string `json:"resolved,omitempty"`
	// SyncedAt is when the last sync completed.
	SyncedAt *time.Time `json:"syncedAt,omitempty"`
}

// PocketAgent is an agent the pocket knows.
type PocketAgent struct {
	Name    string    `json:"name"`
	URL     string    `json:"url"`
	Token   string    `json:"token,omitempty"`
	AddedAt time.Time `json:"addedAt"`
}

// PocketRegistry is an upstream registry's settings: where its traffic goes,
// whether over plain HTTP, and the credentials to use.
type PocketRegistry struct {
	Host     string    `json:"host"`
	Endpoint string    `json:"endpoint,omitempty"`
	Insecure bool      `json:"insecure,omitempty"`
	Username string    `json:"username,omitempty"`
	Password string    `json:"password,omitempty"`
	AddedAt  time.Time `json:"addedAt"`
}

func getJSON(t *Tx, bucket []byte, key string, v any) (bool, error) {
	b := t.tx.Bucket(bucket)
	if b == nil {
		return false, nil
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("%s %s: %w", bucket, key, err)
	}
	return true, nil
}

func putJSON(t *Tx, bucket []byte, key string, v any) error {
	b, err := t.tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

func deleteKey(t *Tx, bucket []byte, key string) (bool, error) {
	b := t.tx.Bucket(bucket)
	if b == nil || b.Get([]byte(key)) == nil {
		return false, nil
	}
	return true, b.Delete([]byte(key))
}

func listJSON[T any](t *Tx, bucket []byte) ([]*T, error) {
	out := []*T{}
	b := t.tx.Bucket(bucket)
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		x := new(T)
		if err := json.Unmarshal(v, x); err != nil {
			return fmt.Errorf("%s %s: %w", bucket, k, err)
		}
		out = append(out, x)
		return nil
	})
	return out, err
}

// PocketPackage returns the library's package name.
func (t *Tx) PocketPackage(name string) (*PocketPackage, bool, error) {
	var p PocketPackage
	ok, err := getJSON(t, bPocketPackages, name, &p)
	if !ok || err != nil {
		return nil, ok, err
	}
	return &p, true, nil
}

// PutPocketPackage records p under its name.
func (t *Tx) PutPocketPackage(p *PocketPackage) error {
	return putJSON(t, bPocketPackages, p.Name, p)
}

// DeletePocketPackage removes package name; found tells whether it was there.
func (t *Tx) DeletePocketPackage(name string) (bool, error) {
	return deleteKey(t, bPocketPackages, name)
}

// PocketPackages lists the library, sorted by name.
func (t *Tx) PocketPackages() ([]*PocketPackage, error) {
	return listJSON[PocketPackage](t, bPocketPackages)
}

// PocketAgent returns the agent name.
func (t *Tx) PocketAgent(name string) (*PocketAgent, bool, error) {
	var a PocketAgent
	ok, err := getJSON(t, bPocketAgents, name, &a)
	if !ok || err != nil {
		return nil, ok, err
	}
	return &a, true, nil
}

// PutPocketAgent records a under its name.
func (t *Tx) PutPocketAgent(a *PocketAgent) error { return putJSON(t, bPocketAgents, a.Name, a) }

// DeletePocketAgent removes agent name; found tells whether it was there.
func (t *Tx) DeletePocketAgent(name string) (bool, error) { return deleteKey(t, bPocketAgents, name) }

// PocketAgents lists the agents, sorted by name.
func (t *Tx) PocketAgents() ([]*PocketAgent, error) { return listJSON[PocketAgent](t, bPocketAgents) }

// PutPocketRegistry records r under its host.
func (t *Tx) PutPocketRegistry(r *PocketRegistry) error {
	return putJSON(t, bPocketRegistries, r.Host, r)
}

// PocketRegistry returns the settings of registry host.
func (t *Tx) PocketRegistry(host string) (*PocketRegistry, bool, error) {
	var r PocketRegistry
	ok, err := getJSON(t, bPocketRegistries, host, &r)
	if !ok || err != nil {
		return nil, ok, err
	}
	return &r, true, nil
}

// DeletePocketRegistry removes registry host; found tells whether it was there.
func (t *Tx) DeletePocketRegistry(host string) (bool, error) {
	return deleteKey(t, bPocketRegistries, host)
}

// PocketRegistries lists the registries, sorted by host.
func (t *Tx) PocketRegistries() ([]*PocketRegistry, error) {
	return listJSON[PocketRegistry](t, bPocketRegistries)
}
