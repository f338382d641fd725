// Command broker holds a team's GitHub credential, keeps the short-lived
// Copilot token fresh and hands it out over gRPC and REST.
//
//	broker serve [flags]   run the broker (see broker serve --help)
//	broker login [flags]   get a GitHub token through the device flow
//
// The work is done by package internal/broker/server (serve) and
// internal/login (login); this command only maps flags and environment
// variables onto them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}
