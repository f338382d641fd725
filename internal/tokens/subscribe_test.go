package tokens

import (
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// TestThousandSubscribers has 999 readers and one subscriber that never
// reads. Every reader must see every generation, and the refresh goroutine
// must go back to its timer after each publish, whatever the stalled
// subscriber does.
func TestThousandSubscribers(t *testing.T) {
	const (
		readers     = 999
		generations = 20
	)
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	m := newTestManager(t, clk, up, nil)
	if _, err := m.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	stalled, cancelStalled := m.Subscribe()
	defer cancelStalled()

	seen := make(chan uint64, readers*4)
	for range readers {
		updates, cancel := m.Subscribe()
		t.Cleanup(cancel) // ends the reader's range loop
		go func() {
			var last uint64
			for st := range updates {
				if st.Generation != last {
					last = st.Generation
					seen <- st.Generation
				}
			}
		}()
	}
	collect := func(gen uint64) time.Duration {
		start := time.Now()
		deadline := time.NewTimer(waitLimit)
		defer deadline.Stop()
		for got := 0; got < readers; {
			select {
			case g := <-seen:
				if g == gen {
					got++
				} else if g > gen {
					t.Fatalf("a reader saw generation %d while waiting for %d", g, gen)
				}
			case <-deadline.C:
				t.Fatalf("only %d of %d readers saw generation %d", got, readers, gen)
			}
		}
		return time.Since(start)
	}
	collect(1)
	var slowest time.Duration
	for gen := uint64(2); gen <= generations; gen++ {
		waitTimer(t, clk) // the goroutine is idle again: publishing did not block it
		clk.AdvanceToNext()
		slowest = max(slowest, collect(gen))
	}
	waitTimer(t, clk)
	t.Logf("%d readers saw each of %d generations; slowest fan-out %v", readers, generations, slowest)
	if st := <-stalled; st.Generation != generations {
		t.Errorf("stalled subscriber finally reads generation %d; want the latest, %d", st.Generation, generations)
	}
}
