// Package wsresponses is the proxy's Responses API over WebSocket
// (ws:/responses, docs/protocol.md "Responses over WebSocket"): a client
// opens GET /v1/responses with an upgrade, authenticated by its API key on
// the upgrade, and sends {"type":"response.create", ...} messages. Each one
// is a Responses call run in process through the proxy's own HTTP handler
// (a POST /v1/responses with "stream": true and the upgrade's credentials),
// so it passes every stage an HTTP request does (key policy, model
// resolution, pools, budgets, translation, usage), and the answer's events
// come back one text message each. Keys are checked again at every turn: a
// key revoked while a connection is open is refused at its next
// response.create and the connection closed with 1008.
//
// [Front] is an [http.Handler] placed before the proxy's handler: it takes
// the upgrades and passes every other request on. With [Upstream], turns of
// models that list ws:/responses go upstream over one WebSocket per client
// connection instead of an HTTP call each.
package wsresponses

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Defaults of [Config].
const (
	DefaultMaxMessageBytes = 32 << 20
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultPingInterval    = 30 * time.Second
	DefaultPingTimeout     = 15 * time.Second
	DefaultWriteTimeout    = 60 * time.Second
	DefaultMaxConns        = 10000
	DefaultMaxConnsPerKey  = 256
	DefaultMaxRefused      = 16
)

// Config configures a [Front].
type Config struct {
	// Inner is the proxy's handler: every request that is not a Responses
	// upgrade goes to it, and every turn runs through it. Required.
	Inner http.Handler
	// Authenticate names the key of an upgrade request (Authorization:
	// Bearer or X-Api-Key; never the URL), or refuses it. Nil lets every
	// client in as "-" (no keys configured).
	Authenticate func(*http.Request) (string, bool)
	// MaxMessageBytes bounds one client message; a larger one closes the
	// connection with 1009. Default [DefaultMaxMessageBytes] (the HTTP
	// body limit).
	MaxMessageBytes int64
	// IdleTimeout closes a connection that sent no message and ran no
	// response for this long (close 1000, "idle timeout"). Default
	// [DefaultIdleTimeout].
	IdleTimeout time.Duration
	// PingInterval is how often an open connection is pinged; a ping not
	// answered within PingTimeout closes it. Defaults
	// [DefaultPingInterval], [DefaultPingTimeout]; negative: no pings.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout bounds sending one message to a client. Default
	// [DefaultWriteTimeout].
	WriteTimeout time.Duration
	// MaxConns and MaxConnsPerKey cap the open connections of the proxy
	// and of one key (upgrades past them get 503 and 429). Defaults
	// [DefaultMaxConns], [DefaultMaxConnsPerKey]; negative: no cap.
	MaxConns, MaxConnsPerKey int
	// MaxRefused is how many messages a client may send while its response
	// runs (each answered with an error event) before the connection is
	// closed with 1008. Default [DefaultMaxRefused].
	MaxRefused int
	// Upstream, when set, carries the turns of models that list
	// ws:/responses over an upstream WebSocket (see [Upstream]).
	Upstream *Upstream
	// Metrics receives the front's series. Default: unregistered.
	Metrics *Metrics
	// Clock drives the idle timeout and the pings. Default real.
	Clock clock.Clock
	// Logger receives connection lines at debug level. Default: discard.
	Logger *slog.Logger
}

// Front is the Responses WebSocket front; see the package documentation.
type Front struct {
	cfg      Config
	m        *Metrics
	clock    clock.Clock
	log      *slog.Logger
	mu       sync.Mutex
	conns    map[*session]struct{}
	perKey   map[string]int
	draining bool
	wg       sync.WaitGroup // one per open session
}

// New returns a Front configured by cfg.
func New(cfg Config) *Front {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.IdleTimeout, DefaultIdleTimeout)
	def(&cfg.PingInterval, DefaultPingInterval)
	def(&cfg.PingTimeout, DefaultPingTimeout)
	def(&cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerKey == 0 {
		cfg.MaxConnsPerKey = DefaultMaxConnsPerKey
	}
	if cfg.MaxRefused <= 0 {
		cfg.MaxRefused = DefaultMaxRefused
	}
	f := &Front{
		cfg: cfg, m: cfg.Metrics, clock: clock.OrReal(cfg.Clock), log: cfg.Logger,
		conns: map[*session]struct{}{}, perKey: map[string]int{},
	}
	if f.m == nil {
		f.m = NewMetrics(nil)
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f
}

// IsUpgrade reports whether r asks for the Responses API over a WebSocket.
func IsUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || (r.URL.Path != "/v1/responses" && r.URL.Path != "/responses") {
		return false
	}
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && hasToken(r.Header, "Connection", "upgrade")
}

func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ServeHTTP serves Responses upgrades and passes every other request to
// Config.Inner.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !IsUpgrade(r) {
		f.cfg.Inner.ServeHTTP(w, r)
		return
	}
	key, ok := "-", true
	if f.cfg.Authenticate != nil {
		key, ok = f.cfg.Authenticate(r)
	}
	if !ok {
		f.refuse(w, "unauthorized", http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>' on the upgrade request")
		return
	}
	s, status := f.admit(key)
	if s == nil {
		switch status {
		case "draining":
			f.refuse(w, status, http.StatusServiceUnavailable, "server_error", "shutting_down", "the proxy is shutting down; reconnect")
		case "proxy_limit":
			f.refuse(w, status, http.StatusServiceUnavailable, "server_error", "overloaded",
				"the proxy has "+strconv.Itoa(f.cfg.MaxConns)+" WebSocket connections open; retry shortly or use HTTP")
		default:
			f.refuse(w, status, http.StatusTooManyRequests, "rate_limit_error", "too_many_connections",
				"this key has "+strconv.Itoa(f.cfg.MaxConnsPerKey)+" WebSocket connections open; close one or use HTTP")
		}
		return
	}
	defer f.release(s)
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		f.m.conns.WithLabelValues("failed").Inc()
		f.log.Debug("websocket upgrade failed", "key", key, "error", err)
		return
	}
	f.m.conns.WithLabelValues("accepted").Inc()
	f.m.open.Inc()
	defer f.m.open.Dec()
	s.serve(r, conn)
}

// admit registers a session for key within the caps, or names the refusal.
func (f *Front) admit(key string) (*session, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.draining:
		return nil, "draining"
	case f.cfg.MaxConns > 0 && len(f.conns) >= f.cfg.MaxConns:
		return nil, "proxy_limit"
	case f.cfg.MaxConnsPerKey > 0 && f.perKey[key] >= f.cfg.MaxConnsPerKey:
		return nil, "key_limit"
	}
	s := &session{f: f, key: key}
	f.conns[s] = struct{}{}
	f.perKey[key]++
	f.wg.Add(1)
	return s, ""
}

func (f *Front) release(s *session) {
	f.mu.Lock()
	delete(f.conns, s)
	if f.perKey[s.key]--; f.perKey[s.key] <= 0 {
		delete(f.perKey, s.key)
	}
	f.mu.Unlock()
	f.wg.Done()
}

// refuse answers an upgrade it does not take, in the OpenAI error shape.
func (f *Front) refuse(w http.ResponseWriter, result string, status int, typ, code, msg string) {
	f.m.conns.WithLabelValues(result).Inc()
	var body struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	body.Error.Message, body.Error.Type, body.Error.Code = msg, typ, code
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Open returns the number of open sessions.
func (f *Front) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// Drain shuts the front down: new upgrades are refused, idle connections
// close at once with 1001, a running response finishes and then its
// connection closes with 1001. When ctx ends first, the remaining
// connections are closed (1001) and their responses cut. Drain returns once
// every connection has ended.
func (f *Front) Drain(ctx context.Context) {
	f.mu.Lock()
	f.draining = true
	list := make([]*session, 0, len(f.conns))
	for s := range f.conns {
		list = append(list, s)
	}
	f.mu.Unlock()
	for _, s := range list {
		s.drain()
	}
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	f.mu.Lock()
	list = list[:0]
	for s := range f.conns {
		list = append(list, s)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Go(s.abort)
	}
	wg.Wait()
	<-done
}
