package filepoll

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPoller: a check per interval (unforced), one per reload (forced,
// reloads asked for while one is pending merged), none after ctx ends.
func TestPoller(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	p := New(clk, time.Second)
	checks := make(chan bool)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx, func(forced bool) {
			select {
			case checks <- forced:
			case <-ctx.Done(): // a second reload's check nobody waits for
			}
		})
	}()
	wait, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	next := func() bool {
		t.Helper()
		select {
		case f := <-checks:
			return f
		case <-wait.Done():
			t.Fatal("no check within 10 s")
			return false
		}
	}

	if err := clk.WaitForTimers(wait, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if next() {
		t.Error("a timed check was forced")
	}
	p.Reload()
	p.Reload() // pending: merged with the first, or taken after it
	if !next() {
		t.Error("a reload's check was not forced")
	}
	// The timer was re-armed after the timed check: one more interval
	// brings one more unforced check (a second reload's check, when the
	// first was taken before it was asked, comes first, forced).
	if err := clk.WaitForTimers(wait, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	for next() {
	}
	cancel()
	<-done
}
