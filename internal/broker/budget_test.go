package broker

import (
	"context"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBudgetMonth(t *testing.T) {
	d := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }
	for _, c := range []struct {
		day               int
		now, start, reset string
	}{
		{1, "2026-12-07T10:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{1, "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{15, "2026-12-07T10:00:00Z", "2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z"},
		{15, "2026-12-15T00:00:01Z", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"},
		{28, "2027-01-03T00:00:00Z", "2026-12-28T00:00:00Z", "2027-01-28T00:00:00Z"},
	} {
		b := &BudgetBook{startDay: c.day}
		start, reset := b.Month(d(c.now))
		if !start.Equal(d(c.start)) || !reset.Equal(d(c.reset)) {
			t.Errorf("day %d, now %s: month %s to %s; want %s to %s", c.day, c.now, start, reset, c.start, c.reset)
		}
	}
}

func TestRPMSharesSumToTheLimit(t *testing.T) {
	for _, c := range []struct {
		rpm, n int64
		want   []int64
	}{
		{60, 3, []int64{20, 20, 20}},
		{10, 3, []int64{4, 3, 3}},
		{2, 3, []int64{1, 1, 0}},
		{60, 1, []int64{60}},
	} {
		var sum int64
		for i, w := range c.want {
			got := rpmShare(c.rpm, i, c.n)
			if got != w {
				t.Errorf("rpm %d over %d: share %d = %d; want %d", c.rpm, c.n, i, got, w)
			}
			sum += got
		}
		if sum != c.rpm {
			t.Errorf("rpm %d over %d: shares sum to %d", c.rpm, c.n, sum)
		}
	}
	if got := rpmShare(60, -1, 3); got != 60 {
		t.Errorf("a proxy not counted yet: share %d; want the whole 60", got)
	}
}

func TestPremiumSharesSumToWhatIsLeft(t *testing.T) {
	for _, c := range []struct {
		left float64
		n    int64
		want []float64
	}{
		{20, 3, []float64{7, 7, 6}},
		{2.5, 3, []float64{1.5, 1, 0}},
		{0.33, 3, []float64{0.33, 0, 0}},
		{-4, 3, []float64{0, 0, 0}},
	} {
		for i, w := range c.want {
			if got := premiumShare(c.left, i, c.n); got < w-1e-9 || got > w+1e-9 {
				t.Errorf("%v left over %d: share %d = %v; want %v", c.left, c.n, i, got, w)
			}
		}
	}
}

type fakeBudgetsStream struct {
	fakeStream
	ctx  context.Context
	send func(*brokerv1.WatchBudgetsResponse) error
}

func (s *fakeBudgetsStream) Context() context.Context                    { return s.ctx }
func (s *fakeBudgetsStream) Send(m *brokerv1.WatchBudgetsResponse) error { return s.send(m) }

// WatchBudgets ends with OK at its jittered maximum age (as WatchToken and
// WatchKeys do, so proxies spread over replicas added later), not before,
// and with CANCELLED when the proxy leaves.
func TestWatchBudgetsEnds(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(*clock.Fake, context.CancelFunc)
		want codes.Code
	}{
		// rand 1 and jitter 0.1: the age is 11 min.
		{"max age", func(c *clock.Fake, _ context.CancelFunc) { c.Advance(11 * time.Minute) }, codes.OK},
		{"client gone", func(_ *clock.Fake, cancel context.CancelFunc) { cancel() }, codes.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := clock.NewFake(t0)
			st, err := store.Open(context.Background(), store.Config{StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			book, err := NewBudgetBook(BudgetConfig{Store: st, Clock: fc})
			if err != nil {
				t.Fatal(err)
			}
			u, err := NewUsageService(UsageConfig{Ledger: st, Budgets: book, Clock: fc, MaxStreamAge: 10 * time.Minute, Rand: func() float64 { return 1 }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs := make(chan *brokerv1.WatchBudgetsResponse, 10)
			done := make(chan error, 1)
			s := &fakeBudgetsStream{ctx: ctx, send: func(m *brokerv1.WatchBudgetsResponse) error { msgs <- m; return nil }}
			go func() { done <- u.WatchBudgets(&brokerv1.WatchBudgetsRequest{ProxyId: "p1"}, s) }()
			<-msgs
			if err := fc.WaitForTimers(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if tt.want == codes.OK {
				fc.Advance(11*time.Minute - time.Second)
				select {
				case err := <-done:
					t.Fatalf("WatchBudgets ended before its age: %v", err)
				default:
				}
			}
			tt.end(fc, cancel)
			if err := <-done; status.Code(err) != tt.want {
				t.Errorf("WatchBudgets() = %v; want %v", err, tt.want)
			}
		})
	}
}

func TestBudgetStatus(t *testing.T) {
	const (
		ok   = brokerv1.BudgetStatus_BUDGET_STATUS_OK
		warn = brokerv1.BudgetStatus_BUDGET_STATUS_WARNING
		over = brokerv1.BudgetStatus_BUDGET_STATUS_EXCEEDED
	)
	for _, c := range []struct {
		name       string
		spentLimit []float64
		want       brokerv1.BudgetStatus
	}{
		{"no limits", []float64{5, 0, 100, 0}, ok},
		{"under 80 %", []float64{7.9, 10, 0, 0}, ok},
		{"at 80 %", []float64{8, 10, 0, 0}, warn},
		{"tokens at 80 %", []float64{1, 10, 800, 1000}, warn},
		{"spent exactly", []float64{10, 10, 0, 1000}, over},
		{"tokens over, premium fine", []float64{1, 10, 1001, 1000}, over},
		{"premium over, tokens warn", []float64{11, 10, 900, 1000}, over},
	} {
		if got := budgetStatus(c.spentLimit...); got != c.want {
			t.Errorf("%s: budgetStatus(%v) = %v; want %v", c.name, c.spentLimit, got, c.want)
		}
	}
}
