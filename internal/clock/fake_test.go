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

func TestFakeAfterFunc(t *testing.T) {
	tests := []struct {
		name      string
		op        func(f *Fake, tm Timer) bool // after the timer is made for 1s
		wantRet   bool
		advance   time.Duration
		wantCalls int
	}{
		{"fires at its deadline", func(*Fake, Timer) bool { return true }, true, time.Second, 1},
		{"not before", func(*Fake, Timer) bool { return true }, true, time.Second - 1, 0},
		{"once however far time moves", func(*Fake, Timer) bool { return true }, true, time.Hour, 1},
		{"stop active", func(_ *Fake, tm Timer) bool { return tm.Stop() }, true, time.Hour, 0},
		{"stop after fire", func(f *Fake, tm Timer) bool { f.Advance(time.Second); return tm.Stop() }, false, time.Hour, 1},
		{"reset postpones", func(f *Fake, tm Timer) bool { f.Advance(time.Second / 2); return tm.Reset(time.Second) }, true, time.Second - 1, 0},
		{"reset after fire arms again", func(f *Fake, tm Timer) bool { f.Advance(time.Second); return tm.Reset(time.Second) }, false, time.Second, 2},
		{"reset to zero calls at once", func(_ *Fake, tm Timer) bool { return tm.Reset(0) }, true, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(epoch)
			calls := 0
			tm := f.AfterFunc(time.Second, func() { calls++ })
			if tm.C() != nil {
				t.Error("C() of an AfterFunc timer is not nil")
			}
			if got := tt.op(f, tm); got != tt.wantRet {
				t.Errorf("op() = %v; want %v", got, tt.wantRet)
			}
			f.Advance(tt.advance)
			if calls != tt.wantCalls {
				t.Errorf("f called %d times; want %d", calls, tt.wantCalls)
			}
		})
	}
}

// The function runs without the clock's lock: it can read the clock and
// re-arm its own timer, and an AfterFunc with d <= 0 calls it before
// returning.
func TestFakeAfterFuncUsesClock(t *testing.T) {
	f := NewFake(epoch)
	var at []time.Time
	var tm Timer
	tm = f.AfterFunc(time.Second, func() {
		at = append(at, f.Now())
		if len(at) < 3 {
			tm.Reset(time.Second)
		}
	})
	f.Advance(10 * time.Second)
	want := []time.Time{epoch.Add(time.Second), epoch.Add(2 * time.Second), epoch.Add(3 * time.Second)}
	if len(at) != len(want) || !at[0].Equal(want[0]) || !at[1].Equal(want[1]) || !at[2].Equal(want[2]) {
		t.Errorf("calls at %v; want %v", at, want)
	}
	if f.Pending() != 0 {
		t.Errorf("Pending() = %d; want 0", f.Pending())
	}
	now := false
	f.AfterFunc(0, func() { now = true })
	if !now {
		t.Error("AfterFunc(0) did not call f before returning")
	}
}

func TestRealAfterFunc(t *testing.T) {
	c := OrReal(nil)
	done := make(chan struct{})
	tm := c.AfterFunc(time.Millisecond, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("real AfterFunc did not call f")
	}
	if tm.C() != nil || tm.Stop() {
		t.Error("fired real AfterFunc timer: C() not nil or Stop() = true")
	}
}
