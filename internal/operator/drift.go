package operator

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"

	"github.com/fluxcd/pkg/ssa/normalize"
	"github.com/fluxcd/pkg/ssa/utils"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// verdict is what comparing a desired object with its live copy tells
// about a server-side apply of the desired object as field manager crpe.
type verdict int

const (
	// inSync: the apply would change nothing (no request needed).
	inSync verdict = iota
	// unsure: only the API server can tell (a dry run).
	unsure
	// drifted: the apply would change the object.
	drifted
)

func worse(a, b verdict) verdict {
	if b > a {
		return b
	}
	return a
}

// compare tells, from the live copy alone (as a LIST returned it), whether
// server-side applying desired would change live. It reads the fields crpe
// owns from live's managedFields and checks, without the schema, that
//
//   - every field desired sets is owned by crpe and holds desired's value
//     in live (values the server defaults around them are ignored), and
//   - crpe owns no field that desired no longer sets (the apply would
//     remove it).
//
// Whatever it cannot decide this way (a field crpe does not own, values of
// different types, quantities written differently, positional list items,
// a status in the manifest) is unsure, never inSync: a wrong inSync would
// leave drift in place, a wrong unsure only costs a dry run.
func compare(desired, live *unstructured.Unstructured) verdict {
	if live.GetDeletionTimestamp() != nil {
		return drifted
	}
	fs, v := ownedFields(live, desired.GetAPIVersion())
	if v != inSync {
		return v
	}
	l := live.Object
	if utils.IsSecret(desired) {
		l = withStringData(desired.Object, l)
	}
	return compareMap(fs, desired.Object, l, atTop)
}

// ownedFields returns the field set crpe's apply owns in live (FieldsV1:
// {"f:name": {...}, "k:{...}": {...}, "v:...": {}, ".": {}}).
func ownedFields(live *unstructured.Unstructured, apiVersion string) (map[string]any, verdict) {
	other := false
	for _, e := range live.GetManagedFields() {
		if e.Manager != FieldManager || e.Operation != metav1.ManagedFieldsOperationApply || e.Subresource != "" {
			continue
		}
		if e.APIVersion != apiVersion {
			other = true
			continue
		}
		if e.FieldsV1 == nil {
			return nil, unsure
		}
		var fs map[string]any
		if err := json.Unmarshal(e.FieldsV1.Raw, &fs); err != nil {
			return nil, unsure
		}
		return fs, inSync
	}
	if other {
		return nil, unsure
	}
	return nil, drifted // not applied by crpe yet
}

// withStringData returns live's top level with a stringData map made of the
// decoded data entries that desired's stringData names: the API server
// merges stringData into data and keeps no stringData.
func withStringData(desired, live map[string]any) map[string]any {
	sd, ok := desired["stringData"].(map[string]any)
	if _, kept := live["stringData"]; !ok || kept {
		return live
	}
	data, _ := live["data"].(map[string]any)
	dec := map[string]any{}
	for k := range sd {
		s, ok := data[k].(string)
		if !ok {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			continue
		}
		dec[k] = string(b)
	}
	out := make(map[string]any, len(live)+1)
	for k, v := range live {
		out[k] = v
	}
	out["stringData"] = dec
	return out
}

type level int

const (
	atTop level = iota
	atMeta
	atOther
)

// compareMap compares a map of the desired object with live's at the same
// place, fs being crpe's field set there.
func compareMap(fs map[string]any, d, l map[string]any, at level) verdict {
	if len(d) > 0 && !hasChildren(fs) && at == atOther {
		return atomicMap(d, l) // owned as a whole (x-kubernetes-map-type: atomic)
	}
	v := inSync
	for k, dv := range d {
		next := atOther
		switch at {
		case atTop:
			switch k {
			case "apiVersion", "kind":
				continue
			case "metadata":
				next = atMeta
			case "status":
				if m, ok := dv.(map[string]any); dv == nil || ok && len(m) == 0 {
					continue
				}
				v = worse(v, unsure) // ignored or not, depending on the kind's status subresource
				continue
			}
		case atMeta:
			switch k {
			case "name", "namespace":
				continue
			case "labels", "annotations", "finalizers", "ownerReferences", "generateName":
			default: // creationTimestamp: null and other server-set fields
				if dv != nil {
					v = worse(v, unsure)
				}
				continue
			}
		}
		if dv == nil { // an explicit null sets nothing
			if l[k] != nil {
				v = worse(v, unsure)
			}
			continue
		}
		child, owned := fs["f:"+k]
		if !owned && next != atMeta { // metadata's name and namespace are nobody's fields
			// not crpe's (yet): a different value is a change; the same
			// value only moves ownership, which the API server tells
			if v = worse(v, worse(unsure, subset(dv, l[k]))); v == drifted {
				return drifted
			}
			continue
		}
		cfs, _ := child.(map[string]any)
		if v = worse(v, compareValue(cfs, dv, l[k], next)); v == drifted {
			return drifted
		}
	}
	for key := range fs {
		if key == "." {
			continue
		}
		name, ok := strings.CutPrefix(key, "f:")
		if !ok {
			return worse(v, unsure)
		}
		if _, ok := d[name]; !ok {
			if name == "status" && at == atTop {
				// an apply to the main resource changes no status when the
				// kind has a status subresource. A client that records
				// the empty status of an object's type as applied
				// (controller-runtime's fake since v0.23: status:
				// {loadBalancer: {}}) owns it: nothing to remove when it
				// is empty; otherwise a dry run decides
				if !emptyTree(l[name]) {
					v = worse(v, unsure)
				}
				continue
			}
			return drifted // crpe owns a field it no longer sets: the apply removes it
		}
	}
	return v
}

// emptyTree tells a value made only of empty objects (or nothing).
func emptyTree(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, c := range x {
			if !emptyTree(c) {
				return false
			}
		}
		return true
	}
	return false
}

func hasChildren(fs map[string]any) bool {
	for k := range fs {
		if k != "." {
			return true
		}
	}
	return false
}

func compareValue(fs map[string]any, dv, lv any, at level) verdict {
	switch dv := dv.(type) {
	case map[string]any:
		var lm map[string]any
		if lv != nil {
			var ok bool
			if lm, ok = lv.(map[string]any); !ok {
				return unsure
			}
		}
		return compareMap(fs, dv, lm, at)
	case []any:
		return compareList(fs, dv, lv)
	default:
		return compareScalar(dv, lv)
	}
}

// compareList compares a list: atomic (owned as a whole), a set ("v:"
// items) or a map keyed by some of its items' fields ("k:" items).
func compareList(fs map[string]any, d []any, lv any) verdict {
	l, ok := lv.([]any)
	if lv != nil && !ok {
		return unsure
	}
	var keys []string
	for k := range fs {
		if k != "." {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return atomicList(d, l)
	}
	kind := keys[0][:min(2, len(keys[0]))]
	for _, k := range keys {
		if !strings.HasPrefix(k, kind) {
			return unsure
		}
	}
	switch kind {
	case "v:":
		if len(keys) != len(d) {
			return drifted
		}
		for _, e := range d {
			b, err := json.Marshal(e)
			if err != nil {
				return unsure
			}
			if _, ok := fs["v:"+string(b)]; !ok {
				return unsure
			}
			found := false
			for _, le := range l {
				if subset(e, le) == inSync {
					found = true
					break
				}
			}
			if !found {
				return drifted
			}
		}
		return inSync
	case "k:":
		used := make([]bool, len(d))
		v := inSync
		for _, k := range keys {
			var key map[string]any
			if err := json.Unmarshal([]byte(k[2:]), &key); err != nil || len(key) == 0 {
				return unsure
			}
			di := -1
			for i, e := range d {
				if em, ok := e.(map[string]any); ok && keyMatches(key, em, true) {
					if di >= 0 {
						return unsure
					}
					di = i
				}
			}
			if di < 0 || used[di] {
				return unsure // an item crpe owns and no longer sets, or keys written differently
			}
			used[di] = true
			var le map[string]any
			for _, e := range l {
				if em, ok := e.(map[string]any); ok && keyMatches(key, em, true) {
					if le != nil {
						return unsure
					}
					le = em
				}
			}
			if le == nil {
				return drifted // the item is gone from the live object
			}
			cfs, _ := fs[k].(map[string]any)
			if v = worse(v, compareMap(cfs, d[di].(map[string]any), le, atOther)); v == drifted {
				return drifted
			}
		}
		for _, u := range used {
			if !u {
				return worse(v, unsure) // an item crpe does not own (yet)
			}
		}
		return v
	default: // "i:" positional items
		return unsure
	}
}

// keyMatches tells whether item has the key's values; lenient lets the
// item leave out key fields the server defaults (a port's protocol), as
// long as it has one of them.
func keyMatches(key, item map[string]any, lenient bool) bool {
	seen := 0
	for f, kv := range key {
		iv, ok := item[f]
		if !ok {
			if lenient {
				continue
			}
			return false
		}
		if compareScalar(kv, iv) != inSync {
			return false
		}
		seen++
	}
	return seen > 0
}

// atomicList compares a list owned as a whole: the same length, each
// desired item found at its place (defaulted fields inside items allowed).
func atomicList(d, l []any) verdict {
	if len(d) != len(l) {
		return drifted
	}
	v := inSync
	for i := range d {
		if v = worse(v, subset(d[i], l[i])); v == drifted {
			return drifted
		}
	}
	return v
}

// atomicMap compares a map owned as a whole: the apply replaces it, so a
// key only live has is a change (or a default: unsure).
func atomicMap(d, l map[string]any) verdict {
	v := inSync
	for k, dv := range d {
		if v = worse(v, subset(dv, l[k])); v == drifted {
			return drifted
		}
	}
	for k := range l {
		if _, ok := d[k]; !ok {
			v = worse(v, unsure)
		}
	}
	return v
}

// subset compares a desired value with live's, where live may hold more
// (defaulted) fields in its maps.
func subset(d, l any) verdict {
	switch d := d.(type) {
	case nil:
		if l == nil {
			return inSync
		}
		return unsure
	case map[string]any:
		lm, ok := l.(map[string]any)
		if !ok {
			if l == nil && len(d) == 0 {
				return inSync
			}
			if l == nil {
				return drifted
			}
			return unsure
		}
		v := inSync
		for k, dv := range d {
			if v = worse(v, subset(dv, lm[k])); v == drifted {
				return drifted
			}
		}
		return v
	case []any:
		ll, ok := l.([]any)
		if !ok && l != nil {
			return unsure
		}
		return atomicList(d, ll)
	default:
		return compareScalar(d, l)
	}
}

// compareScalar compares a desired scalar with live's.
func compareScalar(d, l any) verdict {
	if l == nil {
		if d == nil {
			return inSync
		}
		if isZero(d) {
			return unsure // the server may leave an empty value out
		}
		return drifted
	}
	switch d := d.(type) {
	case string:
		ls, ok := l.(string)
		if !ok {
			return unsure
		}
		if d == ls {
			return inSync
		}
		if q1, err := resource.ParseQuantity(d); err == nil {
			if q2, err := resource.ParseQuantity(ls); err == nil && q1.Cmp(q2) == 0 {
				return unsure // "1000m" and "1": the same quantity, or a string that looks like one
			}
		}
		return drifted
	case bool:
		lb, ok := l.(bool)
		if !ok {
			return unsure
		}
		if d == lb {
			return inSync
		}
		return drifted
	case int64, float64:
		di, dInt := d.(int64)
		li, lInt := l.(int64)
		if dInt && lInt {
			if di == li {
				return inSync
			}
			return drifted
		}
		df, ok1 := number(d)
		lf, ok2 := number(l)
		if !ok1 || !ok2 {
			return unsure
		}
		if df == lf {
			return inSync
		}
		return drifted
	}
	if reflect.DeepEqual(d, l) {
		return inSync
	}
	return unsure
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case int64:
		return float64(v), true
	case float64:
		return v, true
	case int:
		return float64(v), true
	}
	return 0, false
}

func isZero(v any) bool {
	switch v := v.(type) {
	case string:
		return v == ""
	case bool:
		return !v
	case int64:
		return v == 0
	case float64:
		return v == 0
	}
	return false
}

// hasDrifted tells whether a server-side dry run of an apply differs from
// the live object, by fluxcd/pkg/ssa's rule (ResourceManager.Diff): labels,
// annotations, and everything outside metadata and status, normalized.
func hasDrifted(live, dryRun *unstructured.Unstructured) bool {
	if dryRun.GetResourceVersion() == "" {
		return true
	}
	if !apiequality.Semantic.DeepEqual(dryRun.GetLabels(), live.GetLabels()) ||
		!apiequality.Semantic.DeepEqual(dryRun.GetAnnotations(), live.GetAnnotations()) {
		return true
	}
	prep := func(u *unstructured.Unstructured) map[string]any {
		c := u.DeepCopy()
		unstructured.RemoveNestedField(c.Object, "metadata")
		unstructured.RemoveNestedField(c.Object, "status")
		if err := normalize.DryRunUnstructured(c); err != nil {
			return u.Object
		}
		return c.Object
	}
	return !apiequality.Semantic.DeepEqual(prep(dryRun), prep(live))
}
