package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

const budgetsUsage = `Usage: broker budgets [--key K] [--account A]

Prints every key's and account's monthly budget: premium units and tokens
spent of the limit and what is left ("-": no limit), the rpm limit, the
state (ok, warning from 80 % spent, exceeded) and when the month resets.
Budgets are set with broker keys create|update --monthly-premium N
--monthly-tokens N --rpm N and broker accounts set-budget NAME N.

The broker is reached at --broker-addr with the admin key from
BROKER_ADMIN_KEY or --admin-key-file.

Flags:
`

func budgetsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker budgets", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, budgetsUsage); fs.PrintDefaults() }
	var conn keysConn
	conn.register(fs)
	var req brokerv1.ListBudgetsRequest
	fs.StringVar(&req.Key, "key", "", "only this managed key's budget")
	fs.StringVar(&req.Account, "account", "", "only this account's budget")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("budgets: unexpected arguments %q", fs.Args())
	}
	var resp *brokerv1.ListBudgetsResponse
	err := conn.callUsage(ctx, getenv, "budgets: ", func(ctx context.Context, c brokerv1.UsageServiceClient) (err error) {
		resp, err = c.ListBudgets(ctx, &req)
		return err
	})
	if err != nil {
		return err
	}
	return printBudgets(stdout, resp)
}

// printBudgets writes the budgets as a table under a line naming the month.
func printBudgets(w io.Writer, resp *brokerv1.ListBudgetsResponse) error {
	fmt.Fprintf(w, "budget month %s to %s\n", when(resp.GetPeriodStart(), "-"), when(resp.GetResetsAt(), "-"))
	if len(resp.GetBudgets()) == 0 {
		_, err := fmt.Fprintln(w, "no budgets (broker keys update NAME --monthly-premium N, broker accounts set-budget NAME N)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tPREMIUM SPENT\tLEFT\tTOKENS SPENT\tLEFT\tRPM\tSTATE")
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, b := range resp.GetBudgets() {
		kind, name := "key", b.GetKey()
		if name == "" {
			kind, name = "account", b.GetAccount()
		}
		premium, premiumLeft := num(b.GetPremiumSpent())+" / -", "-"
		if b.GetMonthlyPremium() > 0 {
			premium, premiumLeft = num(b.GetPremiumSpent())+" / "+num(b.GetMonthlyPremium()), num(b.GetPremiumRemaining())
		}
		tokens, tokensLeft := strconv.FormatInt(b.GetTokensSpent(), 10)+" / -", "-"
		if b.GetMonthlyTokens() > 0 {
			tokens = strconv.FormatInt(b.GetTokensSpent(), 10) + " / " + strconv.FormatInt(b.GetMonthlyTokens(), 10)
			tokensLeft = strconv.FormatInt(b.GetTokensRemaining(), 10)
		}
		rpm := "-"
		if b.GetRpm() > 0 {
			rpm = strconv.FormatInt(b.GetRpm(), 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", kind, name, premium, premiumLeft, tokens, tokensLeft, rpm,
			strings.ToLower(strings.TrimPrefix(b.GetStatus().String(), "BUDGET_STATUS_")))
	}
	return tw.Flush()
}
