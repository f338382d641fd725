package server

import (
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil/streamcheck"
)

// TestTranslatedDirections sends each client dialect to models served only
// on the other endpoints, streamed and not, through the proxy to the
// sandbox, which refuses a model on an endpoint it lacks and checks every
// request as the real APIs do: the request must arrive translated on an
// endpoint the model has, and the answer come back in the client's dialect.
func TestTranslatedDirections(t *testing.T) {
	st := startStack(t, stackOpts{})
	const tools = `"get_weather","description":"weather","%s":{"type":"object","properties":{"city":{"type":"string"}}}`
	msgs := func(model string, stream bool) string {
		return `{"model":"` + model + `","max_tokens":512,"stream":` + map[bool]string{true: "true", false: "false"}[stream] +
			`,"system":"be brief","tools":[{"name":` + strings.Replace(tools, "%s", "input_schema", 1) + `}],` +
			`"messages":[{"role":"user","content":"weather in Paris?"}]}`
	}
	chat := func(model string, stream bool) string {
		return `{"model":"` + model + `","stream":` + map[bool]string{true: "true", false: "false"}[stream] +
			`,"tools":[{"type":"function","function":{"name":` + strings.Replace(tools, "%s", "parameters", 1) + `}}],` +
			`"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"weather in Paris?"}]}`
	}
	resp := func(model string, stream bool) string {
		return `{"model":"` + model + `","stream":` + map[bool]string{true: "true", false: "false"}[stream] +
			`,"instructions":"be brief","tools":[{"type":"function","name":` + strings.Replace(tools, "%s", "parameters", 1) + `}],` +
			`"input":[{"role":"user","content":"weather in Paris?"}]}`
	}
	tests := []struct {
		name, path, model, upstream string
		body                        func(string, bool) string
		check                       func([]streamcheck.Event) (streamcheck.Result, error)
		wantJSON                    string // a fragment of the non-streamed answer
	}{
		{"messages to chat", "/v1/messages", "gpt-4.1", "/chat/completions", msgs, streamcheck.Anthropic, `"type":"tool_use"`},
		{"messages to responses", "/v1/messages", "gpt-5.2-codex", "/responses", msgs, streamcheck.Anthropic, `"stop_reason":"tool_use"`},
		{"chat to responses", "/v1/chat/completions", "gpt-5.2-codex", "/responses", chat, streamcheck.Chat, `"finish_reason":"tool_calls"`},
		{"chat to messages", "/v1/chat/completions", "claude-sonnet-4.5", "/v1/messages", chat, streamcheck.Chat, `"finish_reason":"tool_calls"`},
		{"responses to chat", "/v1/responses", "gpt-4.1", "/chat/completions", resp, streamcheck.Responses, `"type":"function_call"`},
		{"responses to messages", "/v1/responses", "claude-sonnet-4.5", "/v1/messages", resp, streamcheck.Responses, `"type":"function_call"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := st.do("POST", tt.path, tt.body(tt.model, false), map[string]string{"Anthropic-Beta": "context-1m-2025-08-07"})
			if r.StatusCode != 200 || !strings.Contains(body, tt.wantJSON) {
				t.Fatalf("POST %s (%s) = %d %s; want 200 with %s", tt.path, tt.model, r.StatusCode, body, tt.wantJSON)
			}
			up := st.upstreamRequest(r.Header.Get("X-Request-Id"))
			if up.Path != tt.upstream || up.Status != 200 {
				t.Errorf("upstream %s %d; want %s 200", up.Path, up.Status, tt.upstream)
			}
			if tt.upstream != "/v1/messages" && up.Header.Get("Anthropic-Beta") != "" {
				t.Errorf("anthropic-beta sent to %s", tt.upstream)
			}
			if up.Header.Get("X-Initiator") != "user" {
				t.Errorf("upstream X-Initiator = %q; want user (decided on the client's request)", up.Header.Get("X-Initiator"))
			}
			r, body = st.do("POST", tt.path, tt.body(tt.model, true), nil)
			if r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("streamed POST %s = %d %s %s", tt.path, r.StatusCode, r.Header.Get("Content-Type"), body)
			}
			evs, err := streamcheck.Read(strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			res, err := tt.check(evs)
			if err != nil {
				t.Fatalf("translated stream: %v\n%s", err, body)
			}
			if len(res.Calls) != 1 || res.Calls[0].Name != "get_weather" || res.Calls[0].Arguments != `{"city":"weather in Paris?"}` {
				t.Errorf("streamed tool calls = %+v; want get_weather with the city", res.Calls)
			}
			if up := st.upstreamRequest(r.Header.Get("X-Request-Id")); up.Path != tt.upstream || !up.Streamed {
				t.Errorf("streamed upstream %s streamed=%v; want %s streamed", up.Path, up.Streamed, tt.upstream)
			}
		})
	}
}

// TestTranslatedErrors checks that an upstream error reaches a translated
// client in its own dialect with the upstream's status, and that a request
// the translator cannot express is refused in the client's dialect.
func TestTranslatedErrors(t *testing.T) {
	st := startStack(t, stackOpts{})
	// Warm the catalog so the fault hits the translated call itself.
	if r, body := st.do("POST", "/v1/messages", `{"model":"gpt-4.1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`, nil); r.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", r.StatusCode, body)
	}
	st.sb.FailAPI(1, sandbox.Fault{Status: 429, RetryAfter: 3 * time.Second})
	r, body := st.do("POST", "/v1/messages", `{"model":"gpt-4.1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`, nil)
	if r.StatusCode != 429 || !strings.Contains(body, `"type":"error"`) || !strings.Contains(body, `"rate_limit_error"`) {
		t.Errorf("upstream 429 through a translated call = %d %s; want 429 in the Anthropic error shape", r.StatusCode, body)
	}
	r, body = st.do("POST", "/v1/chat/completions", `{"model":"gpt-5.2-codex","n":2,"messages":[{"role":"user","content":"hi"}]}`, nil)
	if r.StatusCode != 400 || !strings.Contains(body, `"error":{"message":`) {
		t.Errorf("untranslatable request = %d %s; want 400 in the OpenAI error shape", r.StatusCode, body)
	}
}
