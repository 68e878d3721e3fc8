package kubepkg

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"sigs.k8s.io/yaml"

	"github.com/octohelm/crpe/internal/oci"
)

// maxNesting bounds how deep a document may nest objects and arrays (the
// limit encoding/json itself applies).
const maxNesting = 10000

// Parse reads packages from a JSON or YAML document (a document starting
// with "{" or "[" must be JSON): a KubePkg, a KubePkgList
// (whose items are returned in order), or, in YAML, a stream of either
// separated by "---" lines. Items of a list that leave out apiVersion and kind
// get APIVersion and KindKubePkg. Parse does not validate the packages (see
// Validate) but rejects documents over oci.MaxPackageSize, duplicate keys in any
// object (naming the key), other kinds, and a list whose apiVersion is not
// APIVersion.
func Parse(data []byte) ([]*KubePkg, error) {
	if len(data) > oci.MaxPackageSize {
		return nil, fmt.Errorf("package document is %d bytes, more than the %d allowed", len(data), oci.MaxPackageSize)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	if json.Valid(data) {
		return parseJSON(data)
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		// it looks like JSON: report the JSON error rather than YAML's
		var v any
		err := json.Unmarshal(data, &v)
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	docs := splitYAML(data)
	var pkgs []*KubePkg
	found := false
	for i, doc := range docs {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, docError(i, len(docs), fmt.Errorf("invalid YAML: %w", err))
		}
		if isNull(j) {
			continue // empty document, or only comments
		}
		found = true
		ps, err := parseJSON(j)
		if err != nil {
			return nil, docError(i, len(docs), err)
		}
		pkgs = append(pkgs, ps...)
	}
	if !found {
		return nil, errors.New("no package in the document")
	}
	if pkgs == nil {
		pkgs = []*KubePkg{}
	}
	return pkgs, nil
}

func docError(i, n int, err error) error {
	if n == 1 {
		return err
	}
	return fmt.Errorf("YAML document %d: %w", i+1, err)
}

// yamlSeparator matches a "---" line, optionally followed by a comment.
var yamlSeparator = regexp.MustCompile(`^---[ \t]*(#.*)?$`)

// splitYAML splits a YAML stream into its documents at "---" lines.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	r := bufio.NewReader(bytes.NewReader(data))
	for {
		line, err := r.ReadBytes('\n')
		if yamlSeparator.Match(bytes.TrimRight(line, "\r\n")) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
		} else {
			cur.Write(line)
		}
		if err != nil {
			break
		}
	}
	return append(docs, cur.Bytes())
}

// parseJSON parses one JSON document holding a KubePkg or a KubePkgList.
func parseJSON(data []byte) ([]*KubePkg, error) {
	if err := checkDuplicateKeys(data); err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		v, _ := DecodeValue(data)
		return nil, fmt.Errorf("a package document must be an object, got %s", jsonType(v))
	}
	if probe == nil {
		return nil, errors.New("a package document must be an object, got null")
	}
	var kind string
	if raw, ok := probe["kind"]; ok {
		if err := json.Unmarshal(raw, &kind); err != nil {
			return nil, atField("kind", err)
		}
	}
	switch kind {
	case KindKubePkg:
		p := &KubePkg{}
		if err := json.Unmarshal(data, p); err != nil {
			return nil, err
		}
		return []*KubePkg{p}, nil
	case KindKubePkgList:
		var l List
		if err := json.Unmarshal(data, &l); err != nil {
			return nil, err
		}
		if l.APIVersion != APIVersion {
			return nil, atField("apiVersion", fmt.Errorf("must be %q, got %q", APIVersion, l.APIVersion))
		}
		if l.Items == nil {
			l.Items = []*KubePkg{}
		}
		return l.Items, nil
	case "":
		return nil, atField("kind", fmt.Errorf("missing, want %q or %q", KindKubePkg, KindKubePkgList))
	default:
		return nil, atField("kind", fmt.Errorf("unsupported %q, want %q or %q", kind, KindKubePkg, KindKubePkgList))
	}
}

// UnmarshalJSON decodes a KubePkgList. Errors name the item (items[2].spec...).
// Items that leave out apiVersion and kind get APIVersion and KindKubePkg; an
// item of another kind is an error.
func (l *List) UnmarshalJSON(data []byte) error {
	*l = List{}
	if isNull(data) {
		return nil
	}
	var raw struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	l.APIVersion, l.Kind = raw.APIVersion, raw.Kind
	if raw.Items == nil {
		return nil
	}
	l.Items = make([]*KubePkg, 0, len(raw.Items))
	var errs []error
	for i, item := range raw.Items {
		path := "items[" + strconv.Itoa(i) + "]"
		if isNull(item) {
			errs = append(errs, atField(path, errors.New("must be an object, got null")))
			continue
		}
		p := &KubePkg{}
		if err := json.Unmarshal(item, p); err != nil {
			errs = append(errs, atField(path, err))
			continue
		}
		if p.APIVersion == "" && p.Kind == "" {
			p.APIVersion, p.Kind = APIVersion, KindKubePkg
		}
		if p.Kind != KindKubePkg {
			errs = append(errs, atField(path+".kind", fmt.Errorf("must be %q, got %q", KindKubePkg, p.Kind)))
			continue
		}
		l.Items = append(l.Items, p)
	}
	return errors.Join(errs...)
}

// checkDuplicateKeys walks a JSON document token by token and reports the
// first object key that appears twice in the same object (encoding/json would
// silently keep the last value), naming the object's path and the key.
func checkDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walkJSON(dec, "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON document")
	}
	return nil
}

func walkJSON(dec *json.Decoder, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxNesting {
		return fmt.Errorf("document nests deeper than %d levels", maxNesting)
	}
	switch delim {
	case '{':
		seen := map[string]struct{}{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, ok := tok.(string)
			if !ok {
				return fmt.Errorf("unexpected object key %v", tok)
			}
			if _, dup := seen[key]; dup {
				if path == "" {
					return fmt.Errorf("duplicate key %q", key)
				}
				return fmt.Errorf("%s: duplicate key %q", path, key)
			}
			seen[key] = struct{}{}
			if err := walkJSON(dec, joinPath(path, key), depth+1); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := walkJSON(dec, path+"["+strconv.Itoa(i)+"]", depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// joinPath appends a key to a field path: a.b for plain keys, a["b.c"] else.
func joinPath(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + keyPath(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// Marshal encodes packages as JSON: one package as a KubePkg, none or several
// as a KubePkgList. The bytes are deterministic (map keys sorted, no HTML
// escaping, no trailing newline).
func Marshal(pkgs []*KubePkg) ([]byte, error) {
	for i, p := range pkgs {
		if p == nil {
			return nil, fmt.Errorf("package %d is nil", i)
		}
	}
	if len(pkgs) == 1 {
		return encodeJSON(pkgs[0])
	}
	items := pkgs
	if items == nil {
		items = []*KubePkg{}
	}
	return encodeJSON(map[string]any{"apiVersion": APIVersion, "kind": KindKubePkgList, "items": items})
}
