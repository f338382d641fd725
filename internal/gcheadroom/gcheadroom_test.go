package gcheadroom

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	cfg := Config{Percent: 200, Headroom: 64 << 20}
	for _, tt := range []struct {
		live uint64
		want int
	}{
		{0, 200},
		{1 << 20, 200},
		{32 << 20, 200},
		{64 << 20, 100},
		{128 << 20, 50},
		{256 << 20, 25},
		{1 << 30, 25},
	} {
		if got := cfg.PercentFor(tt.live); got != tt.want {
			t.Errorf("PercentFor(%d MiB) = %d; want %d", tt.live>>20, got, tt.want)
		}
	}
	if got := (Config{Percent: 200}).PercentFor(1 << 30); got != 200 {
		t.Errorf("without headroom: %d; want 200", got)
	}
	if got := (Config{Percent: 10, Headroom: 1}).PercentFor(1 << 30); got != 10 {
		t.Errorf("a percent below the minimum stays: %d; want 10", got)
	}
}

// TestTunerFollowsTheLiveHeap: with a live heap far above the headroom,
// the percent drops after a collection, and comes back once it is freed.
func TestTunerFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tu := Start(Config{Percent: 100, Headroom: 4 << 20, MinPercent: 10})
	defer tu.Stop()
	hold := make([][]byte, 0, 64)
	for range 64 {
		hold = append(hold, make([]byte, 1<<20))
	}
	waitPercent(t, tu, func(p int64) bool { return p < 100 })
	runtime.KeepAlive(hold)
	hold = nil
	waitPercent(t, tu, func(p int64) bool { return p == 100 })
}

func waitPercent(t *testing.T, tu *Tuner, ok func(int64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(tu.last.Load()) {
		if time.Now().After(deadline) {
			t.Fatalf("percent %d after 10 s of collections", tu.last.Load())
		}
		runtime.GC() // each collection runs the tuner's cleanup
		runtime.Gosched()
	}
}

func TestOff(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tu := Start(Config{Percent: 100})
	runtime.GC()
	if tu.Changes() != 0 {
		t.Errorf("an off tuner changed the percent %d times", tu.Changes())
	}
}
