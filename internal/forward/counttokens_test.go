package forward

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCountTokensLocal(t *testing.T) {
	e := newEnv(t, nil, nil)
	body := `{"model":"claude-opus-5-5","system":"You are Claude Code.","messages":[{"role":"user","content":"Count the tokens of this sentence, please."}],` +
		`"tools":[{"name":"Bash","description":"Run a command","input_schema":{"type":"object","properties":{"command":{"type":"string"}}}}]}`
	resp, b := e.do(t, "POST", "/v1/messages/count_tokens?beta=true", body, map[string]string{"Authorization": "", "X-Api-Key": testKey})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	var got map[string]int
	if err := json.Unmarshal([]byte(b), &got); err != nil || len(got) != 1 || got["input_tokens"] < 360 || got["input_tokens"] > 420 {
		t.Errorf("answer %s; want {\"input_tokens\": N} with N about 380", b)
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("%d upstream requests; want none", n)
	}
	if resp.Header.Get("Content-Type") != "application/json" || !uuidV4.MatchString(resp.Header.Get("X-Request-Id")) {
		t.Errorf("headers %v", resp.Header)
	}

	// No token needed; a bad body is a 400 in Anthropic's shape.
	e.src.mu.Lock()
	e.src.tok, e.src.err = nil, errors.New("broker away")
	e.src.mu.Unlock()
	if resp, b := e.do(t, "POST", "/v1/messages/count_tokens", body, nil); resp.StatusCode != 200 {
		t.Errorf("without a token: %d %s; want 200", resp.StatusCode, b)
	}
	resp, b = e.do(t, "POST", "/v1/messages/count_tokens", `{"messages":[]}`, nil)
	if resp.StatusCode != 400 {
		t.Errorf("empty messages: %d; want 400", resp.StatusCode)
	}
	checkDialect(t, b, true, "invalid_request_error")
	resp, b = e.do(t, "POST", "/v1/messages/count_tokens", body, map[string]string{"Authorization": "Bearer wrong-key-0123456789"})
	if resp.StatusCode != 401 {
		t.Errorf("bad key: %d; want 401", resp.StatusCode)
	}
	checkDialect(t, b, true, "authentication_error")
}

func TestCountTokensUpstream(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.CountTokens = CountTokensUpstream })
	resp, b := e.do(t, "POST", "/v1/messages/count_tokens", `{"messages":[{"role":"user","content":"hi"}]}`, nil)
	if resp.StatusCode != 200 || b != `{"ok":true}` {
		t.Fatalf("%d %s; want the upstream's answer", resp.StatusCode, b)
	}
	if r := e.up.requests(); len(r) != 1 || r[0].path != "/v1/messages/count_tokens" || r[0].header.Get("Openai-Intent") != "messages-proxy" {
		t.Errorf("upstream saw %+v", r)
	}
}

func TestParseCountTokens(t *testing.T) {
	for in, want := range map[string]CountTokens{"local": CountTokensLocal, "": CountTokensLocal, "upstream": CountTokensUpstream} {
		if got, err := ParseCountTokens(in); err != nil || got != want {
			t.Errorf("ParseCountTokens(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseCountTokens("remote"); err == nil {
		t.Error("ParseCountTokens(remote) succeeded")
	}
}

// TestCountTokensChargesBudget: count_tokens charges the body budget
// tokencount.MemoryFactor times its body (issue 22: a 26 MB body peaked at
// 439 MB outside the budget).
func TestCountTokensChargesBudget(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {}, func(c *Config) {
		c.MaxBodyBytes, c.MaxInflightBodyBytes, c.MaxInflightBodyBytesPerKey, c.InflightBodyWait = 1<<20, 4<<20, 2<<20, 50*time.Millisecond
	})
	body := `{"model":"claude-sonnet-4.5","messages":[{"role":"user","content":"` + strings.Repeat("x", 300<<10) + `"}]}`
	resp, got := e.do(t, "POST", "/v1/messages/count_tokens", body, nil)
	if resp.StatusCode != 413 || !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, "too large to count") {
		t.Errorf("count_tokens of 300 KiB under a 2 MiB share = %d %.200s; want 413 in Anthropic's shape", resp.StatusCode, got)
	}
	small := `{"model":"claude-sonnet-4.5","messages":[{"role":"user","content":"hi"}]}`
	if resp, got := e.do(t, "POST", "/v1/messages/count_tokens", small, nil); resp.StatusCode != 200 {
		t.Errorf("count_tokens of a small body = %d %s", resp.StatusCode, got)
	}
}
