package pocketapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"time"

	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/repodb"
)

// PackageView is a package of the library as the API shows it.
type PackageView struct {
	Name      string      `json:"name"`
	Namespace string      `json:"namespace,omitempty"`
	Version   string      `json:"version"`
	Platforms string      `json:"platforms"`
	Source    string      `json:"source,omitempty"`
	AddedAt   time.Time   `json:"addedAt"`
	UpdatedAt time.Time   `json:"updatedAt"`
	SyncedAt  *time.Time  `json:"syncedAt,omitempty"`
	Images    []ImageView `json:"images"`
	Cache     CacheState  `json:"cache"`
	// Object is the KubePkg (GET of one package only).
	Object json.RawMessage `json:"object,omitempty"`
}

// ImageView is one image of a package and how much of it is cached.
type ImageView struct {
	Ref         string `json:"ref"`
	Digest      string `json:"digest,omitempty"`
	Blobs       int    `json:"blobs"`
	CachedBlobs int    `json:"cachedBlobs"`
	Bytes       int64  `json:"bytes"`
	CachedBytes int64  `json:"cachedBytes"`
	// Error says why the image's size is not known yet (its manifest is
	// not cached).
	Error string `json:"error,omitempty"`
}

// CacheState tells how much of a package's images the cache holds for its
// platforms. State is "synced" (everything), "partial" or "none".
type CacheState struct {
	State       string `json:"state"`
	Percent     int    `json:"percent"`
	Blobs       int    `json:"blobs"`
	CachedBlobs int    `json:"cachedBlobs"`
	Bytes       int64  `json:"bytes"`
	CachedBytes int64  `json:"cachedBytes"`
	// Unresolved counts images whose manifests are not cached (their
	// size is not in Bytes).
	Unresolved int `json:"unresolved"`
}

// Cache states.
const (
	CacheSynced  = "synced"
	CachePartial = "partial"
	CacheNone    = "none"
)

// loadPackage reads package name of the library.
func (a *API) loadPackage(name string) (*repodb.PocketPackage, *kubepkg.KubePkg, error) {
	var rec *repodb.PocketPackage
	var ok bool
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		rec, ok, err = tx.PocketPackage(name)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, errNoPackage
	}
	pkg, err := decodePackage(rec)
	if err != nil {
		return nil, nil, err
	}
	return rec, pkg, nil
}

// allPackages lists the library's packages.
func (a *API) allPackages() ([]*repodb.PocketPackage, error) {
	var recs []*repodb.PocketPackage
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		recs, err = tx.PocketPackages()
		return err
	})
	return recs, err
}

var errNoPackage = errors.New("no such package")

// packageFor finds package name or answers 404.
func (a *API) packageFor(w http.ResponseWriter, r *http.Request) (*repodb.PocketPackage, *kubepkg.KubePkg, bool) {
	name := r.PathValue("name")
	rec, pkg, err := a.loadPackage(name)
	if errors.Is(err, errNoPackage) {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("package %q is not in the pocket", name), map[string]string{"package": name})
		return nil, nil, false
	}
	if err != nil {
		internal(w, r, err)
		return nil, nil, false
	}
	return rec, pkg, true
}

func decodePackage(rec *repodb.PocketPackage) (*kubepkg.KubePkg, error) {
	pkgs, err := kubepkg.Parse(rec.Object)
	if err != nil {
		return nil, fmt.Errorf("package %s: stored object: %w", rec.Name, err)
	}
	if len(pkgs) != 1 {
		return nil, fmt.Errorf("package %s: stored object holds %d packages", rec.Name, len(pkgs))
	}
	return pkgs[0], nil
}

// view shows rec, with how much of it is cached (from the cache alone).
func (a *API) view(ctx context.Context, rec *repodb.PocketPackage, withObject bool) PackageView {
	v := PackageView{Name: rec.Name, Namespace: rec.Namespace, Version: rec.Version, Platforms: rec.Platforms,
		Source: rec.Source, AddedAt: rec.AddedAt, UpdatedAt: rec.UpdatedAt, SyncedAt: rec.SyncedAt, Images: []ImageView{}}
	if v.Platforms == "" {
		v.Platforms = export.DefaultPlatforms
	}
	if withObject {
		v.Object = rec.Object
	}
	pkg, err := decodePackage(rec)
	if err != nil {
		v.Cache.State = CacheNone
		return v
	}
	pl, err := a.planPackage(ctx, rec, pkg, nil, resolveLocal)
	if err != nil {
		v.Cache.State = CacheNone
		return v
	}
	for _, im := range pl.Images {
		iv := ImageView{Ref: im.Ref, Digest: string(im.Digest)}
		iv.Blobs, iv.CachedBlobs, iv.Bytes, iv.CachedBytes = im.counts()
		if im.Err != nil {
			iv.Error = im.Err.Error()
			v.Cache.Unresolved++
		}
		v.Images = append(v.Images, iv)
	}
	blobs, present, total, have, complete := pl.totals()
	c := &v.Cache
	c.Blobs, c.CachedBlobs, c.Bytes, c.CachedBytes = blobs, present, total, have
	switch {
	case complete:
		c.State, c.Percent = CacheSynced, 100
	case have == 0:
		c.State = CacheNone
	default:
		c.State = CachePartial
		if total > 0 {
			c.Percent = int(have * 100 / total)
		}
		if c.Percent >= 100 {
			c.Percent = 99
		}
	}
	return v
}

func (a *API) listPackages(w http.ResponseWriter, r *http.Request) {
	recs, err := a.allPackages()
	if err != nil {
		internal(w, r, err)
		return
	}
	items := make([]PackageView, 0, len(recs))
	for _, rec := range recs {
		items = append(items, a.view(r.Context(), rec, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (a *API) getPackage(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := a.packageFor(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, a.view(r.Context(), rec, true))
}

func (a *API) deletePackage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var found bool
	if err := a.st.DB.Update(func(tx *repodb.Tx) error {
		var err error
		found, err = tx.DeletePocketPackage(name)
		return err
	}); err != nil {
		internal(w, r, err)
		return
	}
	if !found {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("package %q is not in the pocket", name), map[string]string{"package": name})
		return
	}
	a.log.Info("package removed from the pocket", "kubepkg", name)
	a.changed("kubepkgs")
	w.WriteHeader(http.StatusNoContent)
}

// sourceRequest is the body that names a deployments center URL.
type sourceRequest struct {
	URL   string `json:"url"`
	Token string `json:"token,omitempty"`
}

// addPackages takes a KubePkg or KubePkgList (JSON or YAML), or
// {"url": ...} to fetch one from a deployments center.
func (a *API) addPackages(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, oci.MaxPackageSize+1))
	if err != nil {
		httpx.WriteError(w, r, http.StatusRequestEntityTooLarge, "TOO_LARGE", fmt.Sprintf("the package document is over %d bytes", oci.MaxPackageSize), nil)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "empty body: send a KubePkg or KubePkgList (JSON or YAML), or {\"url\": ...}", nil)
		return
	}
	var src sourceRequest
	if s, ok := asSource(body); ok {
		src = s
	}
	var pkgs []*kubepkg.KubePkg
	if src.URL != "" {
		if pkgs, err = a.fetchSource(r.Context(), src); err != nil {
			writeFetchError(w, r, src.URL, err)
			return
		}
	} else if pkgs, err = kubepkg.Parse(body); err != nil {
		httpx.WriteErrors(w, r, http.StatusBadRequest, fieldErrors(err, "")...)
		return
	}
	views, errs := a.store(r.Context(), pkgs, src)
	if len(errs) > 0 {
		httpx.WriteErrors(w, r, http.StatusBadRequest, errs...)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"items": views})
}

// asSource reads {"url": ..., "token": ...}.
func asSource(body []byte) (sourceRequest, bool) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) != nil {
		return sourceRequest{}, false
	}
	if _, ok := probe["url"]; !ok {
		return sourceRequest{}, false
	}
	if _, ok := probe["apiVersion"]; ok {
		return sourceRequest{}, false
	}
	var s sourceRequest
	if json.Unmarshal(body, &s) != nil {
		return sourceRequest{}, false
	}
	if s.URL == "" {
		s.URL = " " // named but empty: refused by fetchSource
	}
	return s, true
}

// fetchSource loads packages from a deployments center (http or https
// only), with ETag revalidation through <data>/sources.
func (a *API) fetchSource(ctx context.Context, src sourceRequest) ([]*kubepkg.KubePkg, error) {
	u, err := url.Parse(src.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &badSource{fmt.Errorf("url %q: want an http:// or https:// URL of a deployments center", src.URL)}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kubepkg.Load(ctx, u.String(), kubepkg.LoadOptions{Token: src.Token, Client: a.client,
		CacheDir: filepath.Join(a.st.Dir, "sources")})
}

type badSource struct{ error }

func writeFetchError(w http.ResponseWriter, r *http.Request, src string, err error) {
	var bs *badSource
	if errors.As(err, &bs) {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", err.Error(), map[string]string{"field": "url"})
		return
	}
	var fe *kubepkg.FieldError
	if errors.As(err, &fe) {
		errs := fieldErrors(err, "")
		for i := range errs {
			errs[i].Detail.(map[string]string)["source"] = src
		}
		httpx.WriteErrors(w, r, http.StatusBadRequest, errs...)
		return
	}
	httpx.WriteError(w, r, http.StatusBadGateway, "SOURCE_UNAVAILABLE", err.Error(), map[string]string{"source": src})
}

// fieldErrors lists err (joined errors, field errors among them) as API
// errors naming their field.
func fieldErrors(err error, pkg string) []apiError {
	var out []apiError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		detail := map[string]string{}
		ae := apiError{Code: "INVALID", Message: e.Error(), Detail: detail}
		var fe *kubepkg.FieldError
		if errors.As(e, &fe) {
			detail["field"] = fe.Path
		}
		if pkg != "" {
			detail["package"] = pkg
			ae.Message = "package " + pkg + ": " + ae.Message
		}
		out = append(out, ae)
	}
	walk(err)
	return out
}

// store validates every package and records them all, or none.
func (a *API) store(ctx context.Context, pkgs []*kubepkg.KubePkg, src sourceRequest) ([]PackageView, []apiError) {
	var errs []apiError
	seen := map[string]bool{}
	objs := make([][]byte, len(pkgs))
	for i, p := range pkgs {
		label := p.Metadata.Name
		if label == "" {
			label = fmt.Sprintf("#%d", i+1)
		}
		obj, err := kubepkg.Marshal([]*kubepkg.KubePkg{p})
		if err != nil {
			errs = append(errs, apiError{Code: "INVALID", Message: err.Error()})
			continue
		}
		objs[i] = obj
		// validated as it will be exported: with the images of its pod
		// templates
		cp, err := kubepkg.Parse(obj)
		if err == nil && len(cp) == 1 {
			cp[0].AddManifestImages()
			err = cp[0].Validate()
		}
		if err != nil {
			errs = append(errs, fieldErrors(err, label)...)
			continue
		}
		if seen[p.Metadata.Name] {
			errs = append(errs, apiError{Code: "INVALID", Message: fmt.Sprintf("package %s is listed twice", p.Metadata.Name),
				Detail: map[string]string{"field": "metadata.name", "package": p.Metadata.Name}})
		}
		seen[p.Metadata.Name] = true
	}
	if len(errs) > 0 {
		return nil, errs
	}
	now := time.Now().UTC()
	var recs []*repodb.PocketPackage
	err := a.st.DB.Update(func(tx *repodb.Tx) error {
		recs = nil
		for i, p := range pkgs {
			rec := &repodb.PocketPackage{Name: p.Metadata.Name, Namespace: p.Metadata.Namespace, Version: p.Spec.Version,
				Platforms: p.Metadata.Annotations[kubepkg.AnnotationPlatform], Source: src.URL, SourceToken: src.Token,
				AddedAt: now, UpdatedAt: now, Object: objs[i]}
			old, ok, err := tx.PocketPackage(rec.Name)
			if err != nil {
				return err
			}
			if ok {
				rec.AddedAt = old.AddedAt
				if bytes.Equal(old.Object, rec.Object) {
					rec.Resolved, rec.SyncedAt, rec.UpdatedAt = old.Resolved, old.SyncedAt, old.UpdatedAt
				}
			}
			if err := tx.PutPocketPackage(rec); err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, []apiError{{Code: "UNKNOWN", Message: err.Error()}}
	}
	views := make([]PackageView, 0, len(recs))
	for _, rec := range recs {
		a.log.Info("package added to the pocket", "kubepkg", rec.Name, "version", rec.Version, "source", rec.Source)
		views = append(views, a.view(ctx, rec, false))
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
	a.changed("kubepkgs")
	return views, nil
}

// refreshPackage fetches a package's deployments center URL again (with
// every package it lists).
func (a *API) refreshPackage(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := a.packageFor(w, r)
	if !ok {
		return
	}
	if rec.Source == "" {
		httpx.WriteError(w, r, http.StatusConflict, "NO_SOURCE", fmt.Sprintf("package %s was pasted, not fetched from a URL: add it again to change it", rec.Name), nil)
		return
	}
	src := sourceRequest{URL: rec.Source, Token: rec.SourceToken}
	pkgs, err := a.fetchSource(r.Context(), src)
	if err != nil {
		writeFetchError(w, r, src.URL, err)
		return
	}
	views, errs := a.store(r.Context(), pkgs, src)
	if len(errs) > 0 {
		httpx.WriteErrors(w, r, http.StatusBadRequest, errs...)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": views})
}
