package clock

import (
	"context"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(t Timer) bool {
	select {
	case <-t.C():
		return true
	default:
		return false
	}
}

func TestFakeTimersFireInOrder(t *testing.T) {
	f := NewFake(epoch)
	a, b := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	if got := f.sortedDeadlines(); len(got) != 2 || !got[0].Equal(epoch.Add(time.Second)) {
		t.Fatalf("sortedDeadlines() = %v; want [+1s +2s]", got)
	}
	f.Advance(1500 * time.Millisecond)
	if fired(a) || !fired(b) {
		t.Fatalf("after 1.5s: a fired=%v b fired=%v; want false true", fired(a), fired(b))
	}
	moved, ok := f.AdvanceToNext()
	if !ok || moved != 500*time.Millisecond || !fired(a) {
		t.Fatalf("AdvanceToNext() = %v, %v; want 500ms, true and a fired", moved, ok)
	}
	if _, ok := f.AdvanceToNext(); ok {
		t.Fatal("AdvanceToNext() with no timers = true; want false")
	}
}

func TestFakeStopAndReset(t *testing.T) {
	tests := []struct {
		name      string
		op        func(f *Fake, tm Timer) bool
		wantRet   bool
		wantFired bool
		advance   time.Duration
	}{
		{"stop active", func(_ *Fake, tm Timer) bool { return tm.Stop() }, true, false, time.Hour},
		{"stop after fire drains", func(f *Fake, tm Timer) bool { f.Advance(time.Minute); return tm.Stop() }, false, false, 0},
		{"reset later", func(_ *Fake, tm Timer) bool { return tm.Reset(time.Hour) }, true, false, 59 * time.Minute},
		{"reset fires later", func(_ *Fake, tm Timer) bool { return tm.Reset(time.Hour) }, true, true, time.Hour},
		{"reset to zero fires now", func(_ *Fake, tm Timer) bool { return tm.Reset(0) }, true, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(epoch)
			tm := f.NewTimer(time.Second)
			if got := tt.op(f, tm); got != tt.wantRet {
				t.Errorf("op() = %v; want %v", got, tt.wantRet)
			}
			f.Advance(tt.advance)
			if got := fired(tm); got != tt.wantFired {
				t.Errorf("fired = %v; want %v", got, tt.wantFired)
			}
		})
	}
}

func TestFakeWaitForTimers(t *testing.T) {
	f := NewFake(epoch)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- f.WaitForTimers(ctx, 2)
	}()
	f.NewTimer(time.Second)
	f.NewTimer(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("WaitForTimers() = %v; want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WaitForTimers(ctx, 3); err == nil {
		t.Fatal("WaitForTimers(cancelled, 3) = nil; want error")
	}
}

func TestRealClock(t *testing.T) {
	c := OrReal(nil)
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	if c.Now().IsZero() {
		t.Fatal("Now() is zero")
	}
}
