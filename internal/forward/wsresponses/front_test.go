package wsresponses

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeInner stands for the proxy's handler: keys it can revoke at runtime
// (as broker-managed keys will be), and POST /v1/responses streaming two
// events, the second held until release is closed when hold is set.
type fakeInner struct {
	mu      sync.Mutex
	keys    map[string]bool
	hold    chan struct{}
	started chan struct{}
	status  int // answer this status (JSON error) instead of a stream
	code    string
	bodies  []map[string]any
}

func newFakeInner() *fakeInner {
	return &fakeInner{keys: map[string]bool{"good": true, "other": true}, started: make(chan struct{}, 16)}
}

func (f *fakeInner) auth(r *http.Request) (string, bool) {
	k := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return k, f.keys[k]
}

func (f *fakeInner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.auth(r); !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"invalid key","type":"invalid_request_error","code":"invalid_api_key"}}`)
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	hold, status, code := f.hold, f.status, f.code
	f.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"message":"refused","type":"server_error","code":%q}}`, code)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n")
	w.(http.Flusher).Flush()
	f.started <- struct{}{}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	io.WriteString(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1}\n\n")
}

func (f *fakeInner) revoke(key string) {
	f.mu.Lock()
	delete(f.keys, key)
	f.mu.Unlock()
}

type harness struct {
	t     *testing.T
	inner *fakeInner
	front *Front
	url   string
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	inner := newFakeInner()
	cfg := Config{Inner: inner, Authenticate: inner.auth}
	if mod != nil {
		mod(&cfg)
	}
	front := New(cfg)
	srv := httptest.NewServer(front)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		front.Drain(ctx)
		srv.Close()
	})
	return &harness{t: t, inner: inner, front: front, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/responses"}
}

func (h *harness) dial(ctx context.Context, key string) *websocket.Conn {
	h.t.Helper()
	c, _, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	h.t.Cleanup(func() { c.CloseNow() })
	return c
}

func send(t *testing.T, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// next reads one message and returns its type and text.
func next(t *testing.T, ctx context.Context, c *websocket.Conn) (string, string, error) {
	t.Helper()
	_, m, err := c.Read(ctx)
	if err != nil {
		return "", "", err
	}
	var v struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(m, &v)
	return v.Type, string(m), nil
}

const create = `{"type":"response.create","model":"m","input":"hi","stream":false,"initiator":"agent"}`

func TestTurnBodyAndEvents(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := h.dial(ctx, "good")
	send(t, ctx, c, create)
	for _, want := range []string{"response.created", "response.completed"} {
		if typ, m, err := next(t, ctx, c); err != nil || typ != want {
			t.Fatalf("got %q %s (%v); want %s", typ, m, err, want)
		}
	}
	h.inner.mu.Lock()
	body := h.inner.bodies[0]
	h.inner.mu.Unlock()
	if body["stream"] != true || body["type"] != nil || body["initiator"] != nil || body["model"] != "m" {
		t.Errorf("turn body %v; want the message without type and initiator, stream true", body)
	}
}

// TestRevokedKeyRefusedAtNextTurn: every turn is authenticated again.
func TestRevokedKeyRefusedAtNextTurn(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := h.dial(ctx, "good")
	send(t, ctx, c, create)
	next(t, ctx, c)
	next(t, ctx, c)
	h.inner.revoke("good")
	send(t, ctx, c, create)
	typ, m, err := next(t, ctx, c)
	if typ != "error" || !strings.Contains(m, "invalid_api_key") || !strings.Contains(m, `"status":401`) {
		t.Fatalf("after revocation: %s (%v); want a 401 error event", m, err)
	}
	if _, _, err := next(t, ctx, c); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("then: %v; want close 1008", err)
	}
	// The upgrade is refused too.
	if _, resp, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer good"}}}); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade with the revoked key: %v", err)
	}
}

func TestCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
		want   websocket.StatusCode
	}{
		{http.StatusServiceUnavailable, "token_unavailable", websocket.StatusTryAgainLater},
		{http.StatusBadGateway, "upstream_error", websocket.StatusInternalError},
		{http.StatusTooManyRequests, "rate_limit_exceeded", -1}, // stays open
	} {
		t.Run(tc.code, func(t *testing.T) {
			h := newHarness(t, nil)
			h.inner.status, h.inner.code = tc.status, tc.code
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := h.dial(ctx, "good")
			send(t, ctx, c, create)
			if typ, m, _ := next(t, ctx, c); typ != "error" || !strings.Contains(m, tc.code) {
				t.Fatalf("got %s; want an error event with %s", m, tc.code)
			}
			if tc.want < 0 {
				h.inner.mu.Lock()
				h.inner.status = 0
				h.inner.mu.Unlock()
				send(t, ctx, c, create)
				if typ, _, err := next(t, ctx, c); typ != "response.created" {
					t.Fatalf("next turn: %q %v", typ, err)
				}
				return
			}
			if _, _, err := next(t, ctx, c); websocket.CloseStatus(err) != tc.want {
				t.Fatalf("then %v; want close %v", err, tc.want)
			}
		})
	}
}

// TestIdleTimeout runs on the fake clock.
func TestIdleTimeout(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	h := newHarness(t, func(c *Config) { c.Clock = clk; c.IdleTimeout = time.Minute; c.PingInterval = -1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := h.dial(ctx, "good")
	send(t, ctx, c, create)
	next(t, ctx, c)
	next(t, ctx, c)
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second)
	send(t, ctx, c, `{"type":"nope"}`) // any message resets the idle time
	next(t, ctx, c)
	clk.Advance(45 * time.Second)
	send(t, ctx, c, create)
	if typ, _, err := next(t, ctx, c); typ != "response.created" {
		t.Fatalf("after 75 s with a message at 30 s: %q %v; want the connection open", typ, err)
	}
	next(t, ctx, c)
	if err := clk.WaitForTimers(ctx, 1); err != nil { // the turn has ended: the idle time runs again
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if _, _, err := next(t, ctx, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after a minute idle: %v; want close 1000", err)
	}
}

func TestConnectionCaps(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConns = 2; c.MaxConnsPerKey = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := h.dial(ctx, "good")
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"good", http.StatusTooManyRequests},     // the key's cap
		{"other", http.StatusSwitchingProtocols}, // another key
		{"other", http.StatusServiceUnavailable}, // the proxy's cap
	} {
		c, resp, _ := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tc.key}}})
		if c != nil {
			t.Cleanup(func() { c.CloseNow() })
		}
		if resp == nil || resp.StatusCode != tc.want {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("key %s: %d %s; want %d", tc.key, resp.StatusCode, b, tc.want)
		}
	}
	a.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for h.front.Open() > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline for the server side to see the close
	}
	h.dial(ctx, "good")
}

// TestDrainLetsTheResponseFinish: Drain closes idle connections at once and
// a busy one after its response, with 1001; past the grace it cuts.
func TestDrainLetsTheResponseFinish(t *testing.T) {
	h := newHarness(t, nil)
	h.inner.hold = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	busy, idle := h.dial(ctx, "good"), h.dial(ctx, "other")
	send(t, ctx, busy, create)
	next(t, ctx, busy)
	<-h.inner.started
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		h.front.Drain(ctx)
	}()
	if _, _, err := next(t, ctx, idle); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("idle: %v; want 1001", err)
	}
	close(h.inner.hold)
	if typ, _, err := next(t, ctx, busy); typ != "response.completed" {
		t.Fatalf("busy: %q %v; want its response to finish", typ, err)
	}
	if _, _, err := next(t, ctx, busy); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("busy after its response: %v; want 1001", err)
	}
	<-drained

	// Past the grace: cut.
	h2 := newHarness(t, nil)
	h2.inner.hold = make(chan struct{})
	c := h2.dial(ctx, "good")
	send(t, ctx, c, create)
	next(t, ctx, c)
	<-h2.inner.started
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		h2.front.Drain(short)
	}()
	defer func() { <-cut }()
	for {
		typ, _, err := next(t, ctx, c)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Fatalf("after the grace: %v; want close 1001", err)
			}
			break
		}
		if typ != "error" {
			t.Fatalf("after the grace: %q; want the cut response's error event", typ)
		}
	}
}

func TestSecondCreateWhileRunning(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxRefused = 2 })
	h.inner.hold = make(chan struct{})
	defer close(h.inner.hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := h.dial(ctx, "good")
	send(t, ctx, c, create)
	next(t, ctx, c)
	for range 2 {
		send(t, ctx, c, create)
		if typ, m, _ := next(t, ctx, c); typ != "error" || !strings.Contains(m, "conversation_already_has_active_response") {
			t.Fatalf("second create: %s", m)
		}
	}
	send(t, ctx, c, create)
	if _, _, err := next(t, ctx, c); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("third refused message: %v; want 1008", err)
	}
}

func TestPassesOtherRequests(t *testing.T) {
	h := newHarness(t, nil)
	req := httptest.NewRequest(http.MethodGet, "/v1/responses", nil) // no upgrade
	rec := httptest.NewRecorder()
	h.front.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized { // the inner handler answered
		t.Fatalf("plain GET: %d; want the inner handler's 401", rec.Code)
	}
}
