package headers

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	syncbuf "github.com/copilot-broker/copilot-broker/internal/testutil"
)

func newDropped() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total"}, []string{"beta"})
}

func TestBetaFilter(t *testing.T) {
	tests := []struct {
		patterns []string
		in       []string
		want     string
	}{
		{DefaultAnthropicBetas(), []string{"interleaved-thinking-2025-05-14"}, "interleaved-thinking-2025-05-14"},
		{DefaultAnthropicBetas(), []string{"context-1m-2025-08-07"}, ""},
		{DefaultAnthropicBetas(), []string{" Context-Management-2025-06-27 ,,", "advanced-tool-use-2025-11-20,x"}, "context-management-2025-06-27, advanced-tool-use-2025-11-20"},
		{[]string{"context-1m-2025-08-07", "effort-*"}, []string{"context-1m-2025-08-07, effort-2025-11-24, interleaved-thinking-2025-05-14"}, "context-1m-2025-08-07, effort-2025-11-24"},
		{[]string{}, []string{"interleaved-thinking-2025-05-14"}, ""},
	}
	for _, tt := range tests {
		f := newBetaFilter(tt.patterns, newDropped(), slog.New(slog.DiscardHandler))
		if got := f.filter(tt.in); got != tt.want {
			t.Errorf("patterns %q: filter(%q) = %q; want %q", tt.patterns, tt.in, got, tt.want)
		}
	}
}

func TestBetaLabelsBounded(t *testing.T) {
	m := newDropped()
	f := newBetaFilter(DefaultAnthropicBetas(), m, slog.New(slog.DiscardHandler))
	for i := range maxBetaLabels + 50 {
		f.filter([]string{fmt.Sprintf("made-up-%d-2026-01-01", i)})
	}
	f.filter([]string{"Bad Name!{}", strings.Repeat("a", 65)})
	if n := promtest.CollectAndCount(m); n != maxBetaLabels+1 {
		t.Errorf("%d label values; want %d names and other", n, maxBetaLabels+1)
	}
	if n := promtest.ToFloat64(m.WithLabelValues("other")); n != 52 {
		t.Errorf("other = %v; want 52 (50 past the cap, 2 malformed)", n)
	}
}

func TestDroppedHeaderNamesBounded(t *testing.T) {
	p := newPolicy(nil, newBetaFilter(nil, newDropped(), slog.New(slog.DiscardHandler)),
		slog.New(slog.NewTextHandler(&syncbuf.SyncBuffer{}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	in := http.Header{}
	for i := range 1000 {
		in.Set(fmt.Sprintf("X-Junk-%d", i), "v")
	}
	if out := p.filter("/chat/completions", in); len(out) != 0 {
		t.Errorf("forwarded %v", out)
	}
	if n := p.dropped.len(); n > 256 {
		t.Errorf("remembered %d dropped names; want at most 256", n)
	}
}

func TestIntentsOf(t *testing.T) {
	in := Intents{Chat: "c", Messages: "m"}.WithDefaults()
	for _, tt := range []struct{ target, want string }{
		{"/chat/completions", "c"},
		{"/responses", "responses-proxy"},
		{"/v1/messages", "m"},
		{"/v1/messages/count_tokens", "m"},
		{"/models", "model-access"},
		{"/embeddings", "conversation-panel"},
		{"/something/else", "c"},
	} {
		if got := in.Of(tt.target); got != tt.want {
			t.Errorf("Of(%q) = %q; want %q", tt.target, got, tt.want)
		}
	}
}

func TestInteractionType(t *testing.T) {
	for _, tt := range []struct {
		client     string
		compaction bool
		want       string
	}{
		{"", false, ""},
		{"", true, "conversation-compaction"},
		{"conversation-subagent", true, "conversation-subagent"},
		{"conversation-background", false, "conversation-background"},
		{"made-up", false, ""},
		{"made-up", true, "conversation-compaction"},
	} {
		in := http.Header{}
		if tt.client != "" {
			in.Set("X-Interaction-Type", tt.client)
		}
		if got := InteractionType(in, tt.compaction); got != tt.want {
			t.Errorf("InteractionType(%q, %v) = %q; want %q", tt.client, tt.compaction, got, tt.want)
		}
	}
}

// TestUpstream: the headers a target gets from the client's headers and
// the facts: the intent per endpoint, X-Interaction-Type, the request id
// twice, X-Initiator only with a body, vision only when seen.
func TestUpstream(t *testing.T) {
	b := New(Config{})
	client := http.Header{
		"Accept": {"application/json"}, "Anthropic-Version": {"2023-06-01"},
		"X-Stainless-Lang": {"js"}, "Authorization": {"Bearer k"},
	}
	for _, tt := range []struct {
		name    string
		target  string
		hasBody bool
		facts   Facts
		want    map[string]string // "" means absent
	}{
		{"chat agent", "/chat/completions", true, Facts{RequestID: "r1", Agent: true},
			map[string]string{"Openai-Intent": "conversation-agent", "X-Interaction-Type": "conversation-agent", "X-Initiator": "agent",
				"X-Request-Id": "r1", "X-Agent-Task-Id": "r1", "Accept": "application/json", "Anthropic-Version": "", "X-Stainless-Lang": "",
				"Authorization": "", "Copilot-Vision-Request": ""}},
		{"messages user vision", "/v1/messages", true, Facts{RequestID: "r2", Vision: true},
			map[string]string{"Openai-Intent": "messages-proxy", "X-Interaction-Type": "messages-proxy", "X-Initiator": "user",
				"Anthropic-Version": "2023-06-01", "Copilot-Vision-Request": "true"}},
		{"compaction", "/v1/messages", true, Facts{RequestID: "r3", Agent: true, Interaction: "conversation-compaction"},
			map[string]string{"Openai-Intent": "messages-proxy", "X-Interaction-Type": "conversation-compaction"}},
		{"models: no body", "/models", false, Facts{RequestID: "r4", Agent: true},
			map[string]string{"Openai-Intent": "model-access", "X-Initiator": ""}},
	} {
		got := b.Upstream(tt.target, tt.hasBody, client, tt.facts)
		for k, want := range tt.want {
			if g := got.Get(k); g != want {
				t.Errorf("%s: Upstream(%s) %s = %q; want %q", tt.name, tt.target, k, g, want)
			}
		}
		if got.Get("Editor-Version") == "" || got.Get("Copilot-Integration-Id") == "" {
			t.Errorf("%s: no identity headers in %v", tt.name, got)
		}
	}
}
