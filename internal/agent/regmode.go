package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/kubeclient"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/sigverify"
)

// AnnotationImportedAt is when the agent in registry mode wrote a KubePkg
// object (RFC 3339): the package record's importedAt.
const AnnotationImportedAt = "octohelm.tech/imported-at"

// regMode is the agent in registry mode (`crpe agent --registry`): imports
// go into the site registry with registrypush, and the package records are
// the cluster's KubePkg objects, so that every replica answers alike and
// none holds a blob.
type regMode struct {
	push    registrypush.Options
	cluster *clusterSync
	ns      string // for packages that name no namespace
	locks   *importLocks
}

// record is a package as its KubePkg object holds it.
type record struct {
	ns  string
	pkg *kubepkg.KubePkg
	at  string
}

// records lists the KubePkg objects of the cluster as packages.
func (m *regMode) records(ctx context.Context) ([]record, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list := &unstructured.UnstructuredList{}
	gvk := kubeclient.GVK
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind + "List"})
	if err := m.cluster.c.List(ctx, list); err != nil {
		return nil, clusterError(err)
	}
	var out []record
	for _, o := range list.Items {
		r, err := asRecord(&o)
		if err != nil {
			continue // not a package crpe can read: not one of its records
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ns != out[j].ns {
			return out[i].ns < out[j].ns
		}
		return out[i].pkg.Metadata.Name < out[j].pkg.Metadata.Name
	})
	return out, nil
}

// record reads the KubePkg object namespace/name; nil when there is none.
func (m *regMode) record(ctx context.Context, ns, name string) (*record, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := kubeclient.NewKubePkg()
	if err := m.cluster.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, nil
		}
		return nil, clusterError(err)
	}
	r, err := asRecord(u)
	if err != nil {
		return nil, &importer.Error{Status: http.StatusConflict, Code: "VERSION_CONFLICT",
			Reason: fmt.Sprintf("KubePkg %s/%s in the cluster cannot be read: %v", ns, name, err)}
	}
	return &r, nil
}

func asRecord(u *unstructured.Unstructured) (record, error) {
	obj := u.DeepCopy()
	delete(obj.Object, "status")
	b, err := obj.MarshalJSON()
	if err != nil {
		return record{}, err
	}
	pkgs, err := kubepkg.Parse(b)
	if err != nil {
		return record{}, err
	}
	if len(pkgs) != 1 {
		return record{}, fmt.Errorf("%d packages", len(pkgs))
	}
	p := pkgs[0]
	p.Metadata = kubepkg.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace(), Labels: u.GetLabels(), Annotations: u.GetAnnotations()}
	return record{ns: u.GetNamespace(), pkg: p, at: u.GetAnnotations()[AnnotationImportedAt]}, nil
}

func clusterError(err error) error {
	return &importer.Error{Status: http.StatusBadGateway, Code: "CLUSTER_UNAVAILABLE",
		Reason: "the package records (KubePkg objects) cannot be read: " + err.Error()}
}

// repositories are the site registry's repositories of the packages'
// images (sorted, once each).
func (m *regMode) repositories(recs []record) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range recs {
		for ref := range r.pkg.Spec.Images {
			pr, err := oci.ParseReference(ref)
			if err != nil {
				continue
			}
			repo, err := m.push.Target.Repository(pr.Repository, m.push.Naming)
			if err != nil || seen[repo] {
				continue
			}
			seen[repo] = true
			out = append(out, repo)
		}
	}
	sort.Strings(out)
	return out
}

// RegistryResult is the answer of an import in registry mode: the import
// summary the CLI prints (blobs received = pushed to the registry, present
// = the registry had them), what the push did, and the KubePkg objects.
type RegistryResult struct {
	*importer.Result
	Registry       *registrypush.Result `json:"registry"`
	KubePkgObjects map[string]string    `json:"kubepkgObjects"`
}

// importArchive pushes the archive into the site registry and, once every
// tag is set, writes the KubePkg objects. As soon as kubepkg.json is read,
// before any blob goes, the import takes each package's lease (importLocks:
// another import of the package through any replica answers 409
// IMPORT_IN_PROGRESS) and then asks the semver gate of the KubePkg objects;
// the leases are renewed while the import runs, checked right before the
// tags are set and before the objects are written, and released at the end,
// failed or not.
func (m *regMode) importArchive(ctx context.Context, body io.Reader, force bool) (*RegistryResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	recs, err := m.records(ctx)
	if err != nil {
		return nil, err
	}
	o := m.push
	o.Sources = m.repositories(recs) // a partial archive's blobs: mounted from there
	var pkgs []*kubepkg.KubePkg
	var held *heldLocks
	defer func() {
		if held != nil {
			held.release()
		}
	}()
	previous := map[*kubepkg.KubePkg]string{}
	o.CheckPackages = func(ps []*kubepkg.KubePkg) error {
		var keys []pkgKey
		for _, p := range ps {
			for ref, d := range p.Spec.Images {
				if !oci.IsDigest(d) {
					return &importer.Error{Status: http.StatusBadRequest, Code: "IMPORT_INVALID", Entry: "kubepkg.json",
						Reason: fmt.Sprintf("package %s: spec.images[%q] is not pinned to a digest", p.Metadata.Name, ref)}
				}
			}
			keys = append(keys, pkgKey{p.Namespace(m.ns), p.Metadata.Name})
		}
		if m.locks != nil {
			h, err := m.locks.acquire(ctx, keys, cancel)
			if err != nil {
				return err
			}
			held = h
		}
		// the gate, once the lease is held: an import of the package that
		// just ended is seen
		for _, p := range ps {
			ns := p.Namespace(m.ns)
			cur, err := m.record(ctx, ns, p.Metadata.Name)
			if err != nil {
				return err
			}
			if cur != nil {
				if err := importer.CheckVersion(ns, p.Metadata.Name, cur.pkg.Spec.Version, p, force); err != nil {
					return err
				}
				previous[p] = cur.pkg.Spec.Version
			}
		}
		pkgs = ps
		return nil
	}
	o.BeforeTags = func(ctx context.Context) error {
		if held == nil {
			return nil
		}
		return held.renew(ctx)
	}
	pushed, err := registrypush.Push(ctx, body, o)
	if err != nil {
		return nil, err
	}
	res := &importer.Result{Images: map[string]string{}, Partial: kubepkg.Partial(pkgs),
		BlobsReceived: pushed.BlobsPushed, BytesReceived: pushed.BytesPushed,
		BlobsPresent: pushed.BlobsSkipped, BytesPresent: pushed.BytesSkipped}
	for _, im := range pushed.Images {
		res.Images[im.Ref] = im.Digest
	}
	for _, a := range pushed.Artifacts {
		if res.Artifacts == nil {
			res.Artifacts = map[string]string{}
		}
		res.Artifacts[a.Ref] = a.Digest
	}
	res.Signatures = pushed.Signatures
	now := time.Now().UTC().Format(time.RFC3339)
	for _, p := range pkgs {
		prev := previous[p]
		placed := *p
		placed.Metadata.Annotations = map[string]string{}
		for k, v := range p.Metadata.Annotations {
			if k != kubepkg.AnnotationPartial { // the archive's, not the package's
				placed.Metadata.Annotations[k] = v
			}
		}
		placed.Metadata.Annotations[AnnotationImportedAt] = now
		if pushed.Signatures != nil {
			placed.Status = cloneStatus(p.Status)
			var mine []kubepkg.Signature
			for _, v := range pushed.Signatures {
				if _, ok := p.Spec.Images[v.Image]; ok {
					mine = append(mine, v)
				}
			}
			placed.SetStatusSignatures(mine)
		}
		b, err := kubepkg.Marshal([]*kubepkg.KubePkg{&placed})
		if err != nil {
			return nil, err
		}
		res.Packages = append(res.Packages, importer.PackageResult{Namespace: p.Namespace(m.ns), Name: p.Metadata.Name,
			Version: p.Spec.Version, Previous: prev, Forced: force && prev != "" && kubepkg.IsDowngrade(prev, p.Spec.Version),
			Unchanged: prev == p.Spec.Version, Object: b})
	}
	if held != nil {
		if err := held.renew(ctx); err != nil {
			return nil, fmt.Errorf("the images are in %s (tags set), but the KubePkg objects were not written: %w", pushed.Registry, err)
		}
	}
	objs := m.cluster.onImport(ctx, res)
	for key, what := range objs {
		if strings.HasPrefix(what, "error: ") {
			return nil, &importer.Error{Status: http.StatusBadGateway, Code: "RECORD_NOT_WRITTEN",
				Reason: fmt.Sprintf("the images are in %s (tags set), but the KubePkg object %s was not written: %s; import again to write it (no blob is sent again)",
					pushed.Registry, key, strings.TrimPrefix(what, "error: "))}
		}
	}
	return &RegistryResult{Result: res, Registry: pushed, KubePkgObjects: objs}, nil
}

// registryError maps what registrypush returns to the import API's errors;
// anything else is left to importer.AsError.
func registryError(err error) error {
	var ie *importer.Error
	if errors.As(err, &ie) {
		return ie
	}
	var se *sigverify.Error
	if errors.As(err, &se) {
		return &importer.Error{Status: http.StatusForbidden, Code: "SIGNATURE_REFUSED", Reason: err.Error()}
	}
	var re *registrypush.RefusedError
	if errors.As(err, &re) {
		return &importer.Error{Status: http.StatusForbidden, Code: "REGISTRY_REFUSED", Reason: err.Error()}
	}
	var pe *registrypush.Error
	if errors.As(err, &pe) {
		return &importer.Error{Status: http.StatusBadGateway, Code: "REGISTRY_ERROR", Reason: err.Error()}
	}
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(err.Error(), "registry ") && strings.Contains(err.Error(), "connect") {
		return &importer.Error{Status: http.StatusBadGateway, Code: "REGISTRY_UNAVAILABLE", Reason: err.Error()}
	}
	return err
}

// missing answers POST /api/v1/blobs/missing from the site registry: a
// digest is there when a repository of some package's images holds it (the
// push then mounts it from there).
func (m *regMode) missing(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	recs, err := m.records(ctx)
	if err != nil {
		return nil, err
	}
	repos := m.repositories(recs)
	if len(repos) == 0 || len(ds) == 0 {
		return append([]digest.Digest{}, ds...), nil
	}
	rm, err := registrypush.Open(ctx, m.push, repos)
	if err != nil {
		return nil, registryError(err)
	}
	out, err := rm.Missing(ctx, repos, ds)
	if err != nil {
		return nil, registryError(err)
	}
	return out, nil
}

// inventory is what the site registry holds of the packages: every
// manifest, config and layer of their images, for their platforms, found
// there.
func (m *regMode) inventory(ctx context.Context) (*Inventory, error) {
	recs, err := m.records(ctx)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{Digests: []string{}, Packages: []InventoryPackage{}}
	var ims []registrypush.Image
	for _, r := range recs {
		inv.Packages = append(inv.Packages, InventoryPackage{r.ns, r.pkg.Metadata.Name, r.pkg.Spec.Version})
		plats, err := r.pkg.Platforms()
		if err != nil {
			plats = nil
		}
		for _, ref := range r.pkg.ImageRefs() {
			d := r.pkg.Spec.Images[ref]
			pr, err := oci.ParseReference(ref)
			if err != nil || !oci.IsDigest(d) {
				continue
			}
			repo, err := m.push.Target.Repository(pr.Repository, m.push.Naming)
			if err != nil {
				continue
			}
			ims = append(ims, registrypush.Image{Repo: repo, Digest: digest.Digest(d), Platforms: plats})
		}
	}
	if len(ims) == 0 {
		return inv, nil
	}
	rm, err := registrypush.Open(ctx, m.push, m.repositories(recs))
	if err != nil {
		return nil, registryError(err)
	}
	ds, err := rm.Holdings(ctx, ims)
	if err != nil {
		return nil, registryError(err)
	}
	for _, d := range ds {
		inv.Digests = append(inv.Digests, string(d))
	}
	return inv, nil
}

// packageItem is an item of GET /api/v1/kubepkgs in registry mode (the
// same fields as the data folder's records).
func (r record) item() map[string]any {
	it := map[string]any{"namespace": r.ns, "name": r.pkg.Metadata.Name, "version": r.pkg.Spec.Version,
		"importedAt": r.at, "images": r.pkg.Spec.Images, "platforms": r.pkg.Metadata.Annotations[kubepkg.AnnotationPlatform]}
	if sigs, err := r.pkg.StatusSignatures(); err == nil && sigs != nil {
		it["signatures"] = sigs
	}
	return it
}

// detail is GET /api/v1/kubepkgs/{namespace}/{name} in registry mode: the
// record with its object; the history is the version the object holds (a
// KubePkg object keeps no other).
func (r record) detail() (map[string]any, error) {
	b, err := kubepkg.Marshal([]*kubepkg.KubePkg{r.pkg})
	if err != nil {
		return nil, err
	}
	it := r.item()
	it["object"] = json.RawMessage(b)
	it["history"] = []map[string]any{{"version": r.pkg.Spec.Version, "images": r.pkg.Spec.Images,
		"platforms": it["platforms"], "importedAt": r.at, "signatures": it["signatures"]}}
	return it, nil
}

// noV2 answers /v2 in registry mode: the nodes pull from the site registry.
func (m *regMode) noV2(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "v2_registry_mode")
	httpx.WriteError(w, r, http.StatusNotFound, "UNSUPPORTED",
		fmt.Sprintf("this crpe agent runs in registry mode: images are in %s, and the nodes pull from it (crpe mirror-config --registry %s)",
			m.push.Target, m.push.Target), nil)
}

// cloneStatus copies a status map (one level: its values are replaced, not
// changed in place).
func cloneStatus(s *kubepkg.Status) *kubepkg.Status {
	out := kubepkg.Status{}
	if s != nil {
		for k, v := range *s {
			out[k] = v
		}
	}
	return &out
}
