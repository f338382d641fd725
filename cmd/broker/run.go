package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/copilot-broker/copilot-broker/internal/broker/server"
)

const usage = `Usage: broker <command> [flags]

Commands:
  serve   run the token broker (gRPC, REST gateway, admin endpoints)
  login   get a GitHub token through the OAuth device flow and save it
  keys    manage the team's client API keys (create, list, update, revoke, import)
  usage   print the usage ledger's sums (by key, account, model, day)
  budgets print every budget: spent, left, state, the month's reset
  accounts set-budget NAME N   an account's monthly premium budget

Run "broker <command> --help" for the flags of a command; each flag can
also be set through the BROKER_<FLAG> environment variable shown there.
`

// run is the whole program; main only adds signals and the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serveCmd(ctx, rest, getenv, stdout, stderr, server.Start)
	case "login":
		err = loginCmd(ctx, rest, getenv, stdin, stdout, stderr)
	case "keys":
		err = keysCmd(ctx, rest, getenv, stdout, stderr)
	case "usage":
		err = usageCmd(ctx, rest, getenv, stdout, stderr)
	case "budgets":
		err = budgetsCmd(ctx, rest, getenv, stdout, stderr)
	case "accounts":
		err = accountsCmd(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
