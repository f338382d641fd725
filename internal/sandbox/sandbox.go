// Package sandbox is a faithful fake of the upstream services the broker and
// the proxy talk to: GitHub (OAuth device flow, the Copilot token exchange,
// copilot_internal/user) and the Copilot API (chat completions, models,
// embeddings, responses, Anthropic messages). Tests, benchmarks and the local
// quick start run against it; no machine that builds this project can reach
// the real services.
//
// It mirrors docs/protocol.md: the exchange wants `Authorization:
// token <github token>`, issues `k=v;...:sig` Copilot tokens signed with
// HMAC-SHA256 under a per-server random key, and the Copilot API accepts only
// `Authorization: Bearer <copilot token>` tokens it signed that have not
// expired (the token's exp field against [Config.Clock]) or been invalidated.
// Chunk delays and injected latency run on real time; only token expiry and
// device-flow timing follow the injected clock.
//
// # Sandbox-specific request headers
//
//   - X-Sandbox-Chunks: number of content chunks in a stream (1..10000).
//   - X-Sandbox-Chunk-Delay-Ms: delay between chunks in milliseconds (0..60000).
//
// # Admin API
//
// Everything the Go methods of [Server] can do is also reachable over HTTP under
// /_sandbox/, JSON in and out, unauthenticated (the sandbox is a fake that
// listens on loopback):
//
//	GET    /_sandbox/stats                    counters, see [Stats]
//	GET    /_sandbox/requests                 recent requests, see [Request]
//	POST   /_sandbox/reset-stats              zero the counters and the request log
//	POST   /_sandbox/faults/exchange          {"count":N,"status":429,"reason":"","retry_after_seconds":3,"until_cleared":false}
//	POST   /_sandbox/faults/api               same shape; applies to Copilot API calls
//	DELETE /_sandbox/faults                   clear every fault and latency
//	POST   /_sandbox/latency                  {"exchange_ms":200,"api_ms":50}
//	POST   /_sandbox/github-tokens/add        {"token":"gho_..."} (also restores a revoked one)
//	POST   /_sandbox/github-tokens/revoke     {"token":"gho_..."}
//	POST   /_sandbox/copilot-tokens/invalidate  every issued Copilot token now gets 401
//	GET    /_sandbox/device                   pending device codes (user codes and state)
//	POST   /_sandbox/device/approve           {"user_code":"ABCD-1234"}
//	POST   /_sandbox/device/deny              {"user_code":"ABCD-1234"}
//	POST   /_sandbox/device/expire            {"user_code":"ABCD-1234"}
//	POST   /_sandbox/device/auto-approve      {"after_polls":N} (0 turns it off)
//	GET    /_sandbox/accounts                 the GitHub accounts, see [AccountInfo]
//	POST   /_sandbox/accounts                 {"name":"alice","token":"","sku":"","premium_entitlement":0,"overage_permitted":false} -> {"name","token"}
//	DELETE /_sandbox/accounts/{name}          remove an account (its tokens stop working)
//	POST   /_sandbox/accounts/{name}/revoke   its GitHub tokens get 401 (restore undoes it)
//	POST   /_sandbox/accounts/{name}/restore
//	POST   /_sandbox/accounts/{name}/spend-quota  the Copilot API answers 402 to its tokens
//	POST   /_sandbox/accounts/{name}/reset-quota  a new quota period
//	POST   /_sandbox/accounts/{name}/faults/{exchange,api}  a fault for that account alone (body as above)
//	POST   /_sandbox/ws-faults                {"refuse_upgrades":N,"refuse_status":503,"drop_after_events":N,"drop_turns":N}, see [WSFaults]
//
// # Responses over WebSocket
//
// GET /responses with a WebSocket upgrade is ws:/responses (served for the
// models that list it in supported_endpoints): each {"type":
// "response.create", ...} message is one streamed Responses call whose
// events come back as text messages; previous_response_id continues a
// stored response, over HTTP too (history.go).
//
// # Accounts
//
// The sandbox holds several GitHub accounts ([Server.AddAccount]), each with
// its own GitHub token, plan (SKU), premium quota and faults. The default
// account, [DefaultAccount], owns [Config.GitHubTokens] and the tokens the
// device flow issues. Copilot tokens carry their account (a signed field), so
// the Copilot API applies that account's faults and quota: a spent quota
// answers 402. copilot_internal/user reports the quota of the token's
// account. [Server.ClearFaults] clears the accounts' faults too.
//
// Fault reasons: "" (the status's usual body), "no_copilot_access",
// "subscription_ended", "billing_locked" (403 error_details bodies) and
// "rate_limit" (the GitHub rate-limit body, with Retry-After and X-RateLimit-*
// headers).
package sandbox

import (
	"crypto/rand"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Config configures a [Server]. The zero value is usable: every field has a
// default.
type Config struct {
	// MinPluginVersion is the oldest Editor-Plugin-Version (X.Y.Z) served;
	// older clients get 466. Default [DefaultMinPluginVersion]; "0.0.0"
	// serves every version.
	MinPluginVersion string
	// Betas are the anthropic-beta values /v1/messages accepts ("name-*"
	// matches by prefix); others get 400 "unsupported beta header(s)". Nil
	// means [DefaultBetas].
	Betas []string
	// GitHubTokens are the GitHub tokens the exchange accepts. When empty, one
	// random gho_ token is generated; [Server.GitHubToken] returns it.
	GitHubTokens []secret.Secret
	// TokenLifetime is how long an issued Copilot token lives (expires_at and
	// the exp field). Default 30 min.
	TokenLifetime time.Duration
	// RefreshIn is the refresh_in of the exchange answer. Default 1500 s.
	RefreshIn time.Duration
	// Chunks is the number of content chunks in a stream. Default 5.
	Chunks int
	// ChunkDelay is the real-time delay between stream chunks. Default 0.
	ChunkDelay time.Duration
	// SKU is the account's plan, e.g. monthly_subscriber (default),
	// free_limited_copilot, copilot_for_business.
	SKU string
	// BaseURL is the Copilot API base URL put in endpoints.api. Default: the
	// scheme and Host of the exchange request, i.e. the sandbox itself.
	BaseURL string
	// DeviceCodeLifetime is how long a device code stays valid. Default 15 min.
	DeviceCodeLifetime time.Duration
	// DeviceInterval is the minimum polling interval of the device flow; the
	// answer states it in whole seconds, at least 1. Default 5 s.
	DeviceInterval time.Duration
	// DeviceAutoApproveAfter approves a device code on its Nth poll when > 0.
	DeviceAutoApproveAfter int
	// RequestLogSize bounds the log behind [Server.Requests]. Default 256;
	// negative disables it.
	RequestLogSize int
	// Clock decides issued-token expiry and device-flow timing. Default real.
	Clock clock.Clock
	// Logger receives one line per notable event. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.TokenLifetime <= 0 {
		c.TokenLifetime = 30 * time.Minute
	}
	if c.RefreshIn <= 0 {
		c.RefreshIn = 1500 * time.Second
	}
	if c.Chunks <= 0 {
		c.Chunks = 5
	}
	if c.ChunkDelay < 0 {
		c.ChunkDelay = 0
	}
	if c.SKU == "" {
		c.SKU = "monthly_subscriber"
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.MinPluginVersion == "" {
		c.MinPluginVersion = DefaultMinPluginVersion
	}
	if c.Betas == nil {
		c.Betas = DefaultBetas
	}
	if c.DeviceCodeLifetime <= 0 {
		c.DeviceCodeLifetime = 15 * time.Minute
	}
	if c.DeviceInterval <= 0 {
		c.DeviceInterval = 5 * time.Second
	}
	if c.RequestLogSize == 0 {
		c.RequestLogSize = 256
	}
	c.Clock = clock.OrReal(c.Clock)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the sandbox upstream. It is an [http.Handler]; every method is
// safe for concurrent use.
type Server struct {
	cfg     Config
	clock   clock.Clock
	log     *slog.Logger
	mux     *http.ServeMux
	key     atomic.Pointer[[]byte] // HMAC key of issued Copilot tokens; replaced to invalidate them
	primary secret.Secret          // first accepted GitHub token
	models  *catalog
	seq     atomic.Uint64 // ids of answers
	// minPlugin is Config.MinPluginVersion parsed; zero serves every client.
	minPlugin identity.Version

	mu           sync.Mutex
	githubTokens map[string]*ghToken // GitHub token -> its account, accepted or revoked
	accounts     map[string]*account // by name
	defaultAcct  *account            // the account of Config.GitHubTokens and device-flow tokens
	faults       faultState
	device       deviceState
	retired      retired // versions retired at run time (retire.go)

	exchangeLatency atomic.Int64 // nanoseconds
	apiLatency      atomic.Int64 // nanoseconds
	apiFaulty       atomic.Bool  // fast path: no API fault configured

	stats statsState

	ws      wsState      // ws:/responses faults (wsresponses.go)
	history historyState // previous_response_id (history.go)
}

// New returns a Server configured by cfg.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:          cfg,
		clock:        cfg.Clock,
		log:          cfg.Logger,
		githubTokens: map[string]*ghToken{},
		accounts:     map[string]*account{},
		models:       newCatalog(),
	}
	if _, v, err := identity.ParseVersion("x/" + cfg.MinPluginVersion); err == nil {
		s.minPlugin = v
	} else {
		panic("sandbox: MinPluginVersion: " + err.Error())
	}
	s.rotateKey()
	s.defaultAcct = newAccount(AccountConfig{Name: DefaultAccount, SKU: cfg.SKU})
	s.accounts[DefaultAccount] = s.defaultAcct
	for _, t := range cfg.GitHubTokens {
		if !t.IsZero() {
			s.githubTokens[t.Reveal()] = &ghToken{acct: s.defaultAcct, accepted: true}
			if s.primary.IsZero() {
				s.primary = t
			}
		}
	}
	if s.primary.IsZero() {
		s.primary = secret.New("gho_" + randomToken(36))
		s.githubTokens[s.primary.Reveal()] = &ghToken{acct: s.defaultAcct, accepted: true}
	}
	s.device.init()
	s.device.autoApprove = max(cfg.DeviceAutoApproveAfter, 0)
	s.stats.init(cfg.RequestLogSize)
	s.mux = s.routes()
	return s
}

// GitHubToken returns the first accepted GitHub token: the configured one, or
// the one generated by [New].
func (s *Server) GitHubToken() secret.Secret { return s.primary }

// ServeHTTP serves the fake GitHub, the fake Copilot API and the admin API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sandbox/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	rec := &recorder{ResponseWriter: w}
	start := time.Now()
	s.mux.ServeHTTP(rec, r)
	s.stats.record(r, rec, time.Since(start))
}

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	// GitHub.
	m.HandleFunc("GET /copilot_internal/v2/token", s.handleExchange)
	m.HandleFunc("GET /api/v3/copilot_internal/v2/token", s.handleExchange)
	m.HandleFunc("GET /copilot_internal/user", s.handleUser)
	m.HandleFunc("GET /api/v3/copilot_internal/user", s.handleUser)
	m.HandleFunc("POST /login/device/code", s.handleDeviceCode)
	m.HandleFunc("POST /login/oauth/access_token", s.handleAccessToken)
	m.HandleFunc("GET /login/device", s.handleDevicePage)
	// Copilot API.
	m.HandleFunc("POST /chat/completions", s.api(s.handleChat))
	m.HandleFunc("GET /models", s.api(s.handleModels))
	m.HandleFunc("POST /embeddings", s.api(s.handleEmbeddings))
	m.HandleFunc("POST /responses", s.api(s.handleResponses))
	m.HandleFunc("GET /responses", s.handleResponsesWS)
	m.HandleFunc("POST /v1/messages", s.api(s.handleMessages))
	m.HandleFunc("POST /v1/messages/count_tokens", handleCountTokensNotFound)
	s.adminRoutes(m)
	return m
}

// randomToken returns n random characters of [A-Za-z0-9].
func randomToken(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails since Go 1.24
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// sleep waits d of real time or until the request ends; it reports whether
// the full delay passed.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}
