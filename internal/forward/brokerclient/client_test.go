package brokerclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid = brokerv1.TokenStatus_TOKEN_STATUS_VALID
)

func tok(epoch string, gen uint64, st brokerv1.TokenStatus, exp time.Time) *brokerv1.Token {
	t := &brokerv1.Token{Epoch: epoch, Generation: gen, Status: st, ApiBaseUrl: "https://api.githubcopilot.com"}
	if st == valid || st == brokerv1.TokenStatus_TOKEN_STATUS_STALE {
		t.Value = "tid=" + epoch + ";gen=" + string(rune('a'+gen)) + ":sig"
		t.ExpiresAt = timestamppb.New(exp)
	}
	return t
}

func TestApplyOrdering(t *testing.T) {
	exp := start.Add(30 * time.Minute)
	pending := brokerv1.TokenStatus_TOKEN_STATUS_PENDING
	rejected := brokerv1.TokenStatus_TOKEN_STATUS_REJECTED
	tests := []struct {
		name     string
		msgs     []*brokerv1.Token
		wantGen  uint64 // generation of the held token; 0: none
		wantEpch string
		keepRej  bool // Config.ServeCachedWhenRejected
	}{
		{"first", []*brokerv1.Token{tok("a", 1, valid, exp)}, 1, "a", false},
		{"newer wins", []*brokerv1.Token{tok("a", 1, valid, exp), tok("a", 2, valid, exp)}, 2, "a", false},
		{"older ignored", []*brokerv1.Token{tok("a", 3, valid, exp), tok("a", 2, valid, exp)}, 3, "a", false},
		{"new epoch resets order", []*brokerv1.Token{tok("a", 7, valid, exp), tok("b", 1, valid, exp)}, 1, "b", false},
		{"old epoch again after reset", []*brokerv1.Token{tok("a", 7, valid, exp), tok("b", 1, valid, exp), tok("b", 2, valid, exp)}, 2, "b", false},
		{"pending keeps cached", []*brokerv1.Token{tok("a", 4, valid, exp), tok("b", 0, pending, exp)}, 4, "a", false},
		{"rejected drops cached", []*brokerv1.Token{tok("a", 4, valid, exp), tok("a", 4, rejected, exp)}, 0, "", false},
		{"rejected keeps cached when asked", []*brokerv1.Token{tok("a", 4, valid, exp), tok("a", 4, rejected, exp)}, 4, "a", true},
		{"valid again after rejected", []*brokerv1.Token{tok("a", 4, valid, exp), tok("a", 4, rejected, exp), tok("a", 5, valid, exp)}, 5, "a", false},
		{"pending only", []*brokerv1.Token{tok("a", 0, pending, exp)}, 0, "", false},
		{"nil ignored", []*brokerv1.Token{nil}, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), Clock: clock.NewFake(start), ServeCachedWhenRejected: tt.keepRej})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				c.apply(m, "test")
			}
			c.setConn(nil)
			got, err := c.Token()
			if tt.wantGen == 0 {
				if err == nil || !errors.Is(err, forward.ErrNoToken) {
					t.Errorf("Token() = %v, %v; want ErrNoToken", got, err)
				}
				return
			}
			if err != nil || got.Generation != tt.wantGen || got.Epoch != tt.wantEpch {
				t.Fatalf("Token() = %+v, %v; want generation %d of epoch %s", got, err, tt.wantGen, tt.wantEpch)
			}
		})
	}
}

func TestApplyKeepsPointerForSameToken(t *testing.T) {
	c, _ := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), Clock: clock.NewFake(start)})
	m := tok("a", 1, valid, start.Add(time.Hour))
	c.apply(m, "test")
	first, _ := c.Token()
	m2 := tok("a", 1, brokerv1.TokenStatus_TOKEN_STATUS_STALE, start.Add(time.Hour))
	m2.LastError = "exchange failing"
	c.apply(m2, "test")
	second, _ := c.Token()
	if first != second {
		t.Errorf("Token() after a status-only update returned a new *Token; want the same pointer")
	}
}

func TestBackoff(t *testing.T) {
	c, _ := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	for attempt, full := range []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000} {
		full *= time.Millisecond
		if attempt >= 5 {
			full = 2 * time.Second
		}
		for range 50 {
			if d := c.backoff(attempt); d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v; want in [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
	if d := c.backoff(1000); d < time.Second || d > 2*time.Second {
		t.Errorf("backoff(1000) = %v; want capped at 2s", d)
	}

	// Large delays must not overflow into negative (immediate) retries.
	c, _ = New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), MinBackoff: 10 * time.Second, MaxBackoff: 10 * time.Minute})
	for attempt := range 70 {
		if d := c.backoff(attempt); d < 5*time.Second || d > 10*time.Minute {
			t.Fatalf("backoff(%d) with MinBackoff 10s = %v; want in [5s, 10m]", attempt, d)
		}
	}
}

// fakeBroker is an in-process TokenBrokerService under the test's control.
type fakeBroker struct {
	brokerv1.UnimplementedTokenBrokerServiceServer
	mu        sync.Mutex
	cur       *brokerv1.Token
	subs      map[chan *brokerv1.Token]bool
	refreshes []uint64
	gets      int
	watches   int
	failWatch bool
	keys      []string // authorization values seen
	onRefresh func(gen uint64) *brokerv1.Token
}

func newFakeBroker(cur *brokerv1.Token) *fakeBroker {
	return &fakeBroker{cur: cur, subs: map[chan *brokerv1.Token]bool{}}
}

func (f *fakeBroker) auth(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.keys = append(f.keys, md.Get("authorization")...)
	f.mu.Unlock()
}

func (f *fakeBroker) publish(t *brokerv1.Token) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = t
	for ch := range f.subs {
		select {
		case <-ch:
		default:
		}
		ch <- t
	}
}

func (f *fakeBroker) GetToken(ctx context.Context, _ *brokerv1.GetTokenRequest) (*brokerv1.GetTokenResponse, error) {
	f.auth(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	return &brokerv1.GetTokenResponse{Token: f.cur}, nil
}

func (f *fakeBroker) RefreshToken(ctx context.Context, req *brokerv1.RefreshTokenRequest) (*brokerv1.RefreshTokenResponse, error) {
	f.auth(ctx)
	f.mu.Lock()
	f.refreshes = append(f.refreshes, req.GetRejectedGeneration())
	on := f.onRefresh
	f.mu.Unlock()
	if on != nil {
		f.publish(on(req.GetRejectedGeneration()))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &brokerv1.RefreshTokenResponse{Token: f.cur}, nil
}

func (f *fakeBroker) WatchToken(_ *brokerv1.WatchTokenRequest, stream grpc.ServerStreamingServer[brokerv1.WatchTokenResponse]) error {
	f.auth(stream.Context())
	ch := make(chan *brokerv1.Token, 1)
	f.mu.Lock()
	f.watches++
	if f.failWatch {
		f.mu.Unlock()
		return status.Error(codes.Unavailable, "watch refused by test")
	}
	ch <- f.cur
	f.subs[ch] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	for {
		select {
		case t := <-ch:
			if err := stream.Send(&brokerv1.WatchTokenResponse{Token: t}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// testBroker serves a fakeBroker over an in-memory listener that can be
// stopped and started again, as a broker restart would.
type testBroker struct {
	t    *testing.T
	fake *fakeBroker
	mu   sync.Mutex
	lis  *bufconn.Listener
	srv  *grpc.Server
}

func startTestBroker(t *testing.T, fake *fakeBroker) *testBroker {
	tb := &testBroker{t: t, fake: fake}
	tb.start()
	t.Cleanup(tb.stop)
	return tb
}

func (tb *testBroker) start() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.lis = bufconn.Listen(1 << 16)
	tb.srv = grpc.NewServer()
	brokerv1.RegisterTokenBrokerServiceServer(tb.srv, tb.fake)
	srv, lis := tb.srv, tb.lis
	go func() { _ = srv.Serve(lis) }()
}

func (tb *testBroker) stop() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.srv != nil {
		tb.srv.Stop()
		tb.srv = nil
	}
}

func (tb *testBroker) dial(ctx context.Context, _ string) (net.Conn, error) {
	tb.mu.Lock()
	lis, up := tb.lis, tb.srv != nil
	tb.mu.Unlock()
	if !up {
		return nil, errors.New("broker down")
	}
	return lis.DialContext(ctx)
}

func (tb *testBroker) client(t *testing.T, clk clock.Clock) *Client {
	t.Helper()
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 5*time.Millisecond, 20*time.Millisecond
	conn, err := Dial("passthrough:///broker", secret.New("broker-key-0123456789"), nil,
		grpc.WithContextDialer(tb.dial), grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(conn), Clock: clk, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// waitFor blocks until cond holds after some state change, or fails.
func waitFor(t *testing.T, c *Client, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		ch := c.woken
		c.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			tk, err := c.Token()
			t.Fatalf("timed out waiting for %s; Token() = %+v, %v", what, tk, err)
		}
	}
}

func genIs(c *Client, gen uint64) func() bool {
	return func() bool { tk, err := c.Token(); return err == nil && tk.Generation == gen }
}

func TestWatchFollowsRotations(t *testing.T) {
	clk := clock.NewFake(start)
	fake := newFakeBroker(tok("e", 1, valid, start.Add(30*time.Minute)))
	tb := startTestBroker(t, fake)
	c := tb.client(t, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for gen := uint64(2); gen <= 5; gen++ {
		fake.publish(tok("e", gen, valid, start.Add(30*time.Minute)))
		waitFor(t, c, "the next generation", genIs(c, gen))
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.keys) == 0 || fake.keys[0] != "Bearer broker-key-0123456789" {
		t.Errorf("broker saw authorization %q; want the broker key as Bearer", fake.keys)
	}
}

func TestCachedTokenUntilExpiryThenRecovery(t *testing.T) {
	clk := clock.NewFake(start)
	fake := newFakeBroker(tok("e", 1, valid, start.Add(10*time.Minute)))
	tb := startTestBroker(t, fake)
	c := tb.client(t, clk)
	waitFor(t, c, "the first token", genIs(c, 1))

	tb.stop()
	waitFor(t, c, "the disconnect", func() bool { return c.state.Load().connErr != nil })
	clk.Advance(9 * time.Minute)
	if tk, err := c.Token(); err != nil || tk.Generation != 1 {
		t.Fatalf("Token() with the broker down, before expiry = %v, %v; want the cached generation 1", tk, err)
	}
	clk.Advance(time.Minute)
	_, err := c.Token()
	if !errors.Is(err, forward.ErrNoToken) || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Token() at expiry = %v; want ErrNoToken saying expired and unreachable", err)
	}
	if c.Ready() == nil {
		t.Errorf("Ready() = nil after expiry; want an error")
	}

	fake.publish(tok("e2", 1, valid, start.Add(40*time.Minute)))
	tb.start()
	// Move the fake clock through the reconnect backoff until the watch is
	// back; gRPC's own redial runs on real time, so a few rounds may fail.
	deadline := time.Now().Add(20 * time.Second)
	for c.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the broker came back: %v", c.Ready())
		}
		wctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if clk.WaitForTimers(wctx, 1) == nil {
			clk.AdvanceToNext()
		}
		cancel()
	}
	if tk, _ := c.Token(); tk.Epoch != "e2" {
		t.Errorf("Token() after recovery = epoch %q; want the new broker's e2", tk.Epoch)
	}
}

func TestGetTokenFallback(t *testing.T) {
	clk := clock.NewFake(start)
	fake := newFakeBroker(tok("e", 3, valid, start.Add(30*time.Minute)))
	fake.failWatch = true
	tb := startTestBroker(t, fake)
	c := tb.client(t, clk)
	waitFor(t, c, "a token from GetToken", genIs(c, 3))
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.gets == 0 || fake.watches == 0 {
		t.Errorf("GetToken calls = %d, WatchToken calls = %d; want both", fake.gets, fake.watches)
	}
}

func TestRefresh(t *testing.T) {
	clk := clock.NewFake(start)
	fake := newFakeBroker(tok("e", 1, valid, start.Add(30*time.Minute)))
	fake.onRefresh = func(gen uint64) *brokerv1.Token { return tok("e", gen+1, valid, start.Add(30*time.Minute)) }
	tb := startTestBroker(t, fake)
	c := tb.client(t, clk)
	waitFor(t, c, "the first token", genIs(c, 1))
	old, _ := c.Token()

	// Concurrent callers rejecting the same generation make one call.
	var wg sync.WaitGroup
	got := make([]*forward.Token, 20)
	for i := range got {
		wg.Go(func() {
			tk, err := c.Refresh(context.Background(), old)
			if err != nil {
				t.Errorf("Refresh() = %v", err)
			}
			got[i] = tk
		})
	}
	wg.Wait()
	for i, tk := range got {
		if tk == nil || tk.Generation != 2 {
			t.Errorf("Refresh() #%d = %+v; want generation 2", i, tk)
		}
	}
	fake.mu.Lock()
	n := len(fake.refreshes)
	fake.mu.Unlock()
	if n != 1 {
		t.Errorf("RefreshToken calls = %d; want 1", n)
	}
	// A caller holding an outdated token gets the newer one without a call.
	if tk, err := c.Refresh(context.Background(), old); err != nil || tk.Generation != 2 {
		t.Errorf("Refresh(old) = %v, %v; want generation 2 at once", tk, err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.refreshes) != n {
		t.Errorf("RefreshToken calls = %d; want still %d", len(fake.refreshes), n)
	}
}

// TestReasonHidesBrokerDetails: the text clients see in a 503 says what to
// do and never carries the broker's last_error or a transport error's
// address (issue 22: the per-account 503 quoted last_error, which
// docs/operations.md promises only to logs).
func TestReasonHidesBrokerDetails(t *testing.T) {
	const secretish = "GitHub said: bad credentials for user octocat at 10.0.0.7:443"
	for _, c := range []struct {
		name string
		s    state
		want string
	}{
		{"rejected", state{status: brokerv1.TokenStatus_TOKEN_STATUS_REJECTED, lastErr: secretish}, "replace it"},
		{"pending", state{status: brokerv1.TokenStatus_TOKEN_STATUS_PENDING, lastErr: secretish}, "retry shortly"},
		{"unreachable", state{connErr: status.Error(codes.Unavailable, "dial tcp 10.0.0.7:50051: refused")}, "unreachable"},
		{"broker answer", state{connErr: status.Error(codes.FailedPrecondition, secretish)}, "retry shortly"},
		{"not served", state{connErr: status.Error(codes.NotFound, "unknown account \"alice\"")}, "does not serve this account"},
	} {
		got := c.s.reason()
		if strings.Contains(got, "octocat") || strings.Contains(got, "10.0.0.7") || !strings.Contains(got, c.want) {
			t.Errorf("%s: reason() = %q; want %q and no broker details", c.name, got, c.want)
		}
	}
}
