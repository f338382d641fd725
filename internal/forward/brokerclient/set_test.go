package brokerclient

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// multiBroker is a fake broker with several accounts: WatchToken per
// account (NOT_FOUND for an unknown one, and for a removed one's open
// streams), WatchAccounts of the whole set.
type multiBroker struct {
	brokerv1.UnimplementedTokenBrokerServiceServer
	mu            sync.Mutex
	toks          map[string]*brokerv1.Token
	quota         map[string]*brokerv1.Quota
	changed       chan struct{}
	noAccounts    bool // WatchAccounts UNIMPLEMENTED
	watching      map[string]int
	quotaRefresh  []string
	tokenWatchers int
}

func newMultiBroker(accounts ...string) *multiBroker {
	m := &multiBroker{toks: map[string]*brokerv1.Token{}, quota: map[string]*brokerv1.Quota{}, changed: make(chan struct{}), watching: map[string]int{}}
	for _, a := range accounts {
		m.toks[a] = acctTok(a, 1)
	}
	return m
}

func acctTok(name string, gen uint64) *brokerv1.Token {
	return &brokerv1.Token{Account: name, Value: "tok-" + name, Generation: gen, Epoch: "e", Status: valid,
		ExpiresAt: timestamppb.New(start.Add(time.Hour)), ApiBaseUrl: "https://api.githubcopilot.com"}
}

func (m *multiBroker) set(name string, t *brokerv1.Token) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t == nil {
		delete(m.toks, name)
	} else {
		m.toks[name] = t
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *multiBroker) WatchToken(req *brokerv1.WatchTokenRequest, stream grpc.ServerStreamingServer[brokerv1.WatchTokenResponse]) error {
	name := req.GetAccount()
	m.mu.Lock()
	m.watching[name]++
	m.tokenWatchers++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.watching[name]--
		m.mu.Unlock()
	}()
	var last *brokerv1.Token
	for {
		m.mu.Lock()
		t, ok := m.toks[name]
		ch := m.changed
		m.mu.Unlock()
		if !ok {
			return status.Errorf(codes.NotFound, "account %q not found", name)
		}
		if t != last {
			if err := stream.Send(&brokerv1.WatchTokenResponse{Token: t}); err != nil {
				return err
			}
			last = t
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (m *multiBroker) WatchAccounts(_ *brokerv1.WatchAccountsRequest, stream grpc.ServerStreamingServer[brokerv1.WatchAccountsResponse]) error {
	if m.noAccounts {
		return status.Error(codes.Unimplemented, "no")
	}
	for {
		m.mu.Lock()
		var accts []*brokerv1.Account
		for n, t := range m.toks {
			accts = append(accts, &brokerv1.Account{Name: n, Status: t.GetStatus(), Quota: m.quota[n]})
		}
		ch := m.changed
		m.mu.Unlock()
		if err := stream.Send(&brokerv1.WatchAccountsResponse{Accounts: accts}); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (m *multiBroker) RefreshToken(_ context.Context, req *brokerv1.RefreshTokenRequest) (*brokerv1.RefreshTokenResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.GetReason() == brokerv1.RefreshReason_REFRESH_REASON_QUOTA_EXCEEDED {
		m.quotaRefresh = append(m.quotaRefresh, req.GetAccount())
	}
	return &brokerv1.RefreshTokenResponse{Token: m.toks[req.GetAccount()]}, nil
}

func (m *multiBroker) watchers(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.watching[name]
}

func startSet(t *testing.T, m *multiBroker, cfg SetConfig) *Set {
	t.Helper()
	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer()
	brokerv1.RegisterTokenBrokerServiceServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///broker", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client = Config{Broker: brokerv1.NewTokenBrokerServiceClient(conn), Clock: clock.NewFake(start),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, CallTimeout: 2 * time.Second, Registerer: cfg.Client.Registerer}
	s, err := NewSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; conn.Close(); srv.Stop() })
	return s
}

// eventually polls cond for up to 10 s (the watches run on real
// connections).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

func hasToken(s *Set, name string) func() bool {
	return func() bool { tk, err := s.Source(name).Token(); return err == nil && tk.Value.Reveal() == "tok-"+name }
}

func TestSetWatchesExactlyTheNeededAccounts(t *testing.T) {
	m := newMultiBroker("alice", "bob", "carol", "dave")
	s := startSet(t, m, SetConfig{Named: []string{"alice", "bob"}})
	eventually(t, "alice and bob", func() bool { return hasToken(s, "alice")() && hasToken(s, "bob")() })
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"carol", "dave"} {
		if m.watchers(n) != 0 {
			t.Errorf("%s watched; want only the accounts keys name", n)
		}
		if _, err := s.Source(n).Token(); !errors.Is(err, forward.ErrNoToken) {
			t.Errorf("%s Token error = %v; want ErrNoToken", n, err)
		}
	}
	// bob is removed: dropped at once; alice goes on.
	m.set("bob", nil)
	// Wait for the account set's removal, not only bob's own NOT_FOUND:
	// were bob added back before the set saw him go, the set would see no
	// change and keep his stopped watch (its retry waits on the fake clock).
	eventually(t, "bob dropped", func() bool { return s.client("bob") == nil })
	if _, err := s.Source("bob").Token(); !strings.Contains(err.Error(), `"bob" is not served`) {
		t.Errorf("bob Token error = %v; want it named as not served", err)
	}
	if !hasToken(s, "alice")() {
		t.Error("alice lost her token when bob was removed")
	}
	// bob comes back: watched again.
	m.set("bob", acctTok("bob", 1))
	eventually(t, "bob back", hasToken(s, "bob"))
	eventually(t, "one stream per account", func() bool { return m.watchers("alice") == 1 && m.watchers("bob") == 1 })
}

// TestSetNotFoundBeforeTheAccountSet pins the other order of a removal: the
// account's WatchToken stream says NOT_FOUND before (here: without) the
// account set saying it is gone. The error is the same either way.
func TestSetNotFoundBeforeTheAccountSet(t *testing.T) {
	m := newMultiBroker("alice", "bob")
	m.noAccounts = true
	s := startSet(t, m, SetConfig{Named: []string{"alice", "bob"}})
	eventually(t, "alice and bob", func() bool { return hasToken(s, "alice")() && hasToken(s, "bob")() })
	m.set("bob", nil)
	eventually(t, "bob's NOT_FOUND", func() bool { c := s.client("bob"); return c != nil && c.state.Load().notFound })
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"Token", func() error { _, err := s.Source("bob").Token(); return err }},
		{"Refresh", func() error { _, err := s.Source("bob").Refresh(context.Background(), nil); return err }},
	} {
		if err := call.do(); !errors.Is(err, forward.ErrNoToken) || !strings.Contains(err.Error(), `"bob" is not served`) {
			t.Errorf("bob %s error = %v; want ErrNoToken naming bob as not served", call.name, err)
		}
	}
	if !hasToken(s, "alice")() {
		t.Error("alice lost her token when bob was removed")
	}
}

func TestSetStarFollowsTheBroker(t *testing.T) {
	m := newMultiBroker("alice")
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	quotas := map[string][]pool.Snapshot{}
	s := startSet(t, m, SetConfig{All: true, Client: Config{Registerer: reg}, OnQuota: func(a string, _ time.Time, snaps ...pool.Snapshot) {
		mu.Lock()
		quotas[a] = snaps
		mu.Unlock()
	}})
	eventually(t, "alice", hasToken(s, "alice"))
	m.mu.Lock()
	m.quota["erin"] = &brokerv1.Quota{FetchedAt: timestamppb.New(start), ResetAt: timestamppb.New(start.Add(time.Hour)),
		Snapshots: []*brokerv1.QuotaSnapshot{{Kind: "chat", Entitlement: 50, Remaining: 0, Exhausted: true}}}
	m.mu.Unlock()
	m.set("erin", acctTok("erin", 1))
	eventually(t, "erin added", hasToken(s, "erin"))
	if got := s.Names(); !slices.Equal(got, []string{"alice", "erin"}) {
		t.Errorf("Names() = %v; want [alice erin]", got)
	}
	mu.Lock()
	q := quotas["erin"]
	mu.Unlock()
	if len(q) != 1 || !q[0].Exhausted() || !q[0].Reset.Equal(start.Add(time.Hour)) {
		t.Errorf("erin's quota = %+v; want chat exhausted until the reset", q)
	}
	m.set("alice", nil)
	eventually(t, "alice removed", func() bool { return slices.Equal(s.Names(), []string{"erin"}) })
	if hasToken(s, "alice")() {
		t.Error("alice still has a token after removal")
	}
	// Per-account series.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "copilot_proxy_account_token_status" {
			for _, mt := range mf.GetMetric() {
				found = found || mt.GetLabel()[0].GetValue() == "erin"
			}
		}
	}
	if !found {
		t.Error("no copilot_proxy_account_token_status series for erin")
	}
}

func TestSetWithoutWatchAccounts(t *testing.T) {
	m := newMultiBroker("alice")
	m.noAccounts = true
	s := startSet(t, m, SetConfig{Named: []string{"alice", "ghost"}, All: true})
	eventually(t, "alice", hasToken(s, "alice"))
	if got := s.Names(); !slices.Equal(got, []string{"alice", "ghost"}) {
		t.Errorf("Names() without WatchAccounts = %v; want the configured accounts", got)
	}
	if _, err := s.Source("ghost").Token(); !errors.Is(err, forward.ErrNoToken) {
		t.Errorf("ghost Token error = %v; want ErrNoToken", err)
	}
	// Ready: one account has a token.
	if err := s.Ready(); err != nil {
		t.Errorf("Ready() = %v; want nil while alice has a token", err)
	}
}

func TestSetReportsQuota(t *testing.T) {
	m := newMultiBroker("alice")
	s := startSet(t, m, SetConfig{Named: []string{"alice"}})
	eventually(t, "alice", hasToken(s, "alice"))
	tk, _ := s.Source("alice").Token()
	qr := s.Source("alice").(forward.QuotaReporter)
	qr.ReportQuotaExceeded(tk)
	qr.ReportQuotaExceeded(tk) // within the floor: dropped
	eventually(t, "the quota report", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.quotaRefresh) == 1 })
	s.wg.Wait() // every report started has been sent: the dropped one never started
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.quotaRefresh) != 1 || m.quotaRefresh[0] != "alice" {
		t.Errorf("quota refreshes %v; want one for alice", m.quotaRefresh)
	}
}

func TestSetReadyNeedsOneAccount(t *testing.T) {
	m := newMultiBroker("alice", "bob")
	m.toks["bob"] = &brokerv1.Token{Account: "bob", Status: brokerv1.TokenStatus_TOKEN_STATUS_REJECTED, Epoch: "e", Generation: 1}
	s := startSet(t, m, SetConfig{Named: []string{"bob"}})
	eventually(t, "bob's state", func() bool { err := s.Ready(); return err != nil && strings.Contains(err.Error(), "REJECTED") })
	m.set("alice", acctTok("alice", 1))
	s2 := startSet(t, m, SetConfig{Named: []string{"alice", "bob"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s2.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady with alice valid and bob rejected = %v; want ready", err)
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func TestSetPoolReadyFollowsTheBrokerStatus(t *testing.T) {
	m := newMultiBroker("alice")
	s := startSet(t, m, SetConfig{Named: []string{"alice"}})
	eventually(t, "alice", hasToken(s, "alice"))
	pc := s.Source("alice").(forward.PoolChecker)
	if err := pc.PoolReady(); err != nil {
		t.Fatalf("PoolReady while VALID = %v", err)
	}
	rej := acctTok("alice", 1)
	rej.Status, rej.Value, rej.ExpiresAt = brokerv1.TokenStatus_TOKEN_STATUS_REJECTED, "", nil
	m.set("alice", rej)
	eventually(t, "alice out of pools", func() bool { return pc.PoolReady() != nil })
	m.set("alice", acctTok("alice", 2))
	eventually(t, "alice back in pools", func() bool { return pc.PoolReady() == nil })
	if err := s.Source("nobody").(forward.PoolChecker).PoolReady(); err == nil {
		t.Error("PoolReady of an unwatched account = nil")
	}
}

// TestSetDefaultAccountRemovedAndAddedBack checks that the default
// account's unlabelled series survive its client being made again.
func TestSetDefaultAccountRemovedAndAddedBack(t *testing.T) {
	m := newMultiBroker("")
	reg := prometheus.NewRegistry()
	s := startSet(t, m, SetConfig{NeedDefault: true, Client: Config{Registerer: reg}})
	eventually(t, "the default account", hasToken(s, ""))
	m.set("", nil)
	// Wait for the set to drop the client, not only for its token to go:
	// the client forgets its token on its stream's NOT_FOUND, which may
	// come before WatchAccounts tells the set; an account added back
	// before the set saw it leave keeps its old client, waiting out its
	// backoff on the test's fake clock (the test timed out so once).
	eventually(t, "the default account dropped", func() bool {
		_, err := s.Source("").Token()
		return err != nil && s.client("") == nil
	})
	m.set("", acctTok("", 2))
	eventually(t, "the default account back", func() bool { tk, err := s.Source("").Token(); return err == nil && tk.Generation == 2 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var gen float64
	for _, mf := range mfs {
		if mf.GetName() == "copilot_proxy_token_generation" {
			gen = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if gen != 2 {
		t.Errorf("copilot_proxy_token_generation = %v; want 2, the new client's", gen)
	}
}
