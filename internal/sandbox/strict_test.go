package sandbox

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestStrictClientHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	body := `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name       string
		set        map[string]string
		wantStatus int
		wantCode   string
	}{
		{"current identity", nil, 200, ""},
		{"malformed Editor-Version", map[string]string{"Editor-Version": "vscode"}, 400, "invalid_header"},
		{"Editor-Version without a name", map[string]string{"Editor-Version": "1.111.0"}, 400, "invalid_header"},
		{"missing Editor-Version", map[string]string{"Editor-Version": ""}, 400, "missing_header"},
		{"plugin below the minimum", map[string]string{"Editor-Plugin-Version": "copilot-chat/0.26.7"}, 466, "client_not_supported"},
		{"plugin at the minimum", map[string]string{"Editor-Plugin-Version": "copilot-chat/0.30.0"}, 200, ""},
		{"malformed plugin version", map[string]string{"Editor-Plugin-Version": "copilot-chat"}, 400, "invalid_header"},
	}
	for _, tt := range tests {
		h := apiHeader(tok)
		for k, v := range tt.set {
			if v == "" {
				h.Del(k)
			} else {
				h.Set(k, v)
			}
		}
		resp, b := e.do("POST", "/chat/completions", h, body)
		if resp.StatusCode != tt.wantStatus || (tt.wantCode != "" && errorCode(t, b) != tt.wantCode) {
			t.Errorf("%s: %d %s; want %d %s", tt.name, resp.StatusCode, b, tt.wantStatus, tt.wantCode)
		}
	}

	// The minimum is configurable.
	e2 := newEnv(t, Config{MinPluginVersion: "0.0.0"})
	h := apiHeader(e2.exchange().Token)
	h.Set("Editor-Plugin-Version", "copilot-chat/0.1.0")
	if resp, b := e2.do("POST", "/chat/completions", h, body); resp.StatusCode != 200 {
		t.Errorf("MinPluginVersion 0.0.0: %d %s", resp.StatusCode, b)
	}
}

func TestStrictBetas(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	body := `{"model":"claude-sonnet-4","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	send := func(betas string) (*http.Response, []byte) {
		h := apiHeader(tok)
		h.Set("Anthropic-Beta", betas)
		return e.do("POST", "/v1/messages", h, body)
	}
	if resp, b := send("interleaved-thinking-2025-05-14, context-management-2025-06-27,advanced-tool-use-2025-11-20"); resp.StatusCode != 200 {
		t.Errorf("allowed betas: %d %s", resp.StatusCode, b)
	}
	resp, b := send("interleaved-thinking-2025-05-14, context-1m-2025-08-07, claude-code-20250219")
	if resp.StatusCode != 400 || !strings.Contains(string(b), "unsupported beta header(s): context-1m-2025-08-07, claude-code-20250219") {
		t.Errorf("unknown betas: %d %s; want 400 unsupported beta header(s)", resp.StatusCode, b)
	}
	e2 := newEnv(t, Config{Betas: []string{"context-1m-*"}})
	h := apiHeader(e2.exchange().Token)
	h.Set("Anthropic-Beta", "context-1m-2025-08-07")
	if resp, b := e2.do("POST", "/v1/messages", h, body); resp.StatusCode != 200 {
		t.Errorf("configured betas: %d %s", resp.StatusCode, b)
	}
}

// TestVisionHeaderDemandOnEveryEndpoint: images need Copilot-Vision-Request
// on /v1/messages and /responses too (docs/protocol.md section 8, which
// corrects section 4), and /responses refuses an image detail other than
// low or high.
func TestVisionHeaderDemandOnEveryEndpoint(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	img := "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
	for path, body := range map[string]string{
		"/v1/messages": `{"model":"claude-sonnet-4","max_tokens":10,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + img + `"}},{"type":"text","text":"what is it?"}]}]}`,
		"/responses":   `{"model":"gpt-5-mini","input":[{"role":"user","content":[{"type":"input_image","detail":"high","image_url":"data:image/png;base64,` + img + `"},{"type":"input_text","text":"what is it?"}]}]}`,
	} {
		h := apiHeader(tok)
		h.Del("Copilot-Vision-Request")
		if resp, b := e.do("POST", path, h, body); resp.StatusCode != 400 || !strings.Contains(string(b), "missing required Copilot-Vision-Request header for vision requests") {
			t.Errorf("%s with an image and no Copilot-Vision-Request: %d %s; want the API's 400", path, resp.StatusCode, b)
		}
		h.Set("Copilot-Vision-Request", "true")
		if resp, b := e.do("POST", path, h, body); resp.StatusCode != 200 {
			t.Errorf("%s with an image and Copilot-Vision-Request: %d %s; want 200", path, resp.StatusCode, b)
		}
	}
	h := apiHeader(tok)
	h.Set("Copilot-Vision-Request", "true")
	body := `{"model":"gpt-5-mini","input":[{"role":"user","content":[{"type":"input_image","detail":"auto","image_url":"data:image/png;base64,` + img + `"}]}]}`
	if resp, b := e.do("POST", "/responses", h, body); resp.StatusCode != 400 || !strings.Contains(string(b), "detail") {
		t.Errorf("/responses with detail auto: %d %s; want 400", resp.StatusCode, b)
	}
}

func TestQuotaSnapshotHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	resp, b := e.api("POST", "/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	for _, name := range []string{"x-quota-snapshot-chat", "x-quota-snapshot-premium_models", "x-quota-snapshot-premium_interactions"} {
		v, err := url.ParseQuery(resp.Header.Get(name))
		if err != nil || v.Get("ent") == "" || v.Get("rem") == "" || v.Get("rst") == "" || v.Get("ov") == "" || v.Get("ovPerm") == "" {
			t.Errorf("%s = %q; want ent, rem, rst, ov, ovPerm", name, resp.Header.Get(name))
		}
	}
	v, _ := url.ParseQuery(resp.Header.Get("x-quota-snapshot-premium_interactions"))
	if v.Get("ent") != "300" || v.Get("rem") != "299" || v.Get("ovPerm") != "true" {
		t.Errorf("premium snapshot %v after one premium call; want ent=300 rem=299, overage permitted (not enforced)", v)
	}
}

func TestEveryModelHasSupportedEndpoints(t *testing.T) {
	e := newEnv(t, Config{})
	_, b := e.api("GET", "/models", "")
	var list struct {
		Data []map[string]any `json:"data"`
	}
	mustUnmarshal(t, b, &list)
	if len(list.Data) == 0 {
		t.Fatal("no models")
	}
	for _, m := range list.Data {
		eps, ok := m["supported_endpoints"].([]any)
		if !ok || len(eps) == 0 {
			t.Errorf("model %v: supported_endpoints = %v; want a non-empty list", m["id"], m["supported_endpoints"])
		}
	}
}
