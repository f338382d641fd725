package tokens

import (
	"errors"
	"time"
)

// schedulePolicy holds the figures of docs/architecture.md section 4, rules 1-3. The zero value is
// not usable; [ManagerConfig] fills it with defaults.
type schedulePolicy struct {
	skewMargin      time.Duration // rule 1: local expiry is refresh_in + this
	refreshFraction float64       // rule 2: refresh at this share of refresh_in ...
	refreshJitter   float64       // ... times 1 ± this
	minRefreshDelay time.Duration // floor of the early refresh, against refresh_in of 0
	backoffInitial  time.Duration // rule 3: first retry delay ...
	backoffMax      time.Duration // ... doubling up to this
	backoffJitter   float64       // ... times 1 ± this
}

// errExpiredOnArrival means an exchange answer's own lifetime had already
// ended when it arrived; the manager treats it as a transient failure.
var errExpiredOnArrival = errors.New("token already expired on arrival")

// dateMargin is taken off expires_at - Date. Both are whole seconds, so
// GitHub's clock may already be up to a second past Date when it answers, and
// a request made with the token needs a moment to reach the API: without the
// margin, clients were seen getting the API's 401 in the last second.
const dateMargin = 2 * time.Second

// tokenSchedule computes, for a token received at received (the injected
// clock's time right after the answer arrived), its local expiry and the time
// of its early refresh. r is a uniform random number in [0, 1).
//
// Local expiry (rule 1) is received + min(refresh_in + skewMargin, expires_at
// - Date - dateMargin). Both terms are durations measured by one clock each, so a GitHub
// clock hours ahead or behind changes nothing. Without a Date header
// expires_at cannot be related to the local clock and only refresh_in counts,
// as in the main editor client.
//
// The refresh (rule 2) comes at refreshFraction × min(refresh_in, lifetime),
// jittered by ±refreshJitter, and no earlier than min(minRefreshDelay,
// lifetime/2), so that a refresh_in of 0 cannot make the loop spin.
func (p schedulePolicy) tokenSchedule(tok *CopilotToken, received time.Time, r float64) (expiry, refreshAt time.Time, err error) {
	lifetime := tok.RefreshIn + p.skewMargin
	if !tok.ServerDate.IsZero() {
		lifetime = min(lifetime, tok.ExpiresAt.Sub(tok.ServerDate)-dateMargin)
	}
	if lifetime <= 0 {
		return time.Time{}, time.Time{}, errExpiredOnArrival
	}
	base := min(tok.RefreshIn, lifetime)
	delay := time.Duration(float64(base) * p.refreshFraction * (1 + p.refreshJitter*(2*r-1)))
	delay = max(delay, min(p.minRefreshDelay, lifetime/2))
	return received.Add(lifetime), received.Add(delay), nil
}

// backoff returns the delay before the next attempt after failures
// consecutive failures (failures >= 1): backoffInitial × 2^(failures-1), capped
// at backoffMax, times 1 ± backoffJitter.
func (p schedulePolicy) backoff(failures int, r float64) time.Duration {
	d := p.backoffInitial
	for i := 1; i < failures && d < p.backoffMax; i++ {
		d *= 2
	}
	d = min(d, p.backoffMax)
	return time.Duration(float64(d) * (1 + p.backoffJitter*(2*r-1)))
}
