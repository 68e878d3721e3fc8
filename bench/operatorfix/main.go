// Command operatorfix is a standard-library-only helper used by
// bench/operator.sh: it writes the packages and objects the benchmark
// applies, and waits for KubePkg objects to be applied by talking to the API
// server directly (one small process polling, instead of a kubectl start-up
// per poll, which on a small machine would steal the CPU being measured).
//
//	operatorfix pkg -ns NS -name NAME [-cm 200 -secret 200 -svc 100] -pkg FILE [-yaml FILE]
//	operatorfix many -ns NS -n 200 [-cm 2] -o FILE
//	operatorfix wait -server URL -ca FILE -token T -ns NS [-name NAME] [-want N | -gone] [-timeout 120s]
//	operatorfix purge -server URL -ca FILE -token T -ns NS
//
// pkg writes one KubePkg (JSON) whose spec.manifests hold -cm ConfigMaps,
// -secret Secrets and -svc Services (ClusterIP: the API server only
// allocates an address from its range), keyed <name>.<NS>.<kind>, with no
// metadata.namespace (they go into the package's namespace); -yaml also
// writes the same objects as a YAML stream for `kubectl apply -n NS`.
//
// many writes -n KubePkg objects (a YAML stream of JSON documents, for
// `kubectl apply`), pkg-000 … in namespace NS, each with -cm ConfigMaps.
//
// wait watches the KubePkg NAME (or every KubePkg of NS) until -want of
// them have the condition Applied=True for their current generation, then
// prints one JSON line: seconds waited, how many are applied, and the
// Applied messages of the first few that are not. With -gone it waits
// instead until the namespace has no KubePkg left. It exits 1 on timeout.
// It lists once and then follows a watch (no polling: each poll would make
// the API server encode every KubePkg, half a megabyte for 500 manifests,
// again).
//
// purge deletes every KubePkg of NS and strips their finalizers, without
// the operator (which must be stopped): what they applied stays. It prints
// how many it removed.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "pkg":
		err = cmdPkg(os.Args[2:])
	case "many":
		err = cmdMany(os.Args[2:])
	case "wait":
		err = cmdWait(os.Args[2:])
	case "purge":
		err = cmdPurge(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "operatorfix:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: operatorfix pkg|many|wait [flags] (see the source)")
	os.Exit(2)
}

type obj = map[string]any

// payload returns n bytes of printable text derived from seed.
func payload(seed, n int) string {
	var b strings.Builder
	for b.Len() < n {
		fmt.Fprintf(&b, "%08x", uint32(seed)*2654435761+uint32(b.Len()))
	}
	return b.String()[:n]
}

func objects(prefix string, cm, secret, svc int) []obj {
	var out []obj
	for i := 0; i < cm; i++ {
		out = append(out, obj{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": obj{"name": fmt.Sprintf("%scm-%03d", prefix, i), "labels": obj{"app": "bench"}},
			"data": obj{
				"app.properties": payload(i, 512),
				"index":          fmt.Sprint(i),
				"mode":           "bench",
			},
		})
	}
	for i := 0; i < secret; i++ {
		out = append(out, obj{
			"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"metadata": obj{"name": fmt.Sprintf("%ssecret-%03d", prefix, i), "labels": obj{"app": "bench"}},
			"data": obj{
				"password": base64.StdEncoding.EncodeToString([]byte(payload(1000+i, 32))),
				"token":    base64.StdEncoding.EncodeToString([]byte(payload(2000+i, 256))),
			},
		})
	}
	for i := 0; i < svc; i++ {
		out = append(out, obj{
			"apiVersion": "v1", "kind": "Service",
			"metadata": obj{"name": fmt.Sprintf("%ssvc-%03d", prefix, i), "labels": obj{"app": "bench"}},
			"spec": obj{
				"selector": obj{"app": fmt.Sprintf("bench-%03d", i)},
				"ports":    []obj{{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}},
			},
		})
	}
	return out
}

func kubePkg(ns, name string, objs []obj) obj {
	manifests := obj{}
	for _, o := range objs {
		md := o["metadata"].(obj)
		manifests[fmt.Sprintf("%s.%s.%s", md["name"], ns, strings.ToLower(o["kind"].(string)))] = o
	}
	return obj{
		"apiVersion": "octohelm.tech/v1alpha1", "kind": "KubePkg",
		"metadata": obj{"name": name, "namespace": ns},
		"spec":     obj{"version": "1.0.0", "images": obj{}, "manifests": manifests},
	}
}

// yamlStream writes documents as JSON (valid YAML) separated by ---.
func yamlStream(docs []obj) ([]byte, error) {
	var buf bytes.Buffer
	for _, d := range docs {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		buf.WriteString("---\n")
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

func cmdPkg(args []string) error {
	fs := flag.NewFlagSet("pkg", flag.ExitOnError)
	ns := fs.String("ns", "", "namespace of the package")
	name := fs.String("name", "scale", "package name")
	cm := fs.Int("cm", 200, "ConfigMaps")
	secret := fs.Int("secret", 200, "Secrets")
	svc := fs.Int("svc", 100, "Services")
	pkgOut := fs.String("pkg", "", "KubePkg JSON file to write")
	yamlOut := fs.String("yaml", "", "also write the objects as a YAML stream")
	_ = fs.Parse(args)
	if *ns == "" || *pkgOut == "" {
		return fmt.Errorf("pkg: -ns and -pkg are required")
	}
	objs := objects("", *cm, *secret, *svc)
	b, err := json.Marshal(kubePkg(*ns, *name, objs))
	if err != nil {
		return err
	}
	if err := os.WriteFile(*pkgOut, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if *yamlOut != "" {
		y, err := yamlStream(objs)
		if err != nil {
			return err
		}
		return os.WriteFile(*yamlOut, y, 0o644)
	}
	return nil
}

func cmdMany(args []string) error {
	fs := flag.NewFlagSet("many", flag.ExitOnError)
	ns := fs.String("ns", "", "namespace of the packages")
	n := fs.Int("n", 200, "packages")
	cm := fs.Int("cm", 2, "ConfigMaps per package")
	out := fs.String("o", "", "file to write")
	_ = fs.Parse(args)
	if *ns == "" || *out == "" {
		return fmt.Errorf("many: -ns and -o are required")
	}
	var docs []obj
	for i := 0; i < *n; i++ {
		name := fmt.Sprintf("pkg-%03d", i)
		docs = append(docs, kubePkg(*ns, name, objects(name+"-", *cm, 0, 0)))
	}
	y, err := yamlStream(docs)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, y, 0o644)
}

type kubePkgStatus struct {
	Metadata struct {
		Name       string `json:"name"`
		Generation int64  `json:"generation"`
	} `json:"metadata"`
	Status struct {
		Conditions []struct {
			Type               string `json:"type"`
			Status             string `json:"status"`
			Reason             string `json:"reason"`
			Message            string `json:"message"`
			ObservedGeneration int64  `json:"observedGeneration"`
		} `json:"conditions"`
	} `json:"status"`
}

// applied tells whether Applied=True for the current generation, and the
// Applied condition's reason and message otherwise.
func (k *kubePkgStatus) applied() (bool, string) {
	for _, c := range k.Status.Conditions {
		if c.Type != "Applied" {
			continue
		}
		if c.Status == "True" && c.ObservedGeneration >= k.Metadata.Generation {
			return true, ""
		}
		msg := c.Message
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return false, c.Status + " " + c.Reason + ": " + msg
	}
	return false, "no Applied condition yet"
}

// apiFlags are the flags every API-talking subcommand takes.
type apiFlags struct {
	server, caFile, token, ns *string
}

func newAPIFlags(fs *flag.FlagSet) apiFlags {
	return apiFlags{
		server: fs.String("server", "", "API server URL"),
		caFile: fs.String("ca", "", "CA certificate (PEM) of the API server"),
		token:  fs.String("token", "", "bearer token"),
		ns:     fs.String("ns", "", "namespace"),
	}
}

// client returns an HTTPS client trusting the CA, and the URL of the
// namespace's KubePkg collection.
func (a apiFlags) client(cmd string) (*http.Client, string, error) {
	if *a.server == "" || *a.caFile == "" || *a.token == "" || *a.ns == "" {
		return nil, "", fmt.Errorf("%s: -server, -ca, -token and -ns are required", cmd)
	}
	ca, err := os.ReadFile(*a.caFile)
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", fmt.Errorf("%s: no certificate in %s", cmd, *a.caFile)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	return c, strings.TrimRight(*a.server, "/") + "/apis/octohelm.tech/v1alpha1/namespaces/" + *a.ns + "/kubepkgs", nil
}

func do(c *http.Client, method, url, token, contentType string, body []byte) (int, []byte, error) {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	return resp.StatusCode, b, err
}

func cmdPurge(args []string) error {
	fs := flag.NewFlagSet("purge", flag.ExitOnError)
	af := newAPIFlags(fs)
	_ = fs.Parse(args)
	c, url, err := af.client("purge")
	if err != nil {
		return err
	}
	code, body, err := do(c, http.MethodGet, url, *af.token, "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("purge: GET %s: HTTP %d: %.300s", url, code, body)
	}
	var l struct {
		Items []kubePkgStatus `json:"items"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return err
	}
	for _, it := range l.Items {
		u := url + "/" + it.Metadata.Name
		code, body, err := do(c, http.MethodPatch, u, *af.token, "application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))
		if err != nil {
			return err
		}
		if code != http.StatusOK && code != http.StatusNotFound {
			return fmt.Errorf("purge: PATCH %s: HTTP %d: %.300s", u, code, body)
		}
		code, body, err = do(c, http.MethodDelete, u, *af.token, "", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK && code != http.StatusAccepted && code != http.StatusNotFound {
			return fmt.Errorf("purge: DELETE %s: HTTP %d: %.300s", u, code, body)
		}
	}
	fmt.Println(len(l.Items))
	return nil
}

func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	af := newAPIFlags(fs)
	name := fs.String("name", "", "one KubePkg (default: every KubePkg of the namespace)")
	want := fs.Int("want", 1, "how many must be applied")
	gone := fs.Bool("gone", false, "wait until the namespace has no KubePkg left")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after")
	_ = fs.Parse(args)
	c, url, err := af.client("wait")
	if err != nil {
		return err
	}
	if *name != "" {
		url += "?fieldSelector=metadata.name%3D" + *name
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	w := &waiter{want: *want, gone: *gone}
	for !w.done() && ctx.Err() == nil {
		// list, then follow the changes from there until the server ends
		// the watch (or the time is up), then list again
		rv, err := w.list(ctx, c, url, *af.token)
		if err != nil {
			w.last = []string{err.Error()}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if w.done() {
			break
		}
		if err := w.watch(ctx, url, rv, *af.token, c.Transport); err != nil && ctx.Err() == nil {
			w.last = []string{err.Error()}
		}
	}
	ok, pending := w.state()
	if !w.done() {
		if *gone {
			pending = []string{fmt.Sprintf("%d left", len(w.items))}
		}
		if len(w.last) > 0 {
			pending = append(pending, w.last...)
		}
		b, _ := json.Marshal(map[string]any{"seconds": time.Since(start).Seconds(), "applied": ok, "want": *want, "pending": pending})
		fmt.Println(string(b))
		return fmt.Errorf("wait: %d of %d applied after %s", ok, *want, *timeout)
	}
	b, _ := json.Marshal(map[string]any{"seconds": time.Since(start).Seconds(), "applied": ok, "want": *want})
	fmt.Println(string(b))
	return nil
}

// waiter follows the KubePkgs of a namespace (or one of them) by a LIST and
// a watch from its resourceVersion: the API server sends each change once,
// where polling GETs would have it encode every (large) KubePkg again at
// every poll, competing for the CPUs with what is measured.
type waiter struct {
	want  int
	gone  bool
	items map[string]*kubePkgStatus
	last  []string
}

func (w *waiter) state() (int, []string) {
	ok := 0
	var pending []string
	for _, it := range w.items {
		if done, why := it.applied(); done {
			ok++
		} else {
			pending = append(pending, it.Metadata.Name+": "+why)
		}
	}
	sort.Strings(pending)
	if len(pending) > 5 {
		pending = append(pending[:5], fmt.Sprintf("… and %d more", len(pending)-5))
	}
	return ok, pending
}

func (w *waiter) done() bool {
	if w.items == nil {
		return false
	}
	if w.gone {
		return len(w.items) == 0
	}
	ok, _ := w.state()
	return ok >= w.want
}

func (w *waiter) list(ctx context.Context, c *http.Client, url, token string) (string, error) {
	code, body, err := do(c, http.MethodGet, url, token, "", nil)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %.300s", url, code, body)
	}
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []*kubePkgStatus `json:"items"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return "", err
	}
	w.items = map[string]*kubePkgStatus{}
	for _, it := range l.Items {
		w.items[it.Metadata.Name] = it
	}
	return l.Metadata.ResourceVersion, ctx.Err()
}

func (w *waiter) watch(ctx context.Context, url, rv, token string, rt http.RoundTripper) error {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+sep+"watch=1&resourceVersion="+rv, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("watch %s: HTTP %d: %.300s", url, resp.StatusCode, b)
	}
	dec := json.NewDecoder(resp.Body)
	for !w.done() {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return err
		}
		var it kubePkgStatus
		if err := json.Unmarshal(ev.Object, &it); err != nil {
			return err
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			w.items[it.Metadata.Name] = &it
		case "DELETED":
			delete(w.items, it.Metadata.Name)
		case "ERROR": // too old a resourceVersion, say: list again
			return fmt.Errorf("watch: %.300s", ev.Object)
		}
	}
	return nil
}
