// Package gcheadroom bounds the garbage collector's headroom in bytes, not
// only in percent. The proxy runs with a high GOGC (--gc-percent 200): its
// live heap is small and every request allocates, so collecting less often
// saves CPU. But the heap may grow to (1 + GOGC/100) times the live heap
// before a collection, and a proxy holding 10,000 streams has a live heap
// of hundreds of MiB: at 200 it would hold three times that. After every
// collection a [Tuner] sets the percent so that the growth allowed is at
// most Headroom bytes, between MinPercent and the configured percent: a
// small heap keeps the high percent, a large one gets a low one.
//
// No goroutine waits: the tuner runs as a cleanup (runtime.AddCleanup) of
// an object it drops, which the runtime calls after the collection that
// freed it, and arms the next one.
package gcheadroom

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// DefaultMinPercent is the least percent a [Tuner] sets.
const DefaultMinPercent = 25

// Config says what a [Tuner] keeps.
type Config struct {
	// Percent is the collector's percent while the live heap is small
	// (GOGC); the tuner never sets more.
	Percent int
	// Headroom is the most the heap may grow between collections, in
	// bytes, once the live heap is large enough that Percent would allow
	// more. 0 turns the tuner off.
	Headroom int64
	// MinPercent is the least percent set, however large the live heap
	// (default DefaultMinPercent): collections stay spaced out.
	MinPercent int
}

// PercentFor is the percent for a live heap of live bytes.
func (c Config) PercentFor(live uint64) int {
	minPct := c.MinPercent
	if minPct <= 0 {
		minPct = DefaultMinPercent
	}
	if c.Headroom <= 0 || live == 0 {
		return c.Percent
	}
	p := uint64(c.Headroom) * 100 / live
	switch {
	case p >= uint64(c.Percent):
		return c.Percent
	case p <= uint64(minPct):
		return min(minPct, c.Percent)
	}
	return int(p)
}

// Tuner sets the collector's percent after every collection.
type Tuner struct {
	cfg     Config
	stopped atomic.Bool
	last    atomic.Int64 // the percent last set
	sets    atomic.Int64 // how many times it changed the percent
}

const liveMetric = "/gc/heap/live:bytes"

// Start sets the percent for the live heap now and after every collection
// until Stop. It is a no-op tuner when cfg.Headroom is 0.
func Start(cfg Config) *Tuner {
	t := &Tuner{cfg: cfg}
	if cfg.Headroom <= 0 || cfg.Percent <= 0 {
		t.stopped.Store(true)
		return t
	}
	t.last.Store(int64(cfg.Percent))
	t.adjust()
	t.arm()
	return t
}

// Stop ends the tuning; the percent last set stays.
func (t *Tuner) Stop() { t.stopped.Store(true) }

// Changes is how many times the tuner changed the percent.
func (t *Tuner) Changes() int64 { return t.sets.Load() }

// sentinel is dropped at once; its cleanup runs after the next collection.
// (A pointer field keeps it out of the tiny allocator, whose blocks are
// freed together and may never be.)
type sentinel struct {
	_ *int
	_ [2]uintptr
}

func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Tuner) { t.cycle() }, t)
}

func (t *Tuner) cycle() {
	if t.stopped.Load() {
		return
	}
	t.adjust()
	t.arm()
}

func (t *Tuner) adjust() {
	s := []metrics.Sample{{Name: liveMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := int64(t.cfg.PercentFor(s[0].Value.Uint64()))
	if p != t.last.Load() {
		debug.SetGCPercent(int(p))
		t.last.Store(p)
		t.sets.Add(1)
	}
}
