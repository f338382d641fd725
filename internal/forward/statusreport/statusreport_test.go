package statusreport

import (
	"context"
	"net"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBroker hands every report it receives to the test and acknowledges it.
type fakeBroker struct {
	brokerv1.UnimplementedProxyServiceServer
	got chan *brokerv1.ReportStatusRequest
}

func (f *fakeBroker) ReportStatus(stream brokerv1.ProxyService_ReportStatusServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		select {
		case f.got <- req:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		if err := stream.Send(&brokerv1.ReportStatusResponse{}); err != nil {
			return err
		}
	}
}

func startFake(t *testing.T) (*fakeBroker, brokerv1.ProxyServiceClient) {
	t.Helper()
	ln := bufconn.Listen(1 << 16)
	f := &fakeBroker{got: make(chan *brokerv1.ReportStatusRequest)}
	srv := grpc.NewServer()
	brokerv1.RegisterProxyServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return f, brokerv1.NewProxyServiceClient(cc)
}

func (f *fakeBroker) next(t *testing.T, ctx context.Context) *brokerv1.ReportStatusRequest {
	t.Helper()
	select {
	case r := <-f.got:
		return r
	case <-ctx.Done():
		t.Fatal("no report")
		return nil
	}
}

// TestReports: who the proxy is comes first; a change of a usage limit
// goes out once the gap since the last report has passed; with nothing new
// a status goes out every interval.
func TestReports(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	tracker := pool.New(pool.Config{Clock: clk})
	fake, client := startFake(t)
	errs := map[string]uint64{}
	r, err := New(Config{
		Client: client, ProxyID: "px-1", Accounts: tracker.Statuses, Errors: func() map[string]uint64 { return errs },
		Interval: 10 * time.Second, MinGap: 2 * time.Second, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(runCtx) }()
	defer func() { stop(); <-done }()

	first := fake.next(t, ctx)
	if p := first.GetProxy(); p.GetId() != "px-1" || len(p.GetInstance()) != 16 || p.GetVersion() == "" || !p.GetStartedAt().AsTime().Equal(t0) {
		t.Errorf("first message's proxy = %v", p)
	}
	if first.GetStatus() == nil || len(first.GetStatus().GetAccounts()) != 0 {
		t.Errorf("first status = %v; want one without accounts", first.GetStatus())
	}

	// A session limit read from an answer: reported after the gap.
	tracker.SetUsage("alice", pool.Snapshot{Kind: "session", Entitlement: 200, Remaining: 50, Reset: t0.Add(time.Hour)})
	r.Changed()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	msg := fake.next(t, ctx)
	if msg.GetProxy() != nil {
		t.Error("a later message says again who the proxy is")
	}
	acc := msg.GetStatus().GetAccounts()
	if len(acc) != 1 || acc[0].GetAccount() != "alice" || len(acc[0].GetLimits()) != 1 {
		t.Fatalf("accounts = %v; want alice's session", acc)
	}
	if l := acc[0].GetLimits()[0]; l.GetKind() != "session" || l.GetPercentRemaining() != 25 || l.GetRemaining() != 50 ||
		!l.GetResetAt().AsTime().Equal(t0.Add(time.Hour)) || !l.GetSeenAt().AsTime().Equal(t0) {
		t.Errorf("session limit = %v; want 25 %% (50 of 200), reset t0+1h, seen t0", l)
	}

	// Nothing new: the beat, at the interval.
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second) // the gap
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(8 * time.Second) // the rest of the interval
	if beat := fake.next(t, ctx); !beat.GetStatus().GetAt().AsTime().Equal(t0.Add(12 * time.Second)) {
		t.Errorf("the beat's time = %v; want t0+12s", beat.GetStatus().GetAt().AsTime())
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		s    pool.Snapshot
		want float64
	}{
		{pool.Snapshot{Entitlement: 200, Remaining: 50}, 25},
		{pool.Snapshot{Entitlement: 100, Remaining: -3}, 0},
		{pool.Snapshot{Entitlement: 100, Remaining: 130}, 100},
		{pool.Snapshot{Unlimited: true}, 100},
		{pool.Snapshot{Entitlement: 0, Remaining: 0}, 0},
	}
	for _, tt := range tests {
		if got := percent(tt.s); got != tt.want {
			t.Errorf("percent(%+v) = %v; want %v", tt.s, got, tt.want)
		}
	}
}
