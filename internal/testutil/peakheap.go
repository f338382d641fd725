package testutil

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// PeakHeap runs work while a goroutine reads the heap's live objects
// without pause, the collector running at every 5 % of growth, and returns
// the most it saw above the heap before work: about the most memory work
// holds at once (garbage is collected nearly as it is made; a peak between
// two reads can be missed, so compare with a margin).
func PeakHeap(work func()) uint64 {
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
