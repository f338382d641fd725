package server

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/headers"
	"github.com/copilot-broker/copilot-broker/internal/forward/usagereport"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Defaults of [Config]; `proxy serve --help` shows the same values.
const (
	DefaultAddr                  = "127.0.0.1:4141"
	DefaultAdminAddr             = "127.0.0.1:4142"
	DefaultBrokerAddr            = "127.0.0.1:50051"
	DefaultMaxBodyBytes          = forward.DefaultMaxBodyBytes
	DefaultMaxHeaderBytes        = ops.DefaultMaxHeaderBytes
	DefaultReadHeaderTimeout     = ops.DefaultReadHeaderTimeout
	DefaultBodyReadTimeout       = forward.DefaultBodyReadTimeout
	DefaultMaxInflightBodyBytes  = forward.DefaultMaxInflightBodyBytes
	DefaultInflightBodyWait      = forward.DefaultInflightBodyWait
	DefaultIdleTimeout           = ops.DefaultIdleTimeout
	DefaultUpstreamHeaderTimeout = forward.DefaultResponseHeaderTimeout
	DefaultShutdownGrace         = 60 * time.Second
	DefaultCatalogRefresh        = 10 * time.Minute
	DefaultModelAliasesPoll      = 5 * time.Second
	// adminWriteTimeout bounds an admin answer (a /metrics page).
	adminWriteTimeout = 30 * time.Second
)

// The client listener's streams (docs/architecture.md section 5).
const (
	// DefaultMaxStreams is as many requests as DefaultMaxConnections
	// HTTP/1.1 connections carry: the memory bound that cap set holds when
	// clients multiplex over HTTP/2.
	DefaultMaxStreams = ops.DefaultMaxConnections
	// DefaultMaxStreamsPerConnection is net/http's own default.
	DefaultMaxStreamsPerConnection = 250
	// clientStreamWindow is what a client's HTTP/2 stream may send ahead
	// of the handler's reads (net/http's default is 1 MiB; the handler
	// reads a body as it arrives, within --max-inflight-body-bytes).
	clientStreamWindow = 256 << 10
)

// Config is everything a proxy needs. Each field documents its default and,
// for `proxy serve`, its flag and environment variable. The zero Config is a
// loopback proxy watching a loopback broker.
type Config struct {
	// Addr is the client-facing listen address; "127.0.0.1:0" picks a free
	// port (see [Server.Addrs]). --addr, PROXY_ADDR, default [DefaultAddr].
	Addr string
	// AdminAddr serves /healthz, /readyz and /metrics, with no key.
	// --admin-addr, PROXY_ADMIN_ADDR, default [DefaultAdminAddr].
	AdminAddr string

	// BrokerAddr is the broker's gRPC address (any gRPC target).
	// --broker-addr, PROXY_BROKER_ADDR, default [DefaultBrokerAddr].
	BrokerAddr string
	// BrokerKey is sent to the broker as "authorization: Bearer <key>".
	// `proxy serve` takes it from PROXY_BROKER_KEY or --broker-key-file
	// (PROXY_BROKER_KEY_FILE), never from a flag value.
	BrokerKey secret.Secret
	// BrokerTLS enables TLS to the broker (system roots unless
	// BrokerTLSCAFile). --broker-tls, PROXY_BROKER_TLS.
	BrokerTLS bool
	// BrokerTLSCAFile holds the CA certificates that sign the broker's
	// certificate; implies BrokerTLS. --broker-tls-ca, PROXY_BROKER_TLS_CA.
	BrokerTLSCAFile string
	// BrokerTLSCertFile and BrokerTLSKeyFile are the proxy's client
	// certificate for mutual TLS; imply BrokerTLS. --broker-tls-cert,
	// --broker-tls-key (PROXY_BROKER_TLS_CERT, PROXY_BROKER_TLS_KEY).
	BrokerTLSCertFile, BrokerTLSKeyFile string
	// BrokerTLSServerName overrides the name checked in the broker's
	// certificate. --broker-tls-server-name, PROXY_BROKER_TLS_SERVER_NAME.
	BrokerTLSServerName string
	// Account is the watched account; empty is the broker's default.
	// --account, PROXY_ACCOUNT.
	Account string
	// ServeCachedWhenRejected keeps forwarding with the cached token until
	// it expires after the broker reports REJECTED (availability over
	// revocation). By default the cached token is dropped at once and the
	// proxy answers 503. --serve-cached-when-rejected,
	// PROXY_SERVE_CACHED_WHEN_REJECTED.
	ServeCachedWhenRejected bool
	// Broker, when set, is used instead of dialing BrokerAddr (tests that
	// serve the broker over an in-memory connection).
	Broker brokerv1.TokenBrokerServiceClient

	// UsageBuffer bounds the usage events held for the broker's ledger
	// while it is away (the oldest are dropped past it); negative turns
	// usage reporting off. --usage-buffer, PROXY_USAGE_BUFFER, default
	// [usagereport.DefaultBuffer].
	UsageBuffer int
	// ProxyID names this proxy in its usage events and the rpm shares; it
	// must differ between proxies. --proxy-id, PROXY_PROXY_ID, default
	// HOSTNAME-PID.
	ProxyID string
	// Usage, when set with Broker, is the usage client (tests); with a
	// dialed broker the proxy makes its own.
	Usage brokerv1.UsageServiceClient
	// StatusInterval is how often the proxy reports its status (who it is,
	// the usage limits it sees, its upstream errors) to the broker when
	// nothing changes; a change goes out within 2 s. Negative turns it off.
	// --status-interval, PROXY_STATUS_INTERVAL, default
	// [statusreport.DefaultInterval].
	StatusInterval time.Duration
	// Proxies, when set with Broker, is the status report client (tests);
	// with a dialed broker the proxy makes its own.
	Proxies brokerv1.ProxyServiceClient

	// Keys are the client API keys; nil means none are required (allowed
	// only on loopback unless InsecureNoAuth). `proxy serve` loads them from
	// --keys-file (PROXY_KEYS_FILE).
	Keys *keys.Set
	// KeysFromBroker authenticates clients also with the keys managed at
	// the broker (WatchKeys), beside Keys; a name in both is refused at
	// start. Every account the broker key may read is then watched, since
	// a managed key may name any. --keys-from-broker,
	// PROXY_KEYS_FROM_BROKER.
	KeysFromBroker bool
	// KeysMaxStale is how long managed keys keep working while the broker
	// is unreachable; then they get 503 (file keys keep working).
	// --keys-max-stale, default [clientkeys.DefaultMaxStale].
	KeysMaxStale time.Duration
	// KeysStartWait bounds how long Start waits for the first managed key
	// set (it then starts anyway; managed keys get 503 until the set
	// arrives). Default 10 s.
	KeysStartWait time.Duration
	// KeyBroker, when set, is used for WatchKeys instead of the dialed
	// connection (tests).
	KeyBroker brokerv1.KeyServiceClient
	// InsecureNoAuth allows listening beyond loopback without keys.
	// --insecure-no-auth, PROXY_INSECURE_NO_AUTH.
	InsecureNoAuth bool

	// CopilotAPIURL overrides every token's api_base_url (for the sandbox).
	// --copilot-api-url, PROXY_COPILOT_API_URL.
	CopilotAPIURL string
	// Editor is the identity sent to Copilot; zero fields take the
	// broker's upstream profile (built in: identity.Default's), set ones
	// override it. --editor-version, --editor-plugin-version,
	// --user-agent, --integration-id, --github-api-version
	// (PROXY_EDITOR_VERSION, ...).
	Editor identity.Editor
	// PoolReservePercent is the share of a session or weekly usage limit
	// below which a pool member is busy (--pool-reserve-percent, default
	// pool.DefaultReservePercent; negative: off).
	PoolReservePercent float64
	// Intents are the Openai-Intent values per endpoint; zero fields take
	// [headers.DefaultIntents]'. --openai-intent-chat, -responses,
	// -messages, -models, -embeddings (--openai-intent sets them all).
	Intents headers.Intents
	// AnthropicBetas are the anthropic-beta values forwarded on
	// /v1/messages ("name-*" matches by prefix); nil means
	// [headers.DefaultAnthropicBetas]. --anthropic-betas,
	// PROXY_ANTHROPIC_BETAS.
	AnthropicBetas []string
	// ForwardHeaders are client headers forwarded besides the built-in
	// allow list. --forward-headers, PROXY_FORWARD_HEADERS.
	ForwardHeaders []string
	// CountTokens answers /v1/messages/count_tokens locally (an estimate;
	// the default) or forwards it. --count-tokens (local or upstream),
	// PROXY_COUNT_TOKENS.
	CountTokens forward.CountTokens

	// ModelAliases is the operator's model alias file: "from: to" lines
	// mapping names clients send to models (see internal/forward/catalog),
	// re-read when it changes. --model-aliases, PROXY_MODEL_ALIASES.
	ModelAliases string
	// ModelAliasesPoll is how often ModelAliases is checked for changes.
	// --model-aliases-poll, PROXY_MODEL_ALIASES_POLL, default
	// [DefaultModelAliasesPoll].
	ModelAliasesPoll time.Duration
	// CatalogRefresh is the most the model catalog (GET /models) ages
	// before it is refetched; a new token generation refetches it too.
	// --catalog-refresh, PROXY_CATALOG_REFRESH, default
	// [DefaultCatalogRefresh].
	CatalogRefresh time.Duration

	// MaxBodyBytes bounds request bodies (413 above). Every body is held in
	// memory for inspection and one replay after an upstream 401.
	// --max-body-bytes, PROXY_MAX_BODY_BYTES, default [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// MaxConnections caps the connections each listener (client, admin)
	// holds at once; more are closed as soon as accepted.
	// --max-connections, PROXY_MAX_CONNECTIONS, default
	// [ops.DefaultMaxConnections]; negative: no cap.
	MaxConnections int
	// MaxStreams caps the client requests (streams) served at once, over
	// HTTP/1.1 and HTTP/2 together; more get 503 with Retry-After at once
	// (package streamcap). With clients on HTTP/1.1 MaxConnections bounds
	// them too; one HTTP/2 connection carries up to
	// MaxStreamsPerConnection. --max-streams, PROXY_MAX_STREAMS, default
	// [DefaultMaxStreams]; negative: no cap.
	MaxStreams int
	// MaxStreamsPerConnection is the most requests a client's HTTP/2
	// connection carries at once (its SETTINGS_MAX_CONCURRENT_STREAMS).
	// --max-streams-per-connection, PROXY_MAX_STREAMS_PER_CONNECTION,
	// default [DefaultMaxStreamsPerConnection].
	MaxStreamsPerConnection int
	// NoClientH2C serves only HTTP/1.1 on the client listener. By default
	// it also takes HTTP/2 without TLS from clients that start with its
	// preface (prior knowledge, h2c): many streams on one connection, one
	// goroutine each instead of HTTP/1.1's two, no connection buffers per
	// stream. --client-h2c=false, PROXY_CLIENT_H2C.
	NoClientH2C bool
	// MaxHeaderBytes bounds request headers. --max-header-bytes,
	// PROXY_MAX_HEADER_BYTES, default [DefaultMaxHeaderBytes].
	MaxHeaderBytes int
	// ReadHeaderTimeout closes connections that do not send their headers in
	// time. --read-header-timeout, PROXY_READ_HEADER_TIMEOUT, default
	// [DefaultReadHeaderTimeout].
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds reading a request body, on the client and the
	// admin listener, from the end of its headers to its last byte.
	// --body-read-timeout, PROXY_BODY_READ_TIMEOUT, default
	// [DefaultBodyReadTimeout].
	BodyReadTimeout time.Duration
	// MaxInflightBodyBytes bounds the request body bytes all requests hold
	// at once (at least MaxBodyBytes); negative: no bound.
	// --max-inflight-body-bytes, PROXY_MAX_INFLIGHT_BODY_BYTES, default
	// [DefaultMaxInflightBodyBytes].
	MaxInflightBodyBytes int64
	// MaxInflightBodyBytesPerKey is the most of that budget one client
	// key's requests hold together. --max-inflight-body-bytes-per-key,
	// PROXY_MAX_INFLIGHT_BODY_BYTES_PER_KEY, default 0: half the budget.
	MaxInflightBodyBytesPerKey int64
	// InflightBodyWait is how long a body waits for room in that budget
	// before its request gets 503 with Retry-After. --inflight-body-wait,
	// PROXY_INFLIGHT_BODY_WAIT, default [DefaultInflightBodyWait].
	InflightBodyWait time.Duration
	// IdleTimeout closes keep-alive connections idle between requests.
	// --idle-timeout, PROXY_IDLE_TIMEOUT, default [DefaultIdleTimeout].
	IdleTimeout time.Duration
	// UpstreamHeaderTimeout bounds the wait for Copilot's response headers;
	// streams have no total timeout. --upstream-header-timeout,
	// PROXY_UPSTREAM_HEADER_TIMEOUT, default [DefaultUpstreamHeaderTimeout].
	UpstreamHeaderTimeout time.Duration
	// StreamIdleTimeout ends an event stream whose upstream sent nothing
	// (no event, no comment) for this long, with an error event in the
	// client's dialect. --stream-idle-timeout, PROXY_STREAM_IDLE_TIMEOUT,
	// default [forward.DefaultStreamIdleTimeout].
	StreamIdleTimeout time.Duration
	// ShutdownGrace is how long in-flight requests (streams) may run after a
	// shutdown begins. --shutdown-grace, PROXY_SHUTDOWN_GRACE, default
	// [DefaultShutdownGrace].
	ShutdownGrace time.Duration

	// WSIdleTimeout closes a Responses WebSocket connection that sent no
	// message and ran no response for this long (idle connections are
	// pinged every 30 s meanwhile). --ws-idle-timeout,
	// PROXY_WS_IDLE_TIMEOUT, default [wsresponses.DefaultIdleTimeout].
	WSIdleTimeout time.Duration
	// WSMaxConnections and WSMaxConnectionsPerKey cap the open Responses
	// WebSocket connections of the proxy and of one key.
	// --ws-max-connections, --ws-max-connections-per-key
	// (PROXY_WS_MAX_CONNECTIONS, PROXY_WS_MAX_CONNECTIONS_PER_KEY),
	// defaults [wsresponses.DefaultMaxConns],
	// [wsresponses.DefaultMaxConnsPerKey]; negative: no cap.
	WSMaxConnections, WSMaxConnectionsPerKey int
	// UpstreamWebSocket sends the WebSocket turns of models whose
	// supported_endpoints list ws:/responses over one upstream WebSocket
	// per client connection (wss://{api}/responses) instead of an HTTP call
	// each; 3 failed upstream connections in a row put that client
	// connection back on HTTP. --upstream-websocket,
	// PROXY_UPSTREAM_WEBSOCKET.
	UpstreamWebSocket bool

	// UpstreamCAFile holds the CA certificates (PEM) the Copilot API's
	// certificate must chain to, instead of the system's roots (a private
	// upstream, or the sandbox served over TLS). --upstream-ca-file,
	// PROXY_UPSTREAM_CA_FILE.
	UpstreamCAFile string
	// UpstreamHTTP1 keeps the upstream on net/http's HTTP/1.1 keep-alive
	// pool even when it offers HTTP/2. The default (false) speaks HTTP/2 when
	// offered, as the Copilot API does: a few connections instead of one
	// per concurrent stream, and less memory per held stream, for a little
	// more CPU per short request (docs/architecture.md section 5).
	// --upstream-http2=false, PROXY_UPSTREAM_HTTP2=false.
	UpstreamHTTP1 bool
	// AllowedAPIHosts are the hosts a token's api_base_url may name:
	// ".suffix" matches hosts under the suffix, anything else one exact host
	// (e.g. copilot-api.TENANT.ghe.com for GitHub Enterprise Cloud with data
	// residency). --allowed-api-hosts, PROXY_ALLOWED_API_HOSTS; nil means
	// [forward.DefaultAllowedAPIHosts] (.githubcopilot.com).
	AllowedAPIHosts []string
	// ConnectTo are HOST:PORT:ADDR:PORT2 entries (see
	// [forward.ParseConnectTo]): connections to HOST:PORT dial ADDR:PORT2,
	// while TLS still verifies HOST. --connect-to, PROXY_CONNECT_TO.
	ConnectTo []string

	// Transport, when set, replaces the upstream transport (tests).
	Transport http.RoundTripper
	// MinBackoff and MaxBackoff bound the broker reconnection delay
	// (defaults 250 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// Clock drives token expiry and reconnect backoff (nil: real clock).
	Clock clock.Clock
	// Logger receives the proxy's logs (nil discards them).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	str := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	str(&c.Addr, DefaultAddr)
	str(&c.AdminAddr, DefaultAdminAddr)
	str(&c.BrokerAddr, DefaultBrokerAddr)
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = ops.DefaultMaxConnections
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxStreamsPerConnection <= 0 {
		c.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	dur(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	dur(&c.BodyReadTimeout, DefaultBodyReadTimeout)
	dur(&c.InflightBodyWait, DefaultInflightBodyWait)
	if c.MaxInflightBodyBytes == 0 {
		c.MaxInflightBodyBytes = DefaultMaxInflightBodyBytes
	}
	dur(&c.IdleTimeout, DefaultIdleTimeout)
	dur(&c.UpstreamHeaderTimeout, DefaultUpstreamHeaderTimeout)
	dur(&c.ShutdownGrace, DefaultShutdownGrace)
	dur(&c.CatalogRefresh, DefaultCatalogRefresh)
	dur(&c.ModelAliasesPoll, DefaultModelAliasesPoll)
	dur(&c.StreamIdleTimeout, forward.DefaultStreamIdleTimeout)
	if c.UsageBuffer == 0 {
		c.UsageBuffer = usagereport.DefaultBuffer
	}
	if c.ProxyID == "" {
		// The process too: proxies on one host must not share an rpm share.
		h, _ := os.Hostname()
		c.ProxyID = h + "-" + strconv.Itoa(os.Getpid())
	}
	c.Clock = clock.OrReal(c.Clock)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// brokerTLS builds the TLS configuration for the broker connection, or nil
// for plaintext.
func (c Config) brokerTLS() (*tls.Config, error) {
	return ops.ClientTLS{Enable: c.BrokerTLS, CAFile: c.BrokerTLSCAFile, CertFile: c.BrokerTLSCertFile,
		KeyFile: c.BrokerTLSKeyFile, ServerName: c.BrokerTLSServerName}.Config()
}
