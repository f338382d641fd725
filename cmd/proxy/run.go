package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

const usage = `Usage: proxy <command> [flags]

Commands:
  serve   run the proxy (client listener and admin endpoints)

Run "proxy serve --help" for its flags; each flag can also be set through
the PROXY_<FLAG> environment variable shown there.
`

// run is the whole program; main only adds signals and the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serveCmd(ctx, rest, getenv, stdout, stderr)
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
