package translate

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
)

// peakHeap runs work while a goroutine reads the heap's live objects
// without pause, the collector running at every 5 % of growth, and returns
// the most it saw above the heap before work: the memory work needs, within
// the sampling's reach.
func peakHeap(work func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := read()
	var stop atomic.Bool
	peak := make(chan uint64)
	go func() {
		var m uint64
		for !stop.Load() {
			m = max(m, read())
			runtime.Gosched()
		}
		peak <- m
	}()
	work()
	stop.Store(true)
	m := <-peak
	if m < base {
		return 0
	}
	return m - base
}

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
		f := float64(peakHeap(work)+uint64(len(in))) / float64(len(in))
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
