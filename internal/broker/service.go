// Package broker is the edge of the token broker: the gRPC TokenBrokerService
// over per-account token sources, the auth interceptors and HTTP middleware,
// the REST gateway, the grpc.health.v1 reflection of token state and the
// Prometheus metrics. Token lifecycles live in [tokens]; gRPC and HTTP codes
// are made here and nowhere else.
//
// To run a whole broker (listeners, TLS, shutdown) use package
// [github.com/copilot-broker/copilot-broker/internal/broker/server].
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// Source is what the service needs from one account's token lifecycle;
// [*tokens.Manager] is one. Its methods must be safe for concurrent use and
// must not block on slow subscribers.
type Source interface {
	// Snapshot returns the current state without waiting.
	Snapshot() tokens.State
	// Subscribe delivers the current state at once and then every change
	// through a one-slot, latest-wins channel, closed by cancel or when the
	// source closes.
	Subscribe() (updates <-chan tokens.State, cancel func())
	// ForceRefresh refreshes once for all callers when rejectedGeneration is
	// still current, no more often than a floor interval.
	ForceRefresh(ctx context.Context, rejectedGeneration uint64) (tokens.State, error)
}

// QuotaSource is what the service needs from one account's quota readings;
// [*quota.Poller] is one.
type QuotaSource interface {
	// Current returns the latest reading (zero before the first).
	Current() quota.Reading
	// Subscribe delivers the current reading at once and then every change,
	// latest-wins, through a channel closed by cancel or when the source
	// stops.
	Subscribe() (updates <-chan quota.Reading, cancel func())
	// Poke asks for a reading soon (after an upstream 402).
	Poke()
}

// Defaults of [Config].
const (
	DefaultMaxStreamAge    = 30 * time.Minute
	DefaultStreamAgeJitter = 0.1
	DefaultMaxPendingWait  = 30 * time.Second
)

// Config configures a [Service]. Zero values take the defaults.
type Config struct {
	// Accounts maps account names to their token sources; "" is the default
	// account. It may be empty: accounts come and go with
	// [Service.AddAccount] and [Service.RemoveAccount].
	Accounts map[string]Source
	// Quotas maps account names to their quota readings; an account without
	// one shows no quota.
	Quotas map[string]QuotaSource
	// MaxStreamAge is the mean lifetime of a WatchToken stream, after which it
	// ends with OK so the client reconnects, perhaps to another replica
	// (default [DefaultMaxStreamAge]).
	MaxStreamAge time.Duration
	// StreamAgeJitter spreads stream lifetimes by ± this fraction of
	// MaxStreamAge so reconnects do not come in waves (default
	// [DefaultStreamAgeJitter]; negative means none).
	StreamAgeJitter float64
	// MaxPendingWait bounds how long GetToken waits for a first token when
	// the call has no earlier deadline (default [DefaultMaxPendingWait]).
	MaxPendingWait time.Duration
	// Clock times stream ages (nil means the real clock).
	Clock clock.Clock
	// Rand returns uniform numbers in [0, 1) for jitter (nil means
	// math/rand/v2); it must be safe for concurrent use.
	Rand func() float64
	// Logger receives stream and refresh events (nil discards them).
	Logger *slog.Logger
	// Metrics counts WatchAccounts streams and drops a removed account's
	// series (nil counts nothing).
	Metrics *Metrics
	// Profile is the upstream profile every Token carries; a change is sent
	// to every WatchToken stream at once (nil: no profile is sent).
	Profile *identity.Holder
	// IdentityMetrics counts refusals of the profile (nil counts nothing).
	IdentityMetrics *IdentityMetrics
	// Proxies, when set, supplies the accounts' usage limits as the
	// proxies see them (Account.usage_limits).
	Proxies *Proxies
}

// Service implements brokerv1.TokenBrokerServiceServer. It is safe for
// concurrent use; each WatchToken stream costs one goroutine (gRPC's) and
// one subscription, and a slow stream never delays another.
type Service struct {
	brokerv1.UnimplementedTokenBrokerServiceServer

	mu          sync.Mutex // serializes changes of set
	set         atomic.Pointer[accountSet]
	closing     chan struct{}
	closeOnce   sync.Once
	loops       sync.WaitGroup // one view loop per account
	maxAge      time.Duration
	jitter      float64
	pendingWait time.Duration
	clock       clock.Clock
	rand        func() float64
	log         *slog.Logger
	metrics     *Metrics
	draining    chan struct{}
	drainOnce   sync.Once

	profile         *identity.Holder // nil: none sent
	profileMsg      atomic.Pointer[profileMsg]
	identityMetrics *IdentityMetrics
	proxies         *Proxies // nil: no usage limits
}

// NewService returns a Service over cfg.Accounts. Call [Service.Close] when
// done: each account has a goroutine following its state for
// WatchAccounts.
func NewService(cfg Config) (*Service, error) {
	for name, src := range cfg.Accounts {
		if src == nil {
			return nil, fmt.Errorf("broker: account %q has a nil source", name)
		}
	}
	s := &Service{
		closing:     make(chan struct{}),
		maxAge:      cfg.MaxStreamAge,
		jitter:      cfg.StreamAgeJitter,
		pendingWait: cfg.MaxPendingWait,
		clock:       clock.OrReal(cfg.Clock),
		rand:        cfg.Rand,
		log:         cfg.Logger,
		metrics:     cfg.Metrics,
		draining:    make(chan struct{}),

		profile:         cfg.Profile,
		identityMetrics: cfg.IdentityMetrics,
		proxies:         cfg.Proxies,
	}
	s.maxAge, s.jitter, s.rand = streamAgeDefaults(s.maxAge, s.jitter, s.rand)
	if s.pendingWait <= 0 {
		s.pendingWait = DefaultMaxPendingWait
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.set.Store(&accountSet{byName: map[string]*account{}, changed: make(chan struct{})})
	for name, src := range cfg.Accounts {
		if err := s.AddAccount(name, src, cfg.Quotas[name]); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close stops following the accounts' states; it does not close their
// sources. Call it after the gRPC server has stopped.
func (s *Service) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.loops.Wait()
}

// Drain tells every WatchToken stream, open or yet to come, to end with OK,
// so clients reconnect elsewhere while this broker shuts down. It is
// idempotent.
func (s *Service) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
}

// account returns the named account when the caller's key may read it: an
// account the key may not read is NOT_FOUND, exactly like one that does not
// exist, so a key learns nothing of accounts beyond its own.
func (s *Service) account(ctx context.Context, name string) (*account, error) {
	a, ok := s.set.Load().byName[name]
	if !ok || !MayRead(ctx, name) {
		return nil, status.Errorf(codes.NotFound, "unknown account %q", name)
	}
	return a, nil
}

// account is one account's sources and the API form of its latest state.
type account struct {
	name     string
	src      Source
	quota    QuotaSource   // nil: no quota readings
	removed  chan struct{} // closed by RemoveAccount
	last     atomic.Pointer[converted]
	view     atomic.Pointer[brokerv1.Account] // shared by WatchAccounts streams; never modified
	watchers atomic.Int64                     // open WatchToken streams

	alarm      atomic.Pointer[identityAlarm] // the API's last refusal of the profile (identity.go)
	rejections atomic.Uint64                 // refusals of the profile reported for it
	poke       chan struct{}                 // one slot: re-render the view
}

// converted is a state in its API form. Its messages are shared by every
// call that sees the same state and must not be modified: converting once
// per state change rather than once per call keeps reads (thousands a second,
// and one send per watcher at each rotation) free of that work.
type converted struct {
	st    tokens.State
	prof  *identity.Current
	get   *brokerv1.GetTokenResponse
	watch *brokerv1.WatchTokenResponse
	// The wire forms of get and watch, sent by [Service.Codec].
	getWire, watchWire mem.BufferSlice
}

// convert returns st in its API form, reusing the last conversion when the
// state is the same. Concurrent callers may convert the same state twice;
// either result is correct.
func (a *account) convert(st tokens.State, s *Service) *converted {
	cur, prof := s.currentProfile()
	if c := a.last.Load(); c != nil && c.st == st && c.prof == cur {
		return c
	}
	t := ToProto(st)
	t.Profile = prof
	c := &converted{st: st, prof: cur, get: &brokerv1.GetTokenResponse{Token: t}, watch: &brokerv1.WatchTokenResponse{Token: t}}
	c.getWire, c.watchWire = encodeShared(c.get), encodeShared(c.watch)
	a.last.Store(c)
	return c
}

// GetToken returns the account's current token. While the first token is
// pending it waits, up to the call's deadline or MaxPendingWait. The response
// is shared with other calls (see [account.convert]): do not modify it.
func (s *Service) GetToken(ctx context.Context, req *brokerv1.GetTokenRequest) (*brokerv1.GetTokenResponse, error) {
	a, err := s.account(ctx, req.GetAccount())
	if err != nil {
		return nil, err
	}
	st := a.src.Snapshot()
	if st.Status == tokens.StatusPending {
		st = s.waitPending(ctx, a)
		select {
		case <-a.removed:
			return nil, status.Errorf(codes.NotFound, "account %q was removed", req.GetAccount())
		default:
		}
	}
	if err := stateError(st); err != nil {
		return nil, err
	}
	return a.convert(st, s).get, nil
}

// waitPending returns the first state that is not pending, or the current
// state once ctx or the pending wait ends.
func (s *Service) waitPending(ctx context.Context, a *account) tokens.State {
	src := a.src
	ctx, cancel := context.WithTimeout(ctx, s.pendingWait)
	defer cancel()
	updates, unsubscribe := src.Subscribe()
	defer unsubscribe()
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				return src.Snapshot()
			}
			if st.Status != tokens.StatusPending {
				return st
			}
		case <-ctx.Done():
			return src.Snapshot()
		case <-a.removed:
			return src.Snapshot()
		}
	}
}

// RefreshToken forces a refresh when req's generation is still current and
// returns the state after that decision.
func (s *Service) RefreshToken(ctx context.Context, req *brokerv1.RefreshTokenRequest) (*brokerv1.RefreshTokenResponse, error) {
	a, err := s.account(ctx, req.GetAccount())
	if err != nil {
		return nil, err
	}
	var st tokens.State
	switch req.GetReason() {
	case brokerv1.RefreshReason_REFRESH_REASON_IDENTITY_REJECTED:
		// The profile is refused, not the token: a new token would not
		// help. The account shows IDENTITY_REJECTED until the profile
		// changes.
		s.identityRejected(ctx, a, req.GetDetail())
		st = a.src.Snapshot()
	case brokerv1.RefreshReason_REFRESH_REASON_QUOTA_EXCEEDED:
		// A 402 refuses the account, not its token: a new token would be
		// refused alike, so none is exchanged; the spent quota is read now.
		if a.quota != nil {
			a.quota.Poke()
		}
		st = a.src.Snapshot()
	default:
		st, err = a.src.ForceRefresh(ctx, req.GetRejectedGeneration())
	}
	switch {
	case errors.Is(err, context.Canceled):
		return nil, status.Error(codes.Canceled, "refresh: call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return nil, status.Error(codes.DeadlineExceeded, "refresh: deadline exceeded before the refresh ended")
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "refresh: %v", err)
	}
	s.log.Info("refresh requested", "account", req.GetAccount(), "key", KeyName(ctx),
		"rejected_generation", req.GetRejectedGeneration(), "reason", req.GetReason().String(),
		"generation", st.Generation, "status", st.Status.String())
	if err := stateError(st); err != nil {
		return nil, err
	}
	return &brokerv1.RefreshTokenResponse{Token: a.convert(st, s).get.GetToken()}, nil
}

// WatchToken sends the current state at once and then every change, until
// the client goes away, the stream reaches its jittered maximum age, the
// source closes or the service drains (these three end with OK), or the
// account is removed (NOT_FOUND).
func (s *Service) WatchToken(req *brokerv1.WatchTokenRequest, stream brokerv1.TokenBrokerService_WatchTokenServer) error {
	name := req.GetAccount()
	a, err := s.account(stream.Context(), name)
	if err != nil {
		return err
	}
	select {
	case <-s.draining:
		return nil
	default:
	}
	ctx := stream.Context()
	updates, unsubscribe := a.src.Subscribe()
	defer unsubscribe()
	a.watchers.Add(1)
	defer a.watchers.Add(-1)

	age := s.streamAge()
	timer := s.clock.NewTimer(age)
	defer timer.Stop()
	s.log.Debug("watch started", "account", name, "key", KeyName(ctx), "max_age", age)
	profChanged := s.profileChanged()
	var last tokens.State
	sent := false
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				return nil
			}
			last, sent = st, true
			if err := stream.Send(a.convert(st, s).watch); err != nil {
				return err
			}
		case <-profChanged:
			// A new profile reaches every watcher at once, with the
			// state it already has.
			profChanged = s.profileChanged()
			if !sent {
				continue
			}
			if err := stream.Send(a.convert(last, s).watch); err != nil {
				return err
			}
		case <-timer.C():
			s.log.Debug("watch reached its maximum age", "account", name, "key", KeyName(ctx))
			return nil
		case <-s.draining:
			return nil
		case <-a.removed:
			return status.Errorf(codes.NotFound, "account %q was removed", name)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// streamAge returns MaxStreamAge spread uniformly by ± jitter of itself.
func (s *Service) streamAge() time.Duration { return jitteredAge(s.maxAge, s.jitter, s.rand) }

func jitteredAge(maxAge time.Duration, jitter float64, rand func() float64) time.Duration {
	f := 1 + jitter*(2*rand()-1)
	return time.Duration(float64(maxAge) * f)
}

// streamAgeDefaults fills in the defaults of a stream's maximum age, its
// jitter and the jitter's random source.
func streamAgeDefaults(maxAge time.Duration, jitter float64, r func() float64) (time.Duration, float64, func() float64) {
	if maxAge <= 0 {
		maxAge = DefaultMaxStreamAge
	}
	if jitter == 0 {
		jitter = DefaultStreamAgeJitter
	}
	if jitter < 0 {
		jitter = 0
	}
	if r == nil {
		r = rand.Float64
	}
	return maxAge, jitter, r
}
