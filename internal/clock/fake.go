package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a [Clock] whose time moves only through [Fake.Advance],
// [Fake.AdvanceToNext] or [Fake.Set]. It is safe for concurrent use.
// Timers fire synchronously inside the call that moves time past their
// deadline, in deadline order.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*fakeTimer]struct{}
	changed chan struct{} // closed and replaced whenever the set of timers changes
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, timers: map[*fakeTimer]struct{}{}, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake time reaches now+d. A
// timer with d <= 0 fires at once.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: f, c: make(chan time.Time, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scheduleLocked(t, d)
	return t
}

// AfterFunc returns a timer that calls fn when the fake time reaches now+d,
// in the goroutine that moves time there (after the clock's lock is
// released, so fn may use the clock). With d <= 0, AfterFunc (or Reset)
// calls fn before it returns.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{clock: f, fn: fn}
	f.mu.Lock()
	call := f.scheduleLocked(t, d)
	f.mu.Unlock()
	if call != nil {
		call()
	}
	return t
}

// Advance moves time forward by d, firing every timer due by then.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	target := f.now.Add(d)
	f.mu.Unlock()
	f.Set(target)
}

// Set moves time to t (never backwards), firing every timer due by then.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	for {
		next := f.nextLocked()
		if next == nil || next.when.After(t) {
			break
		}
		if next.when.After(f.now) {
			f.now = next.when
		}
		if call := f.fireLocked(next); call != nil {
			f.mu.Unlock()
			call()
			f.mu.Lock()
		}
	}
	if t.After(f.now) {
		f.now = t
	}
	f.mu.Unlock()
}

// AdvanceToNext moves time to the earliest pending timer's deadline and fires
// it (and any other timer due then). It returns how far time moved and false
// when no timer is pending.
func (f *Fake) AdvanceToNext() (time.Duration, bool) {
	f.mu.Lock()
	next := f.nextLocked()
	if next == nil {
		f.mu.Unlock()
		return 0, false
	}
	when, start := next.when, f.now
	f.mu.Unlock()
	f.Set(when)
	if when.Before(start) {
		return 0, true
	}
	return when.Sub(start), true
}

// Pending returns the number of timers that have not fired or been stopped.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitForTimers blocks until at least n timers are pending, or ctx ends.
// Tests use it to know that the code under test is waiting on the clock.
func (f *Fake) WaitForTimers(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		count, changed := len(f.timers), f.changed
		f.mu.Unlock()
		if count >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fake) nextLocked() *fakeTimer {
	var next *fakeTimer
	for t := range f.timers {
		if next == nil || t.when.Before(next.when) {
			next = t
		}
	}
	return next
}

// scheduleLocked arms t to fire after d. With d <= 0 it fires at once and
// returns the function of an AfterFunc timer, which the caller calls once
// it has released the lock.
func (f *Fake) scheduleLocked(t *fakeTimer, d time.Duration) func() {
	t.when = f.now.Add(d)
	if d <= 0 {
		return f.fireLocked(t)
	}
	f.timers[t] = struct{}{}
	f.notifyLocked()
	return nil
}

// fireLocked fires t: a channel timer gets the time on its channel; an
// AfterFunc timer's function is returned, for the caller to call once it has
// released the lock.
func (f *Fake) fireLocked(t *fakeTimer) func() {
	delete(f.timers, t)
	f.notifyLocked()
	if t.fn != nil {
		return t.fn
	}
	select {
	case t.c <- f.now:
	default:
	}
	return nil
}

func (f *Fake) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// sortedDeadlines is used by tests of this package.
func (f *Fake) sortedDeadlines() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Time, 0, len(f.timers))
	for t := range f.timers {
		out = append(out, t.when)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

type fakeTimer struct {
	clock *Fake
	c     chan time.Time // nil for an AfterFunc timer
	fn    func()         // set for an AfterFunc timer
	when  time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	_, active := f.timers[t]
	if active {
		delete(f.timers, t)
		f.notifyLocked()
	}
	t.drain()
	return active
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	f := t.clock
	f.mu.Lock()
	_, active := f.timers[t]
	delete(f.timers, t)
	t.drain()
	call := f.scheduleLocked(t, d)
	f.mu.Unlock()
	if call != nil {
		call()
	}
	return active
}

func (t *fakeTimer) drain() {
	if t.c == nil {
		return
	}
	select {
	case <-t.c:
	default:
	}
}
