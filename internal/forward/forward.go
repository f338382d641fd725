// Package forward is the proxy's HTTP side: it authenticates clients by API
// key, maps their OpenAI- and Anthropic-style paths to the Copilot API, sets
// the Copilot headers and forwards with [httputil.ReverseProxy], streaming
// server-sent events as they arrive. It gets tokens from a [TokenSource] and
// knows nothing of where they come from (the broker client lives in
// internal/forward/brokerclient).
package forward

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/body"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/copilot-broker/copilot-broker/internal/forward/headers"
	"github.com/copilot-broker/copilot-broker/internal/forward/inspect"
)

// Defaults of [Config]; the proxy's flags show the same values.
const (
	DefaultMaxBodyBytes         = body.DefaultMaxBytes
	DefaultBodyReadTimeout      = body.DefaultReadTimeout
	DefaultMaxInflightBodyBytes = body.DefaultMaxInflightBodyBytes
	DefaultInflightBodyWait     = body.DefaultInflightBodyWait
)

// Config configures a [Handler].
type Config struct {
	// Source supplies the tokens of keys without an account of their own
	// (and of every request when Accounts is nil). Required.
	Source TokenSource
	// DefaultAccount names Source's account in metrics and logs.
	DefaultAccount string
	// Accounts, when set, supplies the sources of the accounts that Targets
	// map keys to (see accounts.go).
	Accounts Accounts
	// Targets maps key names to their account or pool; keys not in it use
	// Source.
	Targets map[string]Target
	// Pool tracks accounts' health for pools. Default: a new tracker.
	Pool *pool.Tracker
	// Usage receives the usage series. Default: unregistered.
	Usage *usage.Metrics
	// UsageReporter, when set, gets one event per answered request (the
	// broker's ledger).
	UsageReporter UsageReporter
	// Budgets, when set, admits each request against its key's budgets
	// (budgetgate.go).
	Budgets BudgetGate
	// ModelLabel bounds the usage series' model label. Default:
	// usage.NewModels(nil, 0).Label.
	ModelLabel func(string) string
	// Models turns on the model catalog (see [ModelsConfig]); nil: request
	// bodies pass as sent and /v1/models is forwarded. [Handler.Close]
	// stops its background fetches.
	Models *ModelsConfig
	// Keys are the client API keys. Nil disables client authentication (the
	// caller decides whether that is safe; see ops.CheckExposure).
	Keys *keys.Set
	// KeySet, when set, authenticates clients instead of Keys (managed keys
	// from the broker, with or without a keys file: see keyset.go).
	KeySet KeySet
	// APIURL, when set, overrides every token's api_base_url (the sandbox and
	// tests use it); it is trusted as given.
	APIURL *url.URL
	// AllowedAPIHosts are the hosts a token's api_base_url may name:
	// ".suffix" matches hosts under the suffix, anything else one exact
	// host. Nil means [DefaultAllowedAPIHosts]. Not used with APIURL.
	AllowedAPIHosts []string
	// Editor is the identity sent upstream (identity.Editor: one definition
	// shared with the broker's exchange). Zero fields take the profile's
	// (or, without one, the defaults); set fields override the profile.
	Editor identity.Editor
	// Profile, when set, is the upstream profile the broker pushes
	// (package headers); nil sends Editor over the built-in default.
	Profile *identity.Holder
	// Intents are the Openai-Intent values per upstream endpoint. Zero
	// fields take headers.DefaultIntents'.
	Intents headers.Intents
	// AnthropicBetas are the anthropic-beta values forwarded on
	// /v1/messages ("name-*" matches by prefix); the rest are dropped and
	// counted. Nil means headers.DefaultAnthropicBetas; empty forwards none.
	AnthropicBetas []string
	// ForwardHeaders are client header names forwarded besides the built-in
	// allow list (package headers). Default none.
	ForwardHeaders []string
	// CountTokens says whether /v1/messages/count_tokens is answered
	// locally (the default) or forwarded.
	CountTokens CountTokens
	// MaxBodyBytes bounds a request body (413 above it). Every body is read
	// into memory: X-Initiator and Copilot-Vision-Request must be known
	// before the first byte goes upstream, and a held body can be replayed
	// once after an upstream 401. Default [DefaultMaxBodyBytes] (32 MiB).
	MaxBodyBytes int64
	// BodyReadTimeout bounds reading a request body, against clients that
	// trickle it. Default [DefaultBodyReadTimeout].
	BodyReadTimeout time.Duration
	// MaxInflightBodyBytes bounds the request body bytes held at once by all
	// requests together. A body's share grows as its bytes arrive (never
	// its announced length up front, see body.Budget); growth that finds no
	// room waits up to InflightBodyWait, then its request gets 503 with
	// Retry-After. It is raised to MaxBodyBytes+1 if smaller. Default
	// 256 MiB; negative: no bound.
	MaxInflightBodyBytes int64
	// MaxInflightBodyBytesPerKey is the most of that budget the requests
	// of one client key hold together, so that one key's slow or large
	// bodies cannot starve the others. It is raised to MaxBodyBytes+1 if
	// smaller. Default half of MaxInflightBodyBytes (all of it without
	// Keys: every client is then the same key).
	MaxInflightBodyBytesPerKey int64
	// InflightBodyWait is how long a body waits for room in the budget,
	// each time it needs more. Default 2 s.
	InflightBodyWait time.Duration
	// StreamIdleTimeout ends an event stream whose upstream sent nothing for
	// this long, with an error event in the client's dialect. Default
	// [DefaultStreamIdleTimeout]; negative disables it.
	StreamIdleTimeout time.Duration
	// Transport carries upstream requests. Default NewTransport(TransportConfig{}).
	Transport http.RoundTripper
	// Metrics receives the forwarding's series. Default: unregistered.
	Metrics *Metrics
	// KeepAlive is how long a translated stream (see translate_route.go)
	// may stay silent before the client gets its dialect's keep-alive.
	// Default DefaultKeepAlive.
	KeepAlive time.Duration
	// Clock checks token expiry and times upstream calls. Default real.
	Clock clock.Clock
	// Logger receives warnings and, at debug level, one line a request.
	// Default: discard.
	Logger *slog.Logger
}

// Handler is the proxy's client-facing [http.Handler]. It is safe for
// concurrent use.
type Handler struct {
	source     TokenSource
	keys       KeySet // nil: no client authentication
	dynTargets dynTargets
	override   *url.URL
	allowed    []string
	profile    *identity.Holder
	hdrs       *headers.Builder // the header stage: allow list, identity, intents
	countMode  CountTokens
	bodies     *body.Intake // the request body stage: reading, budget, freeing
	streamIdle time.Duration
	transport  http.RoundTripper
	metrics    *Metrics
	clock      clock.Clock
	log        *slog.Logger
	rp         *httputil.ReverseProxy
	// scan is the body scan (inspect.Scan); tests count its calls.
	scan func(done <-chan struct{}, shape inspect.Shape, body []byte) (inspect.Result, error)
	// The account stage (accounts.go): key targets, account health, usage.
	accounts   Accounts
	targets    map[string]*target
	defTarget  *target
	pool       *pool.Tracker
	usage      *usage.Metrics
	usageBufs  *usage.Buffers
	reporter   UsageReporter    // nil: no ledger events
	gate       BudgetGate       // nil: no budgets
	quota      pool.QuotaReader // x-quota-snapshot-* headers, parsed once per value
	modelLabel func(string) string
	models     *models // nil: no catalog (models.go)
	keepAlive  time.Duration
	// bases caches the validation of each api_base_url seen (one or a few:
	// a URL per account's endpoint), so a URL is parsed once, not once per
	// request or per token; copied on write, read without a lock.
	bases atomic.Pointer[map[string]validatedBase]
}

type validatedBase struct {
	url *url.URL
	err error
}

// maxBases bounds the cached base URL validations; past it the cache
// starts over.
const maxBases = 64

// New returns a Handler configured by cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil {
		return nil, errors.New("forward: a token source is required")
	}
	h := &Handler{
		source:     cfg.Source,
		keys:       cfg.KeySet,
		override:   cfg.APIURL,
		allowed:    cfg.AllowedAPIHosts,
		profile:    cfg.Profile,
		countMode:  cfg.CountTokens,
		streamIdle: cfg.StreamIdleTimeout,
		transport:  cfg.Transport,
		metrics:    cfg.Metrics,
		clock:      clock.OrReal(cfg.Clock),
		log:        cfg.Logger,
		scan:       inspect.Scan,
	}
	if h.keys == nil && cfg.Keys != nil {
		h.keys = FileKeys(cfg.Keys)
	}
	if h.keepAlive = cfg.KeepAlive; h.keepAlive <= 0 {
		h.keepAlive = DefaultKeepAlive
	}
	if h.streamIdle == 0 {
		h.streamIdle = DefaultStreamIdleTimeout
	}
	if h.transport == nil {
		h.transport = NewTransport(TransportConfig{})
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	perKey := cfg.MaxInflightBodyBytesPerKey
	if perKey <= 0 && (cfg.Keys != nil || cfg.KeySet != nil) {
		perKey = cmp.Or(cfg.MaxInflightBodyBytes, DefaultMaxInflightBodyBytes) / 2
	}
	h.bodies = body.NewIntake(body.Config{Clock: h.clock,
		MaxBytes: cfg.MaxBodyBytes, ReadTimeout: cfg.BodyReadTimeout,
		MaxInflight: cfg.MaxInflightBodyBytes, MaxInflightPerKey: perKey, InflightWait: cfg.InflightBodyWait, Inflight: h.metrics.inflightBody,
		Preempted: h.metrics.budgetPreempt,
	})
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if err := h.initAccounts(cfg); err != nil {
		return nil, err
	}
	h.hdrs = headers.New(headers.Config{
		Editor: cfg.Editor, Profile: cfg.Profile, Intents: cfg.Intents,
		Forward: cfg.ForwardHeaders, AnthropicBetas: cfg.AnthropicBetas,
		BetasDropped: h.metrics.betasDropped, Logger: h.log,
	})
	if err := h.newModels(cfg.Models); err != nil {
		return nil, err
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:   h.rewrite,
		Transport: roundTripFunc(h.roundTrip),
		// FlushInterval stays 0: ReverseProxy flushes every write at once for
		// text/event-stream and for answers of unknown length, so SSE events
		// are never held back; forcing -1 for all answers cost a flush
		// goroutine per plain JSON reply (about 12% of the proxy's CPU).
		BufferPool:     newCopyBuffers(),
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
		// The reverse proxy's own lines (for example a client that left
		// mid-stream) go to the logger at debug level.
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	return h, nil
}

// call is the state of one forwarded request, shared by the handler, the
// rewrite, the transport and the response hooks through the request context.
// They run one after the other, never concurrently.
type call struct {
	route     *route
	key       string
	tok       *Token
	base      *url.URL
	body      *body.Held     // nil once the answer has begun (or without a body)
	held      *body.Held     // the same, kept to free it when the handler returns
	in        inspect.Result // the body scan (inspect.Scan), once
	decision  routeDecision  // the model stage (models.go)
	xlate     *xlate         // translation (translate_route.go); nil on the pass-through path
	requestID string
	status    int
	retried   bool
	acct      acctCall    // the account stage: the account or pool member used
	aff       uint64      // conversation hash, once computed (accounts.go)
	models    keys.Models // the key's model allow list (keyset.go)
	start     time.Time   // arrival, for the ledger's latency
}

type callKey struct{}

func callFrom(ctx context.Context) *call { return ctx.Value(callKey{}).(*call) }

// ServeHTTP runs the request stages in order (docs/architecture.md
// section 6 names them the same): admit, token, body, account, model,
// forward; record counts what was answered once an account is chosen.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, ok := h.admit(w, r)
	if !ok {
		return
	}
	if c.route == routeCountTokens && h.countMode == CountTokensLocal {
		h.serveCountTokens(w, r, c.route, c.key)
		return
	}
	if !h.singleToken(w, c) {
		return
	}
	ok = h.readBody(w, r, c)
	if c.held != nil {
		defer c.held.Free()
	}
	if !ok || !h.chooseAccount(w, c) {
		return
	}
	defer h.record(r, c)
	if c.body != nil && (!h.resolveModel(w, r, c) || !h.admitBudget(w, c)) {
		return
	}
	h.forward(w, r, c)
}

// admit is the route stage: the path's route, its method and the client's
// API key; it answers 404, 405 or 401 itself.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (*call, bool) {
	rt := lookupRoute(r.URL.Path)
	if rt == nil {
		h.reject(w, "unknown", "-", dialectOf(r.URL.Path), dialect.NotFound(fmt.Sprintf("no route for %s; this proxy serves /v1/chat/completions, /v1/models, /v1/models/{id}, /v1/embeddings, /v1/responses, /v1/messages and /v1/messages/count_tokens", r.URL.Path)))
		return nil, false
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		h.reject(w, rt.name, "-", rt.dialect, dialect.Method(fmt.Sprintf("%s %s is not supported; use %s", r.Method, r.URL.Path, rt.method)))
		return nil, false
	}
	ck, err := h.authenticate(r)
	if err != nil {
		ke, ok := err.(*KeyError)
		if !ok {
			ke = ErrUnknownKey
		}
		h.reject(w, rt.name, "-", rt.dialect, ke.apiError())
		return nil, false
	}
	c := &call{route: rt, key: ck.Name, requestID: newRequestID(), models: ck.Models, start: h.clock.Now()}
	c.acct.tgt = h.targetFor(&ck)
	return c, true
}

// singleToken is the token stage of a key with one account: its token
// now, before reading the body (a pool chooses in chooseAccount).
func (h *Handler) singleToken(w http.ResponseWriter, c *call) bool {
	if c.acct.tgt.pooled() {
		return true
	}
	c.acct.account, c.acct.src = c.acct.tgt.account, c.acct.tgt.src
	tok, base, err := h.token(c.acct.src)
	if err != nil {
		h.log.Warn("no usable token; answering 503", "route", c.route.name, "key", c.key, "account", c.acct.account, "error", err)
		h.reject(w, c.route.name, c.key, c.route.dialect, dialect.Unavailable(err.Error()))
		return false
	}
	c.tok, c.base = tok, base
	return true
}

// readBody is the body stage: the body read into held memory (package
// body) and scanned once (package inspect). A body the scan refuses gets
// 400 in the client's dialect.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, c *call) bool {
	rt := c.route
	if !rt.hasBody() {
		// A GET has no body upstream: forwarding one would stream an
		// unbounded client body past MaxBodyBytes. A body sent anyway is
		// read and dropped here, within the limit: left unread, the
		// server's own discard after the handler races its next read on
		// the connection and panics ("invalid concurrent Body.Read call").
		if r.ContentLength != 0 {
			if err := h.bodies.Discard(w, r); err != nil {
				h.rejectBody(w, rt, c.key, err)
				return false
			}
		}
		r.Body, r.ContentLength, r.TransferEncoding, r.GetBody = http.NoBody, 0, nil, nil
		return true
	}
	held, err := h.bodies.Read(w, r, c.key)
	if err != nil {
		h.rejectBody(w, rt, c.key, err)
		return false
	}
	c.body, c.held = held, held
	if c.in, err = h.scan(r.Context().Done(), rt.shape, held.Bytes()); err != nil {
		h.reject(w, rt.name, c.key, rt.dialect, dialect.BadRequest(err.Error()))
		return false
	}
	if rt == routeResponses && c.in.Vision {
		// An image detail other than low or high is sent as high
		// (imagedetail.go); the body changed, so it is scanned again.
		if nb, ok := normalizeImageDetail(held.Bytes()); ok {
			held.Set(nb)
			if c.in, err = h.scan(r.Context().Done(), rt.shape, held.Bytes()); err != nil {
				h.reject(w, rt.name, c.key, rt.dialect, dialect.BadRequest(err.Error()))
				return false
			}
		}
	}
	return true
}

// chooseAccount is the account stage: a pool chooses its member now that
// the conversation is known. It stays before any stage that needs the
// account (the model catalog is per account): a failover later may change
// it, to a member whose catalog the retry must then use (see roundTrip).
func (h *Handler) chooseAccount(w http.ResponseWriter, c *call) bool {
	if !c.acct.tgt.pooled() {
		// A person's requests load their account too: pools see it.
		c.acct.release = h.pool.Acquire(c.acct.account)
		return true
	}
	ok, out := h.pickMember(c)
	if !ok {
		h.log.Warn("no usable account in the key's pool", "route", c.route.name, "key", c.key, "retry_after", out.RetryAfter, "reasons", out.Reasons)
		h.rejectPool(w, c, out)
		h.metrics.requests.WithLabelValues(c.route.name, statusLabel(c.status), c.key).Inc()
	}
	return ok
}

// forward is the forward stage: the held body becomes the outbound one
// and the reverse proxy sends it (rewrite, roundTrip, modifyResponse);
// GET /v1/models is answered from the catalog instead when it can be.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, c *call) {
	if c.body != nil {
		r.Body, r.GetBody = c.body.Forward()
		r.ContentLength = int64(len(c.body.Bytes()))
		r.TransferEncoding = nil
	} else if (c.route == routeModels || c.route == routeModel) && h.serveModels(w, r, c) {
		return
	}
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// authenticate returns the client's key; with no keys configured every
// client is let in as "-".
func (h *Handler) authenticate(r *http.Request) (ClientKey, error) {
	if h.keys == nil {
		return ClientKey{Name: "-"}, nil
	}
	return h.keys.Authenticate(presentedKey(r))
}

// token returns the token of src to use and its validated base URL.
func (h *Handler) token(src TokenSource) (*Token, *url.URL, error) {
	tok, err := src.Token()
	if err != nil {
		return nil, nil, err
	}
	if err := h.usable(tok); err != nil {
		return nil, nil, err
	}
	base, err := h.baseURL(tok)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	return tok, base, nil
}

// usable checks a token from the source before it is sent. The source
// checks expiry too; checking here as well means no source bug can send an
// expired token, or one whose expiry is unknown.
func (h *Handler) usable(tok *Token) error {
	switch {
	case tok == nil || tok.Value.IsZero():
		return fmt.Errorf("%w: the token source returned none", ErrNoToken)
	case tok.ExpiresAt.IsZero():
		return fmt.Errorf("%w: the token (generation %d) has no expiry time", ErrNoToken, tok.Generation)
	case !h.clock.Now().Before(tok.ExpiresAt):
		return fmt.Errorf("%w: the cached token (generation %d) expired at %s", ErrNoToken, tok.Generation, tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func (h *Handler) baseURL(tok *Token) (*url.URL, error) {
	if h.override != nil {
		return h.override, nil
	}
	old := h.bases.Load()
	if old != nil {
		if v, ok := (*old)[tok.APIBaseURL]; ok {
			return v.url, v.err
		}
	}
	u, err := ValidateBaseURL(tok.APIBaseURL, h.allowed)
	if err != nil {
		h.log.Error("token's api_base_url refused", "generation", tok.Generation, "error", err)
	}
	next := make(map[string]validatedBase, 1)
	if old != nil && len(*old) < maxBases {
		maps.Copy(next, *old)
	}
	next[tok.APIBaseURL] = validatedBase{u, err}
	h.bases.Store(&next) // a concurrent miss may store its own copy: one validation is redone later
	return u, err
}

func (h *Handler) rejectBody(w http.ResponseWriter, rt *route, key string, err error) {
	if errors.Is(err, body.ErrTooLarge) {
		h.reject(w, rt.name, key, rt.dialect, dialect.TooLarge(fmt.Sprintf("request body larger than %d bytes", h.bodies.MaxBytes())))
		return
	}
	if errors.Is(err, body.ErrBudget) {
		h.metrics.budgetRefused.Inc()
		w.Header().Set("Retry-After", "1")
		h.reject(w, rt.name, key, rt.dialect, dialect.Overloaded("the proxy holds too many request bytes in flight; retry shortly"))
		return
	}
	h.reject(w, rt.name, key, rt.dialect, dialect.BadRequest("reading the request body failed"))
}

// rewrite points the outbound request at the Copilot API and builds its
// headers (the header stage, package headers) for the endpoint it goes to. ReverseProxy has already
// removed hop-by-hop and X-Forwarded-* headers, and none are added: the
// client's address is not Copilot's business.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	target := c.targetRoute()
	pr.Out.Header = h.hdrs.Upstream(target.upstream, target.hasBody(), pr.Out.Header, c.facts(pr.Out.Header))
	if c.xlate != nil {
		translateHeaders(pr.Out.Header, c.xlate)
	}
	setTarget(pr.Out, c)
}

// facts are what the header stage needs of the client's request, from its
// one body scan.
func (c *call) facts(in http.Header) headers.Facts {
	return headers.Facts{
		RequestID: c.requestID, Agent: c.in.Agent, Vision: c.in.Vision,
		Interaction: headers.InteractionType(in, c.route == routeMessages && c.in.Compaction),
	}
}

// setTarget sets the upstream URL and credential of the call's token on r.
func setTarget(r *http.Request, c *call) {
	r.URL.Scheme = c.base.Scheme
	r.URL.Host = c.base.Host
	r.URL.Path = c.base.Path + c.upstreamPath()
	r.URL.RawPath = ""
	r.URL.RawQuery = cleanQuery(r.URL.RawQuery)
	r.Host = ""
	r.Header.Set("Authorization", "Bearer "+c.tok.Value.Reveal())
}

func (h *Handler) modifyResponse(resp *http.Response) error {
	c := callFrom(resp.Request.Context())
	c.status = resp.StatusCode
	resp.Header.Set("X-Request-Id", c.requestID)
	h.classifyError(resp, c)
	h.tapUsage(resp, c)
	h.watchStreamIdle(resp, c)
	if c.held != nil && c.xlate == nil {
		// The answer has begun: the request body is needed no more (no
		// retry follows), so a stream that lasts minutes does not hold it,
		// nor its share of the in-flight body budget.
		c.held.FreeSent()
		c.body = nil // no later stage may read a buffer that may be back in its pool
	}
	if c.xlate != nil {
		return h.translateResponse(resp, c)
	}
	return nil
}

// proxyError answers a failed upstream call: nothing when the client is gone
// (its leaving cancelled the call), 504 on a timeout, 502 otherwise.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	if r.Context().Err() != nil {
		c.status = 499
		return
	}
	w.Header().Set("X-Request-Id", c.requestID)
	var ne net.Error
	// The transport's error names addresses (the upstream's, the proxy's
	// own): they go to the log, the client gets the request id to match.
	e := dialect.BadGateway("the Copilot API could not be reached (request " + c.requestID + "; details in the proxy's log)")
	if errors.As(err, &ne) && ne.Timeout() {
		e = dialect.GatewayTimeout("the Copilot API did not answer in time (request " + c.requestID + ")")
	}
	c.status = e.Status
	h.log.Warn("upstream call failed", "route", c.route.name, "key", c.key, "request_id", c.requestID, "error", err)
	dialect.Write(w, c.route.dialect, e)
}

// record is the record stage: the request counted and logged. A context
// ended before the handler returns means the client left mid-response.
func (h *Handler) record(r *http.Request, c *call) {
	status := c.status
	if r.Context().Err() != nil {
		status = 499
	}
	if c.acct.release != nil {
		c.acct.release()
	}
	h.metrics.requests.WithLabelValues(c.route.name, statusLabel(status), c.key).Inc()
	h.metrics.dialects.count(c)
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("request", "route", c.route.name, "status", status, "key", c.key, "account", c.acct.account,
			"request_id", c.requestID, "generation", c.tok.Generation, "initiator_agent", c.in.Agent, "vision", c.in.Vision,
			"model", c.decision.resolved, "model_rule", c.decision.rule.String())
	}
}

func (h *Handler) reject(w http.ResponseWriter, route, key string, d dialect.Dialect, e dialect.Error) {
	h.metrics.requests.WithLabelValues(route, statusLabel(e.Status), key).Inc()
	dialect.Write(w, d, e)
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// copyBufferSize is the reverse proxy's copy buffer: a stream holds one for
// its whole life, and SSE events are far smaller, so 8 KiB rather than 32
// keeps thousands of open streams cheap; a large JSON answer takes a few
// more reads.
const copyBufferSize = 8 << 10

// copyBuffers pools the reverse proxy's body-copy buffers.
type copyBuffers struct{ p sync.Pool }

func newCopyBuffers() *copyBuffers {
	return &copyBuffers{p: sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}}
}

func (c *copyBuffers) Get() []byte  { return *c.p.Get().(*[]byte) }
func (c *copyBuffers) Put(b []byte) { c.p.Put(&b) }

// cleanQuery re-encodes a client's query string for the upstream: pairs
// that do not parse are dropped and every byte outside the URL's safe set is
// escaped, so nothing the client wrote goes upstream verbatim (raw 0xff
// bytes, stray '%').
func cleanQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, _ := url.ParseQuery(raw) // the pairs that parse
	return q.Encode()
}

// chargeMemory charges the body's reservation factor times its size, for
// work that holds that much (a translation, a token count) before it
// starts. When it cannot, it returns the answer: 413 when no key's share
// could ever hold it (the message says the largest body that fits), 503
// with Retry-After when the budget is full now, 499 when the client left.
func (h *Handler) chargeMemory(w http.ResponseWriter, held *body.Held, factor int64, what string) (dialect.Error, bool) {
	n := int64(len(held.Bytes()))
	need := n * factor
	b := h.bodies.Budget()
	if !b.Fits(need) {
		return dialect.TooLarge(fmt.Sprintf("request body of %d bytes too large %s: at most %d bytes", n, what, b.PerKey()/factor)), false
	}
	if err := held.Charge(need); err != nil {
		e := dialect.Overloaded("the proxy holds too many request bytes in flight; retry shortly")
		if errors.Is(err, body.ErrBudget) {
			h.metrics.budgetRefused.Inc()
			w.Header().Set("Retry-After", "1")
		} else {
			e.Status = 499 // the client left
		}
		return e, false
	}
	return dialect.Error{}, true
}
