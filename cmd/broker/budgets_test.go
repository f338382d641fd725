package main

import (
	"context"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPrintBudgets(t *testing.T) {
	start, reset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	resp := &brokerv1.ListBudgetsResponse{PeriodStart: timestamppb.New(start), ResetsAt: timestamppb.New(reset), Budgets: []*brokerv1.BudgetSummary{
		{Key: "alice", MonthlyPremium: 20, PremiumSpent: 17.5, PremiumRemaining: 2.5, TokensSpent: 900, Rpm: 60, Status: brokerv1.BudgetStatus_BUDGET_STATUS_WARNING},
		{Account: "seat-1", MonthlyPremium: 100, PremiumSpent: 100, MonthlyTokens: 1000, TokensSpent: 1200, Status: brokerv1.BudgetStatus_BUDGET_STATUS_EXCEEDED},
	}}
	var out strings.Builder
	if err := printBudgets(&out, resp); err != nil {
		t.Fatal(err)
	}
	want := `budget month 2026-12-01 00:00Z to 2027-01-01 00:00Z
KIND     NAME    PREMIUM SPENT  LEFT  TOKENS SPENT  LEFT  RPM  STATE
key      alice   17.5 / 20      2.5   900 / -       -     60   warning
account  seat-1  100 / 100      0     1200 / 1000   0     -    exceeded
`
	if out.String() != want {
		t.Errorf("printBudgets =\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if err := printBudgets(&out, &brokerv1.ListBudgetsResponse{}); err != nil || !strings.Contains(out.String(), "no budgets") {
		t.Errorf("printBudgets(none) = %q, %v; want it to say there are no budgets", out.String(), err)
	}
}

func TestBudgetsCLI(t *testing.T) {
	addr := keysBroker(t)
	keysCLI := keysRunner(t, addr, cliAdminKey)
	if _, _, err := keysCLI("create", "alice", "--monthly-premium", "20", "--rpm", "60"); err != nil {
		t.Fatal(err)
	}
	budgets := func(key string, args ...string) (string, error) {
		var out, errb testutil.SyncBuffer
		err := run(context.Background(), append(append([]string{"budgets"}, args...), "--broker-addr", addr),
			env(map[string]string{"BROKER_ADMIN_KEY": key}), nil, &out, &errb)
		return out.String(), err
	}
	out, err := budgets(cliAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "key alice 0 / 20 20 0 / - - 60 ok") {
		t.Errorf("broker budgets =\n%s\nwant alice's budget: 0 of 20 premium units, 20 left, rpm 60, ok", out)
	}
	if out, err := budgets(cliAdminKey, "--account", "nobody"); err != nil || strings.Contains(out, "alice") {
		t.Errorf("broker budgets --account nobody = %q, %v; want no budget listed", out, err)
	}
	if _, err := budgets(cliProxyKey); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("broker budgets with a proxy's key: %v; want the broker's refusal naming the admin key", err)
	}
}
