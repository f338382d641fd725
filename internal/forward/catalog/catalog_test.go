package catalog

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

// copilotModels is shaped like the Copilot API's GET /models in 2026,
// fields it adds over time included.
const copilotModels = `{"data":[
 {"billing":{"is_premium":true,"multiplier":1,"restricted_to":["pro","business"]},
  "capabilities":{"family":"claude-sonnet-4.5","limits":{"max_context_window_tokens":200000,"max_output_tokens":16000,"max_prompt_tokens":128000,"vision":{"max_prompt_images":5}},
  "object":"model_capabilities","supports":{"streaming":true,"tool_calls":true,"parallel_tool_calls":true,"vision":true,"max_thinking_budget":32000},"tokenizer":"o200k_base","type":"chat"},
  "id":"claude-sonnet-4.5","is_chat_default":false,"model_picker_category":"versatile","model_picker_enabled":true,"name":"Claude Sonnet 4.5","object":"model",
  "policy":{"state":"enabled","terms":"Enable access."},"preview":false,"supported_endpoints":["/v1/messages"],"vendor":"Anthropic","version":"claude-sonnet-4.5"},
 {"capabilities":{"family":"gpt-5.2-codex","supports":{"streaming":true}},"id":"gpt-5.2-codex","name":"GPT-5.2-Codex","preview":true,"supported_endpoints":["/responses"],"vendor":"OpenAI"},
 {"id":"gpt-4.1","name":"GPT-4.1","supported_endpoints":["/chat/completions"],"capabilities":{"type":"chat"}},
 {"id":"text-embedding-3-small","capabilities":{"type":"embeddings","limits":{"max_inputs":512}}},
 {"id":"gpt-4.1","name":"duplicate, dropped"},
 {"name":"no id, skipped"},
 {"id":5},
 "not an object",
 {"id":"odd-types","capabilities":"not an object"}
],"object":"list"}`

func TestParse(t *testing.T) {
	cat, err := Parse([]byte(copilotModels), t0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range cat.Models {
		ids = append(ids, m.ID)
	}
	if diff := cmp.Diff([]string{"claude-sonnet-4.5", "gpt-5.2-codex", "gpt-4.1", "text-embedding-3-small"}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	m := cat.Lookup("claude-sonnet-4.5")
	want := &Model{
		ID: "claude-sonnet-4.5", Name: "Claude Sonnet 4.5", Vendor: "Anthropic", Version: "claude-sonnet-4.5",
		Family: "claude-sonnet-4.5", Type: "chat", Endpoints: []string{"/v1/messages"},
		Supports:    Supports{Streaming: true, ToolCalls: true, ParallelToolCalls: true, Vision: true},
		Limits:      Limits{MaxContextWindowTokens: 200000, MaxOutputTokens: 16000, MaxPromptTokens: 128000},
		PolicyState: "enabled", Billing: &Billing{IsPremium: true, Multiplier: 1}, FirstSeen: t0,
	}
	if diff := cmp.Diff(want, m, cmpIgnoreRaw); diff != "" {
		t.Errorf("claude-sonnet-4.5 (-want +got):\n%s", diff)
	}
	// Unknown fields survive in Raw, byte for byte.
	for _, s := range []string{`"restricted_to":["pro","business"]`, `"max_thinking_budget":32000`, `"model_picker_category":"versatile"`} {
		if !strings.Contains(string(m.Raw), s) {
			t.Errorf("Raw lacks %s: %s", s, m.Raw)
		}
	}
	if !json.Valid(m.Raw) {
		t.Errorf("Raw is not JSON: %s", m.Raw)
	}
	if g := cat.Lookup("gpt-4.1").Name; g != "GPT-4.1" {
		t.Errorf("gpt-4.1 name = %q; want the first entry's", g)
	}
	if e := cat.Lookup("text-embedding-3-small"); e.Name != "text-embedding-3-small" || !e.Serves("/embeddings") || e.Limits.MaxInputs != 512 {
		t.Errorf("embedding model = %+v; want name from id, every endpoint assumed, max_inputs", e)
	}
	if cat.Lookup("gpt-5.2-codex").Serves("/chat/completions") || !cat.Lookup("gpt-5.2-codex").Serves("/responses") {
		t.Error("gpt-5.2-codex: want /responses only")
	}
}

var cmpIgnoreRaw = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Raw" }, cmp.Ignore())

func TestParseRejects(t *testing.T) {
	for _, body := range []string{``, `[]`, `{}`, `{"data":null}`, `{"data":{}}`, `{"data":[`, `null`, strings.Repeat(" ", MaxBodyBytes+1)} {
		if _, err := Parse([]byte(body), t0); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.20q) = %v; want ErrMalformed", body, err)
		}
	}
}

func TestParseBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := range MaxModels + 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":"m-` + strconv.Itoa(i) + `"}`)
	}
	b.WriteString(`,{"id":"` + strings.Repeat("y", MaxIDLen+1) + `"}]}`)
	cat, err := Parse([]byte(b.String()), t0)
	if err != nil {
		t.Fatal(err)
	}
	if cat.Len() != MaxModels {
		t.Errorf("Len = %d; want %d (the bound)", cat.Len(), MaxModels)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(copilotModels))
	f.Add([]byte(`{"data":[]}`))
	f.Add([]byte(`{"data":[{"id":"a","supported_endpoints":null,"billing":[]}]}`))
	f.Add([]byte(`{"data":[{"id":"\u0061","capabilities":{"limits":{"max_output_tokens":1e400}}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		cat, err := Parse(body, t0)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if cat.Len() > MaxModels {
			t.Fatalf("%d models; bound %d", cat.Len(), MaxModels)
		}
		seen := map[string]bool{}
		for _, m := range cat.Models {
			if m.ID == "" || len(m.ID) > MaxIDLen || seen[m.ID] || cat.Lookup(m.ID) != m {
				t.Fatalf("model %q: empty, too long, duplicate or not found", m.ID)
			}
			seen[m.ID] = true
			if !json.Valid(m.Raw) {
				t.Fatalf("Raw of %q is not JSON: %s", m.ID, m.Raw)
			}
		}
	})
}
