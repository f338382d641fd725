package sandbox

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Fault is an error answer injected in place of a real one.
type Fault struct {
	// Status is the HTTP status, 400..599.
	Status int
	// Reason picks the body: "" for the status's usual one; for exchanges
	// "no_copilot_access", "subscription_ended" or "billing_locked" give the 403
	// error_details body and "rate_limit" GitHub's rate-limit body. A 403 with
	// no reason means no_copilot_access; a 429 with no reason means rate_limit.
	Reason string
	// RetryAfter, when positive, is sent as Retry-After in whole seconds.
	RetryAfter time.Duration
}

// Fault reasons understood by [Fault.Reason].
const (
	ReasonNoCopilotAccess   = "no_copilot_access"
	ReasonSubscriptionEnded = "subscription_ended"
	ReasonBillingLocked     = "billing_locked"
	ReasonRateLimit         = "rate_limit"
)

func (f Fault) validate() error {
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("fault status %d: want 400..599", f.Status)
	}
	switch f.Reason {
	case "", ReasonNoCopilotAccess, ReasonSubscriptionEnded, ReasonBillingLocked, ReasonRateLimit:
	default:
		return fmt.Errorf("fault reason %q: unknown", f.Reason)
	}
	if f.RetryAfter < 0 {
		return fmt.Errorf("fault retry after %v: negative", f.RetryAfter)
	}
	return nil
}

func (f Fault) reason() string {
	if f.Reason != "" {
		return f.Reason
	}
	switch f.Status {
	case http.StatusForbidden:
		return ReasonNoCopilotAccess
	case http.StatusTooManyRequests:
		return ReasonRateLimit
	}
	return ""
}

// faultQueue answers the next remaining calls (or every call, untilCleared)
// with fault.
type faultQueue struct {
	fault        Fault
	remaining    int
	untilCleared bool
}

func (q *faultQueue) take() (Fault, bool) {
	switch {
	case q.untilCleared:
		return q.fault, true
	case q.remaining > 0:
		q.remaining--
		return q.fault, true
	}
	return Fault{}, false
}

type faultState struct {
	exchange, api faultQueue
}

func mustValid(f Fault) {
	if err := f.validate(); err != nil {
		panic("sandbox: " + err.Error())
	}
}

// FailExchanges answers the next n token exchanges with f. It panics on an
// invalid fault (a status outside 400..599 or an unknown reason).
func (s *Server) FailExchanges(n int, f Fault) {
	mustValid(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.exchange = faultQueue{fault: f, remaining: n}
	s.log.Info("sandbox: failing exchanges", "count", n, "status", f.Status, "reason", f.reason())
}

// FailExchangesUntilCleared answers every token exchange with f until
// [Server.ClearFaults]: a GitHub outage.
func (s *Server) FailExchangesUntilCleared(f Fault) {
	mustValid(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.exchange = faultQueue{fault: f, untilCleared: true}
	s.log.Info("sandbox: failing all exchanges", "status", f.Status, "reason", f.reason())
}

// FailAPI answers the next n Copilot API calls with f, as an OpenAI-shaped
// error.
func (s *Server) FailAPI(n int, f Fault) {
	mustValid(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.api = faultQueue{fault: f, remaining: n}
	s.apiFaulty.Store(n > 0)
}

// FailAPIUntilCleared answers every Copilot API call with f until
// [Server.ClearFaults].
func (s *Server) FailAPIUntilCleared(f Fault) {
	mustValid(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.api = faultQueue{fault: f, untilCleared: true}
	s.apiFaulty.Store(true)
}

// ClearFaults removes every injected fault and latency, the accounts' faults
// included (not their quota use: see [Server.ResetQuota]).
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faultState{}
	for _, a := range s.accounts {
		a.faults = faultState{}
		a.apiFaulty.Store(false)
	}
	s.apiFaulty.Store(false)
	s.exchangeLatency.Store(0)
	s.apiLatency.Store(0)
}

// SetExchangeLatency delays every token exchange by d of real time.
func (s *Server) SetExchangeLatency(d time.Duration) { s.exchangeLatency.Store(int64(max(d, 0))) }

// SetAPILatency delays every Copilot API call by d of real time before it is
// answered.
func (s *Server) SetAPILatency(d time.Duration) { s.apiLatency.Store(int64(max(d, 0))) }

// RevokeGitHubToken makes the exchange answer 401 for t; it reports whether t
// was accepted before.
func (s *Server) RevokeGitHubToken(t secret.Secret) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var was bool
	if g, known := s.githubTokens[t.Reveal()]; known {
		was = g.accepted && !g.acct.revoked
		g.accepted = false
	}
	s.log.Info("sandbox: revoked github token", "fingerprint", t.Fingerprint(), "was_accepted", was)
	return was
}

// AddGitHubToken makes the exchange accept t (again, if it was revoked), for
// the account it belongs to (the default account for a new token).
func (s *Server) AddGitHubToken(t secret.Secret) {
	if t.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.githubTokens[t.Reveal()]; ok {
		g.accepted = true
	} else {
		s.githubTokens[t.Reveal()] = &ghToken{acct: s.defaultAcct, accepted: true}
	}
	s.log.Info("sandbox: accepting github token", "fingerprint", t.Fingerprint())
}

// accountOf returns the account of an accepted GitHub token; nil for an
// unknown or revoked token, or one of a revoked or removed account.
func (s *Server) accountOf(t string) *account {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.githubTokens[t]
	if !ok || !g.accepted || g.acct.revoked || s.accounts[g.acct.name] != g.acct {
		return nil
	}
	return g.acct
}

func (s *Server) takeExchangeFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.exchange.take()
}

func (s *Server) takeAPIFault() (Fault, bool) {
	if !s.apiFaulty.Load() {
		return Fault{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.faults.api.take()
	if !s.faults.api.untilCleared && s.faults.api.remaining == 0 {
		s.apiFaulty.Store(false)
	}
	return f, ok
}

func setRetryAfter(w http.ResponseWriter, f Fault) {
	if f.RetryAfter > 0 {
		secs := int64((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
}
