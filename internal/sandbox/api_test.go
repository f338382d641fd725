package sandbox

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestChatCompletion(t *testing.T) {
	e := newEnv(t, Config{})
	resp, body := e.api("POST", "/chat/completions",
		`{"model":"gpt-4.1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"what is   a broker?"}]}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	var got chatCompletion
	mustUnmarshal(t, body, &got)
	if got.Object != "chat.completion" || got.Model != "gpt-4.1" || len(got.Choices) != 1 ||
		got.Choices[0].Message.Role != "assistant" || got.Choices[0].FinishReason != "stop" || got.Usage.TotalTokens == 0 {
		t.Fatalf("chat answer %s: want one assistant choice, stop, usage", body)
	}
	if want := "Sandbox reply to: what is a broker?"; got.Choices[0].Message.Content == nil || *got.Choices[0].Message.Content != want {
		t.Errorf("content = %v; want %q", got.Choices[0].Message.Content, want)
	}
}

func TestModels(t *testing.T) {
	e := newEnv(t, Config{})
	resp, body := e.api("GET", "/models", "")
	if resp.StatusCode != 200 {
		t.Fatalf("models: %d %s", resp.StatusCode, body)
	}
	var got struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}
	mustUnmarshal(t, body, &got)
	vendors := map[string]bool{}
	for _, m := range got.Data {
		vendors[m.Vendor] = true
		if m.Capabilities.Family == "" || m.Object != "model" || len(m.SupportedEndpoints) == 0 {
			t.Errorf("model %s: family %q object %q endpoints %v; want all set", m.ID, m.Capabilities.Family, m.Object, m.SupportedEndpoints)
		}
	}
	if got.Object != "list" || !vendors["Anthropic"] || !vendors["Azure OpenAI"] {
		t.Errorf("models: object %q vendors %v; want list with OpenAI and Anthropic models", got.Object, vendors)
	}
	if !strings.Contains(string(body), `"billing":{"is_premium":true,"multiplier":10}`) {
		t.Errorf("models body lacks billing of claude-opus-4.1: %s", body)
	}
	if !strings.Contains(string(body), `"supports":{"streaming":true,"tool_calls":true`) ||
		!strings.Contains(string(body), `"policy":{"state":"enabled"`) {
		t.Errorf("models body lacks capabilities.supports or policy: %s", body)
	}
}

func TestModelRouting(t *testing.T) {
	e := newEnv(t, Config{})
	chat := func(m string) string { return `{"model":"` + m + `","messages":[{"role":"user","content":"hi"}]}` }
	msgs := func(m string) string {
		return `{"model":"` + m + `","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	}
	resp := func(m string) string { return `{"model":"` + m + `","input":"hi"}` }
	tests := []struct {
		name, path, body string
		want             int
		wantCode         string
	}{
		{"chat gpt", "/chat/completions", chat("gpt-4.1"), 200, ""},
		{"chat claude", "/chat/completions", chat("claude-sonnet-4"), 200, ""},
		{"chat responses-only model", "/chat/completions", chat("gpt-5-codex"), 400, "unsupported_api_for_model"},
		{"chat unknown model", "/chat/completions", chat("gpt-0"), 400, "model_not_supported"},
		{"chat disabled model", "/chat/completions", chat("claude-opus-4"), 400, "model_not_supported"},
		{"chat no model", "/chat/completions", `{"messages":[]}`, 400, "missing_required_parameter"},
		{"chat invalid JSON", "/chat/completions", `{"model":`, 400, "invalid_request_body"},
		{"chat empty body", "/chat/completions", ``, 400, "invalid_request_body"},
		{"responses codex", "/responses", resp("gpt-5-codex"), 200, ""},
		{"responses chat-only model", "/responses", resp("gpt-4.1"), 400, "unsupported_api_for_model"},
		{"responses invalid JSON", "/responses", `[`, 400, "invalid_request_body"},
		{"messages claude", "/v1/messages", msgs("claude-sonnet-4"), 200, ""},
		{"messages gpt", "/v1/messages", msgs("gpt-4.1"), 400, "unsupported_api_for_model"},
		{"messages claude-sonnet-4.5", "/v1/messages", msgs("claude-sonnet-4.5"), 200, ""},
		{"messages claude-opus-5.5", "/v1/messages", msgs("claude-opus-5.5"), 200, ""},
		{"messages dated claude name", "/v1/messages", msgs("claude-sonnet-4-5-20250929"), 400, "model_not_supported"},
		{"chat messages-only claude", "/chat/completions", chat("claude-sonnet-4.5"), 400, "unsupported_api_for_model"},
		{"chat codex 5.2", "/chat/completions", chat("gpt-5.2-codex"), 400, "unsupported_api_for_model"},
		{"responses codex 5.2", "/responses", resp("gpt-5.2-codex"), 200, ""},
		{"messages without max_tokens", "/v1/messages", chat("claude-sonnet-4"), 400, "invalid_request_body"},
		{"count tokens is not served", "/v1/messages/count_tokens", chat("claude-sonnet-4"), 404, "not_found"},
		{"embeddings", "/embeddings", `{"model":"text-embedding-3-small","input":"x"}`, 200, ""},
		{"embeddings chat model", "/embeddings", `{"model":"gpt-4.1","input":"x"}`, 400, "unsupported_api_for_model"},
		{"embeddings bad input", "/embeddings", `{"model":"text-embedding-3-small","input":5}`, 400, "invalid_request_body"},
		{"vision without header", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}`, 400, "missing_vision_header"},
	}
	tok := e.exchange().Token
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do("POST", tt.path, apiHeader(tok), tt.body)
			if resp.StatusCode != tt.want {
				t.Fatalf("POST %s = %d %s; want %d", tt.path, resp.StatusCode, body, tt.want)
			}
			if tt.wantCode != "" && errorCode(t, body) != tt.wantCode {
				t.Errorf("POST %s error code = %q; want %q", tt.path, errorCode(t, body), tt.wantCode)
			}
			if tt.wantCode != "" && strings.HasPrefix(tt.path, "/v1/messages") && !strings.HasPrefix(string(body), `{"type":"error"`) {
				t.Errorf("Anthropic path error %s; want type error", body)
			}
		})
	}
	t.Run("vision with header", func(t *testing.T) {
		h := apiHeader(tok)
		h.Set("Copilot-Vision-Request", "true")
		resp, body := e.do("POST", "/chat/completions", h,
			`{"model":"gpt-4.1","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}`)
		if resp.StatusCode != 200 {
			t.Errorf("vision with Copilot-Vision-Request: %d %s; want 200", resp.StatusCode, body)
		}
	})
}

func TestResponsesAndMessagesBodies(t *testing.T) {
	e := newEnv(t, Config{})
	_, body := e.api("POST", "/responses", `{"model":"gpt-5-codex","input":[{"role":"user","content":[{"type":"input_text","text":"ping"}]}]}`)
	var r responseObject
	mustUnmarshal(t, body, &r)
	if r.Object != "response" || r.Status != "completed" || len(r.Output) != 1 ||
		(*r.Output[0].Content)[0].Type != "output_text" || (*r.Output[0].Content)[0].Text != "Sandbox reply to: ping" || r.Usage == nil {
		t.Errorf("responses answer %s: want a completed output_text echoing ping", body)
	}
	_, body = e.api("POST", "/v1/messages", `{"model":"claude-sonnet-4","max_tokens":50,"system":"s","messages":[{"role":"user","content":"pong"}]}`)
	var m anthropicMessage
	mustUnmarshal(t, body, &m)
	if m.Type != "message" || m.Role != "assistant" || m.Content[0].Text == nil || *m.Content[0].Text != "Sandbox reply to: pong" ||
		m.StopReason == nil || *m.StopReason != "end_turn" || m.Usage.InputTokens == 0 {
		t.Errorf("messages answer %s: want an assistant message echoing pong, end_turn, usage", body)
	}
}

func TestEmbeddingsDeterministic(t *testing.T) {
	e := newEnv(t, Config{})
	get := func(body string) [][]float32 {
		resp, b := e.api("POST", "/embeddings", body)
		if resp.StatusCode != 200 {
			t.Fatalf("embeddings: %d %s", resp.StatusCode, b)
		}
		var out struct {
			Object string      `json:"object"`
			Data   []embedding `json:"data"`
		}
		mustUnmarshal(t, b, &out)
		vs := make([][]float32, len(out.Data))
		for i, d := range out.Data {
			vs[i] = d.Embedding
		}
		return vs
	}
	a := get(`{"model":"text-embedding-3-small","input":["alpha","beta"],"dimensions":8}`)
	b := get(`{"model":"text-embedding-3-small","input":"alpha","dimensions":8}`)
	if len(a) != 2 || len(a[0]) != 8 || !slices.Equal(a[0], b[0]) || slices.Equal(a[0], a[1]) {
		t.Fatalf("embeddings %v, %v: want 8 dimensions, same for the same text, different otherwise", a, b)
	}
	var norm float64
	for _, x := range a[0] {
		norm += float64(x) * float64(x)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("|v|^2 = %v; want 1", norm)
	}
	if full := get(`{"model":"text-embedding-3-small","input":"x"}`); len(full[0]) != 1536 {
		t.Errorf("default dimensions = %d; want 1536", len(full[0]))
	}
}

func TestRequestsRecorded(t *testing.T) {
	e := newEnv(t, Config{RequestLogSize: 3})
	tok := e.exchange().Token
	for range 3 {
		e.do("GET", "/models", apiHeader(tok), "")
	}
	h := apiHeader(tok)
	h.Set("X-Request-Id", "last")
	e.do("POST", "/chat/completions", h, `{"model":"gpt-4.1","messages":[]}`)
	got := e.sb.Requests()
	if len(got) != 3 {
		t.Fatalf("Requests() has %d entries; want the log size 3", len(got))
	}
	last := got[2]
	if last.Method != "POST" || last.Path != "/chat/completions" || last.Status != 200 ||
		last.Header.Get("X-Request-Id") != "last" || last.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("last request = %+v; want the chat call with its headers", last)
	}
	if got[0].Path != "/models" || got[1].Path != "/models" {
		t.Errorf("older requests = %s, %s; want /models twice (oldest first)", got[0].Path, got[1].Path)
	}
	got[2].Header.Set("X-Request-Id", "changed")
	if e.sb.Requests()[2].Header.Get("X-Request-Id") != "last" {
		t.Errorf("Requests() shares header maps with the log")
	}
}

func TestSplitChunks(t *testing.T) {
	tests := []struct {
		text string
		n    int
		want []string
	}{
		{"a b c d", 2, []string{"a b", " c d"}},
		{"a b c", 3, []string{"a", " b", " c"}},
		{"a", 3, []string{"a", " more", " more"}},
		{"a b c d e", 1, []string{"a b c d e"}},
	}
	for _, tt := range tests {
		if got := splitChunks(tt.text, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("splitChunks(%q, %d) = %q; want %q", tt.text, tt.n, got, tt.want)
		}
	}
}
