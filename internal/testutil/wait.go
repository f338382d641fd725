package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond every millisecond until it holds, and fails the
// test if it does not within timeout: a poll without a deadline hangs to
// the test binary's timeout instead of failing.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}
