// Command sandbox runs the sandbox upstream: a fake of GitHub and of the
// Copilot API for the local quick start. It prints its URL, the GitHub token
// it accepts (a fake credential: printing it is the point) and the admin API.
//
//	sandbox --addr 127.0.0.1:8787 --github-token-file /tmp/gh-token
//
// Every flag has an environment variable: SANDBOX_ADDR, SANDBOX_TOKEN_LIFETIME,
// SANDBOX_REFRESH_IN, SANDBOX_CHUNKS, SANDBOX_CHUNK_DELAY, SANDBOX_SKU,
// SANDBOX_GITHUB_TOKEN, SANDBOX_GITHUB_TOKEN_FILE, SANDBOX_DEVICE_AUTO_APPROVE,
// SANDBOX_MIN_PLUGIN_VERSION, SANDBOX_BETAS, SANDBOX_TLS_CERT, SANDBOX_TLS_KEY,
// SANDBOX_API_URL.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/login"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

// options are the command's settings; each flag defaults to its environment
// variable, then to the value shown.
type options struct {
	addr        string
	lifetime    time.Duration
	refreshIn   time.Duration
	chunks      int
	chunkDelay  time.Duration
	sku         string
	token       string
	tokenFile   string
	autoApprove int
	minPlugin   string
	betas       string
	tlsCert     string
	tlsKey      string
	apiURL      string
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8787", "listen address (loopback by default)")
	fs.DurationVar(&o.lifetime, "token-lifetime", 30*time.Minute, "lifetime of issued Copilot tokens")
	fs.DurationVar(&o.refreshIn, "refresh-in", 1500*time.Second, "refresh_in of the exchange answer")
	fs.IntVar(&o.chunks, "chunks", 5, "content chunks per stream")
	fs.DurationVar(&o.chunkDelay, "chunk-delay", 50*time.Millisecond, "delay between stream chunks")
	fs.StringVar(&o.sku, "sku", "monthly_subscriber", "account plan (sku)")
	fs.StringVar(&o.token, "github-token", "", "fake GitHub token to accept (default: generated)")
	fs.StringVar(&o.tokenFile, "github-token-file", "", "write the accepted GitHub token to this file (mode 0600)")
	fs.IntVar(&o.autoApprove, "device-auto-approve", 0, "approve device codes on their Nth poll (0: never)")
	fs.StringVar(&o.minPlugin, "min-plugin-version", sandbox.DefaultMinPluginVersion, "oldest Editor-Plugin-Version (X.Y.Z) served; older clients get 466 (0.0.0: all)")
	fs.StringVar(&o.betas, "betas", strings.Join(sandbox.DefaultBetas, ","), "anthropic-beta values /v1/messages accepts, comma-separated (NAME-* matches by prefix); others get 400")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "certificate (PEM) to serve HTTPS with (with --tls-key; default: plain HTTP)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&o.apiURL, "api-url", "", "Copilot API base URL put in the tokens' endpoints.api (default: the URL the exchange was called with)")
	if err := ops.ParseFlags(fs, "SANDBOX", args, getenv); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the usage was printed; asking for it is no failure
	}
	if err != nil {
		return err
	}
	var tc *tls.Config
	switch {
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case o.tlsCert != "":
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if _, _, err := identity.ParseVersion("x/" + o.minPlugin); err != nil {
		return fmt.Errorf("--min-plugin-version: %w", err)
	}
	betas := []string{}
	for b := range strings.SplitSeq(o.betas, ",") {
		if b = strings.TrimSpace(b); b != "" {
			betas = append(betas, b)
		}
	}
	cfg := sandbox.Config{
		MinPluginVersion:       o.minPlugin,
		Betas:                  betas,
		TokenLifetime:          o.lifetime,
		RefreshIn:              o.refreshIn,
		Chunks:                 o.chunks,
		ChunkDelay:             o.chunkDelay,
		SKU:                    o.sku,
		BaseURL:                o.apiURL,
		DeviceAutoApproveAfter: o.autoApprove,
		Logger:                 slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if o.token != "" {
		cfg.GitHubTokens = []secret.Secret{secret.New(o.token)}
	}
	if !ops.IsLoopback(o.addr) {
		fmt.Fprintf(stderr, "sandbox: warning: listening beyond loopback on %s; the admin API has no authentication\n", o.addr)
	}
	s := sandbox.New(cfg)
	if o.tokenFile != "" {
		// Written before the sandbox answers anything, so whoever waits for
		// it to answer finds the file; replaced when it exists (force),
		// atomically and with mode 0600.
		if err := login.WriteFile(o.tokenFile, s.GitHubToken(), true); err != nil {
			return err
		}
	}
	sb, err := sandbox.ServeTLS(s, o.addr, tc)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sandbox listening on %s\n", sb.URL)
	fmt.Fprintf(stdout, "github token (fake): %s\n", sb.GitHubToken().Reveal())
	fmt.Fprintf(stdout, "admin api: %s/_sandbox/\n", sb.URL)

	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sb.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
