// Package backoff is the delay between attempts of the proxy's broker
// streams (token watch, usage and status reports, budget watch):
// exponential, capped and jittered, so a fleet that lost its broker does
// not come back to it in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Delay is min(hi, lo·2^failures), jittered to between half and all of it.
// Doubling stops at the cap, so no shift overflows into a negative
// (immediate) delay, whatever lo is.
func Delay(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 0; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits d on clk, or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
