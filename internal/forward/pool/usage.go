package pool

import (
	"net/http"
	"time"
)

// Usage limits (docs/protocol.md section 8): individual plans have a
// 5-hour session limit and a weekly limit, reported in every answer's
// x-usage-ratelimit-session and x-usage-ratelimit-weekly headers with the
// quota snapshots' encoding. A member with less than the reserve left of
// either is busy: used only when no other member is usable. After a 429
// while one is used up, the member is out until that limit's reset.

// The usage-limit headers and their kinds.
const (
	SessionHeader = "X-Usage-Ratelimit-Session"
	WeeklyHeader  = "X-Usage-Ratelimit-Weekly"
)

// DefaultReservePercent is the share of a session or weekly limit below
// which a member is busy (--pool-reserve-percent).
const DefaultReservePercent = 5

// ReadUsage returns the session and weekly snapshots in an answer's
// headers (kinds "session" and "weekly"), remembered per account like
// [QuotaReader.Read].
func (q *QuotaReader) ReadUsage(account string, h http.Header) []Snapshot {
	var out []Snapshot
	for _, k := range [...]struct{ header, kind string }{{SessionHeader, "session"}, {WeeklyHeader, "weekly"}} {
		vs := h[k.header]
		if len(vs) == 0 {
			continue
		}
		if s, err := q.parse(account, k.kind, vs[0]); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// UsageExhausted reports whether any of snaps has nothing left, and the
// latest reset among those that have not.
func UsageExhausted(snaps []Snapshot) (bool, time.Time) {
	var until time.Time
	spent := false
	for _, s := range snaps {
		if s.Entitlement > 0 && s.Remaining <= 0 {
			spent = true
			if s.Reset.After(until) {
				until = s.Reset
			}
		}
	}
	return spent, until
}

// SetUsage records name's session and weekly snapshots.
func (t *Tracker) SetUsage(name string, snaps ...Snapshot) {
	if len(snaps) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(name)
	if a.usage == nil {
		a.usage = map[string]Snapshot{}
	}
	changed := false
	for _, s := range snaps {
		if len(a.usage) >= maxKinds && a.usage[s.Kind] == (Snapshot{}) {
			continue
		}
		changed = changed || a.usage[s.Kind] != s
		a.usage[s.Kind] = s
	}
	a.usageSeen = t.clock.Now()
	t.generation.Add(1)
	if changed && t.onUsage != nil {
		t.onUsage()
	}
}

// UsageLimited takes name out until reset (a 429 while a session or weekly
// limit is used up); a zero or past reset takes the rate-limit cool-down
// instead. It returns the end.
func (t *Tracker) UsageLimited(name string, reset time.Time, wait time.Duration) time.Time {
	now := t.clock.Now()
	if !reset.After(now) {
		reset = now.Add(max(wait, t.rateCool))
	}
	reset = minTime(reset, now.Add(MaxCool))
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(name)
	if reset.After(a.usageUntil) {
		a.usageUntil = reset
	}
	t.generation.Add(1)
	return a.usageUntil
}

// lowLocked reports whether a has less than the reserve left of a session
// or weekly limit whose reset is not known to have passed.
func (t *Tracker) lowLocked(a *account, now time.Time) bool {
	for _, s := range a.usage {
		if s.Unlimited || s.Entitlement <= 0 || (!s.Reset.IsZero() && !now.Before(s.Reset)) {
			continue
		}
		if s.Remaining/s.Entitlement*100 < t.reserve {
			return true
		}
	}
	return false
}
