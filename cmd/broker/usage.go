package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
)

const usageUsage = `Usage: broker usage [--group-by key,model] [--from 2026-12-01] [--to 2026-12-31] [--key K] [--account A] [--model M] [--csv]

Prints the sums of the broker's usage ledger: requests, premium requests and
units, input, output and cached tokens, one row per group. --from and --to
take dates (UTC; --to includes its day) or RFC 3339 times; the default range
is this month so far. --group-by takes any of key, account, model, day.

The broker is reached at --broker-addr with the admin key from
BROKER_ADMIN_KEY or --admin-key-file.

Flags:
`

func usageCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker usage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageUsage); fs.PrintDefaults() }
	var conn keysConn
	conn.register(fs)
	var req brokerv1.QueryUsageRequest
	var groupBy string
	var asCSV bool
	fs.StringVar(&groupBy, "group-by", "key,model", "groups: any of key, account, model, day, comma-separated (empty: one row of totals)")
	fs.StringVar(&req.From, "from", "", "start: a date (UTC) or an RFC 3339 time (default: the start of this month)")
	fs.StringVar(&req.To, "to", "", "end: a date (that whole day) or an RFC 3339 time, exclusive (default: now)")
	fs.StringVar(&req.Key, "key", "", "only this client key")
	fs.StringVar(&req.Account, "account", "", "only this account")
	fs.StringVar(&req.Model, "model", "", "only this model")
	fs.BoolVar(&asCSV, "csv", false, "print CSV instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: unexpected arguments %q", fs.Args())
	}
	if groupBy != "" {
		req.GroupBy = []string{groupBy}
	}
	var resp *brokerv1.QueryUsageResponse
	err := conn.callUsage(ctx, getenv, "usage: ", func(ctx context.Context, c brokerv1.UsageServiceClient) (err error) {
		resp, err = c.QueryUsage(ctx, &req)
		return err
	})
	if err != nil {
		return err
	}
	q, _ := broker.ParseUsageQuery(&req, time.Now())
	groups := broker.UsageGroups(q.GroupBy)
	out := broker.UsageCSV(groups, resp.GetRows())
	if asCSV {
		_, err := stdout.Write(out)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for line := range strings.SplitSeq(strings.TrimSuffix(string(out), "\n"), "\n") {
		fmt.Fprintln(tw, strings.ReplaceAll(line, ",", "\t"))
	}
	return tw.Flush()
}
