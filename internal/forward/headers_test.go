package forward

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	syncbuf "github.com/copilot-broker/copilot-broker/internal/testutil"
)

// claudeCodeHeaders are what Claude Code 2.1.332 sends besides its key
// (docs/protocol.md section 7).
var claudeCodeHeaders = map[string]string{
	"Anthropic-Version": "2023-06-01",
	"Anthropic-Beta": "claude-code-20250219, interleaved-thinking-2025-05-14, context-management-2025-06-27, per-turn-control-2026-07-01, " +
		"mid-conversation-tool-changes-2026-07-01, thinking-token-count-2026-05-13, advanced-tool-use-2025-11-20, effort-2025-11-24, context-1m-2025-08-07",
	"X-App":                                     "cli",
	"X-Claude-Code-Session-Id":                  "6f1c0a2e-1111-4222-8333-444455556666",
	"X-Stainless-Lang":                          "js",
	"X-Stainless-Package-Version":               "0.70.0",
	"X-Stainless-Os":                            "Linux",
	"X-Stainless-Retry-Count":                   "0",
	"Anthropic-Dangerous-Direct-Browser-Access": "true",
	"Accept":           "application/json",
	"X-Interaction-Id": "ia-1",
}

func TestHeaderAllowList(t *testing.T) {
	var logs syncbuf.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	e := newEnv(t, nil, func(c *Config) {
		c.Logger = logger
		c.Metrics = NewMetrics(reg)
		c.ForwardHeaders = []string{"x-sandbox-chunks"}
	})
	hdr := map[string]string{"Authorization": "", "X-Api-Key": testKey, "X-Sandbox-Chunks": "3"}
	for k, v := range claudeCodeHeaders {
		hdr[k] = v
	}
	body := `{"model":"claude-sonnet-4","messages":[{"role":"user","content":"hi"}]}`
	for range 2 {
		if resp, b := e.do(t, "POST", "/v1/messages?beta=true", body, hdr); resp.StatusCode != 200 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
	}
	if resp, b := e.do(t, "POST", "/v1/chat/completions", body, hdr); resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	got := e.up.requests()
	msg, chat := got[0], got[2]
	if msg.query != "beta=true" {
		t.Errorf("query = %q; want beta=true kept", msg.query)
	}
	for k, want := range map[string]string{
		"Anthropic-Version": "2023-06-01",
		"Anthropic-Beta":    "interleaved-thinking-2025-05-14, context-management-2025-06-27, advanced-tool-use-2025-11-20",
		"Accept":            "application/json",
		"X-Interaction-Id":  "ia-1",
		"X-Sandbox-Chunks":  "3",
		"Openai-Intent":     "messages-proxy",
	} {
		if g := msg.header.Get(k); g != want {
			t.Errorf("/v1/messages upstream %s = %q; want %q", k, g, want)
		}
	}
	for k := range msg.header {
		if strings.HasPrefix(k, "X-Stainless") || k == "X-App" || k == "X-Claude-Code-Session-Id" || k == "Anthropic-Dangerous-Direct-Browser-Access" || k == "X-Api-Key" {
			t.Errorf("/v1/messages upstream carries client header %s", k)
		}
	}
	for _, k := range []string{"Anthropic-Version", "Anthropic-Beta"} {
		if v, ok := chat.header[k]; ok {
			t.Errorf("/chat/completions upstream %s = %q; want Anthropic headers only on Anthropic endpoints", k, v)
		}
	}
	if g := chat.header.Get("Openai-Intent"); g != "conversation-agent" {
		t.Errorf("/chat/completions Openai-Intent = %q", g)
	}

	// Dropped betas are counted by name (twice: two requests) and logged
	// once each; dropped headers are logged once each at debug.
	for _, b := range []string{"claude-code-20250219", "per-turn-control-2026-07-01", "context-1m-2025-08-07", "effort-2025-11-24"} {
		if n := counterValue(e.handler.metrics.betasDropped.WithLabelValues(b)); n != 2 {
			t.Errorf("betas dropped {beta=%q} = %v; want 2", b, n)
		}
		if n := strings.Count(logs.String(), "beta="+b); n != 1 {
			t.Errorf("beta %s logged %d times; want once", b, n)
		}
	}
	for _, h := range []string{"X-Stainless-Lang", "X-App", "X-Claude-Code-Session-Id", "Anthropic-Dangerous-Direct-Browser-Access"} {
		if n := strings.Count(logs.String(), "header="+h); n != 1 {
			t.Errorf("dropped header %s logged %d times; want once", h, n)
		}
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("a client key reached the log")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
