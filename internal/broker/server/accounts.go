package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"

	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/broker/credfile"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// fleet owns the accounts of a broker: for each one a token manager, a
// quota poller and a health reporter, served by the Service while it
// exists. Accounts come from the default token (GITHUB_TOKEN or the token
// file, account "") and from the accounts directory, one file per account.
type fleet struct {
	cfg     Config
	log     *slog.Logger
	svc     *broker.Service
	health  *broker.HealthServer
	metrics *broker.Metrics
	epoch   string
	fetch   quota.FetchFunc
	// exchange is the token exchange every account shares (one HTTP client
	// and connection pool to GitHub, as the quota fetcher's).
	exchange tokens.ExchangeFunc

	ctx    context.Context // ends when the fleet closes
	cancel context.CancelFunc

	mu       sync.Mutex
	members  map[string]*member
	identity *broker.IdentityMetrics // counts the exchange's refusals of the profile
	closed   bool
	healthMu sync.Mutex // serializes updateAggregateHealth
}

// member is one account's lifecycle.
type member struct {
	name   string
	mgr    *tokens.Manager
	poller *quota.Poller
	stop   context.CancelFunc
	done   sync.WaitGroup
}

func newFleet(cfg Config, svc *broker.Service, health *broker.HealthServer, metrics *broker.Metrics, epoch string) *fleet {
	client := cfg.Exchange.HTTPClient
	if client == nil {
		client = tokens.NewHTTPClient()
	}
	h := http.Header{}
	// The GitHub API side of the identity, as on the exchange: the held
	// upstream profile, read at every fetch (the flags' identity when there
	// is no holder).
	cfg.Exchange.Editor.SetExchangeHeaders(h)
	// The same client as the exchange; the fetcher refuses redirects on its
	// copy, so the GitHub token never follows one.
	fetcher := quota.NewFetcher(quota.FetchConfig{APIURL: cfg.GitHubAPIURL, HTTPClient: client, Headers: h, Profile: cfg.Exchange.Profile})
	exCfg := cfg.Exchange
	exCfg.APIURL, exCfg.HTTPClient = cfg.GitHubAPIURL, client
	ctx, cancel := context.WithCancel(context.Background())
	return &fleet{
		cfg: cfg, log: cfg.Logger, svc: svc, health: health, metrics: metrics, epoch: epoch,
		fetch: fetcher.Fetch, exchange: tokens.NewExchanger(exCfg).Exchange, ctx: ctx, cancel: cancel, members: map[string]*member{},
	}
}

// followProfile tells every account's token manager when the upstream
// profile changes, so an account whose exchange GitHub refused for its
// identity exchanges again at once with the new one. It returns when ctx
// ends.
func (f *fleet) followProfile(ctx context.Context, h *identity.Holder) {
	changed := h.Changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		changed = h.Changed() // before telling: a change from now on is seen
		f.mu.Lock()
		mgrs := make([]*tokens.Manager, 0, len(f.members))
		for _, m := range f.members {
			mgrs = append(mgrs, m.mgr)
		}
		f.mu.Unlock()
		for _, mgr := range mgrs {
			mgr.ProfileChanged()
		}
	}
}

// HealthService returns the grpc.health.v1 service name that follows an
// account's token: the API's service name, then "/" and the account name.
func HealthService(account string) string {
	return broker.HealthServices[0] + "/" + account
}

// add starts an account and makes the Service serve it.
func (f *fleet) add(name string, tok secret.Secret) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("broker stopping")
	}
	if _, ok := f.members[name]; ok {
		return fmt.Errorf("account %q exists", name)
	}
	m := &member{name: name}
	mcfg := tokens.ManagerConfig{
		Account:          name,
		GitHubToken:      tok,
		Exchange:         f.identity.InstrumentIdentity(name, f.metrics.InstrumentExchange(name, f.exchange)),
		Clock:            f.cfg.Clock,
		Logger:           f.cfg.Logger, // the manager adds the account
		Epoch:            f.epoch,
		MinForceInterval: f.cfg.MinForceInterval,
	}
	if f.cfg.Tune != nil {
		f.cfg.Tune(&mcfg)
	}
	var err error
	if m.mgr, err = tokens.NewManager(mcfg); err != nil {
		return fmt.Errorf("account %q: %w", name, err)
	}
	pcfg := quota.PollerConfig{
		Fetch: f.fetch, Token: m.mgr.GitHubToken, Interval: f.cfg.QuotaInterval,
		Clock: f.cfg.Clock, Logger: f.cfg.Logger.With("account", name),
	}
	if f.cfg.QuotaTune != nil {
		f.cfg.QuotaTune(&pcfg)
	}
	if m.poller, err = quota.NewPoller(pcfg); err != nil {
		_ = m.mgr.Close()
		return err
	}
	if err := f.svc.AddAccount(name, m.mgr, m.poller); err != nil {
		_ = m.mgr.Close()
		return err
	}
	ctx, stop := context.WithCancel(f.ctx)
	m.stop = stop
	m.done.Add(2)
	go func() { defer m.done.Done(); m.poller.Run(ctx) }()
	go func() { defer m.done.Done(); f.reportHealth(ctx, m) }()
	f.members[name] = m
	return nil
}

// remove stops serving an account (its watch streams end NOT_FOUND) and
// stops its lifecycle.
func (f *fleet) remove(name string) {
	f.mu.Lock()
	m, ok := f.members[name]
	delete(f.members, name)
	f.mu.Unlock()
	if !ok {
		return
	}
	f.svc.RemoveAccount(name) // first: its streams end NOT_FOUND, not OK at the manager's close
	f.stopMember(m)
	f.metrics.ForgetAccount(name) // again: an exchange cut short by the stop may have counted
	f.health.SetServingStatus(HealthService(name), healthpb.HealthCheckResponse_NOT_SERVING)
	f.updateAggregateHealth()
}

func (f *fleet) stopMember(m *member) {
	m.stop()
	m.done.Wait()
	_ = m.mgr.Close()
}

// setToken hands an account a credential read from its file: a changed one
// is exchanged at once; an unchanged one (SIGHUP) is retried only while
// rejected, as the operator may have restored the account's access.
func (f *fleet) setToken(name string, tok secret.Secret, changed bool) {
	f.mu.Lock()
	m, ok := f.members[name]
	f.mu.Unlock()
	if !ok {
		return
	}
	if changed {
		m.mgr.SetGitHubToken(tok)
		m.poller.Poke()
		return
	}
	if m.mgr.Snapshot().Status == tokens.StatusRejected {
		f.log.Info("retrying the rejected GitHub credential on request", "account", name)
		m.mgr.RetryRejected()
	}
}

// dirEvent applies a change of the accounts directory.
func (f *fleet) dirEvent(e credfile.Event) {
	switch e.Kind {
	case credfile.Added:
		if err := f.add(e.Name, e.Token); err != nil {
			f.log.Warn("account not added", "account", e.Name, "error", err)
		}
	case credfile.Changed:
		f.setToken(e.Name, e.Token, true)
	case credfile.Unchanged:
		f.setToken(e.Name, e.Token, false)
	case credfile.Removed:
		f.remove(e.Name)
	}
}

// manager returns an account's token manager.
func (f *fleet) manager(name string) (*tokens.Manager, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[name]
	if !ok {
		return nil, false
	}
	return m.mgr, true
}

// snapshots returns every account's state, by name.
func (f *fleet) snapshots() []tokens.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]tokens.State, 0, len(f.members))
	for _, m := range f.members {
		out = append(out, m.mgr.Snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

// ready is nil when at least one account can hand out a token.
func (f *fleet) ready() error {
	states := f.snapshots()
	if len(states) == 0 {
		return errors.New("no accounts")
	}
	for _, st := range states {
		if st.Status.HasToken() {
			return nil
		}
	}
	st := states[0]
	if st.LastError != "" {
		return fmt.Errorf("no account has a token; account %q: token %s: %s", st.Account, st.Status, st.LastError)
	}
	return fmt.Errorf("no account has a token; account %q: token %s", st.Account, st.Status)
}

// reportHealth keeps the account's health service in line with its token
// until ctx ends, and the API's own service name with the broker's
// aggregate (see updateAggregateHealth).
func (f *fleet) reportHealth(ctx context.Context, m *member) {
	updates, cancel := m.mgr.Subscribe()
	defer cancel()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				return
			}
			if h := broker.HealthStatus(st.Status); h != last {
				f.health.SetServingStatus(HealthService(m.name), h)
				last = h
				f.updateAggregateHealth()
			}
		case <-ctx.Done():
			return
		}
	}
}

// updateAggregateHealth sets the API's service name: it follows the default
// account when there is one (as before accounts existed), and otherwise is
// SERVING while any account can hand out a token.
func (f *fleet) updateAggregateHealth() {
	f.healthMu.Lock()
	defer f.healthMu.Unlock()
	var h healthpb.HealthCheckResponse_ServingStatus
	if mgr, ok := f.manager(""); ok {
		h = broker.HealthStatus(mgr.Snapshot().Status)
	} else {
		h = healthpb.HealthCheckResponse_NOT_SERVING
		if f.ready() == nil {
			h = healthpb.HealthCheckResponse_SERVING
		}
	}
	for _, svc := range broker.HealthServices {
		f.health.SetServingStatus(svc, h)
	}
}

// close stops every account. Call it after the gRPC server has stopped.
func (f *fleet) close() {
	f.mu.Lock()
	f.closed = true
	members := f.members
	f.members = map[string]*member{}
	f.mu.Unlock()
	f.cancel()
	for _, m := range members {
		f.stopMember(m)
	}
}
