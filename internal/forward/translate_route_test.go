package forward

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// xlateEnv is an env with the catalog on (upstreamModels) whose upstream
// answers the chat endpoint with h.
func xlateEnv(t *testing.T, h http.HandlerFunc) (*env, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/models" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, upstreamModels)
			return
		}
		h(w, r)
	}, func(c *Config) {
		c.Metrics = NewMetrics(reg)
		c.Models = &ModelsConfig{}
	})
	t.Cleanup(e.handler.Close)
	return e, reg
}

// TestTranslatedStreamCut checks that a translated stream the upstream cuts
// mid-way ends, in the client's dialect, with an error event, and that the
// request is counted by client dialect and upstream endpoint.
func TestTranslatedStreamCut(t *testing.T) {
	e, reg := xlateEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}`+"\n\n")
		// The upstream goes away before finish_reason and [DONE].
	})
	resp, body := e.do(t, "POST", "/v1/messages", `{"model":"gpt-4.1","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "event: message_start") || !strings.Contains(body, `"text":"Hel"`) {
		t.Fatalf("POST /v1/messages = %d %q; want the translated start of the stream", resp.StatusCode, body)
	}
	if !strings.HasSuffix(strings.TrimSpace(body), "}") || !strings.Contains(body, "event: error") || strings.Contains(body, "message_stop") {
		t.Errorf("cut stream ends %q; want an Anthropic error event and no message_stop", body)
	}
	got := e.up.requests()
	if last := got[len(got)-1]; last.path != "/chat/completions" || !strings.Contains(last.body, `"messages":[`) || strings.Contains(last.body, `"max_tokens":64,"stream"`) {
		t.Errorf("upstream got %s %s; want a Chat body on /chat/completions", last.path, last.body)
	}
	if err := promtest.GatherAndCompare(reg, strings.NewReader(`
# HELP copilot_proxy_dialect_requests_total Requests by the client's dialect (messages, chat, responses) and the upstream endpoint they were sent to; upstream differs from the client's own endpoint when the proxy translated, and is "refused" when the request could not be translated.
# TYPE copilot_proxy_dialect_requests_total counter
copilot_proxy_dialect_requests_total{client="chat",upstream="/chat/completions"} 0
copilot_proxy_dialect_requests_total{client="chat",upstream="/responses"} 0
copilot_proxy_dialect_requests_total{client="chat",upstream="/v1/messages"} 0
copilot_proxy_dialect_requests_total{client="chat",upstream="refused"} 0
copilot_proxy_dialect_requests_total{client="messages",upstream="/chat/completions"} 1
copilot_proxy_dialect_requests_total{client="messages",upstream="/responses"} 0
copilot_proxy_dialect_requests_total{client="messages",upstream="/v1/messages"} 0
copilot_proxy_dialect_requests_total{client="messages",upstream="refused"} 0
copilot_proxy_dialect_requests_total{client="responses",upstream="/chat/completions"} 0
copilot_proxy_dialect_requests_total{client="responses",upstream="/responses"} 0
copilot_proxy_dialect_requests_total{client="responses",upstream="/v1/messages"} 0
copilot_proxy_dialect_requests_total{client="responses",upstream="refused"} 0
`), "copilot_proxy_dialect_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestPassThroughUntouched checks that a model served on the client's
// endpoint goes upstream byte for byte, answer included.
func TestPassThroughUntouched(t *testing.T) {
	const answer = `{"id":"x","object":"chat.completion","choices":[],"unknown":{"kept":true}}`
	e, _ := xlateEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer)
	})
	const req = `{"model":"gpt-4.1", "messages":[{"role":"user","content":"hi"}],"top_k":3}`
	resp, body := e.do(t, "POST", "/v1/chat/completions", req, map[string]string{"Anthropic-Beta": "x"})
	if resp.StatusCode != 200 || body != answer {
		t.Errorf("answer = %d %s; want the upstream's bytes", resp.StatusCode, body)
	}
	got := e.up.requests()
	if last := got[len(got)-1]; last.path != "/chat/completions" || last.body != req {
		t.Errorf("upstream got %s %s; want the client's bytes on /chat/completions", last.path, last.body)
	}
}

// TestTranslatedUpstreamErrors checks that an upstream error on a
// translated request reaches the client once in its own dialect: the
// classified ones (402, 466, 503) with the proxy's error type and code, not
// turned over a second time as if they were still the upstream's; others
// translated from the upstream's shape.
func TestTranslatedUpstreamErrors(t *testing.T) {
	const (
		messages = `{"model":"gpt-4.1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}` // to a Chat-only model
		chat     = `{"model":"claude-sonnet-4.5","messages":[{"role":"user","content":"hi"}]}`       // to a Messages-only model
	)
	for _, tt := range []struct {
		path, body string
		status     int
		upstream   string
		want       []string // in the client's error body
	}{
		{"/v1/messages", messages, 402, `{"error":{"message":"quota exceeded","type":"insufficient_quota"}}`, []string{`"type":"error"`, `"type":"billing_error"`, "quota exceeded"}},
		{"/v1/messages", messages, 466, `{"error":{"message":"client version not supported"}}`, []string{`"type":"error"`, "editor identity is too old"}},
		{"/v1/messages", messages, 503, `{"error":{"message":"busy"}}`, []string{`"type":"overloaded_error"`, "busy"}},
		{"/v1/messages", messages, 400, `{"error":{"message":"bad tool schema","type":"invalid_request_error"}}`, []string{`"type":"invalid_request_error"`, "bad tool schema"}},
		{"/v1/chat/completions", chat, 402, `{"type":"error","error":{"type":"billing_error","message":"quota exceeded"}}`, []string{`"type":"insufficient_quota"`, `"code":"quota_exceeded"`, "quota exceeded"}},
		{"/v1/chat/completions", chat, 466, `{"type":"error","error":{"type":"invalid_request_error","message":"too old"}}`, []string{`"code":"client_not_supported"`, "editor identity is too old"}},
		{"/v1/chat/completions", chat, 503, `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`, []string{`"code":"upstream_unavailable"`, "busy"}},
		{"/v1/chat/completions", chat, 400, `{"type":"error","error":{"type":"invalid_request_error","message":"bad tool schema"}}`, []string{`"type":"invalid_request_error"`, "bad tool schema"}},
	} {
		t.Run(fmt.Sprint(tt.path, " ", tt.status), func(t *testing.T) {
			e, _ := xlateEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.upstream)
			})
			resp, body := e.do(t, "POST", tt.path, tt.body, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("POST %s = %d %s; want %d", tt.path, resp.StatusCode, body, tt.status)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("error body %s; want it to hold %s", body, w)
				}
			}
		})
	}
}

// TestTranslatedStreamIdle checks that a translated stream whose upstream
// goes silent ends with the idle error in the client's dialect, its message
// kept: the idle event is written in the upstream's dialect, under the
// translator, which turns it into the client's.
func TestTranslatedStreamIdle(t *testing.T) {
	const idle = time.Minute
	for _, tt := range []struct {
		name, path, body, first string
		want                    []string
	}{
		{"messages client, chat model", "/v1/messages",
			`{"model":"gpt-4.1","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}` + "\n\n",
			[]string{`"text":"Hel"`, "event: error", "sent nothing for 1m0s"}},
		{"chat client, messages model", "/v1/chat/completions",
			`{"model":"claude-sonnet-4.5","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			"event: message_start\ndata: " + `{"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","model":"claude-sonnet-4.5","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}` + "\n\n" +
				"event: content_block_start\ndata: " + `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
				"event: content_block_delta\ndata: " + `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}` + "\n\n",
			[]string{`"content":"Hel"`, `"error"`, "sent nothing for 1m0s"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sent := make(chan struct{})
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/models" {
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprint(w, upstreamModels)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, tt.first)
				w.(http.Flusher).Flush()
				close(sent)
				<-r.Context().Done() // then silence
			}, func(c *Config) {
				c.Models = &ModelsConfig{}
				c.StreamIdleTimeout = idle
			})
			t.Cleanup(e.handler.Close)
			req, err := http.NewRequest("POST", e.proxy.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := e.proxy.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			// Read until the first chunk's translation reached the client:
			// the idle watcher re-armed its timer when that chunk came up
			// (before the translator saw it), so one advance by the idle
			// timeout now fires it. Advancing earlier could race that reset
			// and leave the timer a minute ahead of the clock.
			var seen bytes.Buffer
			buf := make([]byte, 4<<10)
			for !strings.Contains(seen.String(), tt.want[0]) {
				n, err := resp.Body.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					t.Fatalf("stream ended before its first text: %v; read %q", err, seen.String())
				}
			}
			<-sent
			e.clk.Advance(idle) // also fires the keep-alive: a ping or comment, harmless
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the rest of the stream: %v", err)
			}
			body := seen.String() + string(rest)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("idle translated stream = %q; want it to hold %s", body, w)
				}
			}
		})
	}
}

// TestTranslationChargesBudget: a translated request charges the body
// budget translate.MemoryFactor times its body before the work starts: one
// no share could hold is refused with 413, one that does not fit now with
// 503 and Retry-After, both in the client's dialect, while the same body
// passed through is served (issue 22: translation held about 25 times the
// body outside the budget, and one request could restart a replica).
func TestTranslationChargesBudget(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/models" {
			fmt.Fprint(w, upstreamModels)
			return
		}
		fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
	}, func(c *Config) {
		c.Models = &ModelsConfig{}
		c.MaxBodyBytes, c.MaxInflightBodyBytes, c.MaxInflightBodyBytesPerKey, c.InflightBodyWait = 1<<20, 4<<20, 2<<20, 50*time.Millisecond
	})
	t.Cleanup(e.handler.Close)
	body := func(size int) string {
		return `{"model":"gpt-4.1","max_tokens":64,"messages":[{"role":"user","content":"` + strings.Repeat("x", size) + `"}]}`
	}
	// 100 KiB x 40 is over the key's share of 2 MiB: never.
	resp, got := e.do(t, "POST", "/v1/messages", body(100<<10), nil)
	if resp.StatusCode != 413 || !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, "too large to translate") {
		t.Errorf("translated 100 KiB = %d %.200s; want 413 in Anthropic's shape", resp.StatusCode, got)
	}
	// The same body in the model's own dialect is not translated: served.
	chat := `{"model":"gpt-4.1","messages":[{"role":"user","content":"` + strings.Repeat("x", 100<<10) + `"}]}`
	if resp, got := e.do(t, "POST", "/v1/chat/completions", chat, nil); resp.StatusCode != 200 {
		t.Errorf("pass-through 100 KiB = %d %.200s; want 200", resp.StatusCode, got)
	}
	// 30 KiB x 40 fits the share, but not while the key holds most of it.
	hold, err := e.handler.bodies.Read(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", 1<<20))), "alice")
	if err != nil {
		t.Fatal(err)
	}
	resp, got = e.doPastWait(t, "/v1/messages", body(30<<10), 50*time.Millisecond)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(got, `"overloaded_error"`) {
		t.Errorf("translated 30 KiB with the share taken = %d (Retry-After %q) %.200s; want 503 with Retry-After, Anthropic's overloaded_error", resp.StatusCode, resp.Header.Get("Retry-After"), got)
	}
	hold.Free()
	if resp, got := e.do(t, "POST", "/v1/messages", body(30<<10), nil); resp.StatusCode != 200 {
		t.Errorf("translated 30 KiB with room = %d %.200s; want 200", resp.StatusCode, got)
	}
}
