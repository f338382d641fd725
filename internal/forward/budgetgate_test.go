package forward

import (
	"net/http"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward/keybudget"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A key bound to one account alone gets 429 budget_exceeded in its own
// dialect, naming the account's budget and its reset, with Retry-After,
// once that account's budget is spent; a pool skips the account instead,
// and the upstream never sees the refused requests.
func TestSpentAccountBudget(t *testing.T) {
	var gate *keybudget.Gate
	e := newPoolEnv(t, func(c *Config) {
		gate = keybudget.New(keybudget.Config{Clock: c.Clock, AccountSpent: func(a string, r time.Time) { c.Pool.QuotaSpent(a, r) }})
		c.Budgets = gate
	})
	reset := e.clk.Now().Add(72 * time.Hour)
	gate.Set([]*brokerv1.BudgetState{{Account: "alice", MonthlyPremium: 20, PremiumSpent: 20, ResetsAt: timestamppb.New(reset)}})

	for _, tc := range []struct {
		path, body, want string
	}{
		{"/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`, `"code":"budget_exceeded"`},
		{"/v1/messages", `{"model":"claude-sonnet-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
			`{"type":"error","error":{"type":"rate_limit_error","message":"budget_exceeded: account \"alice\"`},
	} {
		resp, body := e.post(t, aliceKey, tc.path, tc.body)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, tc.want) ||
			!strings.Contains(body, "monthly premium budget (20 of 20 premium units)") || !strings.Contains(body, "resets at "+reset.Format(time.RFC3339)) {
			t.Errorf("%s on spent alice = %d %s; want 429 with %s naming the account's budget and its reset", tc.path, resp.StatusCode, body, tc.want)
		}
		if got, want := resp.Header.Get("Retry-After"), "259200"; got != want {
			t.Errorf("%s: Retry-After %q; want %q (seconds to the reset)", tc.path, got, want)
		}
	}
	if calls := e.up.takeCalls(); len(calls) != 0 {
		t.Errorf("upstream calls %v; want none for a spent account", calls)
	}
	// A pool with alice in it goes to another member.
	for i := range 6 {
		resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(i))
		if resp.StatusCode != 200 || strings.Contains(body, `"account":"alice"`) {
			t.Fatalf("pool conversation %d = %d %s; want 200 from bob or carol", i, resp.StatusCode, body)
		}
	}
	// Raised: alice's key goes through again.
	gate.Set([]*brokerv1.BudgetState{{Account: "alice", MonthlyPremium: 30, PremiumSpent: 20, ResetsAt: timestamppb.New(reset)}})
	if resp, body := e.post(t, aliceKey, "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Errorf("after raising alice's budget = %d %s; want 200", resp.StatusCode, body)
	}
}
