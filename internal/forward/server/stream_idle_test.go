package server

import (
	"strings"
	"testing"
	"time"
)

// An upstream stream that goes silent is ended after the stream idle
// timeout with an error event in the client's dialect, and counted; a
// stream that keeps sending is not cut.
func TestStalledUpstreamStreamEndsWithErrorEvent(t *testing.T) {
	const idle = 300 * time.Millisecond
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.StreamIdleTimeout = idle }})
	stall := map[string]string{"X-Sandbox-Chunks": "3", "X-Sandbox-Chunk-Delay-Ms": "30000"}
	tests := []struct {
		path, body, want string
	}{
		{"/v1/chat/completions", `{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			`data: {"error":{"message":"the Copilot API sent nothing for 300ms; the proxy ended the stream","type":"server_error","param":null,"code":"stream_idle_timeout"}}`},
		{"/v1/messages", `{"model":"claude-sonnet-4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"the Copilot API sent nothing for 300ms; the proxy ended the stream\"}}"},
		{"/v1/responses", `{"model":"gpt-5-mini","stream":true,"input":"hi"}`,
			"event: error\ndata: {\"type\":\"error\",\"code\":\"stream_idle_timeout\""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			start := time.Now()
			resp, body := st.do("POST", tt.path, tt.body, stall)
			took := time.Since(start)
			if resp.StatusCode != 200 || !strings.Contains(body, tt.want) || !strings.HasSuffix(body, "\n\n") {
				t.Errorf("stalled stream on %s = %d, body:\n%s\nwant 200 ending with %q", tt.path, resp.StatusCode, body, tt.want)
			}
			// The stall is 30 s a chunk: ending well before it shows the idle
			// timeout ended the stream, not the upstream.
			if took > 20*time.Second {
				t.Errorf("stalled stream took %s; want it ended by the %s idle timeout", took, idle)
			}
			t.Logf("%s: stalled stream ended after %s", tt.path, took.Round(time.Millisecond))
		})
	}
	if got := counter(t, st.proxy, "copilot_proxy_stream_idle_timeouts_total", "/v1/chat/completions"); got != 1 {
		t.Errorf("copilot_proxy_stream_idle_timeouts_total{route=/v1/chat/completions} = %v; want 1", got)
	}

	// Chunks 100 ms apart, under the idle timeout: the stream completes.
	resp, body := st.do("POST", "/v1/chat/completions", tests[0].body, map[string]string{"X-Sandbox-Chunks": "5", "X-Sandbox-Chunk-Delay-Ms": "100"})
	if resp.StatusCode != 200 || strings.Contains(body, "stream_idle_timeout") || !strings.Contains(body, "data: [DONE]") {
		t.Errorf("stream with chunks under the idle timeout = %d %s; want it complete", resp.StatusCode, body)
	}
}
