package broker

import (
	"testing"
	"time"
)

// A flood of failed authentications logs one warning a second, counting
// the ones it left out.
func TestFailureLogRateLimited(t *testing.T) {
	var f failureLog
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	logged := 0
	for i := range 1000 {
		if _, ok := f.allow(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			logged++
		}
	}
	if logged != 1 {
		t.Errorf("1,000 failures within a second logged %d warnings; want 1", logged)
	}
	n, ok := f.allow(t0.Add(time.Second))
	if !ok || n != 999 {
		t.Errorf("the next second's first failure: logged %v, suppressed count %d; want logged, 999", ok, n)
	}
}
