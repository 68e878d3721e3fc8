package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"sort"
	"strconv"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/diskfree"
	"github.com/octohelm/crpe/internal/httpx"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/repodb"
	"github.com/octohelm/crpe/internal/storage"
)

// MaxMissingQuery bounds the digests of one POST /api/v1/blobs/missing.
const MaxMissingQuery = 100000

// api serves /api/v1 of the agent.
type api struct {
	st       *storage.Storage
	imp      *importer.Importer
	imports  *prometheus.CounterVec
	received prometheus.Counter
	// OnImport is called after each successful import (the cluster side
	// creates KubePkg objects from it); what it returns is added to the
	// answer.
	OnImport func(context.Context, *importer.Result) map[string]string
	// rm, in registry mode, takes imports, package records and the blob
	// questions instead of st and imp (both nil then).
	rm *regMode
}

func newAPI(st *storage.Storage, imp *importer.Importer, reg prometheus.Registerer) *api {
	a := &api{st: st, imp: imp,
		imports:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crpe_imports_total", Help: "Archive imports by result."}, []string{"result"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "crpe_import_bytes_received_total", Help: "Blob bytes received by imports."}),
	}
	reg.MustRegister(a.imports, a.received)
	return a
}

func (a *api) routes(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("PUT /api/v1/kubepkgs", guard(http.HandlerFunc(a.putKubePkgs)))
	mux.Handle("GET /api/v1/kubepkgs", guard(http.HandlerFunc(a.listKubePkgs)))
	mux.Handle("GET /api/v1/kubepkgs/{namespace}/{name}", guard(http.HandlerFunc(a.getKubePkg)))
	mux.Handle("POST /api/v1/blobs/missing", guard(http.HandlerFunc(a.missingBlobs)))
	mux.Handle("GET /api/v1/inventory", guard(http.HandlerFunc(a.inventory)))
}

// IsWrite classifies /api/v1 requests: the blob query is a read.
func IsWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	case http.MethodPost:
		return r.URL.Path != "/api/v1/blobs/missing"
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (a *api) putKubePkgs(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "import")
	if r.ContentLength > 0 && a.st != nil {
		if free := diskfree.Available(a.st.Dir); free >= 0 && r.ContentLength > free {
			a.imports.WithLabelValues("no_space").Inc()
			httpx.WriteError(w, r, http.StatusInsufficientStorage, "INSUFFICIENT_STORAGE",
				fmt.Sprintf("the upload has %d bytes, the agent's data folder has %d free", r.ContentLength, free), nil)
			return
		}
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	var body io.Reader = r.Body
	var split *parts.Reader
	if mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		var err error
		if split, err = splitUpload(r.Body, params["boundary"]); err != nil {
			a.imports.WithLabelValues("PART_INVALID").Inc()
			var detail map[string]string
			var pe *parts.Error
			if errors.As(err, &pe) {
				detail = map[string]string{"part": pe.Part}
			}
			httpx.WriteError(w, r, http.StatusBadRequest, "PART_INVALID", err.Error(), detail)
			return
		}
		body = split
	}
	var res *importer.Result
	var regRes *RegistryResult
	var err error
	if a.rm != nil {
		if regRes, err = a.rm.importArchive(r.Context(), body, force); err != nil {
			err = registryError(err)
		} else {
			res = regRes.Result
		}
	} else {
		res, err = a.imp.Import(r.Context(), body, importer.ImportOptions{Force: force})
	}
	if err != nil {
		if split != nil && importer.AsError(err).Code == "IMPORT_INVALID" {
			// a part refused, or found corrupt by its digest once the
			// rest of it is read
			if pe := split.Fault(err); pe != nil {
				err = pe
			}
		}
		var pe *parts.Error
		if errors.As(err, &pe) {
			a.imports.WithLabelValues("PART_INVALID").Inc()
			httpx.WriteError(w, r, http.StatusBadRequest, "PART_INVALID", pe.Error(), map[string]string{"part": pe.Part})
			return
		}
		e := importer.AsError(err)
		a.imports.WithLabelValues(e.Code).Inc()
		detail := map[string]string{}
		if e.Entry != "" {
			detail["entry"] = e.Entry
		}
		msg := e.Error()
		if split != nil && e.Code == "IMPORT_INVALID" && split.Part() != "" {
			// the parts before it were verified whole
			detail["part"] = split.Part()
			msg = "part " + split.Part() + ": " + msg
		}
		if len(detail) == 0 {
			detail = nil
		}
		httpx.WriteError(w, r, e.Status, e.Code, msg, detail)
		return
	}
	a.imports.WithLabelValues("ok").Inc()
	a.received.Add(float64(res.BytesReceived))
	if regRes != nil {
		writeJSON(w, http.StatusCreated, regRes)
		return
	}
	if a.OnImport != nil {
		objs := a.OnImport(r.Context(), res)
		writeJSON(w, http.StatusCreated, struct {
			*importer.Result
			KubePkgObjects map[string]string `json:"kubepkgObjects"`
		}{res, objs})
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// splitUpload reads a split archive from a multipart/form-data body (the
// web UI's upload of several files): an optional "parts" field first (the
// parts file: the parts must then match it), then one "part" field per
// part, in order, each under its file name. The parts stream as one
// archive, never stored apart.
func splitUpload(body io.Reader, boundary string) (*parts.Reader, error) {
	if boundary == "" {
		return nil, errors.New("multipart/form-data without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	first, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("reading the form: %w", err)
	}
	var m *parts.Manifest
	pending := first
	if first.FormName() == "parts" {
		b, err := io.ReadAll(io.LimitReader(first, parts.MaxFileSize+1))
		if err != nil {
			return nil, fmt.Errorf("reading the parts file: %w", err)
		}
		if m, err = parts.Parse(b); err != nil {
			return nil, err
		}
		pending = nil
	}
	return parts.NewReader(m, func() (string, io.Reader, error) {
		p := pending
		pending = nil
		if p == nil {
			var err error
			if p, err = mr.NextPart(); err != nil {
				return "", nil, err // io.EOF after the last
			}
		}
		if p.FormName() != "part" {
			return "", nil, fmt.Errorf("form field %q: want \"part\" fields (one per part, in order), after an optional \"parts\" (the parts file)", p.FormName())
		}
		return p.FileName(), p, nil
	}), nil
}

func (a *api) listKubePkgs(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "kubepkgs")
	if a.rm != nil {
		recs, err := a.rm.records(r.Context())
		if err != nil {
			writeImportError(w, r, err)
			return
		}
		items := []map[string]any{}
		for _, rec := range recs {
			items = append(items, rec.item())
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": items})
		return
	}
	var pkgs []*repodb.Package
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		pkgs, err = tx.Packages()
		return err
	})
	if err != nil {
		httpx.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error(), nil)
		return
	}
	type item struct {
		Namespace  string            `json:"namespace"`
		Name       string            `json:"name"`
		Version    string            `json:"version"`
		ImportedAt string            `json:"importedAt"`
		Images     map[string]string `json:"images"`
		Platforms  string            `json:"platforms,omitempty"`
		// Signatures are the verdicts of the current version's import
		Signatures json.RawMessage `json:"signatures,omitempty"`
	}
	items := []item{}
	for _, p := range pkgs {
		var sigs json.RawMessage
		for _, v := range p.History {
			if v.Version == p.Version {
				sigs = v.Signatures
			}
		}
		items = append(items, item{p.Namespace, p.Name, p.Version, p.ImportedAt.Format("2006-01-02T15:04:05Z07:00"), p.Images, p.Platforms, sigs})
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (a *api) getKubePkg(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "kubepkg")
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if a.rm != nil {
		rec, err := a.rm.record(r.Context(), ns, name)
		if err != nil {
			writeImportError(w, r, err)
			return
		}
		if rec == nil {
			httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("package %s/%s is not imported (no KubePkg object)", ns, name), nil)
			return
		}
		d, err := rec.detail()
		if err != nil {
			httpx.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error(), nil)
			return
		}
		writeJSON(w, http.StatusOK, d)
		return
	}
	var p *repodb.Package
	var ok bool
	err := a.st.DB.View(func(tx *repodb.Tx) error {
		var err error
		p, ok, err = tx.Package(ns, name)
		return err
	})
	if err != nil {
		httpx.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error(), nil)
		return
	}
	if !ok {
		httpx.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("package %s/%s is not imported", ns, name), nil)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// missingBlobs answers which of the given digests the store lacks.
func (a *api) missingBlobs(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "blobs_missing")
	var q struct {
		Digests []string `json:"digests"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 200*MaxMissingQuery))
	if err := dec.Decode(&q); err != nil {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", "want {\"digests\": [...]}: "+err.Error(), nil)
		return
	}
	if len(q.Digests) > MaxMissingQuery {
		httpx.WriteError(w, r, http.StatusBadRequest, "INVALID", fmt.Sprintf("at most %d digests per query", MaxMissingQuery), nil)
		return
	}
	missing := []string{}
	var ds []digest.Digest
	for _, s := range q.Digests {
		d, err := oci.ParseDigest(s)
		if err != nil {
			httpx.WriteError(w, r, http.StatusBadRequest, "DIGEST_INVALID", err.Error(), map[string]string{"digest": s})
			return
		}
		ds = append(ds, d)
	}
	if a.rm != nil {
		// asked of the site registry, in the repositories of the packages
		out, err := a.rm.missing(r.Context(), ds)
		if err != nil {
			writeImportError(w, r, err)
			return
		}
		for _, d := range out {
			missing = append(missing, string(d))
		}
		writeJSON(w, http.StatusOK, map[string]any{"missing": missing})
		return
	}
	for _, d := range ds {
		if _, err := a.st.Store.Stat(r.Context(), d); err != nil {
			missing = append(missing, string(d))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"missing": missing})
}

// Inventory is what an agent holds: its blob digests and its packages.
type Inventory struct {
	Digests  []string           `json:"digests"`
	Packages []InventoryPackage `json:"packages"`
}

// InventoryPackage is one package of an inventory.
type InventoryPackage struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   string `json:"version"`
}

// ReadInventory lists what st holds.
func ReadInventory(ctx context.Context, st *storage.Storage) (*Inventory, error) {
	inv := &Inventory{Digests: []string{}, Packages: []InventoryPackage{}}
	if err := st.Store.Walk(ctx, func(i cas.Info) error {
		inv.Digests = append(inv.Digests, string(i.Digest))
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Strings(inv.Digests)
	err := st.DB.View(func(tx *repodb.Tx) error {
		pkgs, err := tx.Packages()
		for _, p := range pkgs {
			inv.Packages = append(inv.Packages, InventoryPackage{p.Namespace, p.Name, p.Version})
		}
		return err
	})
	return inv, err
}

func (a *api) inventory(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "inventory")
	var inv *Inventory
	var err error
	if a.rm != nil {
		if inv, err = a.rm.inventory(r.Context()); err != nil {
			writeImportError(w, r, err)
			return
		}
	} else {
		inv, err = ReadInventory(r.Context(), a.st)
	}
	if err != nil {
		httpx.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = inv.write(w)
}

// write streams the inventory as JSON, a digest per line: an agent holding
// 50,000 blobs answers 3.8 MB without building them in memory a second time
// (json.Encoder encodes the whole value before it writes).
func (inv *Inventory) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("{\n  \"digests\": [")
	var buf []byte
	for i, d := range inv.Digests {
		if i > 0 {
			bw.WriteByte(',')
		}
		buf, _ = json.Marshal(d)
		bw.WriteString("\n    ")
		bw.Write(buf)
	}
	if len(inv.Digests) > 0 {
		bw.WriteString("\n  ")
	}
	pkgs, err := json.Marshal(inv.Packages)
	if err != nil {
		return err
	}
	bw.WriteString("],\n  \"packages\": ")
	bw.Write(pkgs)
	bw.WriteString("\n}\n")
	return bw.Flush()
}

// writeImportError writes err as the import API's error answer (registry
// mode: the cluster or the site registry failing).
func writeImportError(w http.ResponseWriter, r *http.Request, err error) {
	e := importer.AsError(registryError(err))
	httpx.WriteError(w, r, e.Status, e.Code, e.Error(), nil)
}
