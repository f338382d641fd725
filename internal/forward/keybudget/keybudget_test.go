package keybudget

import (
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var reset = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

func gate(t *testing.T, b ...*brokerv1.BudgetState) (*Gate, *clock.Fake) {
	t.Helper()
	fc := clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	var spent []string
	g := New(Config{Clock: fc, AccountSpent: func(a string, _ time.Time) { spent = append(spent, a) }})
	for _, x := range b {
		x.ResetsAt = timestamppb.New(reset)
	}
	g.Set(b)
	return g, fc
}

func TestPremiumBudget(t *testing.T) {
	g, _ := gate(t, &brokerv1.BudgetState{Key: "k", MonthlyPremium: 10, PremiumSpent: 7, PremiumShare: 3})
	if d := g.Admit("k", "", "r8", 1); d.Denied || d.Warning == "" { // 8 of 10: warned
		t.Fatalf("8 of 10 = %+v; want admitted with a warning", d)
	}
	g.Admit("k", "", "r9", 1)
	g.Admit("k", "", "r10", 1)
	d := g.Admit("k", "", "r11", 1)
	if !d.Denied || d.RetryAfter != time.Second || !strings.Contains(d.Message, "held by requests in flight") {
		t.Fatalf("beyond this proxy's share = %+v; want denied for a second", d)
	}
	if d := g.Admit("k", "", "", 0); d.Denied { // a non-premium request still goes
		t.Errorf("non-premium request denied: %+v", d)
	}
	if d := g.Admit("other", "", "", 5); d.Denied || d.Warning != "" {
		t.Errorf("a key without budget: %+v", d)
	}
	// New figures that do not hold the pending requests yet: they still
	// count against the share.
	g.Set([]*brokerv1.BudgetState{{Key: "k", MonthlyPremium: 10, PremiumSpent: 7, PremiumShare: 3, ResetsAt: timestamppb.New(reset)}})
	if d := g.Admit("k", "", "r11", 1); !d.Denied {
		t.Errorf("pending requests forgotten at new figures: %+v", d)
	}
	// Acknowledged and in the figures: spent.
	g.Acked([]string{"r8", "r9", "r10"})
	g.Set([]*brokerv1.BudgetState{{Key: "k", MonthlyPremium: 10, PremiumSpent: 10, ResetsAt: timestamppb.New(reset)}})
	d = g.Admit("k", "", "r11", 1)
	if !d.Denied || d.RetryAfter <= time.Hour || !strings.Contains(d.Message, "spent its monthly premium budget") || !strings.Contains(d.Message, "resets at 2027-01-01T00:00:00Z") {
		t.Fatalf("10 of 10 spent = %+v; want denied until the reset", d)
	}
	// Raised: through again.
	g.Set([]*brokerv1.BudgetState{{Key: "k", MonthlyPremium: 11, PremiumSpent: 10, PremiumShare: 1, ResetsAt: timestamppb.New(reset)}})
	if d := g.Admit("k", "", "r12", 1); d.Denied {
		t.Errorf("after raising the budget to 11 with 10 spent: %+v", d)
	}
}

func TestTokenBudget(t *testing.T) {
	g, _ := gate(t, &brokerv1.BudgetState{Key: "k", MonthlyTokens: 1000, TokensSpent: 900})
	if d := g.Admit("k", "", "", 0); d.Denied || d.Warning == "" {
		t.Fatalf("900 of 1000 tokens = %+v; want admitted, warned", d)
	}
	g.AddTokens("k", 100)
	if d := g.Admit("k", "", "", 0); !d.Denied || d.Budget != "monthly token budget" {
		t.Fatalf("1000 of 1000 tokens = %+v; want denied", d)
	}
}

func TestRPMShareIsASlidingWindow(t *testing.T) {
	g, fc := gate(t, &brokerv1.BudgetState{Key: "k", Rpm: 60, RpmShare: 20})
	for i := range 20 {
		if d := g.Admit("k", "", "", 0); d.Denied {
			t.Fatalf("request %d of the share denied: %+v", i+1, d)
		}
		fc.Advance(time.Second)
	}
	d := g.Admit("k", "", "", 0)
	if !d.Denied || d.Budget != "rpm limit" || d.RetryAfter != 40*time.Second {
		t.Fatalf("21st within a minute = %+v; want denied, retry in 40 s", d)
	}
	fc.Advance(40 * time.Second) // the first admission leaves the window
	if d := g.Admit("k", "", "", 0); d.Denied {
		t.Fatalf("after the oldest left the window: %+v", d)
	}
	if d := g.Admit("k", "", "", 0); !d.Denied {
		t.Fatal("a second one in the same second went through: the window holds 20")
	}
}

func TestSpentAccountLeavesPools(t *testing.T) {
	var got []string
	g := New(Config{AccountSpent: func(a string, r time.Time) { got = append(got, a+" "+r.Format(time.DateOnly)) }})
	g.Set([]*brokerv1.BudgetState{
		{Account: "alice", MonthlyPremium: 50, PremiumSpent: 50, ResetsAt: timestamppb.New(reset)},
		{Account: "bob", MonthlyPremium: 50, PremiumSpent: 10, ResetsAt: timestamppb.New(reset)},
	})
	if len(got) != 1 || got[0] != "alice 2027-01-01" {
		t.Errorf("spent accounts reported = %v; want alice until 2027-01-01", got)
	}
}

// A key bound to one account alone cannot be helped by a pool: its premium
// requests are refused while that account's budget is spent, naming the
// account's budget and its reset; free requests and other accounts still go.
func TestSpentAccountRefusesItsOwnKeys(t *testing.T) {
	g, fc := gate(t,
		&brokerv1.BudgetState{Account: "alice", MonthlyPremium: 50, PremiumSpent: 50},
		&brokerv1.BudgetState{Account: "bob", MonthlyPremium: 50, PremiumSpent: 42},
		&brokerv1.BudgetState{Key: "k", MonthlyPremium: 100, PremiumSpent: 1, PremiumShare: 99},
	)
	for _, key := range []string{"k", "unbudgeted"} {
		d := g.Admit(key, "alice", "r1", 1)
		if !d.Denied || d.Budget != "monthly premium budget" || !strings.Contains(d.Message, `account "alice"`) ||
			!strings.Contains(d.Message, "50 of 50 premium units") || !strings.Contains(d.Message, "resets at 2027-01-01T00:00:00Z") {
			t.Errorf("key %s on spent alice = %+v; want refused naming alice's budget and its reset", key, d)
		}
		if want := reset.Sub(fc.Now()); d.RetryAfter != want {
			t.Errorf("key %s on spent alice: Retry-After %s; want %s (the reset)", key, d.RetryAfter, want)
		}
		if d := g.Admit(key, "alice", "r2", 0); d.Denied {
			t.Errorf("key %s: a free request on spent alice = %+v; want admitted (the budget counts premium units)", key, d)
		}
		if d := g.Admit(key, "", "r3", 1); d.Denied {
			t.Errorf("key %s as a pool = %+v; want admitted (the pool skips alice)", key, d)
		}
		d = g.Admit(key, "bob", "r4", 1)
		if d.Denied || !strings.Contains(d.Warning, `account "bob" monthly premium budget 84% spent`) {
			t.Errorf("key %s on bob (42 of 50) = %+v; want admitted with the account's warning", key, d)
		}
	}
	// Raised: through again.
	g.Set([]*brokerv1.BudgetState{{Account: "alice", MonthlyPremium: 60, PremiumSpent: 50, ResetsAt: timestamppb.New(reset)}})
	if d := g.Admit("k", "alice", "r5", 1); d.Denied {
		t.Errorf("after raising alice's budget: %+v", d)
	}
}

func TestHeldBudgets(t *testing.T) {
	g, _ := gate(t, &brokerv1.BudgetState{Key: "k", MonthlyPremium: 10}, &brokerv1.BudgetState{Account: "a", MonthlyPremium: 5})
	tests := []struct {
		name string
		get  func() *brokerv1.BudgetState
		want float64 // monthly premium; 0: none held
	}{
		{"key", func() *brokerv1.BudgetState { return g.KeyBudget("k") }, 10},
		{"account", func() *brokerv1.BudgetState { return g.AccountBudget("a") }, 5},
		{"unknown key", func() *brokerv1.BudgetState { return g.KeyBudget("a") }, 0},
		{"unknown account", func() *brokerv1.BudgetState { return g.AccountBudget("k") }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.get()
			if tt.want == 0 {
				if b != nil {
					t.Fatalf("= %v; want nil", b)
				}
				return
			}
			if b.GetMonthlyPremium() != tt.want {
				t.Fatalf("monthly premium = %v; want %v", b.GetMonthlyPremium(), tt.want)
			}
			b.MonthlyPremium = 1 // a copy: the gate's figures stay
			if again := tt.get(); again.GetMonthlyPremium() != tt.want {
				t.Errorf("after changing the returned figures, held %v; want %v", again.GetMonthlyPremium(), tt.want)
			}
		})
	}
	// New figures replace the held ones; a budget removed is gone.
	g.Set([]*brokerv1.BudgetState{{Key: "k", MonthlyPremium: 12}})
	if got := g.KeyBudget("k").GetMonthlyPremium(); got != 12 {
		t.Errorf("after new figures, key budget %v; want 12", got)
	}
	if b := g.AccountBudget("a"); b != nil {
		t.Errorf("account budget after its removal = %v; want nil", b)
	}
}
