package testutil

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// PeakHeap runs work three times, each while a goroutine reads the heap's
// objects without pause and the collector runs at every 5 % of growth, and
// returns the least of the three peaks above the heap before work: about
// the most memory work holds at once. The sampler also sees garbage the
// collector has not reached yet, more of it on a busy machine, which only
// adds (one run measured 8.9x where the others give 6.3x); what work holds
// is in every run. A peak between two reads can be missed, so compare with
// a margin. work must be repeatable.
func PeakHeap(work func()) uint64 {
	least := peakHeapOnce(work)
	for range 2 {
		least = min(least, peakHeapOnce(work))
	}
	return least
}

func peakHeapOnce(work func()) uint64 {
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
