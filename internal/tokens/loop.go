package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// lastChanceMargin is how long before local expiry the last attempt of a
// failing run is made, when the backoff would otherwise sleep past expiry.
const lastChanceMargin = 10 * time.Second

// refresher is the state owned by the refresh goroutine. Nothing else reads
// or writes it; the outside world sees it through published snapshots.
type refresher struct {
	m *Manager

	status  Status
	gen     uint64
	tok     secret.Secret // zero when there is no usable token
	expiry  time.Time     // local expiry of tok (injected clock); zero when no token
	api     string
	sku     string
	lastErr string
	// identityRejected: the last failure was an *IdentityRejectedError.
	identityRejected bool

	next        time.Time // next attempt; zero when none is planned (REJECTED)
	notBefore   time.Time // no attempt before this (Retry-After)
	lastAttempt time.Time
	failures    int           // consecutive failed attempts
	usedVersion uint64        // credential version of the last attempt
	attemptDone chan struct{} // closed after the next attempt; what forced refreshes wait on
}

// run is the refresh goroutine. Each turn it expires a token that reached its
// local expiry, makes an attempt that is due, or sleeps on one timer until
// the earlier of the next attempt and the expiry, a forced refresh or a new
// credential.
func (m *Manager) run(ctx context.Context, start time.Time) {
	defer close(m.done)
	r := &refresher{m: m, status: StatusPending, next: start, attemptDone: make(chan struct{})}
	timer := m.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := m.clock.Now()
		if r.hasToken() && !now.Before(r.expiry) {
			r.expire()
		}
		if !r.next.IsZero() && !now.Before(r.next) {
			r.attempt(ctx)
			if ctx.Err() != nil {
				return
			}
			continue
		}
		wake := r.next
		if r.hasToken() && (wake.IsZero() || r.expiry.Before(wake)) {
			wake = r.expiry
		}
		if wake.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(wake.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case req := <-m.forceCh:
			r.force(req, m.clock.Now()) // now is as old as the wait
		case <-m.credChanged:
			r.credentialChanged(m.clock.Now())
		case <-m.profileCh:
			r.profileChanged(m.clock.Now())
		}
	}
}

func (r *refresher) hasToken() bool { return !r.tok.IsZero() }

// attempt makes one exchange and applies its outcome.
func (r *refresher) attempt(ctx context.Context) {
	m := r.m
	r.lastAttempt = m.clock.Now()
	cred, version := m.credential()
	r.usedVersion = version
	var tok *CopilotToken
	var err error
	if cred.IsZero() {
		err = fmt.Errorf("no GitHub token configured: %w", ErrCredentialRejected)
	} else {
		tok, err = m.exchange(ctx, cred)
		if err == nil && tok == nil {
			err = fmt.Errorf("%w: exchange returned no token", ErrMalformedResponse)
		}
	}
	if ctx.Err() != nil {
		return // closing: the outcome no longer matters
	}
	received := m.clock.Now()
	var expiry, refreshAt time.Time
	if err == nil {
		expiry, refreshAt, err = m.policy.tokenSchedule(tok, received, m.rand())
	}
	switch {
	case err == nil:
		r.succeed(tok, received, expiry, refreshAt)
	case IsTerminal(err):
		if _, now := m.credential(); now != version {
			// The credential was replaced while this attempt used the old
			// one: its refusal says nothing about the new one.
			r.next = received
			return
		}
		r.reject(err, cred)
	default:
		r.fail(err, cred, tok, received)
	}
	done := r.attemptDone
	r.attemptDone = make(chan struct{})
	r.publish()
	close(done) // after publish, so forced callers read the outcome
}

func (r *refresher) succeed(tok *CopilotToken, received, expiry, refreshAt time.Time) {
	r.gen++
	r.tok, r.expiry, r.api, r.sku = tok.Token, expiry, tok.APIBaseURL, tok.SKU
	r.status, r.lastErr, r.identityRejected = StatusValid, "", false
	r.failures, r.notBefore, r.next = 0, time.Time{}, refreshAt
	r.m.log.Info("copilot token refreshed",
		"generation", r.gen, "fingerprint", tok.Token.Fingerprint(), "sku", tok.SKU,
		"refresh_in", tok.RefreshIn.String(), "expires_in", expiry.Sub(received).String(),
		"next_refresh_in", refreshAt.Sub(received).String())
	if tok.APIBaseURLDefaulted {
		r.m.log.Warn("the exchange answer has no endpoints.api; using the public Copilot API", "api_base_url", tok.APIBaseURL, "generation", r.gen)
	}
}

func (r *refresher) reject(err error, cred secret.Secret) {
	r.dropToken()
	r.status, r.lastErr = StatusRejected, r.safeError(err, cred)
	r.failures, r.next = 0, time.Time{}
	r.m.log.Error("github refused the credential; no further exchanges until it is replaced",
		"generation", r.gen, "error", r.lastErr)
}

func (r *refresher) fail(err error, cred secret.Secret, tok *CopilotToken, received time.Time) {
	m := r.m
	r.failures++
	delay := m.policy.backoff(r.failures, m.rand())
	if wait, limited := retryAfter(err); limited {
		if wait <= 0 {
			wait = m.rateLimitDelay
		}
		wait = min(wait, m.maxRetryAfter)
		r.notBefore = received.Add(wait)
		delay = max(delay, wait)
	}
	r.next = received.Add(delay)
	if lastChance := r.expiry.Add(-lastChanceMargin); r.hasToken() && r.next.After(r.expiry) && lastChance.After(received) {
		// Never sleep past expiry: make a last attempt shortly before the
		// token expires (so a success replaces it with no EXPIRED gap),
		// unless GitHub asked for a longer wait. When that moment has already
		// passed the full backoff applies: retrying at once would skip it.
		r.next = maxTime(lastChance, r.notBefore)
	}
	if r.hasToken() {
		r.status = StatusStale
	} // otherwise PENDING or EXPIRED stays as it is
	var ir *IdentityRejectedError
	r.identityRejected = errors.As(err, &ir)
	msg := r.safeError(err, cred)
	if tok != nil {
		msg = safeMessage(msg, tok.Token)
	}
	r.lastErr = msg
	m.log.Warn("copilot token refresh failed",
		"generation", r.gen, "fingerprint", r.tok.Fingerprint(), "status", r.status.String(),
		"consecutive_failures", r.failures, "retry_in", r.next.Sub(received).String(), "error", msg)
}

// expire drops the token at its local expiry.
func (r *refresher) expire() {
	r.m.log.Warn("copilot token reached local expiry without a replacement",
		"generation", r.gen, "fingerprint", r.tok.Fingerprint(), "last_error", r.lastErr)
	r.dropToken()
	r.status = StatusExpired
	r.publish()
}

func (r *refresher) dropToken() {
	r.tok, r.expiry = secret.Secret{}, time.Time{}
}

// force handles a forced refresh: only for the current generation, never
// sooner than minForce after the last attempt, and never cutting short a
// backoff or Retry-After. Every caller joins the same next attempt.
func (r *refresher) force(req forceRequest, now time.Time) {
	if req.gen != r.gen || r.status == StatusRejected || r.next.IsZero() {
		req.reply <- nil
		return
	}
	at := maxTime(now, r.lastAttempt.Add(r.m.minForce), r.notBefore)
	if r.failures > 0 {
		at = maxTime(at, r.next)
	}
	if at.Before(r.next) {
		r.next = at
		r.m.log.Info("forced refresh requested", "generation", r.gen, "in", at.Sub(now).String())
	}
	req.reply <- r.attemptDone
}

// profileChanged brings the next attempt forward after a refusal of the
// identity, as a forced refresh would (minForce after the last attempt,
// not before a Retry-After) but cutting the backoff short: the new profile
// is what the backoff was waiting for.
func (r *refresher) profileChanged(now time.Time) {
	if !r.identityRejected || r.status == StatusRejected || r.next.IsZero() {
		return
	}
	at := maxTime(now, r.lastAttempt.Add(r.m.minForce), r.notBefore)
	if at.Before(r.next) {
		r.next = at
		r.m.log.Info("upstream profile changed after an identity refusal; exchanging again",
			"generation", r.gen, "in", at.Sub(now).String())
	}
}

// credentialChanged lifts REJECTED and plans an exchange at once with the new
// credential (still honouring a pending Retry-After).
func (r *refresher) credentialChanged(now time.Time) {
	if _, v := r.m.credential(); v == r.usedVersion {
		return // an attempt already used (or was told about) this credential
	}
	r.failures = 0
	r.next = maxTime(now, r.notBefore)
	r.m.log.Info("github credential replaced", "generation", r.gen)
	if r.status == StatusRejected {
		r.status, r.lastErr = StatusPending, ""
		r.publish()
	}
}

// safeError renders err for LastError and logs, removing the credential and
// the current token should an injected ExchangeFunc have quoted either.
func (r *refresher) safeError(err error, cred secret.Secret) string {
	return safeMessage(safeMessage(err.Error(), cred), r.tok)
}

func (r *refresher) publish() {
	st := State{
		Account:    r.m.account,
		Token:      r.tok,
		Generation: r.gen,
		Epoch:      r.m.epoch,
		ExpiresAt:  r.expiry.Round(0),
		RefreshAt:  r.next.Round(0),
		APIBaseURL: r.api,
		SKU:        r.sku,
		Status:     r.status,
		LastError:  r.lastErr,

		IdentityRejected: r.identityRejected,
	}
	r.m.publish(&snapshot{state: st, expiry: r.expiry})
}

func maxTime(t time.Time, more ...time.Time) time.Time {
	for _, u := range more {
		if u.After(t) {
			t = u
		}
	}
	return t
}
