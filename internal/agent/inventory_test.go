package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// TestInventoryWrite: the streamed inventory is the JSON of the Inventory,
// whatever it holds.
func TestInventoryWrite(t *testing.T) {
	many := &Inventory{Packages: []InventoryPackage{{"default", "demo", "1.0.0"}, {"ns", "a\"b", "2.0.0"}}}
	for i := range 1000 {
		many.Digests = append(many.Digests, fmt.Sprintf("sha256:%064x", i))
	}
	for _, inv := range []*Inventory{
		{Digests: []string{}, Packages: []InventoryPackage{}},
		{Digests: []string{"sha256:" + fmt.Sprintf("%064d", 1)}, Packages: []InventoryPackage{}},
		many,
	} {
		var b bytes.Buffer
		if err := inv.write(&b); err != nil {
			t.Fatal(err)
		}
		var got Inventory
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(&got, inv) {
			t.Fatalf("read back %+v, want %+v", got, inv)
		}
	}
}
