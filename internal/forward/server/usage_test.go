package server

import (
	"fmt"
	"testing"
)

// TestUsageFromTheSandbox reads token usage from the sandbox's answers in
// the three dialects, streamed and not, as /metrics reports it.
func TestUsageFromTheSandbox(t *testing.T) {
	st := startStack(t, stackOpts{})
	tests := []struct {
		name, path, model, body string
	}{
		{"chat", "/v1/chat/completions", "gpt-4.1", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hello"}]}`},
		{"chat stream", "/v1/chat/completions", "gpt-4.1", `{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}`},
		{"responses", "/v1/responses", "gpt-5.2-codex", `{"model":"gpt-5.2-codex","input":"hello"}`},
		{"responses stream", "/v1/responses", "gpt-5.2-codex", `{"model":"gpt-5.2-codex","stream":true,"input":"hello"}`},
		{"messages", "/v1/messages", "claude-sonnet-4.5", `{"model":"claude-sonnet-4.5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`},
		{"messages stream", "/v1/messages", "claude-sonnet-4.5", `{"model":"claude-sonnet-4.5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hello"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := scrape(t, st.proxy)
			resp, body := st.do("POST", tt.path, tt.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("POST %s = %d %s", tt.path, resp.StatusCode, body)
			}
			series := func(name, extra string) string {
				return fmt.Sprintf(`%s{account="",key="alice",model=%q%s}`, name, tt.model, extra)
			}
			reqs := series("copilot_proxy_usage_requests_total", "")
			m := waitMetrics(t, st.proxy, map[string]float64{reqs: before.samples[reqs] + 1})
			for _, typ := range []string{"input", "output"} {
				s := series("copilot_proxy_usage_tokens_total", fmt.Sprintf(",type=%q", typ))
				if got := m.samples[s] - before.samples[s]; got <= 0 {
					t.Errorf("%s grew by %v; want the answer's %s tokens", s, got, typ)
				}
			}
			if s := series("copilot_proxy_usage_unreported_total", ""); m.samples[s] != before.samples[s] {
				t.Errorf("%s grew; want the usage found", s)
			}
			if s := series("copilot_proxy_usage_premium_requests_total", ""); m.samples[s] != before.samples[s]+1 {
				t.Errorf("%s = %v; want one more (a user turn)", s, m.samples[s])
			}
		})
	}
}
