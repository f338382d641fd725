package broker

import (
	"cmp"
	"context"
	"slices"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// budgetWarnAt is the part of a budget spent from which it is in warning:
// the fraction at which proxies add X-Budget-Warning and the broker logs.
const budgetWarnAt = 0.8

// ListBudgets lists the budgets with their figures (admin keys only). It
// reads the store at the call instead of the book's snapshot: the snapshot
// follows this broker's intake at once but another broker's only when a
// budget changes, and an admin's listing should hold every acknowledged
// report.
func (u *UsageService) ListBudgets(ctx context.Context, req *brokerv1.ListBudgetsRequest) (*brokerv1.ListBudgetsResponse, error) {
	if k := callerKey(ctx); k != nil && !k.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "ListBudgets needs an admin broker key; %q is not one", k.Name)
	}
	if u.budgets == nil {
		return nil, status.Error(codes.Unimplemented, "this broker keeps no budgets")
	}
	if len(req.GetKey()) > maxUsageField || len(req.GetAccount()) > maxUsageField {
		return nil, status.Errorf(codes.InvalidArgument, "key and account are at most %d bytes", maxUsageField)
	}
	snap, start, err := u.budgets.read(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading budgets: %v", err)
	}
	resp := &brokerv1.ListBudgetsResponse{PeriodStart: timestamppb.New(start), ResetsAt: timestamppb.New(snap.resets)}
	for _, bg := range snap.budgets {
		if (req.GetKey() != "" || req.GetAccount() != "") &&
			!(bg.Kind == store.BudgetKey && bg.Name == req.GetKey()) && !(bg.Kind == store.BudgetAccount && bg.Name == req.GetAccount()) {
			continue
		}
		resp.Budgets = append(resp.Budgets, snap.summary(bg))
	}
	// Keys first (the store orders by kind, accounts first), then by name.
	slices.SortStableFunc(resp.Budgets, func(a, b *brokerv1.BudgetSummary) int {
		return cmp.Or(cmp.Compare(kindRank(a), kindRank(b)), cmp.Compare(a.GetKey(), b.GetKey()), cmp.Compare(a.GetAccount(), b.GetAccount()))
	})
	return resp, nil
}

func kindRank(s *brokerv1.BudgetSummary) int {
	if s.GetKey() != "" {
		return 0
	}
	return 1
}

// summary is bg's figures as ListBudgets answers them.
func (s *budgetSnap) summary(bg store.Budget) *brokerv1.BudgetSummary {
	sp := s.spent(bg)
	out := &brokerv1.BudgetSummary{
		MonthlyPremium: bg.MonthlyPremium, PremiumSpent: sp.PremiumUnits,
		MonthlyTokens: bg.MonthlyTokens, TokensSpent: sp.Tokens,
		Rpm: bg.RPM, ResetsAt: timestamppb.New(s.resets),
		Status: budgetStatus(sp.PremiumUnits, bg.MonthlyPremium, float64(sp.Tokens), float64(bg.MonthlyTokens)),
	}
	if bg.MonthlyPremium > 0 {
		out.PremiumRemaining = max(0, bg.MonthlyPremium-sp.PremiumUnits)
	}
	if bg.MonthlyTokens > 0 {
		out.TokensRemaining = max(0, bg.MonthlyTokens-sp.Tokens)
	}
	if bg.Kind == store.BudgetAccount {
		out.Account = bg.Name
	} else {
		out.Key = bg.Name
	}
	return out
}

// budgetStatus is the worse state of the (spent, limit) pairs given; a
// limit of 0 is none.
func budgetStatus(spentLimit ...float64) brokerv1.BudgetStatus {
	st := brokerv1.BudgetStatus_BUDGET_STATUS_OK
	for i := 0; i+1 < len(spentLimit); i += 2 {
		spent, limit := spentLimit[i], spentLimit[i+1]
		switch {
		case limit <= 0:
		case spent >= limit:
			return brokerv1.BudgetStatus_BUDGET_STATUS_EXCEEDED
		case spent >= budgetWarnAt*limit:
			st = brokerv1.BudgetStatus_BUDGET_STATUS_WARNING
		}
	}
	return st
}
