// Package keybudget enforces the broker's budgets on the proxy: each
// managed key's monthly premium and token budgets and its requests per
// minute, and the accounts' monthly premium budgets. A [Gate] follows the
// broker's WatchBudgets stream (what each key has spent, this proxy's share
// of each rpm limit) and answers, per request, whether it may go.
//
// What a proxy admits between two of the broker's figures it counts
// itself; the overshoot the whole fleet can make is bounded by the requests
// in flight when a budget runs out (docs/architecture.md, section 13).
package keybudget

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/backoff"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rpmWindow is the window of a requests-per-minute limit.
const rpmWindow = time.Minute

// Config configures a [Gate].
type Config struct {
	Client  brokerv1.UsageServiceClient
	ProxyID string
	// AccountSpent is told when an account's budget is spent (pools skip
	// it until reset); nil: nobody.
	AccountSpent func(account string, reset time.Time)
	Clock        clock.Clock
	Logger       *slog.Logger
}

// Decision is the gate's answer for one request.
type Decision struct {
	// Denied: answer 429 with Message, Retry-After RetryAfter.
	Denied     bool
	Budget     string // "monthly premium budget", "monthly token budget", "rpm limit"
	Message    string
	RetryAfter time.Duration
	// Warning, when set, is the X-Budget-Warning header: 80 % or more of a
	// budget is spent.
	Warning string
}

// Gate holds the budgets and this proxy's own counts since the broker's
// last figures.
type Gate struct {
	client  brokerv1.UsageServiceClient
	proxyID string
	onAcct  func(string, time.Time)
	clock   clock.Clock
	log     *slog.Logger

	mu       sync.Mutex
	keys     map[string]*keyState
	accounts map[string]*brokerv1.BudgetState // the accounts' premium budgets
	pending  map[string]pend                  // request id → premium admitted here, not yet acknowledged by the broker's ledger
}

// pend is a premium request admitted here whose usage event the broker has
// not acknowledged yet: the broker's figures cannot hold it.
type pend struct {
	key   string
	units float64
	at    time.Time
}

// pendMaxAge drops a pending entry whose event never came (a request that
// failed before an answer makes no event).
const pendMaxAge = 2 * time.Minute

type keyState struct {
	b       *brokerv1.BudgetState
	premium float64     // pending premium units of this key
	tokens  int64       // counted here since b arrived
	window  []time.Time // admissions within the rpm window, oldest first (at most the share)
}

// New returns a gate that admits everything until the broker's budgets
// arrive (Run).
func New(cfg Config) *Gate {
	g := &Gate{client: cfg.Client, proxyID: cfg.ProxyID, onAcct: cfg.AccountSpent, clock: clock.OrReal(cfg.Clock),
		log: cfg.Logger, keys: map[string]*keyState{}, pending: map[string]pend{}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// Run follows the broker's budgets until ctx ends; while the broker is
// away the last figures stay in force. A stream that delivered figures
// resets the backoff: the broker ends each stream at its maximum age, and
// the gate then reconnects within 100 ms (maybe to another replica).
func (g *Gate) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		got, err := g.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			failures = 0
		}
		d := backoff.Delay(time.Minute, time.Minute, 0) // a broker without budgets: ask again now and then
		if status.Code(err) != codes.Unimplemented {
			d = backoff.Delay(100*time.Millisecond, 5*time.Second, failures)
			failures++
		}
		if !backoff.Sleep(ctx, clock.Real{}, d) {
			return
		}
	}
}

// watch follows one stream until it ends; got reports whether it brought
// any figures.
func (g *Gate) watch(ctx context.Context) (got bool, err error) {
	st, err := g.client.WatchBudgets(ctx, &brokerv1.WatchBudgetsRequest{ProxyId: g.proxyID}, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	for {
		msg, err := st.Recv()
		if err != nil {
			return got, err
		}
		g.Set(msg.GetBudgets())
		got = true
	}
}

// Set replaces the budgets with the broker's figures.
func (g *Gate) Set(budgets []*brokerv1.BudgetState) {
	g.mu.Lock()
	now := g.clock.Now()
	next := make(map[string]*keyState, len(budgets))
	accounts := map[string]*brokerv1.BudgetState{}
	var spentAccounts []*brokerv1.BudgetState
	for _, b := range budgets {
		if b.GetAccount() != "" {
			accounts[b.GetAccount()] = b
			if accountSpent(b) {
				spentAccounts = append(spentAccounts, b)
			}
			continue
		}
		ks := &keyState{b: b}
		if old := g.keys[b.GetKey()]; old != nil {
			ks.window = old.window // admissions stay in the window
		}
		next[b.GetKey()] = ks
	}
	g.keys, g.accounts = next, accounts
	for id, p := range g.pending {
		if now.Sub(p.at) > pendMaxAge {
			delete(g.pending, id)
			continue
		}
		if ks := next[p.key]; ks != nil {
			ks.premium += p.units
		}
	}
	g.mu.Unlock()
	for _, b := range spentAccounts {
		if g.onAcct != nil {
			g.onAcct(b.GetAccount(), b.GetResetsAt().AsTime())
		}
	}
}

// accountSpent: the account's monthly premium budget is spent (pools skip
// it until the reset).
func accountSpent(b *brokerv1.BudgetState) bool {
	lim := b.GetMonthlyPremium()
	return lim > 0 && b.GetPremiumSpent() >= lim
}

// Admit decides whether request id of key, costing premiumUnits, may go,
// and counts it as pending until [Gate.Acked] when it may. account is the
// only account the request can go to (a key bound to one account), or ""
// for a pool: a premium request whose only account has spent its budget is
// refused, as a pool would skip that account.
func (g *Gate) Admit(key, account, id string, premiumUnits float64) Decision {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	ab := g.accounts[account]
	if ab != nil && premiumUnits > 0 && accountSpent(ab) {
		reset := ab.GetResetsAt().AsTime()
		return Decision{Denied: true, Budget: "monthly premium budget", RetryAfter: max(reset.Sub(now), time.Second),
			Message: fmt.Sprintf("account %q of key %q has spent its monthly premium budget (%s of %s premium units); it resets at %s",
				account, key, num(ab.GetPremiumSpent()), num(ab.GetMonthlyPremium()), reset.UTC().Format(time.RFC3339))}
	}
	ks := g.keys[key]
	if ks == nil {
		return Decision{Warning: accountWarning(ab, account, premiumUnits)}
	}
	b := ks.b
	reset := b.GetResetsAt().AsTime()
	untilReset := max(reset.Sub(now), time.Second)
	resetText := reset.UTC().Format(time.RFC3339)
	premium, tokens := b.GetPremiumSpent()+ks.premium, b.GetTokensSpent()+ks.tokens
	if lim := b.GetMonthlyPremium(); lim > 0 && premiumUnits > 0 {
		if b.GetPremiumSpent()+premiumUnits > lim {
			return Decision{Denied: true, Budget: "monthly premium budget", RetryAfter: untilReset,
				Message: fmt.Sprintf("key %q has spent its monthly premium budget (%s of %s premium units); it resets at %s", key, num(premium), num(lim), resetText)}
		}
		if ks.premium+premiumUnits > b.GetPremiumShare() {
			// What is left is held by requests in flight, here or on
			// other proxies; it frees up as they end.
			return Decision{Denied: true, Budget: "monthly premium budget", RetryAfter: time.Second,
				Message: fmt.Sprintf("key %q has %s of %s premium units left this month, all held by requests in flight; retry in a second", key, num(lim-b.GetPremiumSpent()), num(lim))}
		}
	}
	if lim := b.GetMonthlyTokens(); lim > 0 && tokens >= lim {
		return Decision{Denied: true, Budget: "monthly token budget", RetryAfter: untilReset,
			Message: fmt.Sprintf("key %q has spent its monthly token budget (%d of %d tokens); it resets at %s", key, tokens, lim, resetText)}
	}
	if b.GetRpm() > 0 {
		share := int(b.GetRpmShare())
		w := ks.window
		for len(w) > 0 && now.Sub(w[0]) >= rpmWindow {
			w = w[1:]
		}
		ks.window = w
		if len(w) >= share {
			retry := time.Second
			if len(w) > 0 {
				retry = max(w[0].Add(rpmWindow).Sub(now), time.Second)
			}
			return Decision{Denied: true, Budget: "rpm limit", RetryAfter: retry,
				Message: fmt.Sprintf("key %q is over its limit of %d requests per minute (this proxy's share: %d); retry in %s", key, b.GetRpm(), share, retry.Round(time.Second))}
		}
		ks.window = append(w, now)
	}
	if premiumUnits > 0 {
		ks.premium += premiumUnits
		g.pending[id] = pend{key: key, units: premiumUnits, at: now}
	}
	var d Decision
	if lim := b.GetMonthlyPremium(); lim > 0 && premium+premiumUnits >= 0.8*lim {
		d.Warning = fmt.Sprintf("monthly premium budget %d%% spent (%s of %s premium units); resets %s", int(100*(premium+premiumUnits)/lim), num(premium+premiumUnits), num(lim), resetText)
	} else if lim := b.GetMonthlyTokens(); lim > 0 && tokens >= lim*8/10 {
		d.Warning = fmt.Sprintf("monthly token budget %d%% spent (%d of %d tokens); resets %s", 100*tokens/lim, tokens, lim, resetText)
	} else {
		d.Warning = accountWarning(ab, account, premiumUnits)
	}
	return d
}

// accountWarning is the X-Budget-Warning of a premium request whose only
// account has spent 80 % or more of its budget ("" otherwise).
func accountWarning(ab *brokerv1.BudgetState, account string, premiumUnits float64) string {
	lim, spent := ab.GetMonthlyPremium(), ab.GetPremiumSpent()
	if lim <= 0 || premiumUnits <= 0 || spent < 0.8*lim {
		return ""
	}
	return fmt.Sprintf("account %q monthly premium budget %d%% spent (%s of %s premium units); resets %s",
		account, int(100*spent/lim), num(spent), num(lim), ab.GetResetsAt().AsTime().UTC().Format(time.RFC3339))
}

// Acked tells the gate that the broker stored (or refused, or the buffer
// dropped) the events of these request ids: the broker's figures hold
// them from now on.
func (g *Gate) Acked(ids []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		p, ok := g.pending[id]
		if !ok {
			continue
		}
		delete(g.pending, id)
		if ks := g.keys[p.key]; ks != nil {
			ks.premium -= p.units
		}
	}
}

// Len returns the number of budgets held.
func (g *Gate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.keys)
}

// KeyBudget returns a copy of the broker's latest figures for key's
// budget, as the gate enforces them, or nil when it holds none (a test or
// a benchmark of budget propagation reads them here).
func (g *Gate) KeyBudget(key string) *brokerv1.BudgetState {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ks := g.keys[key]; ks != nil {
		return proto.CloneOf(ks.b)
	}
	return nil
}

// AccountBudget is [Gate.KeyBudget] for an account's budget.
func (g *Gate) AccountBudget(account string) *brokerv1.BudgetState {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.accounts[account]; b != nil {
		return proto.CloneOf(b)
	}
	return nil
}

// AddTokens counts tokens a key used here since the broker's last figures.
func (g *Gate) AddTokens(key string, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ks := g.keys[key]; ks != nil {
		ks.tokens += n
	}
}

func num(f float64) string { return fmt.Sprintf("%.4g", f) }
