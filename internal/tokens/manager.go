package tokens

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// ExchangeFunc exchanges a GitHub token for a Copilot token;
// [Exchanger.Exchange] is one. Its errors are classified as [Exchanger]'s are.
type ExchangeFunc func(ctx context.Context, githubToken secret.Secret) (*CopilotToken, error)

// DefaultMinForceInterval is [ManagerConfig.MinForceInterval]'s default:
// the floor between an exchange and one forced by a rejected token.
const DefaultMinForceInterval = 5 * time.Second

// ManagerConfig configures a [Manager]. Zero durations and fractions take the
// documented defaults.
type ManagerConfig struct {
	// Account names the account in states and logs; empty is the default one.
	Account string
	// GitHubToken is the long-lived credential. When empty the manager starts
	// REJECTED and calls nothing until [Manager.SetGitHubToken].
	GitHubToken secret.Secret
	// Exchange is called by the refresh goroutine only. Required.
	Exchange ExchangeFunc
	// Clock drives every timer (nil means the real clock).
	Clock clock.Clock
	// Logger receives lifecycle events (nil discards them). Records carry the
	// generation and a fingerprint of the token, never a token.
	Logger *slog.Logger
	// Epoch is copied into every State.
	Epoch string
	// MinForceInterval is the floor between an exchange and a forced one
	// (default [DefaultMinForceInterval]).
	MinForceInterval time.Duration
	// Rand returns uniform numbers in [0, 1) for jitter; it is called from the
	// refresh goroutine only (nil means math/rand/v2).
	Rand func() float64

	// SkewMargin is added to refresh_in to make the local expiry (default
	// 60 s, docs/architecture.md section 4 rule 1).
	SkewMargin time.Duration
	// RefreshFraction of refresh_in is when the early refresh comes (default
	// 0.8), jittered by ±RefreshJitter of itself (default 0.1).
	RefreshFraction, RefreshJitter float64
	// MinRefreshDelay is the floor of the early refresh, so a refresh_in of 0
	// cannot make the loop spin (default 10 s).
	MinRefreshDelay time.Duration
	// BackoffInitial is the first retry delay after a failure (default 1 s);
	// it doubles up to BackoffMax (default 2 min), jittered by ±BackoffJitter
	// (default 0.2).
	BackoffInitial, BackoffMax time.Duration
	BackoffJitter              float64
	// RateLimitDelay is the wait after a rate-limited answer that names no
	// delay (default 60 s, GitHub's advice for secondary rate limits).
	RateLimitDelay time.Duration
	// MaxRetryAfter caps a Retry-After so a wrong header cannot park the
	// account for days (default 1 h).
	MaxRetryAfter time.Duration
}

func (c ManagerConfig) policy() schedulePolicy {
	return schedulePolicy{
		skewMargin:      orDuration(c.SkewMargin, 60*time.Second),
		refreshFraction: orFloat(c.RefreshFraction, 0.8),
		refreshJitter:   orFloat(c.RefreshJitter, 0.1),
		minRefreshDelay: orDuration(c.MinRefreshDelay, 10*time.Second),
		backoffInitial:  orDuration(c.BackoffInitial, time.Second),
		backoffMax:      orDuration(c.BackoffMax, 2*time.Minute),
		backoffJitter:   orFloat(c.BackoffJitter, 0.2),
	}
}

// Manager keeps one account's Copilot token fresh (docs/architecture.md,
// section 4 "Token lifecycle"). A single goroutine, started by [NewManager]
// and ended by [Manager.Close], owns every exchange and every state change.
// Readers never wait for it: [Manager.Snapshot] loads an atomic pointer, and
// subscribers get states through one-slot, latest-wins channels. All methods
// are safe for concurrent use.
type Manager struct {
	account  string
	epoch    string
	exchange ExchangeFunc
	clock    clock.Clock
	log      *slog.Logger
	rand     func() float64
	policy   schedulePolicy

	minForce       time.Duration
	rateLimitDelay time.Duration
	maxRetryAfter  time.Duration

	current atomic.Pointer[snapshot]

	credMu      sync.Mutex
	cred        secret.Secret
	credVersion uint64
	credChanged chan struct{} // one slot: "the credential changed", coalesced

	forceCh   chan forceRequest
	profileCh chan struct{} // one slot: "the upstream profile changed", coalesced

	subMu  sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool

	cancel    context.CancelFunc
	done      chan struct{} // closed when the refresh goroutine has ended
	closeOnce sync.Once
}

// forceRequest asks the refresh goroutine for a refresh of generation gen.
// The answer is the channel closed after the attempt the caller joins, or nil
// when no refresh is due.
type forceRequest struct {
	gen   uint64
	reply chan (<-chan struct{})
}

// NewManager starts managing one account: the refresh goroutine starts at
// once and makes the first exchange immediately. Call [Manager.Close] to stop
// it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Exchange == nil {
		return nil, errors.New("tokens: ManagerConfig.Exchange is nil")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		account:        cfg.Account,
		epoch:          cfg.Epoch,
		exchange:       cfg.Exchange,
		clock:          clock.OrReal(cfg.Clock),
		log:            logger.With("account", cfg.Account),
		rand:           rnd,
		policy:         cfg.policy(),
		minForce:       orDuration(cfg.MinForceInterval, DefaultMinForceInterval),
		rateLimitDelay: orDuration(cfg.RateLimitDelay, 60*time.Second),
		maxRetryAfter:  orDuration(cfg.MaxRetryAfter, time.Hour),
		cred:           cfg.GitHubToken,
		credChanged:    make(chan struct{}, 1),
		forceCh:        make(chan forceRequest),
		profileCh:      make(chan struct{}, 1),
		subs:           map[*subscriber]struct{}{},
		cancel:         cancel,
		done:           make(chan struct{}),
	}
	now := m.clock.Now()
	m.current.Store(&snapshot{state: State{
		Account: m.account, Epoch: m.epoch, Status: StatusPending, RefreshAt: now.Round(0),
	}})
	go m.run(ctx, now)
	return m, nil
}

// Snapshot returns the current state without waiting. A token at or past its
// local expiry is reported as [StatusExpired] without the token, even before
// the refresh goroutine has noticed.
func (m *Manager) Snapshot() State {
	return m.current.Load().view(m.clock.Now())
}

// WaitReady returns the state as soon as it is no longer [StatusPending], or
// the current state with ctx's error, or with [ErrClosed] once the manager is
// closed.
func (m *Manager) WaitReady(ctx context.Context) (State, error) {
	updates, cancel := m.Subscribe()
	defer cancel()
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				return m.Snapshot(), ErrClosed
			}
			if st.Status != StatusPending {
				return st, nil
			}
		case <-ctx.Done():
			return m.Snapshot(), ctx.Err()
		}
	}
}

// ForceRefresh asks for a new token because generation rejectedGeneration was
// refused upstream. It refreshes only if that generation is still current
// and the credential is not rejected; concurrent callers share one exchange;
// an exchange comes no sooner than MinForceInterval after the previous one,
// nor before a pending backoff or Retry-After ends. It returns the state after
// that exchange (or the current state when none was due). The error is nil
// unless ctx ended or the manager is closed: a failed exchange shows in the
// returned State's Status and LastError.
func (m *Manager) ForceRefresh(ctx context.Context, rejectedGeneration uint64) (State, error) {
	if st := m.Snapshot(); st.Generation != rejectedGeneration || st.Status == StatusRejected {
		return st, nil
	}
	req := forceRequest{gen: rejectedGeneration, reply: make(chan (<-chan struct{}), 1)}
	select {
	case m.forceCh <- req:
	case <-ctx.Done():
		return m.Snapshot(), ctx.Err()
	case <-m.done:
		return m.Snapshot(), ErrClosed
	}
	var attemptDone <-chan struct{}
	select {
	case attemptDone = <-req.reply:
	case <-ctx.Done():
		return m.Snapshot(), ctx.Err()
	case <-m.done:
		return m.Snapshot(), ErrClosed
	}
	if attemptDone == nil {
		return m.Snapshot(), nil
	}
	select {
	case <-attemptDone:
		return m.Snapshot(), nil
	case <-ctx.Done():
		return m.Snapshot(), ctx.Err()
	case <-m.done:
		return m.Snapshot(), ErrClosed
	}
}

// SetGitHubToken replaces the credential, for example after its file changed.
// A different value lifts [StatusRejected] and triggers an exchange at once
// (after any Retry-After still pending). The same value again is ignored, so
// a file that is merely touched does not make the broker retry a refused
// credential.
func (m *Manager) SetGitHubToken(tok secret.Secret) {
	m.credMu.Lock()
	if m.cred.Equal(tok) {
		m.credMu.Unlock()
		return
	}
	m.cred = tok
	m.credVersion++
	m.credMu.Unlock()
	select {
	case m.credChanged <- struct{}{}:
	default: // a notice is already pending; the goroutine reads the newest value
	}
}

// RetryRejected lifts REJECTED and makes one attempt at once with the current
// credential, for an operator who fixed the account's Copilot access and
// signals the broker (SIGHUP). It does nothing unless the status is REJECTED,
// so it cannot be used to hammer GitHub.
func (m *Manager) RetryRejected() {
	if m.Snapshot().Status != StatusRejected {
		return
	}
	m.credMu.Lock()
	m.credVersion++
	m.credMu.Unlock()
	select {
	case m.credChanged <- struct{}{}:
	default:
	}
}

// ProfileChanged tells the manager that the upstream profile (the identity
// the exchange presents) has a new revision. When the last exchange failed
// because GitHub refused that identity, the next one comes at once rather
// than after the backoff: no sooner than MinForceInterval after the
// previous exchange, nor before a pending Retry-After. Otherwise it does
// nothing. Calls made before the refresh goroutine reads one are coalesced
// into one exchange.
func (m *Manager) ProfileChanged() {
	select {
	case m.profileCh <- struct{}{}:
	default: // a notice is already pending
	}
}

// GitHubToken returns the GitHub credential the manager exchanges (the
// quota poller reads the account's quota with it).
func (m *Manager) GitHubToken() secret.Secret {
	tok, _ := m.credential()
	return tok
}

func (m *Manager) credential() (secret.Secret, uint64) {
	m.credMu.Lock()
	defer m.credMu.Unlock()
	return m.cred, m.credVersion
}

// Close stops the refresh goroutine (cancelling an exchange in flight), waits
// for it to end and closes every subscription. It is idempotent and always
// returns nil.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		<-m.done
		m.closeSubscribers()
	})
	return nil
}

func orDuration(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

func orFloat(v, def float64) float64 {
	if v <= 0 {
		return def
	}
	return v
}
