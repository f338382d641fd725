package tokencount

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// TestMemoryFactor measures the memory Estimate holds at its peak, as a
// multiple of the body (counted, as the caller holds it), for bodies of
// many small elements, the costliest per byte, and checks it stays within
// MemoryFactor, which the proxy charges its body budget for count_tokens.
func TestMemoryFactor(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement: full runs only")
	}
	const n = 20_000
	bodies := map[string]func(b *bytes.Buffer, i int){
		"messages": func(b *bytes.Buffer, i int) { b.WriteString(`{"role":"user","content":"hi"}`) },
		"text-blocks": func(b *bytes.Buffer, i int) {
			b.WriteString(`{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}`)
		},
		"tool-uses": func(b *bytes.Buffer, i int) {
			fmt.Fprintf(b, `{"role":"assistant","content":[{"type":"tool_use","id":"t%d","name":"f","input":{"a":[1,2,{"b":"c"}]}}]}`, i)
		},
	}
	for name, item := range bodies {
		var b bytes.Buffer
		b.WriteString(`{"model":"m","messages":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			item(&b, i)
		}
		b.WriteString(`]}`)
		in := b.Bytes()
		f := float64(testutil.PeakHeap(func() { _, _ = Estimate(in) })+uint64(len(in))) / float64(len(in))
		t.Logf("%s: %d KiB body, peak %.1fx", name, len(in)>>10, f)
		if f > MemoryFactor {
			t.Errorf("%s: peak %.1fx the body; want at most %d", name, f, MemoryFactor)
		}
	}
}
