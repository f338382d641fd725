package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestModelCatalogAgainstTheSandbox runs the catalog end to end in one
// process: the sandbox's /models (with supported_endpoints), client names
// resolved, the alias file reloaded, the listing in both shapes.
func TestModelCatalogAgainstTheSandbox(t *testing.T) {
	aliases := filepath.Join(t.TempDir(), "aliases")
	if err := os.WriteFile(aliases, []byte("# team aliases\nfast: gpt-5-mini\nbroken line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := startStack(t, stackOpts{proxy: func(c *Config) {
		c.ModelAliases = aliases
		c.ModelAliasesPoll = 20 * time.Millisecond
	}})
	anth := map[string]string{"Anthropic-Version": "2023-06-01"}

	resp, body := st.do("GET", "/v1/models", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/models = %d %s", resp.StatusCode, body)
	}
	var list struct {
		Data []struct {
			ID                 string   `json:"id"`
			SupportedEndpoints []string `json:"supported_endpoints"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	for _, want := range []string{"gpt-4.1", "claude-sonnet-4.5", "gpt-5.2-codex", "fast"} {
		if !slices.Contains(ids, want) {
			t.Errorf("listed %v; want %s among them", ids, want)
		}
	}
	var fetches []string
	for _, r := range st.sb.Requests() {
		if r.Path == "/models" {
			fetches = append(fetches, r.Header.Get("Openai-Intent"))
		}
	}
	if len(fetches) != 1 || fetches[0] != "model-access" {
		t.Errorf("sandbox /models calls with Openai-Intent %v; want one, model-access", fetches)
	}

	resp, body = st.do("GET", "/v1/models/claude-opus-4-1-20250805", "", anth)
	if resp.StatusCode != 200 || !strings.Contains(body, `"display_name":"Claude Opus 4.1"`) {
		t.Errorf("GET /v1/models/claude-opus-4-1-20250805 (Anthropic) = %d %s", resp.StatusCode, body)
	}

	// A dated Claude name reaches the sandbox as its Copilot id (the
	// sandbox refuses the dated one), an alias as its target.
	resp, body = st.do("POST", "/v1/messages", `{"model":"claude-sonnet-4-5-20250929","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`, anth)
	if resp.StatusCode != 200 || !strings.Contains(body, `"model":"claude-sonnet-4.5"`) {
		t.Errorf("dated Claude name = %d %s; want 200 from claude-sonnet-4.5", resp.StatusCode, body)
	}
	resp, body = st.do("POST", "/v1/chat/completions", `{"model":"fast","messages":[{"role":"user","content":"hello"}]}`, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"model":"gpt-5-mini"`) {
		t.Errorf("alias = %d %s; want 200 from gpt-5-mini", resp.StatusCode, body)
	}
	// A model that lacks the endpoint: translated to one it has (stage 5).
	resp, body = st.do("POST", "/v1/chat/completions", `{"model":"gpt-5.2-codex","messages":[{"role":"user","content":"hello"}]}`, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"object":"chat.completion"`) {
		t.Errorf("chat to a Responses-only model = %d %s; want 200, a chat completion", resp.StatusCode, body)
	} else if up := st.upstreamRequest(resp.Header.Get("X-Request-Id")); up.Path != "/responses" {
		t.Errorf("chat to a Responses-only model went upstream to %s; want /responses", up.Path)
	}

	// The alias file changes: the new alias is used without a restart.
	if err := os.WriteFile(aliases, []byte("fast: gpt-4.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body = st.do("POST", "/v1/chat/completions", `{"model":"fast","messages":[{"role":"user","content":"hello"}]}`, nil)
		if resp.StatusCode == 200 && strings.Contains(body, `"model":"gpt-4.1"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the alias file changed: %d %s; want gpt-4.1", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := waitMetrics(t, st.proxy, map[string]float64{
		`copilot_proxy_model_resolutions_total{rule="builtin"}`:               1,
		`copilot_proxy_model_routes_total{decision="unsupported"}`:            1,
		`copilot_proxy_model_catalog_refreshes_total{account="",result="ok"}`: 1,
		`copilot_proxy_model_alias_reloads_total{result="ok"}`:                1,
		`copilot_proxy_model_aliases`:                                         1,
		`copilot_proxy_model_alias_bad_lines`:                                 0,
	})
	if m.samples[`copilot_proxy_model_catalog_models{account=""}`] < 5 {
		t.Errorf("catalog models = %v; want the sandbox's", m.samples[`copilot_proxy_model_catalog_models{account=""}`])
	}
	if _, ok := m.samples[`copilot_proxy_model_catalog_age_seconds{account=""}`]; !ok {
		t.Error("no catalog age series")
	}
}
