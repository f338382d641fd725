package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
)

// Defaults of [Config]; `broker serve --help` shows the same values.
const (
	DefaultGRPCAddr        = "127.0.0.1:50051"
	DefaultHTTPAddr        = "127.0.0.1:8080"
	DefaultAdminAddr       = "127.0.0.1:8081"
	DefaultGitHubAPIURL    = tokens.DefaultAPIURL
	DefaultTokenFilePoll   = 5 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultQuotaInterval   = quota.DefaultInterval
	// DefaultUsageRetention and DefaultUsageRollupRetention: 90 days of
	// events, 2 years of daily sums.
	DefaultUsageRetention       = 90 * 24 * time.Hour
	DefaultUsageRollupRetention = 730 * 24 * time.Hour
)

// Config is everything a broker needs. Each field documents its default and,
// for `broker serve`, its flag and environment variable. The zero Config
// (plus a GitHub token) is a working loopback broker.
type Config struct {
	// GRPCAddr is the gRPC listen address; "127.0.0.1:0" picks a free port
	// (see [Server.Addrs]). --grpc-addr, BROKER_GRPC_ADDR, default
	// [DefaultGRPCAddr].
	GRPCAddr string
	// HTTPAddr is the REST gateway's listen address. --http-addr,
	// BROKER_HTTP_ADDR, default [DefaultHTTPAddr].
	HTTPAddr string
	// AdminAddr serves /healthz, /readyz and /metrics, with no key.
	// --admin-addr, BROKER_ADMIN_ADDR, default [DefaultAdminAddr].
	AdminAddr string

	// GitHubAPIURL is GitHub's API base: https://api.github.com, or
	// https://api.TENANT.ghe.com (GitHub Enterprise Cloud with data
	// residency; Copilot does not run on GitHub Enterprise Server). --github-api-url, BROKER_GITHUB_API_URL, default
	// [DefaultGitHubAPIURL].
	GitHubAPIURL string
	// GitHubToken is the long-lived GitHub token, used when GitHubTokenFile
	// is empty. `broker serve` takes it from GITHUB_TOKEN, never a flag.
	GitHubToken secret.Secret
	// GitHubTokenFile holds the GitHub token; it is re-read when it changes
	// (polled every TokenFilePoll) and on [Server.Reload] (SIGHUP).
	// --github-token-file, BROKER_GITHUB_TOKEN_FILE.
	GitHubTokenFile string
	// TokenFilePoll is how often GitHubTokenFile and AccountsDir are checked
	// for changes. --token-file-poll, default [DefaultTokenFilePoll].
	TokenFilePoll time.Duration
	// AccountsDir holds one file per account: the file name is the account
	// name (see keys.ValidAccountName), its content the account's GitHub
	// token. Files added, changed and removed are picked up within
	// TokenFilePoll and on [Server.Reload] (SIGHUP); a removed account's
	// watch streams end with NOT_FOUND. With GitHubToken or GitHubTokenFile
	// too, that token is the default account (""). --accounts-dir,
	// BROKER_ACCOUNTS_DIR.
	AccountsDir string
	// QuotaInterval is how often each account's quota is read from
	// copilot_internal/user, jittered by ±10%. --quota-interval, default
	// [DefaultQuotaInterval].
	QuotaInterval time.Duration

	// Keys are the broker keys callers must present; nil means none are
	// required (allowed only on loopback unless InsecureNoAuth).
	// `broker serve` loads them from --keys-file (BROKER_KEYS_FILE).
	Keys *keys.Set
	// InsecureNoAuth allows listening beyond loopback without keys.
	// --insecure-no-auth, BROKER_INSECURE_NO_AUTH.
	InsecureNoAuth bool

	// StateDir holds the state store's SQLite file (managed client keys).
	// `broker serve` defaults it to $XDG_STATE_HOME/copilot-broker (else
	// ~/.local/state/copilot-broker); here, empty with no DatabaseURL means
	// no store and no key management. --state-dir, BROKER_STATE_DIR.
	StateDir string
	// DatabaseURL (postgres://...) puts the state in PostgreSQL instead, so
	// several broker replicas share it. --database-url, BROKER_DATABASE_URL.
	DatabaseURL string
	// KeysPollInterval is how often the store is checked for key changes
	// made by another broker (default [broker.DefaultKeysPollInterval]).
	// --keys-poll-interval.
	KeysPollInterval time.Duration

	// TLSCertFile and TLSKeyFile enable TLS on the gRPC and REST listeners.
	// --tls-cert, --tls-key (BROKER_TLS_CERT, BROKER_TLS_KEY).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile makes TLS mutual: clients must present a certificate
	// signed by one of these CAs. --tls-client-ca, BROKER_TLS_CLIENT_CA.
	TLSClientCAFile string

	// UsageRetention is how long usage events are kept;
	// UsageRollupRetention how long their daily sums are. --usage-retention,
	// --usage-rollup-retention, defaults [DefaultUsageRetention] and
	// [DefaultUsageRollupRetention].
	UsageRetention, UsageRollupRetention time.Duration
	// BudgetMonthStartDay is the day of the month (1-28, UTC) on which the
	// keys' and accounts' monthly budgets reset. --budget-month-start-day,
	// default 1.
	BudgetMonthStartDay int

	// MaxProxies bounds the proxies the broker tracks (ProxyService);
	// ProxyExpiry is how long one unheard is kept. --max-proxies,
	// --proxy-expiry, defaults [broker.DefaultMaxProxies] and
	// [broker.DefaultProxyExpiry].
	MaxProxies  int
	ProxyExpiry time.Duration
	// ProxyReportInterval, when set, is how often the broker asks proxies
	// to report when nothing changes (default: the proxies' own, 10 s).
	// --proxy-report-interval.
	ProxyReportInterval time.Duration

	// ConsoleProxyURL is where users reach a proxy: the console shows it in
	// the lines a new key's owner pastes. --console-proxy-url.
	ConsoleProxyURL string

	// MaxStreamAge is the mean lifetime of a watch stream, jittered by ±10%.
	// --max-stream-age, default 30m.
	MaxStreamAge time.Duration
	// MaxPendingWait bounds how long GetToken waits for the first token.
	// --max-pending-wait, default 30s.
	MaxPendingWait time.Duration
	// MinForceInterval is the floor between an exchange and a forced one
	// (RefreshToken). --min-force-interval, default
	// [tokens.DefaultMinForceInterval].
	MinForceInterval time.Duration
	// PublicStreams bounds the health Watch and reflection streams held by
	// callers without a broker key (health Check is not limited).
	// --max-public-streams, --max-public-streams-per-conn
	// (BROKER_MAX_PUBLIC_STREAMS, BROKER_MAX_PUBLIC_STREAMS_PER_CONN),
	// defaults [broker.DefaultMaxPublicStreams] and
	// [broker.DefaultMaxPublicStreamsPerConn].
	PublicStreams broker.PublicStreamLimits
	// Streams bounds the API streams (WatchToken, WatchAccounts) callers
	// with a key hold, per connection and per key
	// (--max-streams-per-conn, --max-streams-per-key); zero fields take
	// [broker.DefaultMaxStreamsPerConn] and [broker.DefaultMaxStreamsPerKey].
	Streams broker.StreamLimits
	// MaxConnections caps the connections each listener (gRPC, REST,
	// admin) holds at once; more are closed as soon as accepted.
	// --max-connections, default [ops.DefaultMaxConnections]; negative: no
	// cap.
	MaxConnections int
	// ShutdownTimeout bounds each stage of the graceful shutdown (REST drain,
	// gRPC GracefulStop). --shutdown-timeout, default
	// [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration

	// Exchange configures the token exchange (editor identity, HTTP client);
	// its APIURL is set from GitHubAPIURL. Its Editor fields that are set
	// (the broker's identity flags) override the built-in default under
	// the upstream profile file.
	Exchange tokens.ExchangeConfig
	// UpstreamProfile is the upstream profile file (JSON or YAML; see
	// internal/identity.ParseProfile), re-read when it changes and on
	// SIGHUP, and pushed to the proxies with the token. --upstream-profile
	// (BROKER_UPSTREAM_PROFILE); empty: the built-in default.
	UpstreamProfile string
	// UpstreamProfilePoll is how often the file is read for changes
	// (--upstream-profile-poll, default identity.DefaultProfilePoll).
	UpstreamProfilePoll time.Duration
	// Tune, when set, adjusts the token manager's configuration before it
	// starts; tests and benchmarks use it for short lifetimes.
	Tune func(*tokens.ManagerConfig)
	// QuotaTune, when set, adjusts each account's quota poller
	// configuration; tests use it for short intervals.
	QuotaTune func(*quota.PollerConfig)
	// Clock drives token lifetimes, stream ages and file polling (nil means
	// the real clock).
	Clock clock.Clock
	// Logger receives the broker's logs (nil discards them).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.GitHubAPIURL == "" {
		c.GitHubAPIURL = DefaultGitHubAPIURL
	}
	if c.TokenFilePoll <= 0 {
		c.TokenFilePoll = DefaultTokenFilePoll
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = ops.DefaultMaxConnections
	}
	if c.QuotaInterval <= 0 {
		c.QuotaInterval = DefaultQuotaInterval
	}
	if c.UsageRetention <= 0 {
		c.UsageRetention = DefaultUsageRetention
	}
	if c.UsageRollupRetention <= 0 {
		c.UsageRollupRetention = DefaultUsageRollupRetention
	}
	c.Clock = clock.OrReal(c.Clock)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrNoGitHubToken is returned when neither a token nor a token file is
// configured.
var ErrNoGitHubToken = errors.New("no GitHub token: set GITHUB_TOKEN, --github-token-file or --accounts-dir (create one with `broker login`)")

func (c Config) validate() error {
	if c.GitHubToken.IsZero() && c.GitHubTokenFile == "" && c.AccountsDir == "" {
		return ErrNoGitHubToken
	}
	if err := checkGitHubAPIURL(c.GitHubAPIURL); err != nil {
		return err
	}
	if err := c.Exchange.Editor.Validate(); err != nil {
		return err
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	for name, v := range map[string]time.Duration{"max-stream-age": c.MaxStreamAge, "max-pending-wait": c.MaxPendingWait, "min-force-interval": c.MinForceInterval} {
		if v < 0 {
			return fmt.Errorf("--%s must not be negative", name)
		}
	}
	return nil
}

// checkGitHubAPIURL accepts https, and plain http only on loopback (the
// sandbox): the GitHub token is sent to this URL.
func checkGitHubAPIURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("--github-api-url: not a URL; want https://HOST[/PATH]")
	case u.User != nil:
		return errors.New("--github-api-url: user info not allowed; want https://HOST[/PATH]")
	case u.Host == "":
		return fmt.Errorf("--github-api-url %q: want https://HOST[/PATH]", raw)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && ops.IsLoopback(net.JoinHostPort(u.Hostname(), "0")):
		return nil
	}
	return fmt.Errorf("--github-api-url %q: want https (plain http only on loopback): the GitHub token is sent there", raw)
}
