package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil/streamcheck"
)

// wsDial opens the proxy's Responses WebSocket as alice, with hdr added.
func (st *stack) wsDial(ctx context.Context, hdr map[string]string) *websocket.Conn {
	st.t.Helper()
	h := http.Header{"Authorization": {"Bearer " + aliceKey}}
	for k, v := range hdr {
		h.Set(k, v)
	}
	c, _, err := websocket.Dial(ctx, "ws://"+st.proxy.Addrs().HTTP+"/v1/responses", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		st.t.Fatalf("websocket dial: %v", err)
	}
	st.t.Cleanup(func() { c.CloseNow() })
	return c
}

// wsTurn sends one response.create and reads its events to the terminal
// one, checked against the Responses stream grammar.
func wsTurn(t *testing.T, ctx context.Context, c *websocket.Conn, body string) ([]streamcheck.Event, streamcheck.Result) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create",`+body[1:])); err != nil {
		t.Fatalf("write response.create: %v", err)
	}
	events := wsEvents(t, ctx, c)
	res, err := streamcheck.Responses(events)
	if err != nil {
		t.Fatalf("stream grammar: %v\nevents: %v", err, events)
	}
	return events, res
}

// wsEvents reads messages up to a terminal event.
func wsEvents(t *testing.T, ctx context.Context, c *websocket.Conn) []streamcheck.Event {
	t.Helper()
	var events []streamcheck.Event
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d events: %v", len(events), err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("message type %v; want text", typ)
		}
		var v struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(msg, &v); err != nil {
			t.Fatalf("message not JSON: %s", msg)
		}
		events = append(events, streamcheck.Event{Name: v.Type, Data: string(msg)})
		switch v.Type {
		case "response.completed", "response.failed", "response.incomplete", "response.cancelled", "error":
			return events
		}
	}
}

// responseID returns the id of the response a stream ended with.
func responseID(t *testing.T, events []streamcheck.Event) string {
	t.Helper()
	var v struct {
		Response struct {
			ID string `json:"id"`
		} `json:"response"`
	}
	_ = json.Unmarshal([]byte(events[len(events)-1].Data), &v)
	if v.Response.ID == "" {
		t.Fatalf("no response id in %s", events[len(events)-1].Data)
	}
	return v.Response.ID
}

// wsError returns the error object of an error event.
func wsError(t *testing.T, ev streamcheck.Event) (int, string) {
	t.Helper()
	var v struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Error  struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil || v.Type != "error" {
		t.Fatalf("want an error event; got %s", ev.Data)
	}
	return v.Status, v.Error.Code
}

const wsTools = `"tools":[{"type":"function","name":"get_weather","description":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`

// TestWSConversation runs a three-turn conversation with a tool call over
// one WebSocket: with previous_response_id on a model served on
// /responses, and with the whole history on models served only on
// /chat/completions or /v1/messages (translated; previous_response_id gets
// the same error event as over HTTP there, and the connection goes on).
func TestWSConversation(t *testing.T) {
	st := startStack(t, stackOpts{})
	for _, tc := range []struct {
		model    string
		previous bool
	}{
		{"gpt-5-mini", true},
		{"gpt-5.2-codex", true},
		{"gpt-4.1", false},           // chat only
		{"claude-sonnet-4.5", false}, // messages only
	} {
		t.Run(tc.model, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := st.wsDial(ctx, nil)
			user1 := `{"role":"user","content":"What is the weather in Paris?"}`
			ev, res := wsTurn(t, ctx, c, `{"model":"`+tc.model+`","input":[`+user1+`],`+wsTools+`}`)
			if len(res.Calls) != 1 || res.Calls[0].Name != "get_weather" {
				t.Fatalf("turn 1: calls %+v; want one get_weather call", res.Calls)
			}
			call := res.Calls[0]
			id1 := responseID(t, ev)
			output := `{"type":"function_call_output","call_id":"` + call.ID + `","output":"sunny, 21 C"}`
			var turn2 string
			if tc.previous {
				turn2 = `{"model":"` + tc.model + `","previous_response_id":"` + id1 + `","input":[` + output + `],` + wsTools + `}`
			} else {
				fc, _ := json.Marshal(map[string]string{"type": "function_call", "call_id": call.ID, "name": call.Name, "arguments": call.Arguments})
				turn2 = `{"model":"` + tc.model + `","input":[` + user1 + `,` + string(fc) + `,` + output + `],` + wsTools + `}`
				// previous_response_id is refused for this model, as over HTTP.
				if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"`+tc.model+`","previous_response_id":"`+id1+`","input":"x"}`)); err != nil {
					t.Fatal(err)
				}
				evs := wsEvents(t, ctx, c)
				if status, _ := wsError(t, evs[len(evs)-1]); status != http.StatusBadRequest {
					t.Fatalf("previous_response_id on a translated model: status %d; want 400", status)
				}
			}
			ev, res = wsTurn(t, ctx, c, turn2)
			if !strings.Contains(res.Text, "sunny, 21 C") || res.Stop != "completed" {
				t.Fatalf("turn 2: text %q stop %q; want the tool result quoted, completed", res.Text, res.Stop)
			}
			turn3 := `{"model":"` + tc.model + `","previous_response_id":"` + responseID(t, ev) + `","input":"and tomorrow?"}`
			if !tc.previous {
				turn3 = `{"model":"` + tc.model + `","input":"and tomorrow?"}`
			}
			_, res = wsTurn(t, ctx, c, turn3)
			if !strings.Contains(res.Text, "and tomorrow?") {
				t.Fatalf("turn 3: text %q; want the echo of the question", res.Text)
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
	waitMetrics(t, st.proxy, map[string]float64{
		`copilot_proxy_ws_turns_total{upstream="http"}`:         14,
		`copilot_proxy_ws_connections_total{result="accepted"}`: 4,
		`copilot_proxy_ws_connections_open`:                     0,
	})
}

// TestWSUpgradeAuth: the key comes in a header of the upgrade, never the URL.
func TestWSUpgradeAuth(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.WSMaxConnectionsPerKey = 1 }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Ordered: the per-key cap depends on the earlier connections.
	for _, tc := range []struct {
		name, url string
		hdr       http.Header
		want      int
	}{
		{"no key", "/v1/responses", nil, http.StatusUnauthorized},
		{"key in URL", "/v1/responses?api_key=" + aliceKey, nil, http.StatusUnauthorized},
		{"wrong key", "/v1/responses", http.Header{"Authorization": {"Bearer nope"}}, http.StatusUnauthorized},
		{"x-api-key", "/responses", http.Header{"X-Api-Key": {"bob-api-key-0123456789"}}, http.StatusSwitchingProtocols},
		{"bearer", "/v1/responses", http.Header{"Authorization": {"Bearer " + aliceKey}}, http.StatusSwitchingProtocols},
		{"over the key's cap", "/v1/responses", http.Header{"Authorization": {"Bearer " + aliceKey}}, http.StatusTooManyRequests},
	} {
		c, resp, err := websocket.Dial(ctx, "ws://"+st.proxy.Addrs().HTTP+tc.url, &websocket.DialOptions{HTTPHeader: tc.hdr})
		if c != nil {
			t.Cleanup(func() { c.CloseNow() })
		}
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("%s: upgrade answered %v (err %v); want %d", tc.name, resp, err, tc.want)
		}
	}
}

// TestWSUpstreamWebSocket: with --upstream-websocket, turns of a model that
// lists ws:/responses go upstream over one WebSocket; others over HTTP.
func TestWSUpstreamWebSocket(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.UpstreamWebSocket = true }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := st.wsDial(ctx, nil)
	ev, _ := wsTurn(t, ctx, c, `{"model":"gpt-5.2-codex","input":"one"}`)
	_, res := wsTurn(t, ctx, c, `{"model":"gpt-5.2-codex","previous_response_id":"`+responseID(t, ev)+`","input":"two"}`)
	if !strings.Contains(res.Text, "two") {
		t.Fatalf("turn 2 text %q", res.Text)
	}
	wsTurn(t, ctx, c, `{"model":"gpt-5-mini","input":"three"}`)
	waitMetrics(t, st.proxy, map[string]float64{
		`copilot_proxy_ws_turns_total{upstream="ws"}`:   2,
		`copilot_proxy_ws_turns_total{upstream="http"}`: 1,
	})
	stats := st.sb.Stats()
	if got := stats.API["ws:/responses"][200]; got != 2 {
		t.Errorf("sandbox ws:/responses turns = %d; want 2 (stats %v)", got, stats.API)
	}
}

// TestWSUpstreamDropAndFallback: an upstream WebSocket cut mid-response gives
// the client an error event and the connection goes on; 3 refused upstream
// upgrades in a row put the client connection on HTTP.
func TestWSUpstreamDropAndFallback(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.UpstreamWebSocket = true }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := st.wsDial(ctx, nil)
	st.sb.SetWSFaults(sandbox.WSFaults{DropAfterEvents: 3})
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.2-codex","input":"dropped"}`)); err != nil {
		t.Fatal(err)
	}
	evs := wsEvents(t, ctx, c)
	if len(evs) != 4 {
		t.Errorf("events before the error: %d; want 3", len(evs)-1)
	}
	if _, code := wsError(t, evs[len(evs)-1]); code != "stream_interrupted" {
		t.Errorf("error code %q; want stream_interrupted", code)
	}
	if _, res := wsTurn(t, ctx, c, `{"model":"gpt-5.2-codex","input":"after the drop"}`); !strings.Contains(res.Text, "after the drop") {
		t.Errorf("turn after the drop: %q", res.Text)
	}

	// Three refused upgrades (the drop above was one failure, the turn after
	// it a success that reset the count): each turn still answered, over HTTP.
	c.Close(websocket.StatusNormalClosure, "")
	c = st.wsDial(ctx, nil)
	st.sb.SetWSFaults(sandbox.WSFaults{RefuseUpgrades: 3})
	for i := range 4 {
		if _, res := wsTurn(t, ctx, c, `{"model":"gpt-5.2-codex","input":"refused"}`); res.Stop != "completed" {
			t.Fatalf("turn %d: stop %q", i, res.Stop)
		}
	}
	waitMetrics(t, st.proxy, map[string]float64{
		`copilot_proxy_ws_upstream_fallbacks_total`:     1,
		`copilot_proxy_ws_turns_total{upstream="ws"}`:   2,
		`copilot_proxy_ws_turns_total{upstream="http"}`: 4,
	})
}

// TestWSShutdownMidResponse: on shutdown the running response finishes,
// then the connection closes with 1001; new upgrades are refused.
func TestWSShutdownMidResponse(t *testing.T) {
	st := startStack(t, stackOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := st.wsDial(ctx, map[string]string{"X-Sandbox-Chunks": "8", "X-Sandbox-Chunk-Delay-Ms": "50"})
	idle := st.wsDial(ctx, nil)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5-mini","input":"one two three four five six seven eight"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- st.proxy.Close() }()
	// The idle connection is closed at once with 1001.
	if _, _, err := idle.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("idle connection: %v; want close 1001", err)
	}
	evs := wsEvents(t, ctx, c)
	if last := evs[len(evs)-1].Name; last != "response.completed" {
		t.Errorf("running response ended with %q; want response.completed", last)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after the response: %v; want close 1001", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v", err)
	}
}

// TestWSBadInput: malformed messages get an error event or a close code,
// and the proxy serves on.
func TestWSBadInput(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.MaxBodyBytes = 64 << 10 }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := st.wsDial(ctx, nil)
	for _, tc := range []struct{ msg, code string }{
		{`not json`, "invalid_json"},
		{`{"type":"session.update"}`, "unknown_message_type"},
		{`{"model":"gpt-5-mini"}`, "missing_type"},
		{`{"type":"response.create","model":"gpt-5-mini","input":17}`, ""},
	} {
		if err := c.Write(ctx, websocket.MessageText, []byte(tc.msg)); err != nil {
			t.Fatal(err)
		}
		evs := wsEvents(t, ctx, c)
		status, code := wsError(t, evs[len(evs)-1])
		if status != http.StatusBadRequest || (tc.code != "" && code != tc.code) {
			t.Errorf("%s: error %d %q; want 400 %q", tc.msg, status, code, tc.code)
		}
	}
	if _, res := wsTurn(t, ctx, c, `{"model":"gpt-5-mini","input":"still here"}`); !strings.Contains(res.Text, "still here") {
		t.Errorf("after bad messages: %q", res.Text)
	}

	closeWith := func(name string, c *websocket.Conn, want websocket.StatusCode) {
		t.Helper()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				if got := websocket.CloseStatus(err); got != want {
					t.Errorf("%s: closed with %v (%v); want %v", name, got, err, want)
				}
				return
			}
		}
	}
	big := st.wsDial(ctx, nil)
	_ = big.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","input":"`+strings.Repeat("x", 70<<10)+`"}`))
	closeWith("oversized", big, websocket.StatusMessageTooBig)

	bin := st.wsDial(ctx, nil)
	_ = bin.Write(ctx, websocket.MessageBinary, []byte(`{"type":"response.create"}`))
	closeWith("binary", bin, websocket.StatusUnsupportedData)

	// A flood while a response runs: error events, then 1008.
	flood := st.wsDial(ctx, map[string]string{"X-Sandbox-Chunks": "20", "X-Sandbox-Chunk-Delay-Ms": "50"})
	msg := []byte(`{"type":"response.create","model":"gpt-5-mini","input":"a slow one"}`)
	for range 40 {
		if err := flood.Write(ctx, websocket.MessageText, msg); err != nil {
			break
		}
	}
	busy := 0
	for {
		_, m, err := flood.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Errorf("flood: closed with %v; want 1008", err)
			}
			break
		}
		if strings.Contains(string(m), "conversation_already_has_active_response") {
			busy++
		}
	}
	if busy == 0 {
		t.Errorf("flood: no conversation_already_has_active_response error event")
	}
	// The proxy is unharmed.
	if resp, _ := st.do("POST", "/v1/responses", `{"model":"gpt-5-mini","input":"http"}`, nil); resp.StatusCode != 200 {
		t.Errorf("HTTP after the bad input: %d", resp.StatusCode)
	}
	if _, res := wsTurn(t, ctx, c, `{"model":"gpt-5-mini","input":"first connection"}`); res.Stop != "completed" {
		t.Errorf("first connection after the rest: %q", res.Stop)
	}
}

// TestWSRevokedManagedKey: a broker-managed key revoked while its
// WebSocket is open is refused at the connection's next response.create:
// the error event, then close 1008.
func TestWSRevokedManagedKey(t *testing.T) {
	st, kc, admin := managedStack(t, nil)
	created, err := kc.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "dave"})
	if err != nil {
		t.Fatal(err)
	}
	sec := created.GetSecret()
	st.waitStatus(sec, "POST", "/v1/responses", `{"model":"gpt-5-mini","input":"hi"}`, 200, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := st.wsDial(ctx, map[string]string{"Authorization": "Bearer " + sec})
	wsTurn(t, ctx, c, `{"model":"gpt-5-mini","input":"before"}`)
	if _, err := kc.RevokeKey(admin, &brokerv1.RevokeKeyRequest{Name: "dave"}); err != nil {
		t.Fatal(err)
	}
	st.waitStatus(sec, "POST", "/v1/responses", `{"model":"gpt-5-mini","input":"hi"}`, 401, 5*time.Second)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5-mini","input":"after"}`)); err != nil {
		t.Fatal(err)
	}
	evs := wsEvents(t, ctx, c)
	if status, code := wsError(t, evs[len(evs)-1]); status != http.StatusUnauthorized || code != "invalid_api_key" {
		t.Errorf("turn after the revocation: %d %q; want 401 invalid_api_key", status, code)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("then: %v; want close 1008", err)
	}
}
