package wsresponses

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/coder/websocket"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/ssews"
)

// session is one client connection.
type session struct {
	f    *Front
	key  string
	conn *websocket.Conn
	up   *http.Request // the upgrade: credentials and headers of every turn
	ctx  context.Context
	stop context.CancelFunc

	mu       sync.Mutex
	busy     bool // a response runs
	answered bool // ...and its final event is out: the next response.create may queue behind it
	draining bool
	closed   bool
	refused  int // messages refused during the running response
	turns    int
	idle     clock.Timer
	ping     clock.Timer
	upstream *upSession // nil: every turn over HTTP
	turnDone chan struct{}
}

// serve runs the connection: this goroutine reads, a turn runs on its own.
func (s *session) serve(r *http.Request, conn *websocket.Conn) {
	f := s.f
	conn.SetReadLimit(f.cfg.MaxMessageBytes)
	ctx, stop := context.WithCancel(context.WithoutCancel(r.Context()))
	s.mu.Lock()
	s.conn, s.up, s.ctx, s.stop = conn, r, ctx, stop
	draining := s.draining
	if f.cfg.Upstream != nil {
		s.upstream = f.cfg.Upstream.session(s)
	}
	s.idle = f.clock.AfterFunc(f.cfg.IdleTimeout, s.idleFired)
	if f.cfg.PingInterval > 0 {
		s.ping = f.clock.AfterFunc(f.cfg.PingInterval, s.pingFired)
	}
	s.mu.Unlock()
	f.log.Debug("websocket connection open", "key", s.key)
	defer s.finish()
	if draining {
		s.close(websocket.StatusGoingAway, "the proxy is shutting down")
		return
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		f.m.in.Inc()
		s.mu.Lock()
		if !s.busy {
			s.idle.Reset(f.cfg.IdleTimeout)
		}
		s.mu.Unlock()
		if typ != websocket.MessageText {
			s.close(websocket.StatusUnsupportedData, "binary messages are not supported; send JSON text")
			return
		}
		if !s.take(data) {
			return
		}
	}
}

// take handles one client message; false when the connection is closing.
func (s *session) take(data []byte) bool {
	body, err := createBody(data)
	if err != nil {
		return s.sendError(http.StatusBadRequest, ssews.ErrorDetail{Type: "invalid_request_error", Code: err.code, Message: err.msg}) == nil
	}
	s.mu.Lock()
	if (s.busy && !s.answered) || s.draining {
		s.refused++
		n, draining := s.refused, s.draining
		s.mu.Unlock()
		if n > s.f.cfg.MaxRefused {
			s.close(websocket.StatusPolicyViolation, "too many messages while a response is running")
			return false
		}
		if draining {
			return s.sendError(http.StatusServiceUnavailable, ssews.ErrorDetail{Type: "server_error", Code: "shutting_down",
				Message: "the proxy is shutting down; reconnect and send it again"}) == nil
		}
		return s.sendError(http.StatusBadRequest, ssews.ErrorDetail{Type: "invalid_request_error", Code: "conversation_already_has_active_response",
			Message: "a response is already in progress on this connection; send response.create after it ends"}) == nil
	}
	// A client may send its next response.create as soon as it has the
	// final event of the last one, while that turn still winds down: the
	// new turn waits for it, so turns never overlap.
	prev := s.turnDone
	s.busy, s.answered, s.refused = true, false, 0
	s.turns++
	n := s.turns
	s.idle.Stop()
	done := make(chan struct{})
	s.turnDone = done
	s.mu.Unlock()
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		s.turn(n, body)
	}()
	return true
}

// msgError is a client message the front refuses.
type msgError struct{ code, msg string }

// createBody checks a client message and returns the Responses body of its
// turn: the message without "type" (and "initiator", which the proxy
// decides), streamed.
func createBody(data []byte) ([]byte, *msgError) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, &msgError{"invalid_json", "message is not a JSON object: " + err.Error()}
	}
	var typ string
	if json.Unmarshal(m["type"], &typ) != nil || typ == "" {
		return nil, &msgError{"missing_type", `message has no "type"; send {"type":"response.create", ...the Responses body}`}
	}
	if typ != "response.create" {
		return nil, &msgError{"unknown_message_type", fmt.Sprintf("unknown message type %q; this endpoint takes response.create", typ)}
	}
	delete(m, "type")
	delete(m, "initiator")
	m["stream"] = json.RawMessage("true")
	body, err := json.Marshal(m)
	if err != nil {
		return nil, &msgError{"invalid_json", err.Error()}
	}
	return body, nil
}

// turnKey carries a turn's state to the upstream transport.
type turnKey struct{}

// turnState is one turn as the upstream transport sees it.
type turnState struct {
	s      *session
	viaWS  bool // the upstream WebSocket served it
	header http.Header
}

func turnFrom(ctx context.Context) *turnState {
	t, _ := ctx.Value(turnKey{}).(*turnState)
	return t
}

// hopHeaders are upgrade headers a turn's request does not carry.
var hopHeaders = [...]string{"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", "Content-Length", "Transfer-Encoding", "Origin"}

// turn runs one response.create through the proxy's handler.
func (s *session) turn(n int, body []byte) {
	f := s.f
	st := &turnState{s: s}
	// No http.ServerContextKey: the reverse proxy would panic (to abort an
	// HTTP connection) when a client write fails; here it returns.
	ctx := context.WithValue(context.WithValue(s.ctx, http.ServerContextKey, nil), turnKey{}, st)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/responses", bytes.NewReader(body))
	req.Header = s.up.Header.Clone()
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.RemoteAddr, req.Host, req.TLS = s.up.RemoteAddr, s.up.Host, s.up.TLS
	st.header = req.Header
	var wr *ssews.Writer
	wr = ssews.NewWriter(func(data []byte) error {
		if wr.Terminal() != "" {
			s.markAnswered()
		}
		return s.send(data)
	}, 0)
	panicked := func() (p bool) {
		defer func() {
			if v := recover(); v != nil {
				f.log.Error("websocket turn panicked", "key", s.key, "panic", v)
				p = true
			}
		}()
		f.cfg.Inner.ServeHTTP(wr, req)
		return false
	}()
	mode := "http"
	if st.viaWS {
		mode = "ws"
	}
	f.m.turns.WithLabelValues(mode).Inc()
	code, reason := s.finishTurn(wr, panicked)
	s.mu.Lock()
	if s.turns == n { // no response.create queued behind this one
		s.busy = false
	}
	draining := s.draining
	if !s.busy && code == 0 && !draining && !s.closed {
		s.idle.Reset(f.cfg.IdleTimeout)
	}
	s.mu.Unlock()
	switch {
	case code != 0:
		s.close(code, reason)
	case draining:
		s.close(websocket.StatusGoingAway, "the proxy is shutting down")
	}
}

// markAnswered notes that the running turn's final event goes out now.
func (s *session) markAnswered() {
	s.mu.Lock()
	s.answered = true
	s.mu.Unlock()
}

// sendFinal sends a turn's last event, made by the front.
func (s *session) sendFinal(status int, d ssews.ErrorDetail) {
	s.markAnswered()
	_ = s.sendError(status, d)
}

// finishTurn sends what the client still needs after the handler returned
// and names the close code the answer calls for (0: stay open).
func (s *session) finishTurn(wr *ssews.Writer, panicked bool) (websocket.StatusCode, string) {
	switch {
	case panicked:
		s.sendFinal(http.StatusInternalServerError, ssews.ErrorDetail{Type: "server_error", Code: "internal_error", Message: "the proxy failed on this response"})
		return websocket.StatusInternalError, "internal error"
	case errors.Is(wr.Err(), ssews.ErrEventTooLarge):
		s.sendFinal(http.StatusBadGateway, ssews.ErrorDetail{Type: "server_error", Code: "event_too_large", Message: "an upstream event passed the proxy's size limit"})
		return 0, ""
	case wr.Err() != nil:
		return 0, "" // the client is gone; the read loop ends the connection
	case !wr.Stream():
		status := wr.Status()
		if status == 0 {
			status = http.StatusBadGateway
		}
		s.markAnswered()
		_ = s.send(ssews.ErrorEventFromBody(status, wr.Body()))
		return closeFor(status, wr.Body())
	}
	if err := wr.Close(); err != nil {
		return 0, ""
	}
	if wr.Terminal() == "" {
		s.sendFinal(http.StatusBadGateway, ssews.ErrorDetail{Type: "server_error", Code: "stream_interrupted",
			Message: "the upstream stream ended before the response finished; send response.create again"})
	}
	return 0, ""
}

// closeFor maps a refused turn to the connection's close: a key the proxy
// no longer accepts 1008, no usable account 1013, an upstream the proxy
// could not reach 1011; anything else leaves the connection open.
func closeFor(status int, body []byte) (websocket.StatusCode, string) {
	var v struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &v)
	switch {
	case status == http.StatusUnauthorized && v.Error.Code == "invalid_api_key":
		return websocket.StatusPolicyViolation, "API key refused"
	case status == http.StatusServiceUnavailable && v.Error.Code == "token_unavailable":
		return websocket.StatusTryAgainLater, "no usable Copilot account"
	case status == http.StatusServiceUnavailable && v.Error.Code == "keys_unavailable":
		return websocket.StatusTryAgainLater, "the proxy's key set is unavailable"
	case status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return websocket.StatusInternalError, "upstream failure"
	}
	return 0, ""
}

// send writes one text message to the client within the write timeout.
func (s *session) send(data []byte) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.f.cfg.WriteTimeout)
	err := s.conn.Write(ctx, websocket.MessageText, data)
	cancel()
	if err == nil {
		s.f.m.out.Inc()
	}
	return err
}

func (s *session) sendError(status int, d ssews.ErrorDetail) error {
	return s.send(ssews.ErrorEvent(status, d))
}

// close closes the connection with code (once).
func (s *session) close(code websocket.StatusCode, reason string) {
	s.mu.Lock()
	if s.closed || s.conn == nil {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.f.m.closes.WithLabelValues(strconv.Itoa(int(code))).Inc()
	s.f.log.Debug("websocket connection closed by the proxy", "key", s.key, "code", int(code), "reason", reason)
	_ = s.conn.Close(code, reason)
	s.stop()
}

// idleFired closes a connection that stayed idle.
func (s *session) idleFired() {
	s.mu.Lock()
	busy := s.busy
	s.mu.Unlock()
	if !busy {
		// Not on the timer's goroutine: the close handshake may wait
		// (a fake clock runs callbacks inside Advance).
		go s.close(websocket.StatusNormalClosure, "idle timeout")
	}
}

// pingFired pings the client; no pong in time closes the connection.
func (s *session) pingFired() {
	ctx, cancel := context.WithTimeout(s.ctx, s.f.cfg.PingTimeout)
	err := s.conn.Ping(ctx)
	cancel()
	if err != nil {
		if s.ctx.Err() == nil {
			s.f.m.closes.WithLabelValues("ping_timeout").Inc()
			s.stop()
			_ = s.conn.CloseNow()
		}
		return
	}
	s.mu.Lock()
	if !s.closed {
		s.ping.Reset(s.f.cfg.PingInterval)
	}
	s.mu.Unlock()
}

// drain asks the session to close once its response (if any) has finished.
func (s *session) drain() {
	s.mu.Lock()
	s.draining = true
	idle := !s.busy && s.conn != nil
	s.mu.Unlock()
	if idle {
		s.close(websocket.StatusGoingAway, "the proxy is shutting down")
	}
}

// abort ends the session now, its response cut: close 1001, then the
// turn's context is cancelled.
func (s *session) abort() {
	s.close(websocket.StatusGoingAway, "the proxy is shutting down")
}

// finish runs when the read loop ends: the running turn is cancelled and
// waited for, timers stopped, the upstream connection closed.
func (s *session) finish() {
	s.stop()
	s.mu.Lock()
	done := s.turnDone
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	s.mu.Lock()
	s.closed = true
	s.idle.Stop()
	if s.ping != nil {
		s.ping.Stop()
	}
	turns := s.turns
	up := s.upstream
	s.mu.Unlock()
	if up != nil {
		up.close()
	}
	_ = s.conn.CloseNow()
	s.f.m.perConn.Observe(float64(turns))
	s.f.log.Debug("websocket connection ended", "key", s.key, "turns", turns)
}
