package chart

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"

	repo "helm.sh/helm/v4/pkg/repo/v1"
)

// MaxIndexSize bounds a chart repository's index.yaml.
const MaxIndexSize = 32 << 20

// RepoChart is a chart of a chart repository with its versions, newest
// first.
type RepoChart struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Versions    []RepoVersion `json:"versions"`
}

// RepoVersion is one version of a chart in a repository.
type RepoVersion struct {
	Version    string `json:"version"`
	AppVersion string `json:"appVersion,omitempty"`
	Deprecated bool   `json:"deprecated,omitempty"`
}

// RepoOptions reach a chart repository.
type RepoOptions struct {
	// Client fetches index.yaml (http.DefaultClient when nil); the
	// caller's ctx bounds the fetch in time.
	Client *http.Client
	// Username and Password, sent as HTTP Basic auth.
	Username, Password string
	// TempDir holds index.yaml while Helm's repo package reads it
	// (os.TempDir() when empty).
	TempDir string
}

// RepoError is a chart repository that answered, but not with an index
// Helm reads (a status other than 200, an index too large or invalid).
type RepoError struct{ Err error }

func (e *RepoError) Error() string { return e.Err.Error() }
func (e *RepoError) Unwrap() error { return e.Err }

// ListRepo lists the charts of the chart repository at repoURL (http or
// https), from its index.yaml (at most MaxIndexSize bytes), read by Helm's
// repo package (entries Helm finds invalid are left out, versions sorted
// newest first). An error reaching the repository is returned as it is; a
// repository that answers something else than an index, as a *RepoError.
func ListRepo(ctx context.Context, repoURL string, o RepoOptions) ([]RepoChart, error) {
	u, err := url.Parse(repoURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &RepoError{fmt.Errorf("repository %q: want an http:// or https:// chart repository URL", repoURL)}
	}
	idxURL := strings.TrimSuffix(u.String(), "/") + "/index.yaml"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, idxURL, nil)
	if err != nil {
		return nil, err
	}
	if o.Username != "" || o.Password != "" {
		req.SetBasicAuth(o.Username, o.Password)
	}
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &RepoError{fmt.Errorf("%s: %s: not a chart repository", idxURL, resp.Status)}
	}
	f, err := os.CreateTemp(o.TempDir, "crpe-index-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, io.LimitReader(resp.Body, MaxIndexSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", idxURL, err)
	}
	if n > MaxIndexSize {
		return nil, &RepoError{fmt.Errorf("%s: more than %d bytes", idxURL, MaxIndexSize)}
	}
	idx, err := repo.LoadIndexFile(f.Name())
	if err != nil {
		return nil, &RepoError{fmt.Errorf("%s: %s", idxURL, strings.ReplaceAll(err.Error(), f.Name(), "index.yaml"))}
	}
	charts := make([]RepoChart, 0, len(idx.Entries))
	for name, cvs := range idx.Entries {
		c := RepoChart{Name: name, Versions: []RepoVersion{}}
		for _, cv := range cvs {
			if cv == nil || cv.Metadata == nil {
				continue
			}
			if c.Description == "" {
				c.Description = cv.Description
			}
			c.Versions = append(c.Versions, RepoVersion{Version: cv.Version, AppVersion: cv.AppVersion, Deprecated: cv.Deprecated})
		}
		if len(c.Versions) > 0 {
			charts = append(charts, c)
		}
	}
	sort.Slice(charts, func(i, j int) bool { return charts[i].Name < charts[j].Name })
	return charts, nil
}
