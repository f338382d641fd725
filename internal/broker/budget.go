package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BudgetStore is what the budgets need of the state store.
type BudgetStore interface {
	store.Budgets
	Key(ctx context.Context, name string) (store.Key, error)
}

// BudgetConfig configures a [BudgetBook].
type BudgetConfig struct {
	Store BudgetStore
	// MonthStartDay is the day of the month (1-28, UTC) budgets reset on.
	// Default 1.
	MonthStartDay int
	// Poll is how often the store is checked for budgets set on another
	// broker. Default 250 ms.
	Poll       time.Duration
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger
}

// BudgetBook computes what each budgeted key and account has spent this
// month (from the ledger's daily sums) and hands it to the proxies'
// WatchBudgets streams, with each proxy's share of the rpm limits.
type BudgetBook struct {
	st       BudgetStore
	startDay int
	poll     time.Duration
	clock    clock.Clock
	log      *slog.Logger

	kick chan struct{} // capacity 1: recompute soon

	mu       sync.Mutex
	snap     *budgetSnap
	changed  chan struct{}  // closed and replaced on every new snapshot or watcher change
	watchers map[string]int // proxy id → open streams
	warned   map[string]time.Time
}

type budgetSnap struct {
	budgets     []store.Budget
	byKey, byAc map[string]store.Spend
	resets      time.Time
}

// NewBudgetBook returns a book; Run keeps it current.
func NewBudgetBook(cfg BudgetConfig) (*BudgetBook, error) {
	if cfg.Store == nil {
		return nil, errors.New("broker: budgets need a store")
	}
	if cfg.MonthStartDay == 0 {
		cfg.MonthStartDay = 1
	}
	if cfg.MonthStartDay < 1 || cfg.MonthStartDay > 28 {
		return nil, fmt.Errorf("broker: budget month start day %d: want 1 to 28", cfg.MonthStartDay)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	b := &BudgetBook{
		st: cfg.Store, startDay: cfg.MonthStartDay, poll: cfg.Poll, clock: clock.OrReal(cfg.Clock), log: cfg.Logger,
		kick: make(chan struct{}, 1), changed: make(chan struct{}), watchers: map[string]int{}, warned: map[string]time.Time{},
		snap: &budgetSnap{},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Month returns the budget month holding now: its start and its end (the
// reset), on MonthStartDay at 00:00 UTC.
func (b *BudgetBook) Month(now time.Time) (start, reset time.Time) {
	now = now.UTC()
	start = time.Date(now.Year(), now.Month(), b.startDay, 0, 0, 0, 0, time.UTC)
	if now.Before(start) {
		start = start.AddDate(0, -1, 0)
	}
	return start, start.AddDate(0, 1, 0)
}

// Kick asks for a recomputation (usage stored, a budget set).
func (b *BudgetBook) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run recomputes on every kick, budget change on any broker and new month,
// until ctx ends.
func (b *BudgetBook) Run(ctx context.Context) {
	t := b.clock.NewTimer(0)
	defer t.Stop()
	var version int64 = -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-t.C():
			t.Reset(b.poll)
			v, err := b.st.BudgetsVersion(ctx)
			_, reset := b.Month(b.clock.Now())
			if err == nil && v == version && b.current().resets.Equal(reset) {
				continue
			}
			version = v
		}
		if err := b.recompute(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("budgets not recomputed; retrying", "error", err)
		}
	}
}

func (b *BudgetBook) current() *budgetSnap {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snap
}

// read computes the budgets' figures from the store now; the month's
// start comes with them.
func (b *BudgetBook) read(ctx context.Context) (*budgetSnap, time.Time, error) {
	all, err := b.st.AllBudgets(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	start, reset := b.Month(b.clock.Now())
	var byKey, byAc map[string]store.Spend
	if len(all) > 0 {
		if byKey, byAc, err = b.st.SpentSince(ctx, start); err != nil {
			return nil, time.Time{}, err
		}
	}
	return &budgetSnap{budgets: all, byKey: byKey, byAc: byAc, resets: reset}, start, nil
}

func (b *BudgetBook) recompute(ctx context.Context) error {
	snap, start, err := b.read(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snap = snap
	close(b.changed)
	b.changed = make(chan struct{})
	// Under mu: recompute runs from the background loop and from usage
	// intake at once, and warn keeps its once-a-month memory in a map.
	b.warn(snap, start)
	return nil
}

// Touches reports whether a key in keys has a premium budget: its
// figures must be current before the usage is acknowledged.
func (b *BudgetBook) Touches(keys map[string]bool) bool {
	for _, bg := range b.current().budgets {
		if bg.Kind == store.BudgetKey && keys[bg.Name] && bg.MonthlyPremium > 0 {
			return true
		}
	}
	return false
}

// warn logs once per budget and month when 80 % of it is spent.
func (b *BudgetBook) warn(s *budgetSnap, month time.Time) {
	for _, bg := range s.budgets {
		sp := s.spent(bg)
		for _, w := range []struct {
			what         string
			spent, limit float64
		}{
			{"monthly premium budget", sp.PremiumUnits, bg.MonthlyPremium},
			{"monthly token budget", float64(sp.Tokens), float64(bg.MonthlyTokens)},
		} {
			id := bg.Kind + "/" + bg.Name + "/" + w.what
			if w.limit <= 0 || w.spent < budgetWarnAt*w.limit || b.warned[id].Equal(month) {
				continue
			}
			b.warned[id] = month
			b.log.Warn("budget 80% spent", bg.Kind, bg.Name, "budget", w.what, "spent", w.spent, "limit", w.limit,
				"resets_at", s.resets.Format(time.RFC3339))
		}
	}
}

func (s *budgetSnap) spent(bg store.Budget) store.Spend {
	if bg.Kind == store.BudgetAccount {
		return s.byAc[bg.Name]
	}
	return s.byKey[bg.Name]
}

// states returns the budgets as proxy's sees them (its rpm shares).
func (b *BudgetBook) states(proxyID string) ([]*brokerv1.BudgetState, <-chan struct{}) {
	b.mu.Lock()
	s, changed := b.snap, b.changed
	ids := make([]string, 0, len(b.watchers))
	for id := range b.watchers {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	slices.Sort(ids)
	idx, n := slices.Index(ids, proxyID), int64(len(ids))
	out := make([]*brokerv1.BudgetState, 0, len(s.budgets))
	for _, bg := range s.budgets {
		st := s.state(bg, rpmShare(bg.RPM, idx, n))
		st.PremiumShare = premiumShare(bg.MonthlyPremium-st.GetPremiumSpent(), idx, n)
		out = append(out, st)
	}
	return out, changed
}

// premiumShare splits what is left of a premium budget among n proxies:
// whole units as rpmShare does, the fraction to the first; so the shares
// sum to left and a one-unit request fits in some share while a unit is
// left.
func premiumShare(left float64, idx int, n int64) float64 {
	if left <= 0 {
		return 0
	}
	if idx < 0 || n == 0 {
		return left
	}
	whole := int64(left)
	share := float64(rpmShare(whole, idx, n))
	if idx == 0 {
		share += left - float64(whole)
	}
	return share
}

// rpmShare splits rpm among n proxies, the remainder to the first ones,
// so the shares sum to rpm; a proxy not (yet) counted gets it all.
func rpmShare(rpm int64, idx int, n int64) int64 {
	if idx < 0 || n == 0 {
		return rpm
	}
	share := rpm / n
	if int64(idx) < rpm%n {
		share++
	}
	return share
}

func (s *budgetSnap) state(bg store.Budget, share int64) *brokerv1.BudgetState {
	sp := s.spent(bg)
	st := &brokerv1.BudgetState{
		MonthlyPremium: bg.MonthlyPremium, PremiumSpent: sp.PremiumUnits, MonthlyTokens: bg.MonthlyTokens, TokensSpent: sp.Tokens,
		Rpm: bg.RPM, RpmShare: share, ResetsAt: timestamppb.New(s.resets),
	}
	if bg.Kind == store.BudgetAccount {
		st.Account = bg.Name
	} else {
		st.Key = bg.Name
	}
	return st
}

// watch counts a proxy's stream for the rpm shares until done is called.
func (b *BudgetBook) watch(proxyID string) (done func()) {
	b.mu.Lock()
	b.watchers[proxyID]++
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		if b.watchers[proxyID]--; b.watchers[proxyID] == 0 {
			delete(b.watchers, proxyID)
		}
		close(b.changed)
		b.changed = make(chan struct{})
		b.mu.Unlock()
	}
}

// SetBudget sets a key's or an account's budget (admin keys only).
func (u *UsageService) SetBudget(ctx context.Context, req *brokerv1.SetBudgetRequest) (*brokerv1.SetBudgetResponse, error) {
	if k := callerKey(ctx); k != nil && !k.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "SetBudget needs an admin broker key; %q is not one", k.Name)
	}
	if u.budgets == nil {
		return nil, status.Error(codes.Unimplemented, "this broker keeps no budgets")
	}
	bg := store.Budget{MonthlyPremium: req.GetMonthlyPremium(), MonthlyTokens: req.GetMonthlyTokens(), RPM: req.GetRpm()}
	switch {
	case (req.GetKey() == "") == (req.GetAccount() == ""):
		return nil, status.Error(codes.InvalidArgument, "name either a key or an account")
	case bg.MonthlyPremium < 0 || bg.MonthlyTokens < 0 || bg.RPM < 0:
		return nil, status.Error(codes.InvalidArgument, "budgets are 0 (no limit) or positive")
	case req.GetAccount() != "" && (bg.MonthlyTokens != 0 || bg.RPM != 0):
		return nil, status.Error(codes.InvalidArgument, "an account takes only a monthly premium budget")
	case req.GetKey() != "":
		if _, err := u.budgets.st.Key(ctx, req.GetKey()); errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "no managed key %q", req.GetKey())
		} else if err != nil {
			return nil, status.Errorf(codes.Unavailable, "reading key %q: %v", req.GetKey(), err)
		}
		bg.Kind, bg.Name = store.BudgetKey, req.GetKey()
	default:
		bg.Kind, bg.Name = store.BudgetAccount, req.GetAccount()
	}
	if f := req.GetFields(); len(f) > 0 {
		if err := u.budgets.merge(ctx, &bg, f); err != nil {
			return nil, err
		}
	}
	if err := u.budgets.st.SetBudget(ctx, bg); err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing the budget: %v", err)
	}
	if err := u.budgets.recompute(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget stored; computing what is spent failed: %v", err)
	}
	u.log.Info("budget set", "by", KeyName(ctx), bg.Kind, bg.Name, "monthly_premium", bg.MonthlyPremium,
		"monthly_tokens", bg.MonthlyTokens, "rpm", bg.RPM)
	return &brokerv1.SetBudgetResponse{Budget: u.budgets.current().state(bg, bg.RPM)}, nil
}

// merge keeps the stored values of the fields not named.
func (b *BudgetBook) merge(ctx context.Context, bg *store.Budget, fields []string) error {
	all, err := b.st.AllBudgets(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "reading budgets: %v", err)
	}
	var cur store.Budget
	for _, x := range all {
		if x.Kind == bg.Kind && x.Name == bg.Name {
			cur = x
		}
	}
	for _, f := range fields {
		switch f {
		case "monthly_premium":
			cur.MonthlyPremium = bg.MonthlyPremium
		case "monthly_tokens":
			cur.MonthlyTokens = bg.MonthlyTokens
		case "rpm":
			cur.RPM = bg.RPM
		default:
			return status.Errorf(codes.InvalidArgument, "fields: %q is not monthly_premium, monthly_tokens or rpm", truncate(f))
		}
	}
	bg.MonthlyPremium, bg.MonthlyTokens, bg.RPM = cur.MonthlyPremium, cur.MonthlyTokens, cur.RPM
	return nil
}

// WatchBudgets streams the budgets to a proxy, at once and after every
// change, until the proxy goes away, the stream reaches its jittered maximum
// age or the service drains (these end with OK: the proxy reconnects, maybe
// to another replica).
func (u *UsageService) WatchBudgets(req *brokerv1.WatchBudgetsRequest, stream brokerv1.UsageService_WatchBudgetsServer) error {
	ctx := stream.Context()
	if k := callerKey(ctx); k != nil && k.Admin {
		return status.Errorf(codes.PermissionDenied, "WatchBudgets is for proxies' broker keys; %q is an admin key", k.Name)
	}
	if u.budgets == nil {
		return status.Error(codes.Unimplemented, "this broker keeps no budgets")
	}
	if req.GetProxyId() == "" || len(req.GetProxyId()) > maxUsageField {
		return status.Error(codes.InvalidArgument, "proxy_id is required (at most 200 bytes)")
	}
	defer u.budgets.watch(req.GetProxyId())()
	timer := u.clock.NewTimer(jitteredAge(u.maxAge, u.jitter, u.rand))
	defer timer.Stop()
	for {
		states, changed := u.budgets.states(req.GetProxyId())
		if err := stream.Send(&brokerv1.WatchBudgetsResponse{Budgets: states}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-timer.C():
			return nil
		case <-u.drain:
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

var (
	budgetLimitDesc = prometheus.NewDesc("copilot_broker_budget_limit",
		"A monthly budget: premium units or tokens, by kind (key or account) and name.", []string{"kind", "name", "type"}, nil)
	budgetSpentDesc = prometheus.NewDesc("copilot_broker_budget_spent",
		"What the ledger holds against a monthly budget this month.", []string{"kind", "name", "type"}, nil)
	budgetRemainingDesc = prometheus.NewDesc("copilot_broker_budget_remaining",
		"What is left of a monthly budget this month (0 when spent).", []string{"kind", "name", "type"}, nil)
)

// Describe implements [prometheus.Collector].
func (b *BudgetBook) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetLimitDesc
	ch <- budgetSpentDesc
	ch <- budgetRemainingDesc
}

// Collect implements [prometheus.Collector]: per budgeted key and account.
func (b *BudgetBook) Collect(ch chan<- prometheus.Metric) {
	s := b.current()
	for _, bg := range s.budgets {
		sp := s.spent(bg)
		for _, x := range []struct {
			typ          string
			limit, spent float64
		}{{"premium_units", bg.MonthlyPremium, sp.PremiumUnits}, {"tokens", float64(bg.MonthlyTokens), float64(sp.Tokens)}} {
			if x.limit <= 0 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, x.limit, bg.Kind, bg.Name, x.typ)
			ch <- prometheus.MustNewConstMetric(budgetSpentDesc, prometheus.GaugeValue, x.spent, bg.Kind, bg.Name, x.typ)
			ch <- prometheus.MustNewConstMetric(budgetRemainingDesc, prometheus.GaugeValue, max(0, x.limit-x.spent), bg.Kind, bg.Name, x.typ)
		}
	}
}
