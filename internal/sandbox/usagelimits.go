package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// UsageLimit is one of an account's usage limits (the 5-hour session or
// the week), reported in x-usage-ratelimit-session / -weekly with the
// quota snapshots' encoding (docs/protocol.md section 8).
type UsageLimit struct {
	// Entitlement is the allowance of the period; Remaining what is left.
	Entitlement float64 `json:"entitlement"`
	Remaining   float64 `json:"remaining"`
	// ResetSeconds is how long until the period resets, from when the
	// limit is set.
	ResetSeconds int64 `json:"reset_seconds"`
}

// UsageLimits are an account's session and weekly limits; a nil one is
// not reported.
type UsageLimits struct {
	Session *UsageLimit `json:"session,omitempty"`
	Weekly  *UsageLimit `json:"weekly,omitempty"`
}

// usageState is UsageLimits with absolute reset times.
type usageState struct {
	limits       UsageLimits
	sessionReset time.Time
	weeklyReset  time.Time
}

// SetUsageLimits sets (or, with zero limits, clears) an account's session
// and weekly limits. While one has nothing remaining, the account's API
// calls are answered 429 user_global_rate_limited with a "Please retry
// after N seconds" message and no Retry-After, as the API does.
func (s *Server) SetUsageLimits(name string, l UsageLimits) error {
	s.mu.Lock()
	a := s.accounts[name]
	s.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w %q", ErrUnknownAccount, name)
	}
	if l.Session == nil && l.Weekly == nil {
		a.usage.Store(nil)
		return nil
	}
	now := s.clock.Now()
	st := &usageState{limits: l}
	if l.Session != nil {
		st.sessionReset = now.Add(time.Duration(l.Session.ResetSeconds) * time.Second)
	}
	if l.Weekly != nil {
		st.weeklyReset = now.Add(time.Duration(l.Weekly.ResetSeconds) * time.Second)
	}
	a.usage.Store(st)
	return nil
}

// usageHeaders sets the usage-limit headers of an account's answer and, when
// a limit is used up, answers 429 and returns false.
func (s *Server) usageHeaders(w http.ResponseWriter, r *http.Request, a *account) bool {
	st := a.usage.Load()
	if st == nil {
		return true
	}
	now := s.clock.Now()
	enc := func(l *UsageLimit, reset time.Time) string {
		v := url.Values{}
		v.Set("ent", strconv.FormatFloat(l.Entitlement, 'f', -1, 64))
		v.Set("rem", strconv.FormatFloat(max(l.Remaining, 0), 'f', -1, 64))
		v.Set("rst", reset.UTC().Format(time.RFC3339))
		v.Set("ov", "0")
		v.Set("ovPerm", "false")
		return v.Encode()
	}
	var spentUntil time.Time
	if l := st.limits.Session; l != nil {
		w.Header().Set("X-Usage-Ratelimit-Session", enc(l, st.sessionReset))
		if l.Remaining <= 0 && st.sessionReset.After(now) {
			spentUntil = st.sessionReset
		}
	}
	if l := st.limits.Weekly; l != nil {
		w.Header().Set("X-Usage-Ratelimit-Weekly", enc(l, st.weeklyReset))
		if l.Remaining <= 0 && st.weeklyReset.After(now) && st.weeklyReset.After(spentUntil) {
			spentUntil = st.weeklyReset
		}
	}
	if spentUntil.IsZero() {
		return true
	}
	secs := int64(spentUntil.Sub(now).Round(time.Second) / time.Second)
	writeAPIError(w, r, http.StatusTooManyRequests, "rate_limit_error", "user_global_rate_limited:pro",
		fmt.Sprintf("You have reached your usage limit. Please retry after %d seconds.", max(secs, 1)))
	return false
}

// adminUsageRoutes: POST /_sandbox/accounts/{name}/usage-limits with a
// [UsageLimits] body.
func (s *Server) adminUsageRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /_sandbox/accounts/{name}/usage-limits", func(w http.ResponseWriter, r *http.Request) {
		var req UsageLimits
		if !adminDecode(w, r, &req) {
			return
		}
		for _, l := range []*UsageLimit{req.Session, req.Weekly} {
			if l != nil && (l.Entitlement < 0 || l.Remaining > l.Entitlement || l.ResetSeconds < 0) {
				adminError(w, http.StatusBadRequest, errors.New("want 0 <= remaining <= entitlement and reset_seconds >= 0"))
				return
			}
		}
		adminResult(w, s.SetUsageLimits(r.PathValue("name"), req))
	})
}
