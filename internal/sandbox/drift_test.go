package sandbox

import (
	"net/url"
	"strings"
	"testing"
)

func TestRetireAtRunTime(t *testing.T) {
	e := newEnv(t, Config{})
	gh := e.sb.GitHubToken().Reveal()
	tok := e.exchange().Token
	h := apiHeader(tok)
	chat := `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`
	if resp, b := e.do("POST", "/chat/completions", h, chat); resp.StatusCode != 200 {
		t.Fatalf("before retiring: %d %s", resp.StatusCode, b)
	}
	e.admin("POST", "retire", `{"editor_plugin_versions":["`+h.Get("Editor-Plugin-Version")+`"]}`, 200)
	resp, b := e.do("POST", "/chat/completions", h, chat)
	if resp.StatusCode != 466 || !strings.Contains(string(b), "client not supported") {
		t.Errorf("retired plugin version on the API: %d %s; want 466 client not supported", resp.StatusCode, b)
	}
	ex := ghHeader(gh)
	ex.Set("Editor-Plugin-Version", h.Get("Editor-Plugin-Version"))
	if resp, b := e.do("GET", "/copilot_internal/v2/token", ex, ""); resp.StatusCode != 466 {
		t.Errorf("retired plugin version on the exchange: %d %s; want 466", resp.StatusCode, b)
	}
	h2 := apiHeader(tok)
	h2.Set("Editor-Plugin-Version", "copilot-chat/9.0.0")
	if resp, b := e.do("POST", "/chat/completions", h2, chat); resp.StatusCode != 200 {
		t.Errorf("a newer plugin version: %d %s; want 200", resp.StatusCode, b)
	}
	e.admin("POST", "retire", `{"api_versions":["2099-01-01"]}`, 200)
	h2.Set("X-Github-Api-Version", "2099-01-01")
	if resp, b := e.do("POST", "/chat/completions", h2, chat); resp.StatusCode != 466 || !strings.Contains(string(b), "API version no longer supported") {
		t.Errorf("retired API version: %d %s", resp.StatusCode, b)
	}
	e.admin("POST", "retire", `{}`, 400)
	e.admin("DELETE", "retire", ``, 200)
	if resp, b := e.do("POST", "/chat/completions", h, chat); resp.StatusCode != 200 {
		t.Errorf("after unretiring: %d %s", resp.StatusCode, b)
	}
}

func TestUsageLimitHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	chat := `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`
	e.admin("POST", "accounts/"+DefaultAccount+"/usage-limits",
		`{"session":{"entitlement":100,"remaining":3,"reset_seconds":3600},"weekly":{"entitlement":100,"remaining":50,"reset_seconds":86400}}`, 200)
	resp, b := e.api("POST", "/chat/completions", chat)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	for name, rem := range map[string]string{"X-Usage-Ratelimit-Session": "3", "X-Usage-Ratelimit-Weekly": "50"} {
		v, err := url.ParseQuery(resp.Header.Get(name))
		if err != nil || v.Get("ent") != "100" || v.Get("rem") != rem || v.Get("rst") == "" || v.Get("ovPerm") != "false" {
			t.Errorf("%s = %q", name, resp.Header.Get(name))
		}
	}
	e.admin("POST", "accounts/"+DefaultAccount+"/usage-limits", `{"session":{"entitlement":100,"remaining":0,"reset_seconds":840}}`, 200)
	resp, b = e.api("POST", "/chat/completions", chat)
	if resp.StatusCode != 429 || !strings.Contains(string(b), "user_global_rate_limited") || !strings.Contains(string(b), "retry after 840 seconds") ||
		resp.Header.Get("Retry-After") != "" {
		t.Errorf("session used up: %d %s Retry-After %q; want 429 with the wait in the message only", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	e.admin("POST", "accounts/"+DefaultAccount+"/usage-limits", `{"session":{"entitlement":1,"remaining":2}}`, 400)
	e.admin("POST", "accounts/nobody/usage-limits", `{}`, 404)
}
