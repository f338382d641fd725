package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// accountSet is an immutable set of accounts. A new set replaces it on every
// change, of membership or of an account's view, and changed is then closed:
// WatchAccounts streams wait on it.
type accountSet struct {
	byName  map[string]*account
	sorted  []*account // by name
	changed chan struct{}
}

// AddAccount starts serving an account: its token source and, if not nil,
// its quota readings. It fails for a name already served.
func (s *Service) AddAccount(name string, src Source, q QuotaSource) error {
	if src == nil {
		return fmt.Errorf("broker: account %q has a nil source", name)
	}
	a := &account{name: name, src: src, quota: q, removed: make(chan struct{}), poke: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return fmt.Errorf("broker: service closed")
	default:
	}
	cur := s.set.Load()
	if _, ok := cur.byName[name]; ok {
		return fmt.Errorf("broker: account %q already served", name)
	}
	// Subscribe before the account is visible, so its view never misses
	// a change.
	f := &follower{a: a}
	f.tok, f.stopTok = src.Subscribe()
	if q != nil {
		f.quota, f.stopQuota = q.Subscribe()
	}
	a.view.Store(s.accountView(a, src.Snapshot(), quotaOf(q)))
	next := make(map[string]*account, len(cur.byName)+1)
	for n, x := range cur.byName {
		next[n] = x
	}
	next[name] = a
	s.publishLocked(next)
	s.identityMetrics.init(name)
	s.loops.Add(1)
	go s.follow(f)
	s.log.Info("account added", "account", name)
	return nil
}

// RemoveAccount stops serving an account: its WatchToken streams end with
// NOT_FOUND, WatchAccounts streams get the set without it, and later calls
// naming it are NOT_FOUND. It reports whether the account was served. The
// caller closes the account's sources.
func (s *Service) RemoveAccount(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.set.Load()
	a, ok := cur.byName[name]
	if !ok {
		return false
	}
	next := make(map[string]*account, len(cur.byName))
	for n, x := range cur.byName {
		if n != name {
			next[n] = x
		}
	}
	close(a.removed)
	s.publishLocked(next)
	s.metrics.ForgetAccount(name)
	s.identityMetrics.Forget(name)
	s.log.Info("account removed", "account", name)
	return true
}

// Accounts returns the names of the served accounts in order.
func (s *Service) Accounts() []string {
	set := s.set.Load()
	names := make([]string, len(set.sorted))
	for i, a := range set.sorted {
		names[i] = a.name
	}
	return names
}

// eachAccount calls f for every served account, in name order.
func (s *Service) eachAccount(f func(a *account)) {
	for _, a := range s.set.Load().sorted {
		f(a)
	}
}

// publishLocked installs a new set (s.mu held) and wakes its watchers.
func (s *Service) publishLocked(byName map[string]*account) {
	sorted := make([]*account, 0, len(byName))
	for _, a := range byName {
		sorted = append(sorted, a)
	}
	slices.SortFunc(sorted, func(x, y *account) int { return strings.Compare(x.name, y.name) })
	old := s.set.Swap(&accountSet{byName: byName, sorted: sorted, changed: make(chan struct{})})
	close(old.changed)
}

// bump publishes the same membership after an account's view changed.
func (s *Service) bump() {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.set.Load()
	old := s.set.Swap(&accountSet{byName: cur.byName, sorted: cur.sorted, changed: make(chan struct{})})
	close(old.changed)
}

// follower is an account's subscriptions for [Service.follow].
type follower struct {
	a         *account
	tok       <-chan tokens.State
	stopTok   func()
	quota     <-chan quota.Reading // nil without a quota source
	stopQuota func()
}

// follow keeps an account's view in line with its token state and quota
// until the account is removed or the service closes.
func (s *Service) follow(f *follower) {
	defer s.loops.Done()
	defer f.stopTok()
	if f.stopQuota != nil {
		defer f.stopQuota()
	}
	a, tokUpdates, qUpdates := f.a, f.tok, f.quota
	st, q := a.src.Snapshot(), quotaOf(a.quota)
	profChanged := s.profileChanged()
	limitsChanged := s.proxies.Changed()
	for {
		select {
		case <-a.poke:
		case <-profChanged:
			profChanged = s.profileChanged()
		case <-limitsChanged:
			limitsChanged = s.proxies.Changed()
		case x, ok := <-tokUpdates:
			if !ok {
				tokUpdates = nil
				continue
			}
			st = x
		case r, ok := <-qUpdates:
			if !ok {
				qUpdates = nil
				continue
			}
			q = r
		case <-a.removed:
			return
		case <-s.closing:
			return
		}
		v := s.accountView(a, st, q)
		if proto.Equal(v, a.view.Load()) {
			continue
		}
		a.view.Store(v)
		s.bump()
	}
}

func quotaOf(q QuotaSource) quota.Reading {
	if q == nil {
		return quota.Reading{}
	}
	return q.Current()
}

// readable returns the views of the accounts in set that ctx's key may read,
// in name order.
func readable(ctx context.Context, set *accountSet) []*brokerv1.Account {
	out := make([]*brokerv1.Account, 0, len(set.sorted))
	for _, a := range set.sorted {
		if MayRead(ctx, a.name) {
			out = append(out, a.view.Load())
		}
	}
	return out
}

// ListAccounts returns the accounts the caller's key may read, as of now.
func (s *Service) ListAccounts(ctx context.Context, _ *brokerv1.ListAccountsRequest) (*brokerv1.ListAccountsResponse, error) {
	set := s.set.Load()
	resp := &brokerv1.ListAccountsResponse{Accounts: make([]*brokerv1.Account, 0, len(set.sorted))}
	for _, a := range set.sorted {
		if MayRead(ctx, a.name) {
			resp.Accounts = append(resp.Accounts, s.accountView(a, a.src.Snapshot(), quotaOf(a.quota)))
		}
	}
	return resp, nil
}

// WatchAccounts sends the accounts the caller may read at once and again
// after every change among them, until the client goes away, the stream
// reaches its jittered maximum age or the service drains (these end with OK).
// Changes coalesce: a slow stream skips to the newest set.
func (s *Service) WatchAccounts(_ *brokerv1.WatchAccountsRequest, stream brokerv1.TokenBrokerService_WatchAccountsServer) error {
	select {
	case <-s.draining:
		return nil
	default:
	}
	ctx := stream.Context()
	s.metrics.accountWatcherAdded()
	defer s.metrics.accountWatcherRemoved()
	timer := s.clock.NewTimer(s.streamAge())
	defer timer.Stop()
	var last []*brokerv1.Account
	for {
		set := s.set.Load()
		views := readable(ctx, set)
		if last == nil || !slices.Equal(views, last) { // views are shared pointers: equal means unchanged
			if err := stream.Send(&brokerv1.WatchAccountsResponse{Accounts: views}); err != nil {
				return err
			}
			last = views
		}
		select {
		case <-set.changed:
		case <-timer.C():
			return nil
		case <-s.draining:
			return nil
		case <-s.closing:
			return status.Error(codes.Unavailable, "broker stopping")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// accountProto is an account's API form: no token value, ever.
func accountProto(name string, st tokens.State, q quota.Reading) *brokerv1.Account {
	a := &brokerv1.Account{
		Name:       name,
		Status:     StatusToProto(st.Status),
		Sku:        st.SKU,
		ExpiresAt:  timestamp(st.ExpiresAt),
		Generation: st.Generation,
		Epoch:      st.Epoch,
		ApiBaseUrl: st.APIBaseURL,
		LastError:  st.LastError,
	}
	if q.FetchedAt.IsZero() && q.LastError == "" {
		return a
	}
	a.Quota = &brokerv1.Quota{
		ResetAt:   timestamp(q.ResetAt),
		FetchedAt: timestamp(q.FetchedAt),
		Plan:      q.Plan,
		LastError: q.LastError,
	}
	for _, sn := range q.Snapshots {
		a.Quota.Snapshots = append(a.Quota.Snapshots, &brokerv1.QuotaSnapshot{
			Kind: sn.Kind, Entitlement: sn.Entitlement, Remaining: sn.Remaining,
			PercentRemaining: sn.PercentRemaining, Unlimited: sn.Unlimited,
			OverageCount: sn.OverageCount, OveragePermitted: sn.OveragePermitted,
			Exhausted: sn.Exhausted(),
		})
	}
	return a
}
