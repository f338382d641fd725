// Package forward is the proxy's HTTP side: it authenticates clients by API
// key, maps their OpenAI- and Anthropic-style paths to the Copilot API, sets
// the Copilot headers and forwards with [httputil.ReverseProxy], streaming
// server-sent events as they arrive. It gets tokens from a [TokenSource] and
// knows nothing of where they come from (the broker client lives in
// internal/forward/brokerclient).
package forward

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Defaults of [Config]; the proxy's flags show the same values.
const (
	DefaultMaxBodyBytes    = 32 << 20
	DefaultBodyReadTimeout = 60 * time.Second
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
	// APIURL, when set, overrides every token's api_base_url (the sandbox and
	// tests use it); it is trusted as given.
	APIURL *url.URL
	// AllowedAPIHosts are the hosts a token's api_base_url may name:
	// ".suffix" matches hosts under the suffix, anything else one exact
	// host. Nil means [DefaultAllowedAPIHosts]. Not used with APIURL.
	AllowedAPIHosts []string
	// Editor is the identity sent upstream (identity.Editor: one definition
	// shared with the broker's exchange). Zero fields take the defaults.
	Editor identity.Editor
	// Intents are the Openai-Intent values per upstream endpoint. Zero
	// fields take DefaultIntents'.
	Intents Intents
	// AnthropicBetas are the anthropic-beta values forwarded on
	// /v1/messages ("name-*" matches by prefix); the rest are dropped and
	// counted. Nil means DefaultAnthropicBetas; empty forwards none.
	AnthropicBetas []string
	// ForwardHeaders are client header names forwarded besides the built-in
	// allow list (headers.go). Default none.
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
	// requests together; a body that does not fit waits up to
	// InflightBodyWait, then gets 503 with Retry-After. It is raised to
	// MaxBodyBytes+1 if smaller. Default 256 MiB; negative: no bound.
	MaxInflightBodyBytes int64
	// InflightBodyWait is how long a body waits for room in the budget.
	// Default 2 s.
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
	keys       *keys.Set
	override   *url.URL
	allowed    []string
	editor     identity.Editor
	intents    Intents
	headers    *headerPolicy
	preset     *presetHeaders
	countMode  CountTokens
	maxBody    int64
	bodyWait   time.Duration
	streamIdle time.Duration
	transport  http.RoundTripper
	metrics    *Metrics
	clock      clock.Clock
	log        *slog.Logger
	rp         *httputil.ReverseProxy
	bodies     *sync.Pool
	// Stage 6 (accounts.go): key targets, account health, usage.
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
	budget     *bodyBudget
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
		keys:       cfg.Keys,
		override:   cfg.APIURL,
		allowed:    cfg.AllowedAPIHosts,
		editor:     cfg.Editor.WithDefaults(),
		intents:    cfg.Intents.withDefaults(),
		countMode:  cfg.CountTokens,
		maxBody:    cfg.MaxBodyBytes,
		bodyWait:   cfg.BodyReadTimeout,
		streamIdle: cfg.StreamIdleTimeout,
		transport:  cfg.Transport,
		metrics:    cfg.Metrics,
		clock:      clock.OrReal(cfg.Clock),
		log:        cfg.Logger,
		bodies:     newBodyPool(),
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.bodyWait <= 0 {
		h.bodyWait = DefaultBodyReadTimeout
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
	inflight, wait := cfg.MaxInflightBodyBytes, cfg.InflightBodyWait
	if inflight == 0 {
		inflight = DefaultMaxInflightBodyBytes
	}
	if inflight > 0 {
		inflight = max(inflight, h.maxBody+1)
	}
	if wait <= 0 {
		wait = DefaultInflightBodyWait
	}
	h.budget = newBodyBudget(inflight, wait, h.metrics.inflightBody)
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if err := h.initAccounts(cfg); err != nil {
		return nil, err
	}
	betas := cfg.AnthropicBetas
	if betas == nil {
		betas = DefaultAnthropicBetas
	}
	h.headers = newHeaderPolicy(cfg.ForwardHeaders, newBetaFilter(betas, h.metrics.betasDropped, h.log), h.log)
	h.preset = newPresetHeaders(h.editor, h.intents)
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
	body      *bodyBuf
	held      *heldBody // frees body once the answer has begun
	in        inspection
	decision  routeDecision // stage 4 (models.go)
	xlate     *xlate        // stage 5 (translate_route.go); nil on the pass-through path
	requestID string
	status    int
	retried   bool
	acct      acctCall // stage 6: the account or pool member used
	aff       uint64   // conversation hash, once computed (accounts.go)
	start     time.Time
}

type callKey struct{}

func callFrom(ctx context.Context) *call { return ctx.Value(callKey{}).(*call) }

// ServeHTTP routes, authenticates, checks the token, reads and inspects the
// body, and forwards.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := lookupRoute(r.URL.Path)
	if rt == nil {
		h.reject(w, "unknown", "-", dialectOf(r.URL.Path), errNotFound(fmt.Sprintf("no route for %s; this proxy serves /v1/chat/completions, /v1/models, /v1/models/{id}, /v1/embeddings, /v1/responses, /v1/messages and /v1/messages/count_tokens", r.URL.Path)))
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		h.reject(w, rt.name, "-", rt.dialect, errMethod(fmt.Sprintf("%s %s is not supported; use %s", r.Method, r.URL.Path, rt.method)))
		return
	}
	key, ok := h.authenticate(r)
	if !ok {
		h.reject(w, rt.name, "-", rt.dialect, errUnauthorized("missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"))
		return
	}
	if rt == routeCountTokens && h.countMode == CountTokensLocal {
		h.serveCountTokens(w, r, rt, key)
		return
	}
	c := &call{route: rt, key: key, requestID: newRequestID(), start: h.clock.Now()}
	c.acct.tgt = h.targetOf(key)
	if !c.acct.tgt.pooled() {
		// A single account: its token now, before reading the body.
		c.acct.account, c.acct.src = c.acct.tgt.account, c.acct.tgt.src
		tok, base, err := h.token(c.acct.src)
		if err != nil {
			h.log.Warn("no usable token; answering 503", "route", rt.name, "key", key, "account", c.acct.account, "error", err)
			h.reject(w, rt.name, key, rt.dialect, errUnavailable(err.Error()))
			return
		}
		c.tok, c.base = tok, base
	}
	if rt.kind == bodyNone {
		// A GET has no body upstream: forwarding one would stream an
		// unbounded client body past MaxBodyBytes. A body sent anyway is
		// read and dropped here, within the limit: left unread, the
		// server's own discard after the handler races its next read on
		// the connection and panics ("invalid concurrent Body.Read call").
		if r.ContentLength != 0 {
			if err := h.discardBody(w, r); err != nil {
				h.rejectBody(w, rt, key, err)
				return
			}
		}
		r.Body, r.ContentLength, r.TransferEncoding, r.GetBody = http.NoBody, 0, nil, nil
	} else {
		res := h.budget.reserve(r.Context())
		defer res.release() // idempotent; for the paths that fail early
		body, err := h.readBody(w, r, res)
		if err != nil {
			h.rejectBody(w, rt, key, err)
			return
		}
		c.body, c.held = body, &heldBody{body: body, res: res}
		defer c.held.free()
		c.in, _ = inspectUntil(r.Context().Done(), rt.kind, body.buf)
	}
	if c.acct.tgt.pooled() {
		// A pool: choose a member now that the conversation is known. This
		// stays before any stage that needs the account (the catalog of
		// stage 4 is per account): a failover later may change it, to a
		// member whose catalog the retry must then use (see roundTrip).
		if ok, out := h.pickMember(c); !ok {
			h.log.Warn("no usable account in the key's pool", "route", rt.name, "key", key, "retry_after", out.RetryAfter, "reasons", out.Reasons)
			h.rejectPool(w, c, out)
			h.metrics.requests.WithLabelValues(rt.name, statusLabel(c.status), key).Inc()
			return
		}
	} else {
		// A person's requests load their account too: pools see it.
		c.acct.release = h.pool.Acquire(c.acct.account)
	}
	defer h.done(r, c)
	if body := c.body; body != nil {
		// Stage 4-5 (models.go): the account is known, so is its catalog.
		if !h.resolveModel(w, r, c) || !h.admitBudget(w, c) {
			return
		}
		// The reverse proxy hands the transport a body whose Close does
		// nothing, so this reader is closed here: without it the buffer
		// never returns to the pool and every request allocates anew.
		rd := body.reader()
		c.held.rd = rd
		r.Body = rd
		r.ContentLength = int64(len(body.buf))
		r.TransferEncoding = nil
		r.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	} else if (rt == routeModels || rt == routeModel) && h.serveModels(w, r, c) {
		return
	}
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// authenticate returns the name of the client's key; with no keys configured
// every client is let in as "-".
func (h *Handler) authenticate(r *http.Request) (string, bool) {
	if h.keys == nil {
		return "-", true
	}
	var presented secret.Secret
	if v := r.Header.Get("Authorization"); v != "" {
		presented, _ = keys.FromBearer(v)
	} else if v := r.Header.Get("X-Api-Key"); v != "" {
		presented = secret.New(v)
	}
	return h.keys.Lookup(presented)
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

// readBody reads the request body within res. A body refused for memory,
// not for what it is, is read on into nothing (no memory held, bounded by the
// body limit and read deadline) so that the client reads a clean 503 instead
// of a reset connection mid-upload; if even that fails, the connection is
// closed after the answer.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, res *reservation) (*bodyBuf, error) {
	body, err := h.readBodyWithin(w, r, res)
	if errors.Is(err, errBudget) && h.discardBody(w, r) != nil {
		w.Header().Set("Connection", "close")
	}
	return body, err
}

func (h *Handler) readBodyWithin(w http.ResponseWriter, r *http.Request, res *reservation) (*bodyBuf, error) {
	defer h.bodyDeadline(w)()
	return readBody(h.bodies, r.Body, r.ContentLength, h.maxBody, res)
}

// discardBody reads and drops a body the upstream will not get.
func (h *Handler) discardBody(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > h.maxBody {
		return errBodyTooLarge
	}
	defer h.bodyDeadline(w)()
	n, err := io.CopyN(io.Discard, r.Body, h.maxBody+1)
	switch {
	case n > h.maxBody:
		return errBodyTooLarge
	case err == io.EOF:
		return nil
	}
	return err
}

// bodyDeadline bounds reading the request body and returns the function
// that lifts the bound. Not every ResponseWriter supports deadlines (tests'
// recorders do not); then the read is bounded only by size. A socket
// deadline is wall-clock time, never the injected clock's (a fake one would
// set it in the past).
func (h *Handler) bodyDeadline(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(h.bodyWait)) != nil {
		return func() {}
	}
	return func() { _ = rc.SetReadDeadline(time.Time{}) }
}

func (h *Handler) rejectBody(w http.ResponseWriter, rt *route, key string, err error) {
	if errors.Is(err, errBodyTooLarge) {
		h.reject(w, rt.name, key, rt.dialect, errTooLarge(fmt.Sprintf("request body larger than %d bytes", h.maxBody)))
		return
	}
	if errors.Is(err, errBudget) {
		h.metrics.budgetRefused.Inc()
		w.Header().Set("Retry-After", "1")
		h.reject(w, rt.name, key, rt.dialect, errOverloaded("the proxy holds too many request bytes in flight; retry shortly"))
		return
	}
	h.reject(w, rt.name, key, rt.dialect, errBadRequest("reading the request body failed"))
}

// rewrite points the outbound request at the Copilot API and builds its
// headers (headers.go) for the endpoint it goes to. ReverseProxy has already
// removed hop-by-hop and X-Forwarded-* headers, and none are added: the
// client's address is not Copilot's business.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	pr.Out.Header = h.upstreamHeader(c.targetRoute(), pr.Out.Header, c.facts())
	if c.xlate != nil {
		translateHeaders(pr.Out.Header, c.xlate)
	}
	setTarget(pr.Out, c)
}

// setTarget sets the upstream URL and credential of the call's token on r.
func setTarget(r *http.Request, c *call) {
	r.URL.Scheme = c.base.Scheme
	r.URL.Host = c.base.Host
	r.URL.Path = c.base.Path + c.upstreamPath()
	r.URL.RawPath = ""
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
		c.held.freeSent()
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
	e := errBadGateway("the Copilot API could not be reached (request " + c.requestID + "; details in the proxy's log)")
	if errors.As(err, &ne) && ne.Timeout() {
		e = errGatewayTimeout("the Copilot API did not answer in time (request " + c.requestID + ")")
	}
	c.status = e.status
	h.log.Warn("upstream call failed", "route", c.route.name, "key", c.key, "request_id", c.requestID, "error", err)
	writeError(w, c.route.dialect, e)
}

// done records the request. A context ended before the handler returns means
// the client left mid-response.
func (h *Handler) done(r *http.Request, c *call) {
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
			"request_id", c.requestID, "generation", c.tok.Generation, "initiator_agent", c.in.agent, "vision", c.in.vision,
			"model", c.decision.resolved, "model_rule", c.decision.rule.String())
	}
}

func (h *Handler) reject(w http.ResponseWriter, route, key string, d dialect, e apiError) {
	h.metrics.requests.WithLabelValues(route, statusLabel(e.status), key).Inc()
	writeError(w, d, e)
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
