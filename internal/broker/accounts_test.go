package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeQuota is a QuotaSource driven by the test.
type fakeQuota struct {
	mu    sync.Mutex
	r     quota.Reading
	subs  map[chan quota.Reading]struct{}
	pokes int
	poked chan struct{}
}

func newFakeQuota(r quota.Reading) *fakeQuota {
	return &fakeQuota{r: r, subs: map[chan quota.Reading]struct{}{}, poked: make(chan struct{}, 10)}
}

func (f *fakeQuota) Current() quota.Reading {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r
}

func (f *fakeQuota) Subscribe() (<-chan quota.Reading, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan quota.Reading, 1)
	ch <- f.r
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

func (f *fakeQuota) Poke() {
	f.mu.Lock()
	f.pokes++
	f.mu.Unlock()
	f.poked <- struct{}{}
}

func (f *fakeQuota) set(r quota.Reading) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r = r
	for ch := range f.subs {
		select {
		case <-ch:
		default:
		}
		ch <- r
	}
}

var resetAt = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func quotaReading(remaining float64) quota.Reading {
	return quota.Reading{
		Snapshots: []quota.Snapshot{
			{Kind: "chat", Unlimited: true, PercentRemaining: 100},
			{Kind: "premium_interactions", Entitlement: 300, Remaining: remaining, PercentRemaining: remaining / 3},
		},
		ResetAt: resetAt, Plan: "individual", FetchedAt: t0,
	}
}

func authCtx(k string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+k)
}

func names(accts []*brokerv1.Account) []string {
	var out []string
	for _, a := range accts {
		out = append(out, a.GetName())
	}
	return out
}

func TestListAccounts(t *testing.T) {
	e := newScopeEdge(t)
	tests := []struct {
		key  string
		want []string
	}{
		{keyAll, []string{"", "alice", "bob"}},
		{keyStar, []string{"", "alice", "bob"}},
		{keyAlice, []string{"alice"}},
		{keyPool, []string{"alice", "bob"}},
	}
	for _, tt := range tests {
		resp, err := e.client.ListAccounts(authCtx(tt.key), &brokerv1.ListAccountsRequest{})
		if err != nil {
			t.Fatalf("ListAccounts = %v", err)
		}
		if got := names(resp.GetAccounts()); !slices.Equal(got, tt.want) {
			t.Errorf("ListAccounts(%s) = %q; want %q", tt.key[:8], got, tt.want)
		}
		for _, a := range resp.GetAccounts() {
			if a.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || a.GetSku() != "monthly_subscriber" || a.GetGeneration() != 1 {
				t.Errorf("account %+v; want VALID, sku, generation 1", a)
			}
		}
		// REST: the same list, and never a token value.
		req, _ := http.NewRequest("GET", e.rest.URL+"/v1/accounts", nil)
		req.Header.Set("Authorization", "Bearer "+tt.key)
		hresp, err := e.rest.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Accounts []struct{ Name, Status string }
		}
		raw := new(strings.Builder)
		_ = json.NewDecoder(io.TeeReader(hresp.Body, raw)).Decode(&body)
		hresp.Body.Close()
		var got []string
		for _, a := range body.Accounts {
			got = append(got, a.Name)
		}
		if hresp.StatusCode != 200 || !slices.Equal(got, tt.want) {
			t.Errorf("GET /v1/accounts (%s) = %d %q; want 200 %q", tt.key[:8], hresp.StatusCode, got, tt.want)
		}
		if strings.Contains(raw.String(), "tid=1") {
			t.Errorf("GET /v1/accounts holds a token value: %s", raw)
		}
	}
	if _, err := e.client.ListAccounts(context.Background(), &brokerv1.ListAccountsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListAccounts without a key = %v; want UNAUTHENTICATED", err)
	}
}

func TestAccountProto(t *testing.T) {
	st := validState(3)
	st.Account = "alice"
	a := accountProto("alice", st, quota.Reading{})
	if a.GetQuota() != nil || a.GetName() != "alice" || a.GetExpiresAt().AsTime() != st.ExpiresAt || a.GetApiBaseUrl() != st.APIBaseURL {
		t.Errorf("accountProto without quota = %+v", a)
	}
	spent := quotaReading(0)
	a = accountProto("alice", st, spent)
	q := a.GetQuota()
	if q == nil || len(q.GetSnapshots()) != 2 || q.GetPlan() != "individual" || !q.GetResetAt().AsTime().Equal(resetAt) {
		t.Fatalf("quota = %+v", q)
	}
	if p := q.GetSnapshots()[1]; p.GetKind() != "premium_interactions" || p.GetEntitlement() != 300 || !p.GetExhausted() {
		t.Errorf("premium snapshot = %+v; want exhausted", p)
	}
	if c := q.GetSnapshots()[0]; !c.GetUnlimited() || c.GetExhausted() {
		t.Errorf("chat snapshot = %+v; want unlimited, not exhausted", c)
	}
	failed := quota.Reading{LastError: "quota: HTTP 502"}
	if a := accountProto("alice", st, failed); a.GetQuota().GetLastError() != "quota: HTTP 502" {
		t.Errorf("failed reading: quota = %+v", a.GetQuota())
	}
}

// watchAccounts runs WatchAccounts on a fake stream under ctx.
func watchAccounts(ctx context.Context, svc *Service) (<-chan []*brokerv1.Account, <-chan error) {
	msgs := make(chan []*brokerv1.Account, 100)
	done := make(chan error, 1)
	st := &fakeAccountsStream{ctx: ctx, send: func(m *brokerv1.WatchAccountsResponse) error { msgs <- m.GetAccounts(); return nil }}
	go func() { done <- svc.WatchAccounts(&brokerv1.WatchAccountsRequest{}, st) }()
	return msgs, done
}

type fakeAccountsStream struct {
	fakeStream
	ctx  context.Context
	send func(*brokerv1.WatchAccountsResponse) error
}

func (s *fakeAccountsStream) Context() context.Context                     { return s.ctx }
func (s *fakeAccountsStream) Send(m *brokerv1.WatchAccountsResponse) error { return s.send(m) }

func TestWatchAccountsFollowsChanges(t *testing.T) {
	alice := newFake(stateOf("alice", 1))
	q := newFakeQuota(quota.Reading{})
	svc := newTestService(t, alice, func(c *Config) {
		c.Accounts = map[string]Source{"alice": alice}
		c.Quotas = map[string]QuotaSource{"alice": q}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, done := watchAccounts(ctx, svc)
	expect := func(what string, check func([]*brokerv1.Account) bool) {
		t.Helper()
		select {
		case m := <-msgs:
			if !check(m) {
				t.Fatalf("%s: got %v", what, m)
			}
		case err := <-done:
			t.Fatalf("%s: stream ended: %v", what, err)
		}
	}
	expect("whole set at once", func(m []*brokerv1.Account) bool {
		return slices.Equal(names(m), []string{"alice"}) && m[0].GetQuota() == nil
	})
	q.set(quotaReading(100))
	expect("quota read", func(m []*brokerv1.Account) bool {
		return len(m) == 1 && m[0].GetQuota().GetSnapshots()[1].GetRemaining() == 100
	})
	rejected := stateOf("alice", 1)
	rejected.Status, rejected.Token, rejected.LastError = tokens.StatusRejected, secret.Secret{}, "HTTP 401"
	alice.set(rejected)
	expect("status changed", func(m []*brokerv1.Account) bool {
		return m[0].GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_REJECTED && m[0].GetLastError() == "HTTP 401"
	})
	bob := newFake(stateOf("bob", 1))
	if err := svc.AddAccount("bob", bob, nil); err != nil {
		t.Fatal(err)
	}
	expect("account added", func(m []*brokerv1.Account) bool { return slices.Equal(names(m), []string{"alice", "bob"}) })
	if err := svc.AddAccount("bob", bob, nil); err == nil {
		t.Error("AddAccount(bob) twice = nil error")
	}
	if !svc.RemoveAccount("alice") || svc.RemoveAccount("alice") {
		t.Error("RemoveAccount(alice) = false, or true twice")
	}
	expect("account removed", func(m []*brokerv1.Account) bool { return slices.Equal(names(m), []string{"bob"}) })
	if got := svc.Accounts(); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("Accounts() = %q; want [bob]", got)
	}
	// A quota source of a removed account no longer moves anything.
	q.set(quotaReading(5))
	bob.set(stateOf("bob", 2))
	expect("bob rotated", func(m []*brokerv1.Account) bool { return len(m) == 1 && m[0].GetGeneration() == 2 })
	svc.Drain()
	if err := <-done; err != nil {
		t.Errorf("WatchAccounts at drain = %v; want OK", err)
	}
}

func stateOf(name string, gen uint64) tokens.State {
	st := validState(gen)
	st.Account = name
	return st
}

// A stream of a key limited to alice sees only alice, and no change of bob
// wakes it with a message.
func TestWatchAccountsScope(t *testing.T) {
	e := newScopeEdge(t)
	ctx, cancel := context.WithCancel(authCtx(keyAlice))
	defer cancel()
	stream, err := e.client.WatchAccounts(ctx, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || !slices.Equal(names(m.GetAccounts()), []string{"alice"}) {
		t.Fatalf("first WatchAccounts message = %v, %v; want [alice]", m, err)
	}
	svcSrc := func(name string) *fakeSource { return e.svc.set.Load().byName[name].src.(*fakeSource) }
	svcSrc("bob").set(stateOf("bob", 2))
	svcSrc("").set(stateOf("", 2))
	svcSrc("alice").set(stateOf("alice", 2))
	m, err = stream.Recv()
	if err != nil || !slices.Equal(names(m.GetAccounts()), []string{"alice"}) || m.GetAccounts()[0].GetGeneration() != 2 {
		t.Fatalf("next WatchAccounts message = %v, %v; want alice at generation 2 (bob's change unseen)", m, err)
	}

	// REST: the same stream, newline-delimited.
	req, _ := http.NewRequestWithContext(ctx, "GET", e.rest.URL+"/v1/accounts:watch", nil)
	req.Header.Set("Authorization", "Bearer "+keyPool)
	resp, err := e.rest.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/accounts:watch = %d %q, %v", resp.StatusCode, line, err)
	}
	var msg struct {
		Result struct{ Accounts []struct{ Name string } }
	}
	if err := json.Unmarshal([]byte(line), &msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Result.Accounts) != 2 || msg.Result.Accounts[0].Name != "alice" || msg.Result.Accounts[1].Name != "bob" {
		t.Errorf("GET /v1/accounts:watch first line = %s; want alice and bob", line)
	}
}

// Removing an account ends its WatchToken streams with NOT_FOUND, and the
// account is NOT_FOUND from then on.
func TestRemoveAccountEndsWatches(t *testing.T) {
	e := newScopeEdge(t)
	ctx, cancel := context.WithCancel(authCtx(keyAll))
	defer cancel()
	stream, err := e.client.WatchToken(ctx, &brokerv1.WatchTokenRequest{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	other, err := e.client.WatchToken(ctx, &brokerv1.WatchTokenRequest{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Recv(); err != nil {
		t.Fatal(err)
	}
	e.svc.RemoveAccount("bob")
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("WatchToken(bob) after removal = %v; want NOT_FOUND", err)
	}
	if _, err := e.client.GetToken(ctx, &brokerv1.GetTokenRequest{Account: "bob"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetToken(bob) after removal = %v; want NOT_FOUND", err)
	}
	e.svc.set.Load().byName["alice"].src.(*fakeSource).set(stateOf("alice", 2))
	if m, err := other.Recv(); err != nil || m.GetToken().GetGeneration() != 2 {
		t.Errorf("WatchToken(alice) after bob's removal = %v, %v; want it going on", m, err)
	}
	got := gather(t, e.metrics)
	if _, ok := got[`copilot_broker_watchers{account="bob"}`]; ok {
		t.Error("the removed account's watcher series is still exported")
	}
	if _, ok := got[`copilot_broker_token_generation{account="bob"}`]; ok {
		t.Error("the removed account's token series are still exported")
	}
}

func TestRefreshQuotaExceededPokesQuota(t *testing.T) {
	src := newFake(validState(1))
	src.forceRes = validState(2)
	q := newFakeQuota(quotaReading(10))
	svc := newTestService(t, src, func(c *Config) { c.Quotas = map[string]QuotaSource{"": q} })
	if _, err := svc.RefreshToken(context.Background(), &brokerv1.RefreshTokenRequest{RejectedGeneration: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RefreshToken(context.Background(), &brokerv1.RefreshTokenRequest{RejectedGeneration: 1, Reason: brokerv1.RefreshReason_REFRESH_REASON_UNAUTHORIZED}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.poked:
		t.Fatal("a refresh for a 401 re-read the quota")
	default:
	}
	src.mu.Lock()
	forcedBefore := len(src.forced)
	src.mu.Unlock()
	if _, err := svc.RefreshToken(context.Background(), &brokerv1.RefreshTokenRequest{RejectedGeneration: 2, Reason: brokerv1.RefreshReason_REFRESH_REASON_QUOTA_EXCEEDED}); err != nil {
		t.Fatal(err)
	}
	<-q.poked
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.forced) != forcedBefore {
		t.Errorf("a quota report forced a token exchange (generations %v); want the quota re-read only", src.forced[forcedBefore:])
	}
}

func TestQuotaMetrics(t *testing.T) {
	src := newFake(validState(1))
	q := newFakeQuota(quotaReading(0))
	m := NewMetrics()
	svc := newTestService(t, src, func(c *Config) { c.Quotas = map[string]QuotaSource{"": q}; c.Metrics = m })
	if err := m.ObserveService(svc); err != nil {
		t.Fatal(err)
	}
	got := gather(t, m)
	for name, want := range map[string]float64{
		`copilot_broker_quota_remaining{account="",kind="premium_interactions"}`:               0,
		`copilot_broker_quota_entitlement{account="",kind="premium_interactions"}`:             300,
		`copilot_broker_quota_exhausted{account="",kind="premium_interactions"}`:               1,
		`copilot_broker_quota_exhausted{account="",kind="chat"}`:                               0,
		`copilot_broker_quota_unlimited{account="",kind="chat"}`:                               1,
		`copilot_broker_quota_percent_remaining{account="",kind="chat"}`:                       100,
		`copilot_broker_quota_reset_timestamp_seconds{account="",kind="premium_interactions"}`: float64(resetAt.Unix()),
		`copilot_broker_quota_fetched_timestamp_seconds{account=""}`:                           float64(t0.Unix()),
		`copilot_broker_token_generation{account=""}`:                                          1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v); want %v", name, v, ok, want)
		}
	}
}

// A GetToken waiting for an account's first token ends NOT_FOUND when the
// account is removed meanwhile.
func TestGetTokenPendingThenRemoved(t *testing.T) {
	src := newFake(tokens.State{Account: "alice", Status: tokens.StatusPending})
	svc := newTestService(t, src, func(c *Config) { c.Accounts = map[string]Source{"alice": src} })
	done := make(chan error, 1)
	go func() {
		_, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{Account: "alice"})
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, "GetToken(alice) waiting while pending", func() bool { return src.subscribers() > 0 })
	svc.RemoveAccount("alice")
	if err := <-done; status.Code(err) != codes.NotFound {
		t.Errorf("GetToken(alice) removed while pending = %v; want NOT_FOUND", err)
	}
}

// WatchAccounts ends with OK at its maximum age and with CANCELLED when the
// client leaves.
func TestWatchAccountsEnds(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(*clock.Fake, context.CancelFunc)
		want codes.Code
	}{
		{"max age", func(c *clock.Fake, _ context.CancelFunc) { c.Advance(11 * time.Minute) }, codes.OK},
		{"client gone", func(_ *clock.Fake, cancel context.CancelFunc) { cancel() }, codes.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := clock.NewFake(t0)
			svc := newTestService(t, newFake(validState(1)), func(c *Config) { c.Clock, c.MaxStreamAge = fc, 10*time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs, done := watchAccounts(ctx, svc)
			<-msgs
			if err := fc.WaitForTimers(ctx, 1); err != nil {
				t.Fatal(err)
			}
			tt.end(fc, cancel)
			if err := <-done; status.Code(err) != tt.want {
				t.Errorf("WatchAccounts() = %v; want %v", err, tt.want)
			}
		})
	}
}
