package forward

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/forward/inspect"
)

// countScans makes the handler count its body scans.
func countScans(h *Handler) *atomic.Int32 {
	var n atomic.Int32
	scan := h.scan
	h.scan = func(done <-chan struct{}, shape inspect.Shape, body []byte) (inspect.Result, error) {
		n.Add(1)
		return scan(done, shape, body)
	}
	return &n
}

// TestEachBodyScannedOnce: every stage (headers, model resolution and
// rewrite, translation, usage, count_tokens) works from one scan of the
// body. The scan is the package's only JSON walk of a request body (the
// walker is unexported in package inspect), so one call is one walk.
func TestEachBodyScannedOnce(t *testing.T) {
	e, _, _ := modelsEnv(t, "fast: gpt-4.1\n", 200)
	scans := countScans(e.handler)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	compact := `"messages":[{"role":"user","content":"hi"},{"role":"user","content":"Your task is to create a detailed summary of the conversation so far."}]`
	for i, tt := range []struct {
		path, body string
		// interaction, when set, is the X-Interaction-Type the upstream
		// must get: the compaction marker is found by the same scan.
		interaction string
	}{
		{"/v1/chat/completions", `{"model":"fast",` + msgs + `}`, ""},                                    // alias: rewritten
		{"/v1/chat/completions", `{"model":"gpt-4.1","stream":true,` + msgs + `}`, ""},                   // exact, streamed
		{"/v1/messages", `{"model":"claude-sonnet-4-5-20250929","max_tokens":8,` + msgs + `}`, ""},       // builtin
		{"/v1/responses", `{"model":"gpt-4.1","input":"hi"}`, ""},                                        // Responses, translated to Chat
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"x"}`, ""},                         // opaque
		{"/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5-20250929",` + msgs + `}`, ""},         // answered locally
		{"/v1/chat/completions", `{"model":"a","MODEL":"b",` + msgs + `}`, ""},                           // refused
		{"/v1/messages", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"x"}]}`, ""}, // another
		{"/v1/messages", `{"model":"claude-sonnet-4-5-20250929","max_tokens":8,` + compact + `}`, "conversation-compaction"},
		{"/v1/chat/completions", `{"model":"gpt-4.1",` + compact + `}`, "conversation-agent"}, // the marker counts on Messages only
	} {
		before := scans.Load()
		// The answer does not matter (the fake upstream's chat answer does
		// not translate to Responses); the scans do.
		e.do(t, "POST", tt.path, tt.body, nil)
		if n := scans.Load() - before; n != 1 {
			t.Errorf("request %d (%s): %d body scans; want 1", i, tt.path, n)
		}
		if tt.interaction == "" {
			continue
		}
		if got := e.up.requests(); len(got) == 0 || got[len(got)-1].header.Get("X-Interaction-Type") != tt.interaction {
			t.Errorf("request %d (%s): upstream X-Interaction-Type not %q", i, tt.path, tt.interaction)
		}
	}
}

// TestDuplicateKeysRefusedInClientDialect: a body naming model, messages,
// input or stream twice (in any case) gets 400 in the client's dialect
// and never reaches the upstream.
func TestDuplicateKeysRefusedInClientDialect(t *testing.T) {
	e := newEnv(t, nil, nil)
	for _, tt := range []struct {
		path, body string
		anthropic  bool
	}{
		{"/v1/chat/completions", `{"model":"gpt-4.1","Model":"claude-sonnet-4.5","messages":[]}`, false},
		{"/v1/chat/completions", `{"model":"gpt-4.1","messages":[],"MESSAGES":[]}`, false},
		{"/v1/chat/completions", `{"model":"gpt-4.1","stream":false,"messages":[],"stream":true}`, false},
		{"/v1/responses", `{"model":"gpt-4.1","input":"a","Input":"b"}`, false},
		{"/v1/responses", `{"mod\u0065l":"gpt-4.1","model":"o3","input":"a"}`, false},
		{"/v1/messages", `{"model":"claude-sonnet-4.5","max_tokens":8,"messages":[],"model":"x"}`, true},
		{"/v1/messages", `{"model":"claude-sonnet-4.5","STREAM":true,"stream":false,"messages":[]}`, true},
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"a","input":"b"}`, false},
	} {
		before := len(e.up.requests())
		resp, body := e.do(t, "POST", tt.path, tt.body, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s %s = %d %s; want 400", tt.path, tt.body, resp.StatusCode, body)
			continue
		}
		var b struct {
			Type  string `json:"type"`
			Error struct {
				Type, Message string
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &b); err != nil || b.Error.Type != "invalid_request_error" ||
			(b.Type == "error") != tt.anthropic || !strings.Contains(b.Error.Message, "more than once") {
			t.Errorf("POST %s: error body %s; want the duplicate named in the %s dialect", tt.path, body,
				map[bool]string{true: "Anthropic", false: "OpenAI"}[tt.anthropic])
		}
		if n := len(e.up.requests()) - before; n != 0 {
			t.Errorf("POST %s: the upstream got %d requests; want none", tt.path, n)
		}
	}
}
