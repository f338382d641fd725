package forward

import (
	"fmt"
	"log/slog"
	"net/http"
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

func TestBetaFilter(t *testing.T) {
	tests := []struct {
		patterns []string
		in       []string
		want     string
	}{
		{DefaultAnthropicBetas, []string{"interleaved-thinking-2025-05-14"}, "interleaved-thinking-2025-05-14"},
		{DefaultAnthropicBetas, []string{"context-1m-2025-08-07"}, ""},
		{DefaultAnthropicBetas, []string{" Context-Management-2025-06-27 ,,", "advanced-tool-use-2025-11-20,x"}, "context-management-2025-06-27, advanced-tool-use-2025-11-20"},
		{[]string{"context-1m-2025-08-07", "effort-*"}, []string{"context-1m-2025-08-07, effort-2025-11-24, interleaved-thinking-2025-05-14"}, "context-1m-2025-08-07, effort-2025-11-24"},
		{[]string{}, []string{"interleaved-thinking-2025-05-14"}, ""},
	}
	for _, tt := range tests {
		f := newBetaFilter(tt.patterns, NewMetrics(nil).betasDropped, slog.New(slog.DiscardHandler))
		if got := f.filter(tt.in); got != tt.want {
			t.Errorf("patterns %q: filter(%q) = %q; want %q", tt.patterns, tt.in, got, tt.want)
		}
	}
}

func TestBetaLabelsBounded(t *testing.T) {
	m := NewMetrics(nil)
	f := newBetaFilter(DefaultAnthropicBetas, m.betasDropped, slog.New(slog.DiscardHandler))
	for i := range maxBetaLabels + 50 {
		f.filter([]string{fmt.Sprintf("made-up-%d-2026-01-01", i)})
	}
	f.filter([]string{"Bad Name!{}", strings.Repeat("a", 65)})
	if n := labelCount(m.betasDropped); n != maxBetaLabels+1 {
		t.Errorf("%d label values; want %d names and other", n, maxBetaLabels+1)
	}
	if n := counterValue(m.betasDropped.WithLabelValues("other")); n != 52 {
		t.Errorf("other = %v; want 52 (50 past the cap, 2 malformed)", n)
	}
}

func TestDroppedHeaderNamesBounded(t *testing.T) {
	p := newHeaderPolicy(nil, newBetaFilter(nil, NewMetrics(nil).betasDropped, slog.New(slog.DiscardHandler)),
		slog.New(slog.NewTextHandler(&syncbuf.SyncBuffer{}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	in := http.Header{}
	for i := range 1000 {
		in.Set(fmt.Sprintf("X-Junk-%d", i), "v")
	}
	if out := p.filter("/chat/completions", in); len(out) != 0 {
		t.Errorf("forwarded %v", out)
	}
	p.dropped.mu.Lock()
	n := len(p.dropped.m)
	p.dropped.mu.Unlock()
	if n > 256 {
		t.Errorf("remembered %d dropped names; want at most 256", n)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func labelCount(v *prometheus.CounterVec) int {
	ch := make(chan prometheus.Metric, 1024)
	v.Collect(ch)
	close(ch)
	return len(ch)
}
