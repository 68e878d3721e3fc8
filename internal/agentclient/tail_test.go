package agentclient

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestTailWriter: whatever the sizes of the writes, everything but the last
// hold bytes is passed on at once, and flush sends the rest, in order.
func TestTailWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		hold := 1 + rng.IntN(64)
		var out bytes.Buffer
		tw := &tailWriter{w: &out, hold: hold}
		var in []byte
		for range rng.IntN(20) {
			p := make([]byte, rng.IntN(3*hold))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if n, err := tw.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			in = append(in, p...)
			want := max(0, len(in)-hold)
			if !bytes.Equal(out.Bytes(), in[:want]) {
				t.Fatalf("round %d: passed on %d bytes, want the first %d of %d", round, out.Len(), want, len(in))
			}
		}
		if err := tw.flush(); err != nil || !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("round %d: after flush %d bytes, want all %d", round, out.Len(), len(in))
		}
	}
}
