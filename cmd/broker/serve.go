package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/broker/server"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
)

// serveFlags binds `broker serve`'s flags onto a server.Config.
func serveFlags(fs *flag.FlagSet, cfg *server.Config, keysFile, logLevel, logFormat *string) {
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", server.DefaultGRPCAddr, "gRPC listen address (TokenBrokerService, grpc.health.v1, reflection)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", server.DefaultHTTPAddr, "REST gateway listen address (/v1/token, /v1/token:watch, /v1/token:refresh, /v1/accounts, /v1/accounts:watch, /v1/keys, /v1/usage, /v1/budgets, /openapi.json; the team console under /ui/)")
	fs.StringVar(&cfg.ConsoleProxyURL, "console-proxy-url", "http://127.0.0.1:4141", "where users reach a proxy, shown by the console in the lines a new key's owner pastes (ANTHROPIC_BASE_URL, OPENAI_BASE_URL)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", server.DefaultAdminAddr, "admin listen address (/healthz, /readyz, /metrics; no key)")
	fs.StringVar(&cfg.GitHubAPIURL, "github-api-url", server.DefaultGitHubAPIURL, "GitHub API base URL, https (plain http only on loopback), redirects never followed (GitHub Enterprise Cloud with data residency: https://api.TENANT.ghe.com; Copilot does not run on GitHub Enterprise Server)")
	fs.StringVar(&cfg.GitHubTokenFile, "github-token-file", "", "file holding the GitHub token, re-read when it changes and on SIGHUP (else the GITHUB_TOKEN environment variable)")
	fs.DurationVar(&cfg.TokenFilePoll, "token-file-poll", server.DefaultTokenFilePoll, "how often to check --github-token-file and --accounts-dir for changes")
	fs.StringVar(&cfg.AccountsDir, "accounts-dir", "", "directory of accounts: one file per account, named after it, holding its GitHub token (mode 0600); re-read when it changes and on SIGHUP")
	fs.DurationVar(&cfg.QuotaInterval, "quota-interval", server.DefaultQuotaInterval, "how often to read each account's quota from GitHub (copilot_internal/user; ±10% jitter)")
	fs.StringVar(keysFile, "keys-file", "", "broker keys, one NAME:SECRET[:ACCOUNTS[:admin]] a line (ACCOUNTS: a,b or *, the accounts the key may read; default all; admin: the key may manage client keys); callers send Authorization: Bearer SECRET")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "directory of the state store's SQLite file (managed client keys; default $XDG_STATE_HOME/copilot-broker, else ~/.local/state/copilot-broker)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://...) for the state store instead of SQLite, so several broker replicas share keys; prefer the environment variable, flags show in process lists")
	fs.DurationVar(&cfg.KeysPollInterval, "keys-poll-interval", broker.DefaultKeysPollInterval, "how often to check the store for key changes made by another broker replica")
	fs.BoolVar(&cfg.InsecureNoAuth, "insecure-no-auth", false, "allow listening beyond loopback without --keys-file")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "TLS certificate (PEM) for the gRPC and REST listeners")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "TLS private key (PEM) for --tls-cert")
	fs.StringVar(&cfg.TLSClientCAFile, "tls-client-ca", "", "CA certificates (PEM) that client certificates must chain to (mutual TLS)")
	fs.DurationVar(&cfg.MaxStreamAge, "max-stream-age", broker.DefaultMaxStreamAge, "mean lifetime of a watch stream (±10% jitter); clients then reconnect")
	fs.DurationVar(&cfg.MaxPendingWait, "max-pending-wait", broker.DefaultMaxPendingWait, "longest GetToken waits for the first token")
	fs.DurationVar(&cfg.MinForceInterval, "min-force-interval", tokens.DefaultMinForceInterval, "floor between an exchange and one forced by RefreshToken")
	fs.IntVar(&cfg.PublicStreams.Total, "max-public-streams", broker.DefaultMaxPublicStreams, "most health Watch and reflection streams open at once from callers without a broker key (more get RESOURCE_EXHAUSTED)")
	fs.IntVar(&cfg.PublicStreams.PerConn, "max-public-streams-per-conn", broker.DefaultMaxPublicStreamsPerConn, "most such streams on one connection")
	fs.IntVar(&cfg.Streams.PerConn, "max-streams-per-conn", broker.DefaultMaxStreamsPerConn, "most WatchToken and WatchAccounts streams open on one gRPC connection (more get RESOURCE_EXHAUSTED)")
	fs.IntVar(&cfg.Streams.PerKey, "max-streams-per-key", broker.DefaultMaxStreamsPerKey, "most WatchToken and WatchAccounts streams open with one broker key, gRPC and REST together")
	fs.Var((*days)(&cfg.UsageRetention), "usage-retention", "how long usage events are kept (e.g. 90d, 720h) (default 90d)")
	fs.IntVar(&cfg.BudgetMonthStartDay, "budget-month-start-day", 1, "day of the month (1-28, UTC) on which monthly budgets reset")
	fs.Var((*days)(&cfg.UsageRollupRetention), "usage-rollup-retention", "how long the usage ledger's daily sums are kept (default 730d)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", ops.DefaultMaxConnections, "most connections each listener (gRPC, REST, admin) holds open at once; more are closed when accepted (-1: no cap)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "how long each shutdown stage waits for calls to finish")
	cfg.Exchange.Editor.RegisterFlags(fs, identity.Exchange)
	fs.StringVar(&cfg.UpstreamProfile, "upstream-profile", "", "upstream profile file (JSON or YAML: editor_version, editor_plugin_version, user_agent, integration_id, exchange_api_version, api_version, headers), re-read on change and SIGHUP and pushed to the proxies; empty: the built-in default")
	fs.DurationVar(&cfg.UpstreamProfilePoll, "upstream-profile-poll", identity.DefaultProfilePoll, "how often --upstream-profile is read for changes")
	fs.StringVar(logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(logFormat, "log-format", "auto", "log format: json, text, or auto (text on a terminal, else JSON)")
}

// startFunc starts the server: server.Start, or a test's wrapper of it.
type startFunc func(context.Context, server.Config) (*server.Server, error)

func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, start startFunc) error {
	// SIGHUP's default action ends the process. Take it over before anything
	// else, so an operator's (or a config manager's) SIGHUP while the broker
	// starts is kept in hup and applied once the server exists, instead of
	// killing it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var cfg server.Config
	var keysFile, logLevel, logFormat string
	fs := flag.NewFlagSet("broker serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serveFlags(fs, &cfg, &keysFile, &logLevel, &logFormat)
	if err := ops.ParseFlags(fs, "BROKER", args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	logger, err := ops.NewLogger(stderr, logFormat, logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	ops.WarnSecretFiles(logger, keysFile, cfg.GitHubTokenFile)
	if keysFile != "" {
		if cfg.Keys, err = keys.Load(keysFile); err != nil {
			return err
		}
	}
	if cfg.GitHubTokenFile == "" {
		cfg.GitHubToken = secret.New(getenv("GITHUB_TOKEN"))
	}
	if cfg.StateDir == "" && cfg.DatabaseURL == "" {
		if d, ok := store.DefaultStateDir(getenv); ok {
			cfg.StateDir = d
		} else {
			logger.Warn("no state directory (set --state-dir, XDG_STATE_HOME or HOME): managed client keys and the usage ledger are off")
		}
	}
	srv, err := start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker listening: grpc=%s http=%s admin=%s\n", srv.Addrs().GRPC, srv.Addrs().HTTP, srv.Addrs().Admin)

	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	for {
		select {
		case <-hup:
			logger.Info("SIGHUP: re-reading the GitHub token", "accounts_dir", cfg.AccountsDir)
			srv.Reload()
		case err := <-done:
			return err
		}
	}
}

// days is a duration flag that also takes whole days ("90d").
type days time.Duration

func (d *days) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	td := time.Duration(*d)
	if td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	return td.String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v <= 0 {
			return fmt.Errorf("%q: want a positive number of days (90d) or a duration (720h)", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("%q: want a positive number of days (90d) or a duration (720h)", s)
	}
	*d = days(v)
	return nil
}
