package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// budgetFlags are the budget flags of `broker keys create|update`.
type budgetFlags struct {
	premium     float64
	tokens, rpm int64
}

var budgetFlagNames = []string{"monthly-premium", "monthly-tokens", "rpm"}

func (b *budgetFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&b.premium, "monthly-premium", 0, "premium units the key may use per month (a request costs its model's multiplier; 0: no limit)")
	fs.Int64Var(&b.tokens, "monthly-tokens", 0, "input plus output tokens the key may use per month (0: no limit)")
	fs.Int64Var(&b.rpm, "rpm", 0, "requests per minute the key may make across all proxies (0: no limit)")
}

func (b *budgetFlags) any(set map[string]bool) bool {
	for _, n := range budgetFlagNames {
		if set[n] {
			return true
		}
	}
	return false
}

// onlyBudget: an update that changes the budget alone.
func (b *budgetFlags) onlyBudget(set map[string]bool) bool {
	n := 0
	for _, f := range budgetFlagNames {
		if set[f] {
			n++
		}
	}
	others := 0
	for f := range set {
		switch f {
		case "accounts", "models", "expires", "disable", "enable":
			others++
		}
	}
	return n > 0 && others == 0
}

// apply sets the key's budget: the flags given, the others as they are.
func (b *budgetFlags) apply(ctx context.Context, conn *keysConn, getenv func(string) string, name string, set map[string]bool, out io.Writer) error {
	req := &brokerv1.SetBudgetRequest{Key: name, MonthlyPremium: b.premium, MonthlyTokens: b.tokens, Rpm: b.rpm}
	for _, f := range budgetFlagNames {
		if set[f] { // the others keep their value
			req.Fields = append(req.Fields, strings.ReplaceAll(f, "-", "_"))
		}
	}
	var resp *brokerv1.SetBudgetResponse
	err := conn.callUsage(ctx, getenv, "", func(ctx context.Context, c brokerv1.UsageServiceClient) (err error) {
		resp, err = c.SetBudget(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "budget of key %q: %s\n", name, describeBudget(resp.GetBudget()))
	return nil
}

func describeBudget(b *brokerv1.BudgetState) string {
	part := func(limit, spent string, none bool) string {
		if none {
			return "no limit"
		}
		return spent + " of " + limit
	}
	return fmt.Sprintf("monthly premium %s units, monthly tokens %s, rpm %s; resets %s",
		part(strconv.FormatFloat(b.GetMonthlyPremium(), 'f', -1, 64), strconv.FormatFloat(b.GetPremiumSpent(), 'f', -1, 64), b.GetMonthlyPremium() == 0),
		part(strconv.FormatInt(b.GetMonthlyTokens(), 10), strconv.FormatInt(b.GetTokensSpent(), 10), b.GetMonthlyTokens() == 0),
		map[bool]string{true: "no limit", false: strconv.FormatInt(b.GetRpm(), 10)}[b.GetRpm() == 0],
		b.GetResetsAt().AsTime().Format(time.RFC3339))
}

const accountsUsage = `Usage: broker accounts set-budget NAME PREMIUM_UNITS [flags]

Sets an account's monthly premium budget (0 removes it): once the ledger
holds that many premium units for the account this month, pools skip it
until the month resets, keeping the rest of the seat for its owner.
`

func accountsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "set-budget" {
		fmt.Fprint(stderr, accountsUsage)
		return errors.New("accounts: want set-budget NAME PREMIUM_UNITS")
	}
	fs := flag.NewFlagSet("broker accounts set-budget", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn keysConn
	conn.register(fs)
	var pos []string
	rest := args[1:]
	for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	pos = append(pos, fs.Args()...)
	if len(pos) != 2 {
		return fmt.Errorf("accounts set-budget: want NAME PREMIUM_UNITS, got %q", pos)
	}
	units, err := strconv.ParseFloat(pos[1], 64)
	if err != nil || units < 0 {
		return fmt.Errorf("accounts set-budget: %q is not a number of premium units (0 or more)", pos[1])
	}
	var resp *brokerv1.SetBudgetResponse
	err = conn.callUsage(ctx, getenv, "accounts set-budget: ", func(ctx context.Context, c brokerv1.UsageServiceClient) (err error) {
		resp, err = c.SetBudget(ctx, &brokerv1.SetBudgetRequest{Account: pos[0], MonthlyPremium: units})
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "budget of account %q: %s\n", pos[0], describeBudget(resp.GetBudget()))
	return nil
}
