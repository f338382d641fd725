// Command proxy forwards OpenAI- and Anthropic-style requests to the Copilot
// API with the token it watches from the broker.
//
//	proxy serve [flags]   run the proxy (see proxy serve --help)
//
// The work is done by package internal/forward/server; this command only maps
// flags and environment variables onto it.
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
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}
