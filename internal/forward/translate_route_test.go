package forward

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

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
