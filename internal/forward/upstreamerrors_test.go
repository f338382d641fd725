package forward

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	syncbuf "github.com/copilot-broker/copilot-broker/internal/testutil"
)

func TestUpstreamErrorsInTheClientsDialect(t *testing.T) {
	tests := []struct {
		status        int
		body          string
		kind          string
		openaiType    string
		anthropicType string
	}{
		{402, `{"error":{"message":"You have exceeded your Copilot quota","type":"insufficient_quota","code":"quota_exceeded"}}`, "quota", "insufficient_quota", "billing_error"},
		{429, `{"error":{"message":"Sorry, you have been rate-limited.","code":"rate_limited"}}`, "rate_limited", "rate_limit_error", "rate_limit_error"},
		{503, `upstream busy`, "rate_limited", "server_error", "overloaded_error"},
		{466, `{"message":"client not supported"}`, "client_not_supported", "invalid_request_error", "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			var logs syncbuf.SyncBuffer
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "7")
				w.Header().Set("X-Ratelimit-Exceeded", "1")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			for _, d := range []struct {
				path      string
				anthropic bool
				typ       string
			}{{"/v1/chat/completions", false, tt.openaiType}, {"/v1/messages", true, tt.anthropicType}} {
				resp, b := e.do(t, "POST", d.path, `{"messages":[{"role":"user","content":"hi"}]}`, nil)
				if resp.StatusCode != tt.status || resp.Header.Get("Retry-After") != "7" || resp.Header.Get("X-Ratelimit-Exceeded") != "1" {
					t.Errorf("%s: %d, headers %v; want %d with the upstream's Retry-After", d.path, resp.StatusCode, resp.Header, tt.status)
				}
				checkDialect(t, b, d.anthropic, d.typ)
				if tt.status == 466 && !strings.Contains(b, "--editor-version") {
					t.Errorf("466 body %s does not name the identity flags", b)
				}
			}
			if n := counterValue(e.handler.metrics.upstreamErrors.WithLabelValues(tt.kind)); n != 2 {
				t.Errorf("upstream errors {kind=%s} = %v; want 2", tt.kind, n)
			}
			if tt.status == 466 && !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("no warning for 466: %s", logs.String())
			}
			if n := len(e.src.refreshes()); n != 0 {
				t.Errorf("%d refreshes; want none for %d", n, tt.status)
			}
		})
	}
}

func TestForbiddenRefreshesUnlessQuotaOrPolicy(t *testing.T) {
	for _, tt := range []struct {
		body        string
		wantRefresh bool
	}{
		{`{"error":{"message":"unauthorized: token expired"}}`, true},
		{``, true},
		{`{"error":{"message":"You have no quota left for premium models"}}`, false},
		{`{"error":{"message":"Access to this model is disabled by your organization's policy"}}`, false},
	} {
		var calls atomic.Int32
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, tt.body)
				return
			}
			fmt.Fprint(w, `{"ok":true}`)
		}, nil)
		e.src.next = tokenGen(2, e.clk.Now().Add(30*time.Minute))
		resp, b := e.do(t, "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, nil)
		refreshed := len(e.src.refreshes()) == 1
		if refreshed != tt.wantRefresh {
			t.Errorf("403 %q: refreshed %v; want %v", tt.body, refreshed, tt.wantRefresh)
		}
		if tt.wantRefresh && (resp.StatusCode != 200 || b != `{"ok":true}`) {
			t.Errorf("403 %q: after the refresh %d %s; want the retry's 200", tt.body, resp.StatusCode, b)
		}
		if !tt.wantRefresh && (resp.StatusCode != 403 || !strings.Contains(b, "Copilot API: ")) {
			t.Errorf("403 %q: %d %s; want the 403 in the client's dialect", tt.body, resp.StatusCode, b)
		}
	}
}
