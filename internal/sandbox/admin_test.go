package sandbox

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// admin calls the admin API and fails the test unless it answers want.
func (e *env) admin(method, path, body string, want int) []byte {
	e.t.Helper()
	resp, b := e.do(method, "/_sandbox/"+path, http.Header{"Content-Type": {"application/json"}}, body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s /_sandbox/%s %s = %d %s; want %d", method, path, body, resp.StatusCode, b, want)
	}
	return b
}

func TestAdminFaultsAndTokens(t *testing.T) {
	e := newEnv(t, Config{})
	gh := e.sb.GitHubToken().Reveal()
	exchangeStatus := func() (int, http.Header) {
		resp, _ := e.do("GET", "/copilot_internal/v2/token", ghHeader(gh), "")
		return resp.StatusCode, resp.Header
	}

	e.admin("POST", "faults/exchange", `{"count":1,"status":429,"retry_after_seconds":4}`, 200)
	if st, h := exchangeStatus(); st != 429 || h.Get("Retry-After") != "4" {
		t.Errorf("after admin 429 fault: %d Retry-After %q; want 429 4", st, h.Get("Retry-After"))
	}
	if st, _ := exchangeStatus(); st != 200 {
		t.Errorf("after the one fault: %d; want 200", st)
	}

	e.admin("POST", "faults/exchange", `{"status":500,"until_cleared":true}`, 200)
	for range 3 {
		if st, _ := exchangeStatus(); st != 500 {
			t.Errorf("during admin outage: %d; want 500", st)
		}
	}
	e.admin("DELETE", "faults", "", 200)
	if st, _ := exchangeStatus(); st != 200 {
		t.Errorf("after clearing: %d; want 200", st)
	}

	e.admin("POST", "github-tokens/revoke", `{"token":"`+gh+`"}`, 200)
	if st, _ := exchangeStatus(); st != 401 {
		t.Errorf("after admin revoke: %d; want 401", st)
	}
	e.admin("POST", "github-tokens/add", `{"token":"`+gh+`"}`, 200)
	tok := e.exchange().Token

	e.admin("POST", "faults/api", `{"count":1,"status":403}`, 200)
	if resp, _ := e.do("GET", "/models", apiHeader(tok), ""); resp.StatusCode != 403 {
		t.Errorf("after admin API fault: %d; want 403", resp.StatusCode)
	}
	e.admin("POST", "copilot-tokens/invalidate", "", 200)
	if resp, _ := e.do("GET", "/models", apiHeader(tok), ""); resp.StatusCode != 401 {
		t.Errorf("after admin invalidate: %d; want 401", resp.StatusCode)
	}

	e.admin("POST", "latency", `{"exchange_ms":120}`, 200)
	start := time.Now()
	exchangeStatus()
	if took := time.Since(start); took < 120*time.Millisecond {
		t.Errorf("exchange with 120 ms admin latency took %v", took)
	}

	var st Stats
	mustUnmarshal(t, e.admin("GET", "stats", "", 200), &st)
	if st.Exchanges[429] != 1 || st.Exchanges[500] != 3 || st.Exchanges[401] != 1 || st.API["/models"][401] != 1 {
		t.Errorf("admin stats = %+v; want the faults counted", st)
	}
	e.admin("POST", "reset-stats", "", 200)
	if got := e.sb.Stats().ExchangeCount(); got != 0 || len(e.sb.Requests()) != 0 {
		t.Errorf("after reset: %d exchanges, %d requests; want 0, 0", got, len(e.sb.Requests()))
	}
}

func TestAdminRequestsRedacted(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	e.do("GET", "/models", apiHeader(tok), "")
	body := e.admin("GET", "requests", "", 200)
	if strings.Contains(string(body), tok) || strings.Contains(string(body), e.sb.GitHubToken().Reveal()) {
		t.Errorf("admin requests reveal a token: %s", body)
	}
	var reqs []Request
	mustUnmarshal(t, body, &reqs)
	if len(reqs) != 2 || reqs[1].Path != "/models" || reqs[1].Header.Get("Authorization") != "[REDACTED]" ||
		reqs[1].Header.Get("Copilot-Integration-Id") != "vscode-chat" {
		t.Errorf("admin requests = %s; want the exchange and /models with Authorization redacted", body)
	}
	if e.sb.Requests()[1].Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("redacting the admin view changed the log")
	}
}

func TestAdminDevice(t *testing.T) {
	e := newEnv(t, Config{})
	first, second := e.startDevice(), e.startDevice()
	var codes []DeviceCode
	mustUnmarshal(t, e.admin("GET", "device", "", 200), &codes)
	if len(codes) != 2 || codes[0].State != DevicePending || strings.Contains(string(e.admin("GET", "device", "", 200)), first.DeviceCode) {
		t.Fatalf("admin device list = %+v; want two pending codes without device codes", codes)
	}
	e.admin("POST", "device/approve", `{"user_code":"`+first.UserCode+`"}`, 200)
	e.admin("POST", "device/deny", `{"user_code":"`+second.UserCode+`"}`, 200)
	if p := e.poll(first.DeviceCode); p.AccessToken == "" {
		t.Errorf("poll after admin approve = %+v; want a token", p)
	}
	if p := e.poll(second.DeviceCode); p.Error != "access_denied" {
		t.Errorf("poll after admin deny = %q; want access_denied", p.Error)
	}
	third := e.startDevice()
	e.admin("POST", "device/expire", `{"user_code":"`+third.UserCode+`"}`, 200)
	if p := e.poll(third.DeviceCode); p.Error != "expired_token" {
		t.Errorf("poll after admin expire = %q; want expired_token", p.Error)
	}
	e.admin("POST", "device/auto-approve", `{"after_polls":1}`, 200)
	if p := e.poll(e.startDevice().DeviceCode); p.AccessToken == "" {
		t.Errorf("first poll with auto-approve 1 = %+v; want a token", p)
	}
	e.admin("POST", "device/approve", `{"user_code":"NOPE-NOPE"}`, 404)
}

func TestAdminBadRequests(t *testing.T) {
	e := newEnv(t, Config{})
	tests := []struct {
		method, path, body string
		want               int
	}{
		{"POST", "faults/exchange", `{"count":1,"status":200}`, 400},
		{"POST", "faults/exchange", `{"count":1,"status":500,"reason":"bogus"}`, 400},
		{"POST", "faults/exchange", `{"count":0,"status":500}`, 400},
		{"POST", "faults/exchange", `{"status":500,"typo":1}`, 400},
		{"POST", "faults/elsewhere", `{"count":1,"status":500}`, 404},
		{"POST", "github-tokens/add", `{}`, 400},
		{"POST", "github-tokens/steal", `{"token":"x"}`, 404},
		{"POST", "device/bless", `{"user_code":"x"}`, 404},
		{"POST", "latency", `not json`, 400},
		{"GET", "faults/exchange", ``, 405},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			body := e.admin(tt.method, tt.path, tt.body, tt.want)
			if tt.want == 400 {
				var m map[string]string
				if err := json.Unmarshal(body, &m); err != nil || m["error"] == "" {
					t.Errorf("400 body %s; want {\"error\": ...}", body)
				}
			}
		})
	}
	if len(e.sb.Requests()) != 0 {
		t.Errorf("admin calls were recorded in Requests()")
	}
}
