package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/copilot-broker/copilot-broker/internal/ssews"
)

// pathWSResponses is how a model lists the Responses API over a WebSocket
// in supported_endpoints (docs/protocol.md, "Responses over WebSocket").
const pathWSResponses = "ws:/responses"

// maxWSMessage bounds one client message on ws:/responses.
const maxWSMessage = maxBody

// WSFaults are faults of ws:/responses, for tests of the proxy's upstream
// WebSocket mode.
type WSFaults struct {
	// RefuseUpgrades refuses that many coming upgrades with RefuseStatus
	// (default 503) instead of switching protocols.
	RefuseUpgrades int `json:"refuse_upgrades"`
	RefuseStatus   int `json:"refuse_status"`
	// DropAfterEvents, when positive, cuts the connection (no close frame)
	// after that many events of each of the next DropTurns turns (default
	// 1), as a dropped upstream stream looks.
	DropAfterEvents int `json:"drop_after_events"`
	DropTurns       int `json:"drop_turns"`
}

// wsState is the sandbox's ws:/responses fault state.
type wsState struct {
	mu     sync.Mutex
	faults WSFaults
}

// SetWSFaults replaces the ws:/responses faults (the zero value clears them).
func (s *Server) SetWSFaults(f WSFaults) {
	if f.RefuseUpgrades > 0 && f.RefuseStatus == 0 {
		f.RefuseStatus = http.StatusServiceUnavailable
	}
	if f.DropAfterEvents > 0 && f.DropTurns == 0 {
		f.DropTurns = 1
	}
	s.ws.mu.Lock()
	s.ws.faults = f
	s.ws.mu.Unlock()
}

// takeWSRefusal returns the status of a refused upgrade, or 0.
func (s *Server) takeWSRefusal() int {
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	if s.ws.faults.RefuseUpgrades <= 0 {
		return 0
	}
	s.ws.faults.RefuseUpgrades--
	return s.ws.faults.RefuseStatus
}

// takeWSDrop returns after how many events this turn is cut, or 0.
func (s *Server) takeWSDrop() int {
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	if s.ws.faults.DropTurns <= 0 || s.ws.faults.DropAfterEvents <= 0 {
		return 0
	}
	s.ws.faults.DropTurns--
	return s.ws.faults.DropAfterEvents
}

func (s *Server) adminWSFaults(w http.ResponseWriter, r *http.Request) {
	var f WSFaults
	if !adminDecode(w, r, &f) {
		return
	}
	s.SetWSFaults(f)
	adminOK(w)
}

// handleResponsesWS serves GET /responses upgraded to a WebSocket, as the
// API's ws:/responses: each {"type":"response.create", ...} message (the
// Responses body without "stream", "initiator" in the body) runs as a
// streamed POST /responses of the same connection's headers, whose events
// come back one text message each; errors come as {"type":"error",
// "status", "error":{...}}. The upgrade itself goes through the API's
// checks (token, headers, faults). Turns run one after the other.
func (s *Server) handleResponsesWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "websocket_required", "GET /responses is a WebSocket endpoint; POST /responses for HTTP")
		return
	}
	if status := s.takeWSRefusal(); status != 0 {
		writeAPIFault(w, r, Fault{Status: status})
		return
	}
	s.api(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		conn.SetReadLimit(maxWSMessage)
		s.serveWS(r, conn)
	})(w, r)
}

func (s *Server) serveWS(up *http.Request, conn *websocket.Conn) {
	ctx := up.Context()
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			_ = conn.Close(websocket.StatusUnsupportedData, "binary messages are not supported")
			return
		}
		body, initiator, err := wsCreateBody(msg)
		if err != nil {
			if conn.Write(ctx, websocket.MessageText, ssews.ErrorEvent(http.StatusBadRequest,
				ssews.ErrorDetail{Type: "invalid_request_error", Code: "invalid_message", Message: err.Error()})) != nil {
				return
			}
			continue
		}
		if !s.wsTurn(ctx, up, conn, body, initiator) {
			return
		}
	}
}

// wsTurn runs one response.create; false when the connection is gone.
func (s *Server) wsTurn(ctx context.Context, up *http.Request, conn *websocket.Conn, body []byte, initiator string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, pathWSResponses, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.URL.Path = pathWSResponses
	req.Header = up.Header.Clone()
	for _, h := range [...]string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions"} {
		req.Header.Del(h)
	}
	req.Header.Set("Content-Type", "application/json")
	if initiator != "" {
		req.Header.Set("X-Initiator", initiator)
	}
	drop, sent, dropped := s.takeWSDrop(), 0, false
	wr := ssews.NewWriter(func(data []byte) error {
		if drop > 0 && sent >= drop {
			dropped = true
			conn.CloseNow() // no close frame: the stream just stops
			return errClientGone
		}
		sent++
		return conn.Write(ctx, websocket.MessageText, data)
	}, 0)
	rec := &recorder{ResponseWriter: wr}
	start := time.Now()
	s.api(s.handleResponses)(rec, req)
	s.stats.record(req, rec, time.Since(start))
	if dropped || wr.Err() != nil {
		return false
	}
	if !wr.Stream() {
		return conn.Write(ctx, websocket.MessageText, ssews.ErrorEventFromBody(wr.Status(), wr.Body())) == nil
	}
	return wr.Close() == nil
}

// wsCreateBody checks a client message and returns the Responses body it
// asks for (streamed) and its initiator.
func wsCreateBody(msg []byte) ([]byte, string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, "", errors.New("message is not a JSON object: " + err.Error())
	}
	var typ, initiator string
	_ = json.Unmarshal(m["type"], &typ)
	if typ != "response.create" {
		return nil, "", errors.New(`unknown message type "` + typ + `"; expected "response.create"`)
	}
	_ = json.Unmarshal(m["initiator"], &initiator)
	delete(m, "type")
	delete(m, "initiator")
	m["stream"] = json.RawMessage("true")
	body, err := json.Marshal(m)
	return body, initiator, err
}
