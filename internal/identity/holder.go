package identity

import (
	"sync"
	"sync/atomic"
)

// Current is a profile as held and pushed: the profile, its revision and
// the file it came from ("" for the built-in default). Never modified once
// made.
type Current struct {
	Profile  Profile
	Revision string
	Source   string
}

// Holder holds the current profile and tells waiters when it changes. Get
// is one atomic load; it is safe for concurrent use.
type Holder struct {
	cur atomic.Pointer[Current]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by every change
}

// NewHolder returns a Holder of p read from source.
func NewHolder(p Profile, source string) *Holder {
	h := &Holder{changed: make(chan struct{})}
	h.cur.Store(&Current{Profile: p, Revision: p.Revision(), Source: source})
	return h
}

// Get returns the current profile.
func (h *Holder) Get() *Current { return h.cur.Load() }

// Set makes p the current profile and reports whether its revision
// differs from the one held (an unchanged profile wakes no waiter).
func (h *Holder) Set(p Profile, source string) bool {
	c := &Current{Profile: p, Revision: p.Revision(), Source: source}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.cur.Load(); old != nil && old.Revision == c.Revision && old.Source == c.Source {
		return false
	}
	h.cur.Store(c)
	close(h.changed)
	h.changed = make(chan struct{})
	return true
}

// Changed returns a channel closed at the next change after the call.
func (h *Holder) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}
