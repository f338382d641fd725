package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/brokerclient"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	dto "github.com/prometheus/client_model/go"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

const (
	chatBody     = `{"model":"gpt-4.1","messages":[{"role":"user","content":"hello"}]}`
	messagesBody = `{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`
)

// upstreamRequest returns the sandbox's record of the API request that
// carried X-Request-Id id, the one the proxy echoed to the client. The
// sandbox records a request once its handler has returned, which can be just
// after the client has the whole answer, so it waits a little for it. It
// fails the test when no request with that id reached the sandbox.
func (st *stack) upstreamRequest(id string) sandbox.Request {
	st.t.Helper()
	if id == "" {
		st.t.Fatal("the proxy echoed no X-Request-Id to the client")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs := st.sb.Requests()
		for i := len(reqs) - 1; i >= 0; i-- {
			if reqs[i].Header.Get("X-Request-Id") == id {
				return reqs[i]
			}
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("the sandbox saw no API request with X-Request-Id %q (the id echoed to the client)", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRoutesReachUpstreamWithCopilotHeaders(t *testing.T) {
	st := startStack(t, stackOpts{})
	tests := []struct {
		method, path, body, want string
		hdr                      map[string]string
	}{
		{"POST", "/v1/chat/completions", chatBody, "/chat/completions", nil},
		{"POST", "/chat/completions", chatBody, "/chat/completions", nil},
		{"POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, "/embeddings", nil},
		{"POST", "/v1/responses", `{"model":"gpt-5-mini","input":"hi"}`, "/responses", nil},
		{"POST", "/responses", `{"model":"gpt-5-mini","input":"hi"}`, "/responses", nil},
		{"POST", "/v1/messages", messagesBody, "/v1/messages", map[string]string{"Authorization": "", "X-Api-Key": aliceKey, "Anthropic-Version": "2023-06-01"}},
	}
	intents := map[string]string{
		"/chat/completions": "conversation-agent", "/models": "model-access", "/embeddings": "conversation-panel",
		"/responses": "responses-proxy", "/v1/messages": "messages-proxy", "/v1/messages/count_tokens": "messages-proxy",
	}
	tok, err := st.proxy.Token()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			resp, body := st.do(tt.method, tt.path, tt.body, tt.hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s = %d %s; want 200", tt.method, tt.path, resp.StatusCode, body)
			}
			got := st.upstreamRequest(resp.Header.Get("X-Request-Id"))
			if got.Path != tt.want {
				t.Errorf("upstream path = %s; want %s", got.Path, tt.want)
			}
			want := map[string]string{
				"Authorization":          "Bearer " + tok.Value.Reveal(),
				"Copilot-Integration-Id": "vscode-chat",
				"Editor-Version":         identity.DefaultEditorVersion,
				"Editor-Plugin-Version":  identity.DefaultEditorPluginVersion,
				"User-Agent":             identity.DefaultUserAgent,
				"Openai-Intent":          intents[tt.want],
				"X-Github-Api-Version":   identity.DefaultAPIVersion,
			}
			for k, v := range want {
				if g := got.Header.Get(k); g != v {
					t.Errorf("upstream %s = %q; want %q", k, g, v)
				}
			}
			id := got.Header.Get("X-Request-Id")
			if !uuidV4.MatchString(id) || resp.Header.Get("X-Request-Id") != id {
				t.Errorf("X-Request-Id upstream %q, to client %q; want the same UUIDv4", id, resp.Header.Get("X-Request-Id"))
			}
			if strings.Contains(fmt.Sprint(got.Header), aliceKey) || got.Header.Get("X-Api-Key") != "" {
				t.Errorf("the client's key reached the upstream: %v", got.Header)
			}
		})
	}
}

func TestInitiatorAndVisionReachUpstream(t *testing.T) {
	st := startStack(t, stackOpts{})
	img := `{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}`
	tests := []struct {
		name, path, body, want string
		vision                 bool
	}{
		{"openai user turn", "/v1/chat/completions", chatBody, "user", false},
		{"openai assistant tool call", "/v1/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{}"}}]}]}`, "agent", false},
		{"openai tool result", "/v1/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}]}`, "agent", false},
		{"openai image", "/v1/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},` + img + `]}]}`, "user", true},
		{"anthropic user turn", "/v1/messages", messagesBody, "user", false},
		{"anthropic assistant tool use", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"weather","input":{}}]}]}`, "agent", false},
		{"anthropic tool result", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"sunny"}]}]}`, "agent", false},
		// Images need Copilot-Vision-Request on every endpoint, and
		// /responses takes an image detail of low or high only: the proxy
		// sets the header and sends "high" for "auto" (the sandbox is
		// strict about both, docs/protocol.md section 4).
		{"anthropic image", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},{"type":"text","text":"what is this?"}]}]}`, "user", true},
		{"responses image detail auto", "/v1/responses",
			`{"model":"gpt-5-mini","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo=","detail":"auto"},{"type":"input_text","text":"what is this?"}]}]}`, "user", true},
		{"responses function output", "/v1/responses",
			`{"model":"gpt-5-mini","input":[{"role":"user","content":"weather?"},{"type":"function_call","call_id":"c1","name":"weather","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"sunny"}]}`, "agent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := st.sb.Stats().PremiumRequests
			resp, body := st.do("POST", tt.path, tt.body, nil)
			got := st.upstreamRequest(resp.Header.Get("X-Request-Id"))
			if g := got.Header.Get("X-Initiator"); g != tt.want {
				t.Errorf("upstream X-Initiator = %q; want %q", g, tt.want)
			}
			if g := got.Header.Get("Copilot-Vision-Request") == "true"; g != tt.vision {
				t.Errorf("upstream Copilot-Vision-Request present = %v; want %v", g, tt.vision)
			}
			if resp.StatusCode >= 300 {
				t.Errorf("POST %s = %d %s; want success", tt.path, resp.StatusCode, body)
			}
			premium := st.sb.Stats().PremiumRequests - before
			if wantPremium := map[bool]int{true: 1, false: 0}[tt.want == "user"]; premium != wantPremium {
				t.Errorf("premium requests billed = %d; want %d", premium, wantPremium)
			}
		})
	}
}

// readEvents reads SSE data lines from body, noting when each arrived.
func readEvents(t *testing.T, body io.Reader) (lines []string, at []time.Time) {
	t.Helper()
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data:") {
			lines = append(lines, l)
			at = append(at, time.Now())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return lines, at
}

func TestSSEChunksArriveAsSent(t *testing.T) {
	st := startStack(t, stackOpts{})
	tests := []struct{ name, path, body string }{
		{"openai", "/v1/chat/completions", `{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"count slowly to six please"}]}`},
		{"anthropic", "/v1/messages", `{"model":"claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"count slowly to six please"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", st.base+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+aliceKey)
			req.Header.Set("X-Sandbox-Chunks", "6")
			req.Header.Set("X-Sandbox-Chunk-Delay-Ms", "100")
			req.Header.Set("X-Test-Trace", tt.name)
			resp, err := st.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("status %d, Content-Type %q; want a 200 event stream", resp.StatusCode, ct)
			}
			lines, got := readEvents(t, resp.Body)
			sent := st.flushes.get(tt.name)
			if len(sent) != len(got) || len(got) < 6 {
				t.Fatalf("upstream flushed %d events, client read %d; want the same, at least 6", len(sent), len(got))
			}
			// An event followed by the upstream's 100 ms pause reaches the
			// client before the upstream sends the next one: a proxy that
			// held events back (buffering until more came) fails this
			// whatever the machine's load, where a bound on the delay itself
			// fails a busy machine. Events the upstream writes back to back
			// (the ends of an Anthropic stream) cannot be told apart.
			var worst time.Duration
			for i := range got {
				worst = max(worst, got[i].Sub(sent[i]))
				if i+1 < len(sent) && sent[i+1].Sub(sent[i]) >= 50*time.Millisecond && !got[i].Before(sent[i+1]) {
					t.Errorf("event %d (%.40s) reached the client only after the upstream sent event %d: held back", i, lines[i], i+1)
				}
			}
			if spread := sent[len(sent)-1].Sub(sent[0]); spread < 400*time.Millisecond {
				t.Errorf("the upstream sent its events within %v; want them spaced 100 ms apart", spread)
			}
			t.Logf("%d events, worst added delay %v", len(got), worst)
		})
	}
}

func TestRotationUnderLoad(t *testing.T) {
	st := startStack(t, stackOpts{})
	conn, err := brokerclient.Dial(st.grpc, secret.New(brokerKey), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	broker := brokerv1.NewTokenBrokerServiceClient(conn)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			path, body := "/v1/chat/completions", chatBody
			if i%2 == 1 {
				path, body = "/v1/messages", `{"model":"claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", st.base+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+aliceKey)
				resp, err := st.client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	gens := map[uint64]bool{}
	for range 10 {
		tok, err := st.proxy.Token()
		if err != nil {
			t.Fatal(err)
		}
		gens[tok.Generation] = true
		before := ok.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := broker.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: tok.Generation}); err != nil {
			t.Fatalf("RefreshToken: %v", err)
		}
		cancel()
		// Wait for the proxy to move on, and for requests to be served with
		// the new token, before rotating again.
		deadline := time.Now().Add(10 * time.Second)
		for {
			cur, err := st.proxy.Token()
			if err == nil && cur.Generation > tok.Generation && ok.Load() > before+20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the proxy did not move past generation %d with requests flowing", tok.Generation)
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline; nothing signals "requests flowed"
		}
	}
	close(stop)
	wg.Wait()
	last, _ := st.proxy.Token()
	gens[last.Generation] = true
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed (first: %v); want none", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if len(gens) < 11 {
		t.Errorf("the proxy used %d generations; want 11 (10 rotations)", len(gens))
	}
	t.Logf("%d requests across %d generations, none failed", ok.Load(), len(gens))
}

func TestBrokerOutageServesCachedTokenUntilExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	st := startStack(t, stackOpts{clk: clk})
	tok, err := st.proxy.Token()
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := st.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("before the outage: %d %s; want 200", resp.StatusCode, body)
	}
	if err := st.broker.Close(); err != nil {
		t.Fatal(err)
	}
	// The proxy learns of the outage when its watch stream ends, after
	// the broker has stopped: wait for that, not for the clock.
	waitMetrics(t, st.proxy, map[string]float64{connectedSeries: 0})
	clk.Set(tok.ExpiresAt.Add(-time.Minute))
	if resp, body := st.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("broker down, token still valid: %d %s; want 200", resp.StatusCode, body)
	}

	clk.Set(tok.ExpiresAt)
	for _, c := range []struct {
		path, body string
		anthropic  bool
	}{{"/v1/chat/completions", chatBody, false}, {"/v1/messages", messagesBody, true}} {
		resp, body := st.do("POST", c.path, c.body, nil)
		if resp.StatusCode != 503 || !strings.Contains(body, "expired") || !strings.Contains(body, "broker is unreachable") {
			t.Errorf("POST %s after expiry = %d %s; want 503 naming the expiry and the broker", c.path, resp.StatusCode, body)
		}
		checkDialect(t, body, c.anthropic)
	}
	if code, body := get(t, "http://"+st.proxy.Addrs().Admin+"/readyz"); code != 503 {
		t.Errorf("/readyz after expiry = %d %s; want 503", code, body)
	}

	st.startBroker(st.grpc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := st.proxy.WaitReady(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the broker came back: %v", err)
		}
		clk.Advance(time.Second) // through the reconnect backoff
	}
	if resp, body := st.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Errorf("after the broker came back: %d %s; want 200", resp.StatusCode, body)
	}
}

func TestUpstream401RefreshesOnceAndRetries(t *testing.T) {
	st := startStack(t, stackOpts{})
	before, _ := st.proxy.Token()
	st.sb.ResetStats()
	st.sb.InvalidateCopilotTokens()
	resp, body := st.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("POST after invalidation = %d %s; want 200", resp.StatusCode, body)
	}
	stats := st.sb.Stats()
	if got := stats.API["/chat/completions"]; got[401] != 1 || got[200] != 1 {
		t.Errorf("upstream answers = %v; want one 401 then one 200", got)
	}
	if stats.Exchanges[200] != 1 {
		t.Errorf("token exchanges = %v; want one", stats.Exchanges)
	}
	if n := counter(t, st.proxy, "copilot_proxy_token_refresh_requests_total", "ok"); n != 1 {
		t.Errorf("RefreshToken calls = %v; want 1", n)
	}
	after, _ := st.proxy.Token()
	if after.Generation != before.Generation+1 {
		t.Errorf("generation after = %d; want %d", after.Generation, before.Generation+1)
	}
}

func TestBadInput(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) {
		c.MaxBodyBytes = 4096
		c.MaxHeaderBytes = 8 << 10
		c.ReadHeaderTimeout = 300 * time.Millisecond
	}})
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		want                     int
		anthropic                bool
	}{
		{"missing key openai", "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": ""}, 401, false},
		{"wrong key openai", "POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer not-a-key-0123456789"}, 401, false},
		{"missing key anthropic", "POST", "/v1/messages", messagesBody, map[string]string{"Authorization": ""}, 401, true},
		{"wrong key anthropic", "POST", "/v1/messages", messagesBody, map[string]string{"Authorization": "", "X-Api-Key": "not-a-key-0123456789"}, 401, true},
		{"oversized body", "POST", "/v1/chat/completions", `{"x":"` + strings.Repeat("a", 5000) + `"}`, nil, 413, false},
		{"oversized body anthropic", "POST", "/v1/messages", `{"x":"` + strings.Repeat("a", 5000) + `"}`, nil, 413, true},
		{"unknown path", "GET", "/v1/files", "", nil, 404, false},
		{"wrong method", "DELETE", "/v1/models", "", nil, 405, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(st.sb.Requests())
			resp, body := st.do(tt.method, tt.path, tt.body, tt.hdr)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
			}
			checkDialect(t, body, tt.anthropic)
			if len(st.sb.Requests()) != n {
				t.Errorf("the request reached the upstream; want it stopped at the proxy")
			}
		})
	}

	t.Run("oversized headers", func(t *testing.T) {
		n := len(st.sb.Requests())
		// net/http allows 4 KiB of slack over MaxHeaderBytes.
		resp, _ := st.do("POST", "/v1/chat/completions", chatBody, map[string]string{"X-Padding": strings.Repeat("p", 16<<10)})
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("16 KiB of headers with an 8 KiB limit = %d; want 431", resp.StatusCode)
		}
		if len(st.sb.Requests()) != n {
			t.Errorf("the request reached the upstream; want it stopped at the proxy")
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		c, err := net.Dial("tcp", st.proxy.Addrs().HTTP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		b, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection stayed open %v with headers unfinished; want it closed", time.Since(start))
		}
		if len(b) > 0 && !strings.Contains(string(b), "408") {
			t.Errorf("got %q; want the connection closed (or a 408)", b)
		}
	})

	t.Run("client leaves mid-stream", func(t *testing.T) {
		st.sb.ResetStats()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", st.base+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"a long story"}]}`))
		req.Header.Set("Authorization", "Bearer "+aliceKey)
		req.Header.Set("X-Sandbox-Chunks", "100")
		req.Header.Set("X-Sandbox-Chunk-Delay-Ms", "100")
		resp, err := st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		cancel()
		resp.Body.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := st.sb.Wait(wctx, func(s sandbox.Stats) bool { return s.StreamsCancelled == 1 }); err != nil {
			t.Errorf("the upstream stream was not cancelled after the client left: %v (stats %+v)", err, st.sb.Stats())
		}
	})
}

func TestGracefulShutdownLetsStreamsFinish(t *testing.T) {
	st := startStack(t, stackOpts{})
	req, _ := http.NewRequest("POST", st.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"one two three four five"}]}`))
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	req.Header.Set("X-Sandbox-Chunks", "5")
	req.Header.Set("X-Sandbox-Chunk-Delay-Ms", "100")
	resp, err := st.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- st.proxy.Close() }()
	// Not ready at once, and no new connections, while the stream goes on.
	deadline := time.Now().Add(5 * time.Second)
	for st.proxy.Ready() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline for the shutdown to begin
	}
	if !errors.Is(st.proxy.Ready(), ErrShuttingDown) {
		t.Errorf("Ready() during shutdown = %v; want ErrShuttingDown", st.proxy.Ready())
	}
	rest, err := io.ReadAll(br)
	if err != nil || !strings.Contains(string(rest), "data: [DONE]") {
		t.Errorf("stream during shutdown: err %v, tail %q; want it to finish with [DONE]", err, rest)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v; want nil", err)
	}
	if _, err := net.DialTimeout("tcp", st.proxy.Addrs().HTTP, time.Second); err == nil {
		t.Errorf("the proxy still accepts connections after shutdown")
	}
}

func TestStartRefusesExposureWithoutKeys(t *testing.T) {
	_, err := Start(context.Background(), Config{Addr: "0.0.0.0:0", AdminAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "--keys-file") {
		t.Errorf("Start on 0.0.0.0 without keys = %v; want an error naming --keys-file", err)
	}
}

func checkDialect(t *testing.T, body string, anthropic bool) {
	t.Helper()
	var v struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Error.Message == "" || v.Error.Type == "" {
		t.Errorf("body %s; want a JSON error with type and message", body)
		return
	}
	if anthropic != (v.Type == "error") || (!anthropic && v.Error.Code == "") {
		t.Errorf("body %s; want the %s error shape", body, map[bool]string{true: "Anthropic", false: "OpenAI"}[anthropic])
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	http.DefaultClient.CloseIdleConnections()
	return resp.StatusCode, string(b)
}

// counter reads one labelled counter from the proxy's registry.
func counter(t *testing.T, p *Server, name, labelValue string) float64 {
	t.Helper()
	mfs, err := p.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabelValue(m, labelValue) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabelValue(m *dto.Metric, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetValue() == v {
			return true
		}
	}
	return false
}
