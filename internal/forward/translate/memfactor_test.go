package translate

import (
	"context"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// TestMemoryFactor measures the memory a translation holds at its peak, as
// a multiple of the body, for every site's worst shape, and checks it stays
// within MemoryFactor, which the proxy charges its body budget for a
// translated request. TRANSLATE_MEMORY_LOG=1 prints every figure.
func TestMemoryFactor(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("measured without the race detector, in full runs")
	}
	const n = 5_000
	var worst float64
	check := func(name string, in []byte, work func()) {
		// The body is counted: the caller holds it during the translation.
		f := float64(testutil.PeakHeap(work)+uint64(len(in))) / float64(len(in))
		worst = max(worst, f)
		if f > MemoryFactor {
			t.Errorf("%s: peak %.1fx the body (%d bytes); want at most %d", name, f, len(in), MemoryFactor)
		}
		t.Logf("%s: %d KiB body, peak %.1fx", name, len(in)>>10, f)
	}
	for _, r := range scaleRequests {
		in := r.body(n)
		for _, to := range dialects {
			if to != r.from {
				check("request/"+r.from.String()+"_to_"+to.String()+"/"+r.name, in, func() {
					_, _, _ = Request(context.Background(), r.from, to, in, Options{})
				})
			}
		}
	}
	for _, a := range scaleAnswers {
		in := a.body(n)
		for _, to := range dialects {
			if to != a.from {
				check("answer/"+a.from.String()+"_to_"+to.String()+"/"+a.name, in, func() {
					_, _ = Response(context.Background(), a.from, to, in, testNow)
				})
			}
		}
	}
	t.Logf("worst: %.1fx", worst)
}
