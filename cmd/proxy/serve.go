package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/forward/clientkeys"
	"github.com/copilot-broker/copilot-broker/internal/forward/headers"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/server"
	"github.com/copilot-broker/copilot-broker/internal/forward/statusreport"
	"github.com/copilot-broker/copilot-broker/internal/forward/usagereport"
	"github.com/copilot-broker/copilot-broker/internal/forward/wsresponses"
	"github.com/copilot-broker/copilot-broker/internal/gcheadroom"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// brokerKeyEnv holds the broker key itself. It is read directly, not bound to
// a flag: a key given as a flag value would show in process lists.
const brokerKeyEnv = "PROXY_BROKER_KEY"

// options are the flags that are not fields of server.Config.
type options struct {
	brokerKeyFile, keysFile, logLevel, logFormat, intent string
	upstreamHTTP2                                        bool
	clientH2C                                            bool
	gcPercent                                            int
	gcHeadroom                                           int64
	betas, forwardHeaders, countTokens                   string
	allowedAPIHosts                                      string
	connectTo                                            listFlag
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, splitList(v)...)
	return nil
}

// serveFlags binds `proxy serve`'s flags onto a server.Config.
func serveFlags(fs *flag.FlagSet, cfg *server.Config, o *options) {
	in := headers.DefaultIntents()
	fs.StringVar(&cfg.Addr, "addr", server.DefaultAddr, "client listen address (OpenAI and Anthropic paths)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", server.DefaultAdminAddr, "admin listen address (/healthz, /readyz, /metrics; no key)")
	fs.StringVar(&cfg.BrokerAddr, "broker-addr", server.DefaultBrokerAddr, "the broker's gRPC address")
	fs.StringVar(&o.brokerKeyFile, "broker-key-file", "", "file holding the broker key (else the "+brokerKeyEnv+" environment variable)")
	fs.StringVar(&cfg.Account, "account", "", "account of keys without a third field (empty: the broker's default)")
	fs.IntVar(&cfg.UsageBuffer, "usage-buffer", usagereport.DefaultBuffer, "usage events held for the broker's ledger while it is away (the oldest are dropped past it; counted in copilot_proxy_usage_report_dropped_total); -1 turns usage reporting off")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", statusreport.DefaultInterval, "how often this proxy reports its status to the broker (version, usage limits seen, upstream errors) when nothing changes; negative: never")
	fs.StringVar(&cfg.ProxyID, "proxy-id", "", "this proxy's name in its usage events and rpm shares, distinct per proxy (default: HOSTNAME-PID)")
	fs.BoolVar(&cfg.ServeCachedWhenRejected, "serve-cached-when-rejected", false, "keep forwarding with the cached token until it expires after the broker reports the credential REJECTED (default: stop at once)")
	fs.BoolVar(&cfg.BrokerTLS, "broker-tls", false, "use TLS to the broker (system roots unless --broker-tls-ca)")
	fs.StringVar(&cfg.BrokerTLSCAFile, "broker-tls-ca", "", "CA certificates (PEM) of the broker's certificate; implies --broker-tls")
	fs.StringVar(&cfg.BrokerTLSCertFile, "broker-tls-cert", "", "client certificate (PEM) for mutual TLS to the broker")
	fs.StringVar(&cfg.BrokerTLSKeyFile, "broker-tls-key", "", "client private key (PEM) for --broker-tls-cert")
	fs.StringVar(&cfg.BrokerTLSServerName, "broker-tls-server-name", "", "name to verify in the broker's certificate (default: the host of --broker-addr)")
	fs.StringVar(&o.keysFile, "keys-file", "", "client API keys, one NAME:SECRET[:ACCOUNTS] a line (ACCOUNTS: one account, a pool a,b,c, or * for all); clients send Authorization: Bearer SECRET or X-Api-Key: SECRET")
	fs.BoolVar(&cfg.KeysFromBroker, "keys-from-broker", false, "also accept the client keys managed at the broker (broker keys create ...), followed live: a new, changed or revoked key takes effect within a second; a name also in --keys-file is refused at start")
	fs.DurationVar(&cfg.KeysMaxStale, "keys-max-stale", clientkeys.DefaultMaxStale, "how long keys managed at the broker keep working while the broker is unreachable; then they get 503 (keys-file keys keep working)")
	fs.BoolVar(&cfg.InsecureNoAuth, "insecure-no-auth", false, "allow listening beyond loopback without --keys-file or --keys-from-broker")
	fs.StringVar(&cfg.CopilotAPIURL, "copilot-api-url", "", "Copilot API base URL overriding the token's api_base_url (e.g. the sandbox's URL)")
	fs.StringVar(&cfg.ModelAliases, "model-aliases", "", "model alias file, one FROM: TO a line (a name clients send: the model to use), re-read when it changes")
	fs.DurationVar(&cfg.ModelAliasesPoll, "model-aliases-poll", server.DefaultModelAliasesPoll, "how often to check --model-aliases for changes")
	fs.DurationVar(&cfg.CatalogRefresh, "catalog-refresh", server.DefaultCatalogRefresh, "longest time the model catalog (GET /models) is used before it is fetched again; a new token fetches it too")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", server.DefaultMaxBodyBytes, "largest request body accepted (413 above); bodies are held in memory")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", server.DefaultMaxHeaderBytes, "largest request header block accepted")
	fs.IntVar(&cfg.MaxConnections, "max-connections", ops.DefaultMaxConnections, "most connections each listener holds open at once; more are closed when accepted (-1: no cap)")
	fs.IntVar(&cfg.MaxStreams, "max-streams", server.DefaultMaxStreams, "most client requests (streams) served at once, over HTTP/1.1 and HTTP/2 together; more get 503 with Retry-After (-1: no cap)")
	fs.IntVar(&cfg.MaxStreamsPerConnection, "max-streams-per-connection", server.DefaultMaxStreamsPerConnection, "most requests a client's HTTP/2 connection carries at once")
	fs.BoolVar(&o.clientH2C, "client-h2c", true, "also take HTTP/2 without TLS on --addr from clients that open with its preface (prior knowledge): many streams on one connection, each costing less than an HTTP/1.1 connection (bench section 6); false: HTTP/1.1 only")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "close connections that do not send their request headers in time")
	fs.DurationVar(&cfg.BodyReadTimeout, "body-read-timeout", server.DefaultBodyReadTimeout, "longest time to read a request body; a client that announces a body and does not send it is cut off after this")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", server.DefaultIdleTimeout, "close keep-alive connections idle this long between requests")
	fs.Int64Var(&cfg.MaxInflightBodyBytesPerKey, "max-inflight-body-bytes-per-key", 0, "the most of --max-inflight-body-bytes one client key's requests may hold together (at least --max-body-bytes; 0: half of it, all of it without client keys), so one key cannot starve the others")
	fs.Int64Var(&cfg.MaxInflightBodyBytes, "max-inflight-body-bytes", server.DefaultMaxInflightBodyBytes, "request body bytes all requests may hold in memory at once (at least --max-body-bytes; -1: no bound); a body's share grows as its bytes arrive, and growth that finds no room waits --inflight-body-wait, then gets 503 with Retry-After")
	fs.DurationVar(&cfg.InflightBodyWait, "inflight-body-wait", server.DefaultInflightBodyWait, "how long a request body waits for room to grow under --max-inflight-body-bytes")
	fs.StringVar(&cfg.UpstreamCAFile, "upstream-ca-file", "", "CA certificates (PEM) the Copilot API's certificate must chain to (default: the system's roots)")
	fs.StringVar(&o.allowedAPIHosts, "allowed-api-hosts", strings.Join(forward.DefaultAllowedAPIHosts(), ","), "hosts a token's api_base_url may name, comma-separated: .SUFFIX matches hosts under it, anything else one exact host (e.g. add .ghe.com or copilot-api.TENANT.ghe.com for data residency)")
	fs.Var(&o.connectTo, "connect-to", "HOST:PORT:ADDR:PORT2: connect to ADDR:PORT2 for the Copilot API at HOST:PORT, TLS still verifying HOST (like curl's --connect-to); repeatable or comma-separated")
	fs.BoolVar(&o.upstreamHTTP2, "upstream-http2", true, "speak HTTP/2 to the Copilot API when it offers it: a few multiplexed connections instead of one per concurrent stream, and less memory and one goroutine less per open stream (bench section 6); false keeps an HTTP/1.1 keep-alive pool, a little cheaper in CPU per short request (bench section 1b)")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "Go garbage collector target (GOGC): heap growth in percent between collections; higher spends memory to save CPU (0: Go's default of 100; a GOGC environment variable wins); pair it with GOMEMLIMIT under a container memory limit")
	fs.Int64Var(&o.gcHeadroom, "gc-headroom-bytes", defaultGCHeadroom, "most heap growth between collections once the live heap is large (thousands of open streams): the --gc-percent is lowered after each collection to allow no more, down to 25 (0: off)")
	fs.DurationVar(&cfg.UpstreamHeaderTimeout, "upstream-header-timeout", server.DefaultUpstreamHeaderTimeout, "longest wait for the Copilot API's response headers (streams have no total timeout)")
	fs.DurationVar(&cfg.StreamIdleTimeout, "stream-idle-timeout", forward.DefaultStreamIdleTimeout, "end a stream with an error event when the Copilot API sends nothing for this long")
	fs.DurationVar(&cfg.WSIdleTimeout, "ws-idle-timeout", wsresponses.DefaultIdleTimeout, "close a Responses WebSocket connection that sent nothing and ran no response for this long (open connections are pinged every 30 s)")
	fs.IntVar(&cfg.WSMaxConnections, "ws-max-connections", wsresponses.DefaultMaxConns, "most Responses WebSocket connections open at once (-1: no cap); upgrades past it get 503")
	fs.IntVar(&cfg.WSMaxConnectionsPerKey, "ws-max-connections-per-key", wsresponses.DefaultMaxConnsPerKey, "most Responses WebSocket connections one key may hold open (-1: no cap); upgrades past it get 429")
	fs.BoolVar(&cfg.UpstreamWebSocket, "upstream-websocket", false, "send the WebSocket turns of models that list ws:/responses over one upstream WebSocket per client connection (default: one HTTP call a turn); 3 failed upstream connections in a row put that client connection back on HTTP")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", server.DefaultShutdownGrace, "how long in-flight requests and streams may run after SIGTERM")
	cfg.Editor.RegisterFlags(fs, identity.API)
	fs.Float64Var(&cfg.PoolReservePercent, "pool-reserve-percent", pool.DefaultReservePercent, "a pool member with less than this share (percent) of its session or weekly usage limit left is used only when no other member is (negative: off)")
	fs.StringVar(&cfg.Intents.Chat, "openai-intent-chat", in.Chat, "Openai-Intent header on /chat/completions")
	fs.StringVar(&cfg.Intents.Responses, "openai-intent-responses", in.Responses, "Openai-Intent header on /responses")
	fs.StringVar(&cfg.Intents.Messages, "openai-intent-messages", in.Messages, "Openai-Intent header on /v1/messages")
	fs.StringVar(&cfg.Intents.Models, "openai-intent-models", in.Models, "Openai-Intent header on /models")
	fs.StringVar(&cfg.Intents.Embeddings, "openai-intent-embeddings", in.Embeddings, "Openai-Intent header on /embeddings")
	fs.StringVar(&o.betas, "anthropic-betas", strings.Join(headers.DefaultAnthropicBetas(), ","), "anthropic-beta values forwarded on /v1/messages, comma-separated (NAME-* matches by prefix); others are dropped and counted, as the Copilot API refuses unknown betas")
	fs.StringVar(&o.forwardHeaders, "forward-headers", "", "client headers to forward besides the built-in allow list, comma-separated (others are dropped)")
	fs.StringVar(&o.countTokens, "count-tokens", "local", "how /v1/messages/count_tokens is answered: local (an estimate computed in the proxy; the Copilot API does not serve it) or upstream (forwarded)")
	fs.StringVar(&o.intent, "openai-intent", "", "one Openai-Intent header for every endpoint, overriding the --openai-intent-* flags")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: json, text, or auto (text on a terminal, else JSON)")
}

func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg server.Config
	var o options
	fs := flag.NewFlagSet("proxy serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serveFlags(fs, &cfg, &o)
	if err := ops.ParseFlags(fs, "PROXY", args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	logger, err := ops.NewLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	if o.gcPercent < 0 {
		return fmt.Errorf("--gc-percent %d: want 0 or more (GOGC=off with GOMEMLIMIT turns the percent off, if you mean that)", o.gcPercent)
	}
	if pct, set := gcPercent(o.gcPercent, getenv("GOGC")); set {
		debug.SetGCPercent(pct)
		defer gcheadroom.Start(gcheadroom.Config{Percent: pct, Headroom: o.gcHeadroom}).Stop()
	}
	cfg.UpstreamHTTP1 = !o.upstreamHTTP2
	cfg.NoClientH2C = !o.clientH2C
	if cfg.CountTokens, err = forward.ParseCountTokens(o.countTokens); err != nil {
		return err
	}
	cfg.AnthropicBetas = splitList(o.betas)
	cfg.ForwardHeaders = splitList(o.forwardHeaders)
	if cfg.AllowedAPIHosts = splitList(o.allowedAPIHosts); len(cfg.AllowedAPIHosts) == 0 {
		return errors.New("--allowed-api-hosts is empty: no token's api_base_url could be used")
	}
	cfg.ConnectTo = o.connectTo
	if o.intent != "" {
		cfg.Intents = headers.Intents{Chat: o.intent, Responses: o.intent, Messages: o.intent, Models: o.intent, Embeddings: o.intent}
	}
	ops.WarnSecretFiles(logger, o.keysFile, o.brokerKeyFile)
	if o.keysFile != "" {
		if cfg.Keys, err = keys.Load(o.keysFile); err != nil {
			return err
		}
	}
	if cfg.BrokerKey, err = brokerKey(getenv(brokerKeyEnv), o.brokerKeyFile); err != nil {
		return err
	}
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "proxy listening: http=%s admin=%s\n", srv.Addrs().HTTP, srv.Addrs().Admin)
	return srv.Wait()
}

// defaultGCPercent is --gc-percent's default. The proxy's live heap is small
// (tokens, catalogs, pooled buffers) and every request allocates: at Go's
// default of 100 the collector ran often enough to cost about a tenth of the
// CPU per request in bench section 1 (concurrency 32: 92.6 µs at 200 against
// 101.6 at 100, side by side); 400 gained little more. Request bodies, the
// bulk of a busy proxy's memory, are bounded by --max-inflight-body-bytes,
// and GOMEMLIMIT caps the heap's growth under a container limit.
const defaultGCPercent = 200

// defaultGCHeadroom is --gc-headroom-bytes' default. At 200 percent the
// heap may grow to three times the live heap between collections, which
// costs nothing at a live heap of a few MiB and tripled the memory per
// stream of a proxy holding thousands of streams (bench section 6, where
// the live heap reaches hundreds of MiB). With 64 MiB of headroom the
// percent stays 200 up to a live heap of 32 MiB and falls (to 25 at the
// least) beyond.
const defaultGCHeadroom = 64 << 20

// gcPercent returns the collector target to set from the flag, and false
// when the runtime's own setting stands: GOGC set in the environment (the
// runtime has read it) or a flag of 0.
func gcPercent(flagValue int, gogcEnv string) (int, bool) {
	if gogcEnv != "" || flagValue == 0 {
		return 0, false
	}
	return flagValue, true
}

// brokerKey returns the broker key from the environment or a file.
func brokerKey(env, file string) (secret.Secret, error) {
	return ops.SecretFromEnvOrFile(env, file, brokerKeyEnv, "--broker-key-file", "broker key")
}

// splitList splits a comma-separated flag value; an empty value gives an
// empty, non-nil list.
func splitList(v string) []string {
	out := []string{}
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
