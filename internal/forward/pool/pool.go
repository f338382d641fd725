// Package pool decides which account of a pool serves a request, and keeps
// the proxy's view of each account's health: rate-limit cool-downs (429),
// spent quotas (402 and quota snapshots), tokens refused upstream (a 401 that
// survived a refresh), and the requests in flight.
//
// It knows accounts by name only; the caller says which members have a
// usable token (see [Candidate]) and reports what the upstream answered.
// Every method is safe for concurrent use. A [Tracker] holds one small
// record per account ever seen; accounts come from configuration and the
// broker, so the set is bounded by the team's size.
package pool

import (
	"encoding/binary"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Defaults of [Config].
const (
	// DefaultRateLimitCool is how long a 429 without a usable Retry-After
	// cools an account. The protocol asks never to retry a rate limit fast.
	DefaultRateLimitCool = 30 * time.Second
	// DefaultQuotaCool is how long a 402 takes an account out when no quota
	// reset time is known.
	DefaultQuotaCool = 5 * time.Minute
	// DefaultTokenWait is the Retry-After answered when no member has a
	// usable token and none has a known recovery time.
	DefaultTokenWait = 5 * time.Second
	// MaxCool bounds every cool-down, against a Retry-After or reset date
	// far in the future taking an account out for good.
	MaxCool = 31 * 24 * time.Hour
)

// Config configures a [Tracker].
type Config struct {
	// Clock times cool-downs. Default real.
	Clock clock.Clock
	// RateLimitCool, QuotaCool and TokenWait override the defaults above.
	RateLimitCool, QuotaCool, TokenWait time.Duration
	// ReservePercent is the share of a session or weekly usage limit below
	// which a member is busy (usage.go); 0 takes
	// [DefaultReservePercent], negative turns the reserve off.
	ReservePercent float64
	// OnUsage, when set, is called when a session or weekly snapshot
	// changes (the proxy's status report to the broker); it must not
	// block, and is called with the tracker locked.
	OnUsage func()
}

// Tracker is the health of every account the proxy forwards for.
type Tracker struct {
	clock      clock.Clock
	rateCool   time.Duration
	quotaCool  time.Duration
	tokenWait  time.Duration
	reserve    float64 // percent; see Config.ReservePercent
	onUsage    func()
	mu         sync.RWMutex // Acquire reads; everything else writes
	accounts   map[string]*account
	generation atomic.Uint64 // bumped on every change, for tests and metrics
}

// account is one account's record. Fields other than inflight are guarded
// by Tracker.mu.
type account struct {
	inflight atomic.Int64
	// coolUntil is the end of a rate-limit cool-down.
	coolUntil time.Time
	// spentUntil is the end of a spent quota (402); zero when not spent.
	// spentAt is when it was marked, so that only a later reading lifts it.
	spentUntil, spentAt time.Time
	// quota holds the last snapshot of each kind.
	quota map[string]Snapshot
	// refused is the [Candidate.TokenID] of a token the upstream refused
	// even after a refresh; the account is out until its token changes.
	refused string
	// usage holds the last session and weekly snapshots; usageUntil is the
	// end of a 429 while one was used up (usage.go).
	usage      map[string]Snapshot
	usageUntil time.Time
	// usageSeen is when usage was last read from an answer.
	usageSeen time.Time
}

// New returns a Tracker configured by cfg.
func New(cfg Config) *Tracker {
	t := &Tracker{
		clock:     clock.OrReal(cfg.Clock),
		rateCool:  cfg.RateLimitCool,
		quotaCool: cfg.QuotaCool,
		tokenWait: cfg.TokenWait,
		reserve:   cfg.ReservePercent,
		onUsage:   cfg.OnUsage,
		accounts:  map[string]*account{},
	}
	if t.reserve == 0 {
		t.reserve = DefaultReservePercent
	}
	if t.rateCool <= 0 {
		t.rateCool = DefaultRateLimitCool
	}
	if t.quotaCool <= 0 {
		t.quotaCool = DefaultQuotaCool
	}
	if t.tokenWait <= 0 {
		t.tokenWait = DefaultTokenWait
	}
	return t
}

// get returns name's record, creating it; t.mu must be held.
func (t *Tracker) get(name string) *account {
	a := t.accounts[name]
	if a == nil {
		a = &account{}
		t.accounts[name] = a
	}
	return a
}

// Candidate is a pool member as the caller sees it now.
type Candidate struct {
	// Name is the account's name.
	Name string
	// TokenID identifies the token the member would be used with (epoch and
	// generation); empty when the member has no usable token (none yet,
	// EXPIRED, REJECTED, or the account unknown to the broker).
	TokenID string
}

// Outage says why no member is usable and when to try again.
type Outage struct {
	// RetryAfter is the time until the soonest known recovery, or the
	// tracker's TokenWait when none is known; always at least a second.
	RetryAfter time.Duration
	// Limited is true when some member is out for a rate limit or a spent
	// quota (answer 429); false when every member lacks a usable token
	// (answer 503).
	Limited bool
	// Reasons counts the members out, by reason ("rate_limited",
	// "usage_limited", "quota_spent", "token_refused", "no_token",
	// "tried").
	Reasons map[string]int
}

// Pick chooses the member to send a request to among cands, skipping those
// in tried (members this request already went to). A member is usable when
// it has a token (TokenID set), that token was not refused, it is not
// cooling down after a 429, and its quota is not spent. Among usable members
// it prefers the one rendezvous hashing gives for affinity (the hash of the
// conversation's first messages, so upstream prompt caches hit) unless that
// one is overloaded next to the least loaded; with affinity 0 it takes the
// least loaded. It returns the index in cands, or -1 and the outage.
func (t *Tracker) Pick(cands []Candidate, affinity uint64, tried []string) (int, Outage) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	best, least, low := -1, -1, -1
	var bestScore uint64
	var leastLoad, lowLoad int64
	var out Outage
	for i, c := range cands {
		reason, until := t.outLocked(c, now)
		if reason == "" && contains(tried, c.Name) {
			reason = "tried"
		}
		if reason != "" {
			if out.Reasons == nil {
				out.Reasons = map[string]int{}
			}
			out.Reasons[reason]++
			if !until.IsZero() {
				out.Limited = true
				if d := until.Sub(now); out.RetryAfter == 0 || d < out.RetryAfter {
					out.RetryAfter = d
				}
			}
			continue
		}
		a := t.get(c.Name)
		load := a.inflight.Load()
		if t.lowLocked(a, now) {
			// Busy: little of a session or weekly limit left. Kept for
			// when no other member is usable.
			if low < 0 || load < lowLoad {
				low, lowLoad = i, load
			}
			continue
		}
		if least < 0 || load < leastLoad {
			least, leastLoad = i, load
		}
		if s := score(affinity, c.Name); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	if least < 0 && low >= 0 {
		return low, Outage{}
	}
	if least < 0 {
		if out.RetryAfter <= 0 {
			out.RetryAfter = t.tokenWait
		}
		out.RetryAfter = max(out.RetryAfter, time.Second)
		return -1, out
	}
	if affinity == 0 {
		return least, Outage{}
	}
	// Affinity yields to load only when its member is far busier than the
	// least loaded one, so a hot conversation cannot pile onto one seat.
	if load := t.accounts[cands[best].Name].inflight.Load(); load > 2*leastLoad+8 {
		return least, Outage{}
	}
	return best, Outage{}
}

// outLocked says why c is not usable now, and until when when that is known.
func (t *Tracker) outLocked(c Candidate, now time.Time) (reason string, until time.Time) {
	if c.TokenID == "" {
		return "no_token", time.Time{}
	}
	a := t.accounts[c.Name]
	if a == nil {
		return "", time.Time{}
	}
	if a.refused != "" {
		if a.refused == c.TokenID {
			return "token_refused", time.Time{}
		}
		a.refused = "" // a new token: the account is back
	}
	if until := a.spentLocked(now); !until.IsZero() {
		return "quota_spent", until
	}
	if now.Before(a.coolUntil) {
		return "rate_limited", a.coolUntil
	}
	if now.Before(a.usageUntil) {
		return "usage_limited", a.usageUntil
	}
	return "", time.Time{}
}

// spentLocked returns when a spent quota recovers, or zero when it is not
// spent: marked by a 402 until its reset, or a snapshot saying a kind is
// exhausted until that snapshot's reset.
func (a *account) spentLocked(now time.Time) time.Time {
	var until time.Time
	if now.Before(a.spentUntil) {
		until = a.spentUntil
	}
	for _, s := range a.quota {
		if !s.Exhausted() {
			continue
		}
		r := s.Reset
		if r.IsZero() || !now.Before(r) {
			// Exhausted with no future reset: the reading is old, or the
			// reset passed. It counts only while a 402 mark stands.
			continue
		}
		if until.IsZero() || r.Before(until) {
			until = r
		}
	}
	return until
}

func score(affinity uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], affinity)
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Acquire counts a request in flight on name; the returned function ends it
// and must be called exactly once.
func (t *Tracker) Acquire(name string) func() {
	t.mu.RLock()
	a := t.accounts[name]
	t.mu.RUnlock()
	if a == nil {
		t.mu.Lock()
		a = t.get(name)
		t.mu.Unlock()
	}
	a.inflight.Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			a.inflight.Add(-1)
		}
	}
}

// RateLimited cools name for retryAfter (a 429); a non-positive retryAfter
// takes the tracker's default. It returns the end of the cool-down.
func (t *Tracker) RateLimited(name string, retryAfter time.Duration) time.Time {
	if retryAfter <= 0 {
		retryAfter = t.rateCool
	}
	now := t.clock.Now()
	until := now.Add(min(retryAfter, MaxCool))
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(name)
	if until.After(a.coolUntil) {
		a.coolUntil = until
	}
	t.generation.Add(1)
	return a.coolUntil
}

// QuotaSpent marks name's quota spent (a 402) until reset, or for the
// tracker's QuotaCool when reset is zero or past. It returns the end.
func (t *Tracker) QuotaSpent(name string, reset time.Time) time.Time {
	now := t.clock.Now()
	if !reset.After(now) {
		reset = now.Add(t.quotaCool)
	}
	reset = minTime(reset, now.Add(MaxCool))
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(name)
	a.spentUntil, a.spentAt = reset, now
	t.generation.Add(1)
	return reset
}

// Refused takes name out until its token changes: the upstream refused the
// token tokenID even after a refresh (or the broker reported it REJECTED
// or EXPIRED, which leaves it without a token anyway).
func (t *Tracker) Refused(name, tokenID string) {
	if tokenID == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.get(name).refused = tokenID
	t.generation.Add(1)
}

// SetQuota records a quota reading of name, from the broker or from an
// upstream response's headers, taken at fetched. A reading taken after a 402
// that shows the kind with quota left (or overage permitted) lifts the 402.
func (t *Tracker) SetQuota(name string, fetched time.Time, snaps ...Snapshot) {
	if len(snaps) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(name)
	if a.quota == nil {
		a.quota = map[string]Snapshot{}
	}
	lift := !a.spentUntil.IsZero() && fetched.After(a.spentAt)
	for _, s := range snaps {
		if len(a.quota) >= maxKinds && a.quota[s.Kind] == (Snapshot{}) {
			continue // bounded: a misbehaving upstream cannot grow the map
		}
		a.quota[s.Kind] = s
		if s.Exhausted() {
			lift = false
		}
	}
	if lift {
		a.spentUntil, a.spentAt = time.Time{}, time.Time{}
	}
	t.generation.Add(1)
}

// maxKinds bounds the quota kinds kept per account.
const maxKinds = 8

// Status is one account's health for metrics and logs.
type Status struct {
	Name     string
	InFlight int64
	// Out is why the account is out ("" when usable as far as the tracker
	// knows; the token is the caller's business).
	Out   string
	Until time.Time
	Quota []Snapshot
	// Usage are the session and weekly snapshots (also in Quota), last
	// read at UsageSeen.
	Usage     []Snapshot
	UsageSeen time.Time
}

// Statuses returns the health of every account seen.
func (t *Tracker) Statuses() []Status {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Status, 0, len(t.accounts))
	for name, a := range t.accounts {
		st := Status{Name: name, InFlight: a.inflight.Load()}
		if a.refused != "" {
			st.Out = "token_refused"
		} else if u := a.spentLocked(now); !u.IsZero() {
			st.Out, st.Until = "quota_spent", u
		} else if now.Before(a.coolUntil) {
			st.Out, st.Until = "rate_limited", a.coolUntil
		} else if now.Before(a.usageUntil) {
			st.Out, st.Until = "usage_limited", a.usageUntil
		} else if t.lowLocked(a, now) {
			st.Out = "usage_reserve"
		}
		for _, s := range a.quota {
			st.Quota = append(st.Quota, s)
		}
		for _, s := range a.usage {
			st.Quota = append(st.Quota, s)
			st.Usage = append(st.Usage, s)
		}
		st.UsageSeen = a.usageSeen
		out = append(out, st)
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
