package brokerclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SetConfig configures a [Set].
type SetConfig struct {
	// Client is the template of every account's client: Broker, backoff,
	// timeouts, clock and logger. Its Account is ignored; its Registerer
	// receives the default account's client series (unlabelled, as a
	// single-account proxy has them) and the set's per-account series.
	Client Config
	// Default is the proxy's --account, the account of keys without a third
	// field; NeedDefault says such keys exist (or no keys at all).
	Default     string
	NeedDefault bool
	// Named are the accounts keys name, alone or in pools.
	Named []string
	// All says some key is a '*' pool: every account the broker key may
	// read is watched.
	All bool
	// OnQuota receives each account's quota as the broker reports it in
	// WatchAccounts (the pool tracker's SetQuota). Optional.
	OnQuota func(account string, fetched time.Time, snaps ...pool.Snapshot)
}

// Set watches the accounts a proxy's keys need, one [Client] (one
// WatchToken stream) per account, and follows the broker's account set
// through WatchAccounts: an account added is watched if a key needs it (a
// '*' pool needs them all), an account removed is dropped at once (its
// requests get 503, its pools go on without it). Against a broker without
// WatchAccounts it watches the needed accounts as configured.
//
// The set is ready while at least one watched account has a usable token:
// one person's revoked seat must not take the proxy out of its load
// balancer for everyone else; the keys of accounts without a token get 503
// (pools fail over).
type Set struct {
	cfg     SetConfig
	log     *slog.Logger
	needed  map[string]bool // Named and Default (when needed)
	handles sync.Map        // name → *handle, never removed (bounded by the accounts seen)

	mu      sync.Mutex
	clients map[string]*running
	snap    atomic.Pointer[map[string]*Client] // clients, read without the lock
	stopped []*running                         // clients dropped, waited for when Run ends
	known   []string                           // the broker's account set; nil until WatchAccounts answered
	runCtx  context.Context
	wg      sync.WaitGroup
	m       *setMetrics
	// defReg registers the default account's client series; a client made
	// again (the account removed and added back) replaces its
	// predecessor's series instead of colliding with them.
	defReg *replacingRegisterer
}

type running struct {
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}
}

// NewSet returns a Set configured by cfg; [Set.Run] starts the watches.
func NewSet(cfg SetConfig) (*Set, error) {
	if cfg.Client.Broker == nil {
		return nil, errors.New("brokerclient: a broker client is required")
	}
	s := &Set{cfg: cfg, log: cfg.Client.Logger, needed: map[string]bool{}, clients: map[string]*running{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.NeedDefault {
		s.needed[cfg.Default] = true
	}
	for _, n := range cfg.Named {
		s.needed[n] = true
	}
	s.m = newSetMetrics(cfg.Client.Registerer, s)
	if cfg.Client.Registerer != nil {
		s.defReg = &replacingRegisterer{reg: cfg.Client.Registerer}
	}
	return s, nil
}

// Source returns the token source of account: it follows the account's
// client as the set starts and stops it, and says so when there is none.
func (s *Set) Source(account string) forward.TokenSource {
	if h, ok := s.handles.Load(account); ok {
		return h.(*handle)
	}
	h, _ := s.handles.LoadOrStore(account, &handle{set: s, name: account})
	return h.(*handle)
}

// Names returns the accounts of '*' pools: the broker's set, or before it is
// known (or from a broker without WatchAccounts) the accounts watched.
func (s *Set) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known != nil {
		return s.known
	}
	names := make([]string, 0, len(s.clients))
	for n := range s.clients {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// client returns the running client of name, or nil.
// It is one atomic load and a map read: every request's token goes
// through it.
func (s *Set) client(name string) *Client {
	if m := s.snap.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

// publishLocked refreshes the lock-free snapshot of the clients.
func (s *Set) publishLocked() {
	m := make(map[string]*Client, len(s.clients))
	for n, r := range s.clients {
		m[n] = r.c
	}
	s.snap.Store(&m)
}

// Run watches until ctx ends; it returns nil then.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.applyLocked()
	s.mu.Unlock()
	s.followAccounts(ctx)
	s.mu.Lock()
	stopping := s.stopped
	for name, r := range s.clients {
		r.cancel()
		delete(s.clients, name)
		stopping = append(stopping, r)
	}
	s.stopped = nil
	s.publishLocked()
	s.mu.Unlock()
	for _, r := range stopping {
		<-r.done
	}
	s.wg.Wait()
	return nil
}

// desiredLocked is the set of accounts to watch now.
func (s *Set) desiredLocked() map[string]bool {
	want := map[string]bool{}
	if s.known == nil {
		for n := range s.needed {
			want[n] = true
		}
		return want
	}
	for _, n := range s.known {
		if s.cfg.All || s.needed[n] {
			want[n] = true
		}
	}
	return want
}

// applyLocked starts and stops clients to match the desired set.
func (s *Set) applyLocked() {
	if s.runCtx == nil || s.runCtx.Err() != nil {
		return
	}
	want := s.desiredLocked()
	for name, r := range s.clients {
		if !want[name] {
			r.cancel()
			delete(s.clients, name)
			s.stopped = append(s.stopped, r)
			s.log.Info("account no longer served by the broker; dropped", "account", name)
		}
	}
	for name := range want {
		if s.clients[name] != nil {
			continue
		}
		cfg := s.cfg.Client
		cfg.Account = name
		cfg.Registerer = nil // per-account series come from the set's collector
		if name == s.cfg.Default && s.cfg.NeedDefault && s.defReg != nil {
			cfg.Registerer = s.defReg
		}
		cfg.Logger = s.log.With("account", name)
		c, err := New(cfg)
		if err != nil {
			s.log.Error("account client", "account", name, "error", err)
			continue
		}
		ctx, cancel := context.WithCancel(s.runCtx)
		r := &running{c: c, cancel: cancel, done: make(chan struct{})}
		s.clients[name] = r
		go func() {
			defer close(r.done)
			_ = c.Run(ctx)
		}()
		s.log.Info("watching account", "account", name)
	}
	s.publishLocked()
}

// followAccounts runs WatchAccounts until ctx ends, reconnecting like the
// token watch. A broker without it (UNIMPLEMENTED) leaves the set as
// configured.
func (s *Set) followAccounts(ctx context.Context) {
	cfg := s.cfg.Client
	cfg.Registerer = nil
	c, _ := New(cfg) // for its backoff settings and clock
	c.follow(ctx, s.log, watchLoop{what: "WatchAccounts", watch: s.watchAccounts, ended: func(err error) bool {
		if status.Code(err) == codes.Unimplemented {
			s.log.Info("the broker has no WatchAccounts; watching the configured accounts only")
			<-ctx.Done() // Run stops the clients when this returns
			return true
		}
		return false
	}})
}

func (s *Set) watchAccounts(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.cfg.Client.Broker.WatchAccounts(sctx, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		return false, err
	}
	return receive(stream, func(resp *brokerv1.WatchAccountsResponse, _ bool) { s.update(resp.GetAccounts()) })
}

// update takes in the broker's whole account set.
func (s *Set) update(accts []*brokerv1.Account) {
	names := make([]string, 0, len(accts))
	for _, a := range accts {
		names = append(names, a.GetName())
		if q := a.GetQuota(); q != nil && s.cfg.OnQuota != nil && q.GetFetchedAt().IsValid() {
			s.cfg.OnQuota(a.GetName(), q.GetFetchedAt().AsTime(), quotaSnapshots(q)...)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(names, s.known) && s.known != nil {
		return
	}
	s.known = names
	s.applyLocked()
}

func quotaSnapshots(q *brokerv1.Quota) []pool.Snapshot {
	var reset time.Time
	if q.GetResetAt().IsValid() {
		reset = q.GetResetAt().AsTime()
	}
	out := make([]pool.Snapshot, 0, len(q.GetSnapshots()))
	for _, s := range q.GetSnapshots() {
		out = append(out, pool.Snapshot{
			Kind: s.GetKind(), Entitlement: s.GetEntitlement(), Remaining: s.GetRemaining(),
			Unlimited: s.GetUnlimited(), OverageCount: s.GetOverageCount(), OveragePermitted: s.GetOveragePermitted(),
			Reset: reset,
		})
	}
	return out
}

// Ready returns nil while at least one watched account has a usable token.
func (s *Set) Ready() error {
	s.mu.Lock()
	names := make([]string, 0, len(s.clients))
	clients := make([]*Client, 0, len(s.clients))
	for n, r := range s.clients {
		names, clients = append(names, n), append(clients, r.c)
	}
	s.mu.Unlock()
	if len(clients) == 0 {
		return fmt.Errorf("%w: no account watched yet", forward.ErrNoToken)
	}
	var errs []error
	for i, c := range clients {
		err := c.Ready()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("account %q: %w", names[i], err))
	}
	return errors.Join(errs...)
}

// WaitReady blocks until [Set.Ready] is nil or ctx ends.
func (s *Set) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if s.Ready() == nil {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a token: %w (%v)", ctx.Err(), s.Ready())
		}
	}
}

// handle is the stable [forward.TokenSource] of one account.
type handle struct {
	set  *Set
	name string
	// lastQuota and lastIdentity rate-limit reports to the broker (under
	// qmu).
	qmu          sync.Mutex
	lastQuota    time.Time
	lastIdentity time.Time
}

// served returns the running client of the account, or the error that it is
// not served. The account's WatchToken stream (NOT_FOUND) and the set's
// WatchAccounts stream (the account gone from the set) both tell of a
// removal, in either order: the client sees the same error whichever
// arrives first.
func (h *handle) served() (*Client, error) {
	c := h.set.client(h.name)
	if c == nil || c.state.Load().notFound {
		return nil, fmt.Errorf("%w: account %q is not served by the broker for this proxy's key", forward.ErrNoToken, h.name)
	}
	return c, nil
}

func (h *handle) Token() (*forward.Token, error) {
	c, err := h.served()
	if err != nil {
		return nil, err
	}
	return c.Token()
}

func (h *handle) Refresh(ctx context.Context, rejected *forward.Token) (*forward.Token, error) {
	c, err := h.served()
	if err != nil {
		return nil, err
	}
	return c.Refresh(ctx, rejected)
}

// PoolReady fails while the broker reports the account's credential
// REJECTED or its token EXPIRED: pools skip the account at once, whatever
// the client keeps serving its per-person keys (see
// [forward.PoolChecker]).
func (h *handle) PoolReady() error {
	c := h.set.client(h.name)
	if c == nil {
		return fmt.Errorf("account %q is not served", h.name)
	}
	switch st := c.state.Load().status; st {
	case brokerv1.TokenStatus_TOKEN_STATUS_REJECTED, brokerv1.TokenStatus_TOKEN_STATUS_EXPIRED:
		return fmt.Errorf("account %q is %s", h.name, statusName(st))
	}
	return nil
}

// quotaReportFloor is the least time between two quota reports of one
// account (the broker has its own floor too).
const quotaReportFloor = 30 * time.Second

// ReportQuotaExceeded tells the broker an upstream 402 was answered for the
// account, so that it re-reads the quota; in the background, at most once
// per quotaReportFloor.
func (h *handle) ReportQuotaExceeded(rejected *forward.Token) {
	if rejected == nil {
		return
	}
	h.reportInBackground(&h.lastQuota, quotaReportFloor, &brokerv1.RefreshTokenRequest{
		Account: h.name, RejectedGeneration: rejected.Generation, Reason: brokerv1.RefreshReason_REFRESH_REASON_QUOTA_EXCEEDED,
	}, "quota-report")
}

// replacingRegisterer registers one client's collectors at a time: a
// second MustRegister first unregisters what the first registered.
type replacingRegisterer struct {
	reg  prometheus.Registerer
	mu   sync.Mutex
	prev []prometheus.Collector
}

func (r *replacingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.prev {
		r.reg.Unregister(c)
	}
	r.prev = cs
	r.reg.MustRegister(cs...)
}

func (r *replacingRegisterer) Register(c prometheus.Collector) error { return r.reg.Register(c) }

func (r *replacingRegisterer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }
