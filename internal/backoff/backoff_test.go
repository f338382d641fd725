package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

func TestDelay(t *testing.T) {
	tests := []struct {
		lo, hi   time.Duration
		failures int
		want     time.Duration // before jitter: the delay lies in [want/2, want]
	}{
		{100 * time.Millisecond, 5 * time.Second, 0, 100 * time.Millisecond},
		{100 * time.Millisecond, 5 * time.Second, 3, 800 * time.Millisecond},
		{100 * time.Millisecond, 5 * time.Second, 1000, 5 * time.Second},
		{10 * time.Second, 10 * time.Minute, 1 << 20, 10 * time.Minute}, // no overflow
		{time.Hour, time.Minute, 0, time.Minute},                        // the cap wins
		{0, time.Second, 5, 0},
	}
	for _, tt := range tests {
		for range 200 {
			if d := Delay(tt.lo, tt.hi, tt.failures); d < tt.want/2 || d > tt.want {
				t.Fatalf("Delay(%v, %v, %d) = %v; want in [%v, %v]", tt.lo, tt.hi, tt.failures, d, tt.want/2, tt.want)
			}
		}
	}
}

func TestSleep(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	done := make(chan bool, 1)
	go func() { done <- Sleep(context.Background(), clk, time.Minute) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if !<-done {
		t.Error("Sleep of a minute on the fake clock, advanced a minute = false; want true")
	}
	ended, stop := context.WithCancel(context.Background())
	stop()
	if Sleep(ended, clk, time.Minute) {
		t.Error("Sleep with an ended context = true; want false")
	}
}
