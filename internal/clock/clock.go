// Package clock abstracts time so that token lifecycles can be tested on a fake
// clock: hours of refreshes and outages run in milliseconds.
package clock

import "time"

// Clock tells the time and makes timers. [Real] is backed by package time;
// [Fake] moves only when a test tells it to.
type Clock interface {
	// Now returns the current time. On [Real] it carries a monotonic reading,
	// so durations between two Now values are immune to wall-clock steps.
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f once d has passed, with no goroutine waiting in
	// between (like [time.AfterFunc]); Reset arms it again. The returned
	// timer's C is nil. On [Real], f runs in its own goroutine; on [Fake],
	// in the goroutine that moves time to the deadline.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the subset of [time.Timer] that the project uses. A timer made by
// [Clock.AfterFunc] has a nil C; Stop and Reset work on it as on
// [time.Timer] (Reset after the call arms it again).
type Timer interface {
	// C returns the channel on which the firing time is delivered.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It reports whether it stopped the
	// timer before it fired. After Stop no stale value is received from C.
	Stop() bool
	// Reset changes the timer to fire after d. It reports whether the timer
	// had been active. After Reset no stale value is received from C.
	Reset(d time.Duration) bool
}

// Real is the [Clock] of package time.
type Real struct{}

// Now returns [time.Now].
func (Real) Now() time.Time { return time.Now() }

// NewTimer returns a [time.Timer] wrapped as a [Timer].
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// AfterFunc returns a [time.AfterFunc] timer wrapped as a [Timer].
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// OrReal returns c, or [Real] when c is nil, so constructors can accept a nil
// clock.
func OrReal(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}
