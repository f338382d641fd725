package wsresponses

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/copilot-broker/copilot-broker/internal/ssews"
)

// Defaults of [UpstreamConfig].
const (
	DefaultMaxFailures = 3
	DefaultDialTimeout = 10 * time.Second
)

// UpstreamConfig configures an [Upstream].
type UpstreamConfig struct {
	// Inner carries every upstream request the WebSocket does not. Required.
	Inner http.RoundTripper
	// HTTPClient makes the upgrade requests (its transport's TLS settings
	// apply). Default: a client with http.DefaultTransport's settings.
	HTTPClient *http.Client
	// MaxFailures is how many failed upstream connections in a row make a
	// client connection go on over HTTP. Default [DefaultMaxFailures].
	MaxFailures int
	// DialTimeout bounds one upstream upgrade. Default [DefaultDialTimeout].
	DialTimeout time.Duration
	// Metrics receives the fallbacks (share the Front's). Default:
	// unregistered.
	Metrics *Metrics
	// Logger receives fallbacks. Default: discard.
	Logger *slog.Logger
}

// Upstream is the proxy's upstream transport in --upstream-websocket mode:
// an [http.RoundTripper] placed under the proxy's handler that sends a
// WebSocket turn's POST /responses over the client connection's upstream
// WebSocket (wss://{api}/responses, one per client connection, opened at
// its first such turn) when the model lists ws:/responses, and everything
// else to Config.Inner. The upstream's events come back to the handler as
// an SSE body, so the handler's stages (usage, stream idle, translation)
// see what an HTTP call would give. An upgrade the upstream refuses, or a
// connection that drops, counts as a failure and the turn, when nothing of
// it was sent yet, goes over HTTP; after MaxFailures in a row the client
// connection stays on HTTP (counted in
// copilot_proxy_ws_upstream_fallbacks_total).
type Upstream struct {
	cfg UpstreamConfig
	m   *Metrics
	log *slog.Logger
}

// NewUpstream returns an Upstream configured by cfg.
func NewUpstream(cfg UpstreamConfig) *Upstream {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	u := &Upstream{cfg: cfg, m: cfg.Metrics, log: cfg.Logger}
	if u.m == nil {
		u.m = NewMetrics(nil)
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	return u
}

// upSession is a client connection's side of the upstream WebSocket.
type upSession struct {
	u *Upstream
	s *session

	mu       sync.Mutex
	conn     *websocket.Conn
	failures int
	fallback bool
	pump     chan struct{} // closed when the last turn's reader has ended

	modelsOnce sync.Once
	wsModels   map[string]bool
}

func (u *Upstream) session(s *session) *upSession { return &upSession{u: u, s: s} }

func (us *upSession) close() {
	us.mu.Lock()
	conn, pump := us.conn, us.pump
	us.conn = nil
	us.mu.Unlock()
	if conn != nil {
		_ = conn.CloseNow()
	}
	if pump != nil {
		<-pump
	}
}

// RoundTrip sends a WebSocket turn of a ws:/responses model over the
// upstream WebSocket, and everything else to the inner transport.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	st := turnFrom(req.Context())
	if st == nil || st.s.upstream == nil || req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/responses") || req.GetBody == nil {
		return u.cfg.Inner.RoundTrip(req)
	}
	us := st.s.upstream
	rc, err := req.GetBody()
	if err != nil {
		return u.cfg.Inner.RoundTrip(req)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return u.cfg.Inner.RoundTrip(req)
	}
	if !us.usable(req.Context(), body) {
		return u.cfg.Inner.RoundTrip(req)
	}
	resp, err := us.roundTrip(req, body)
	if err != nil {
		u.log.Debug("upstream websocket failed; this turn goes over HTTP", "key", st.s.key, "error", err)
		return u.cfg.Inner.RoundTrip(req)
	}
	st.viaWS = true
	return resp, nil
}

// usable reports whether this turn may go over the upstream WebSocket: the
// connection has not fallen back, and the model lists ws:/responses.
func (us *upSession) usable(ctx context.Context, body []byte) bool {
	us.mu.Lock()
	fallback := us.fallback
	us.mu.Unlock()
	if fallback {
		return false
	}
	var v struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(body, &v) != nil || v.Model == "" {
		return false
	}
	us.modelsOnce.Do(func() { us.wsModels = us.fetchModels(ctx) })
	return us.wsModels[v.Model]
}

// fetchModels lists the models that serve ws:/responses, from the proxy's
// own GET /v1/models with the client's credentials.
func (us *upSession) fetchModels(ctx context.Context) map[string]bool {
	s := us.s
	req, _ := http.NewRequestWithContext(context.WithValue(ctx, turnKey{}, nil), http.MethodGet, "/v1/models", nil)
	req.Header = http.Header{}
	for _, h := range [...]string{"Authorization", "X-Api-Key"} {
		if v := s.up.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.RemoteAddr, req.Host = s.up.RemoteAddr, s.up.Host
	rec := ssews.NewWriter(func([]byte) error { return nil }, 0)
	s.f.cfg.Inner.ServeHTTP(rec, req)
	out := map[string]bool{}
	var list struct {
		Data []struct {
			ID                 string   `json:"id"`
			SupportedEndpoints []string `json:"supported_endpoints"`
		} `json:"data"`
	}
	if rec.Status() != http.StatusOK || json.Unmarshal(rec.Body(), &list) != nil {
		return out
	}
	for _, m := range list.Data {
		for _, e := range m.SupportedEndpoints {
			if e == "ws:/responses" {
				out[m.ID] = true
			}
		}
	}
	return out
}

// failed counts one failed upstream connection.
func (us *upSession) failed(conn *websocket.Conn) {
	us.mu.Lock()
	defer us.mu.Unlock()
	if conn != nil && us.conn == conn {
		us.conn = nil
		_ = conn.CloseNow()
	}
	us.failures++
	if us.failures >= us.u.cfg.MaxFailures && !us.fallback {
		us.fallback = true
		us.u.m.fallbacks.Inc()
		us.u.log.Warn("upstream websocket failed repeatedly; this client connection goes on over HTTP",
			"key", us.s.key, "failures", us.failures)
	}
}

// connection returns the upstream connection, dialing it when there is none.
func (us *upSession) connection(req *http.Request) (*websocket.Conn, error) {
	us.mu.Lock()
	conn, pump := us.conn, us.pump
	us.mu.Unlock()
	if pump != nil {
		<-pump // the previous turn's reader is done with conn
	}
	if conn != nil {
		return conn, nil
	}
	h := req.Header.Clone()
	for _, name := range hopHeaders {
		h.Del(name)
	}
	h.Del("Accept-Encoding")
	h.Del("Content-Type")
	h.Del("Accept")
	ctx, cancel := context.WithTimeout(req.Context(), us.u.cfg.DialTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, req.URL.String(), &websocket.DialOptions{
		HTTPClient: us.u.cfg.HTTPClient, HTTPHeader: h, CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("upstream refused the upgrade with %d: %w", resp.StatusCode, err)
		}
		us.failed(nil)
		return nil, err
	}
	conn.SetReadLimit(ssews.DefaultMaxEvent)
	us.mu.Lock()
	us.conn = conn
	us.mu.Unlock()
	return conn, nil
}

// roundTrip sends the turn and answers with its events as an SSE body. The
// first message decides the status: an error event becomes the HTTP error
// it stands for, so the handler's 401 refresh and pool failover apply.
func (us *upSession) roundTrip(req *http.Request, body []byte) (*http.Response, error) {
	conn, err := us.connection(req)
	if err != nil {
		return nil, err
	}
	msg, err := createMessage(body, req.Header.Get("X-Initiator"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(req.Context())
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		cancel()
		us.failed(conn)
		return nil, err
	}
	_, first, err := conn.Read(ctx)
	if err != nil {
		cancel()
		us.failed(conn)
		return nil, err
	}
	if ssews.EventType(first) == "error" {
		cancel()
		return errorResponse(req, first), nil
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	us.mu.Lock()
	us.pump = done
	us.mu.Unlock()
	go func() {
		defer close(done)
		us.relay(ctx, conn, first, pw)
	}()
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/event-stream"}},
		Body:          &relayBody{PipeReader: pr, cancel: cancel},
		ContentLength: -1, Request: req,
	}, nil
}

// relay writes the upstream messages as SSE events until the terminal one.
func (us *upSession) relay(ctx context.Context, conn *websocket.Conn, msg []byte, pw *io.PipeWriter) {
	var buf bytes.Buffer
	for {
		typ := ssews.EventType(msg)
		buf.Reset()
		buf.WriteString("event: ")
		buf.WriteString(typ)
		buf.WriteString("\ndata: ")
		buf.Write(msg)
		buf.WriteString("\n\n")
		if _, err := pw.Write(buf.Bytes()); err != nil {
			us.failed(conn) // the rest of this response is unread: the connection cannot serve the next
			return
		}
		switch typ {
		case "response.completed", "response.failed", "response.incomplete", "response.cancelled", "error":
			us.mu.Lock()
			us.failures = 0
			us.mu.Unlock()
			pw.Close()
			return
		}
		var err error
		if _, msg, err = conn.Read(ctx); err != nil {
			us.failed(conn)
			pw.CloseWithError(fmt.Errorf("upstream websocket: %w", err))
			return
		}
	}
}

// relayBody ends the relay when the handler closes the body early.
type relayBody struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (b *relayBody) Close() error {
	b.cancel()
	return b.PipeReader.Close()
}

// createMessage turns an upstream Responses body into the upstream's
// response.create message: no "stream", the initiator in the body.
func createMessage(body []byte, initiator string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	delete(m, "stream")
	m["type"] = json.RawMessage(`"response.create"`)
	if initiator != "" {
		b, _ := json.Marshal(initiator)
		m["initiator"] = b
	}
	return json.Marshal(m)
}

// errorResponse turns an upstream error event into the HTTP error answer it
// stands for.
func errorResponse(req *http.Request, ev []byte) *http.Response {
	var v struct {
		Status int             `json:"status"`
		Error  json.RawMessage `json:"error"`
	}
	_ = json.Unmarshal(ev, &v)
	if v.Status < 400 || v.Status > 599 {
		v.Status = http.StatusBadGateway
	}
	if len(v.Error) == 0 {
		v.Error = json.RawMessage(`{"message":"upstream error","type":"api_error"}`)
	}
	body, _ := json.Marshal(map[string]json.RawMessage{"error": v.Error})
	return &http.Response{
		StatusCode: v.Status, Status: fmt.Sprintf("%d %s", v.Status, http.StatusText(v.Status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}
}
