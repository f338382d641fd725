package sandbox

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

func TestGeneratedGitHubToken(t *testing.T) {
	a, b := New(Config{}).GitHubToken().Reveal(), New(Config{}).GitHubToken().Reveal()
	if !strings.HasPrefix(a, "gho_") || len(a) != 40 {
		t.Errorf("GitHubToken() = %q; want gho_ and 36 characters", a)
	}
	if a == b {
		t.Errorf("two servers generated the same token %q", a)
	}
	want := secret.New("gho_configured")
	if got := New(Config{GitHubTokens: []secret.Secret{want}}).GitHubToken(); !got.Equal(want) {
		t.Errorf("GitHubToken() with a configured token = %s; want the configured one", got.Fingerprint())
	}
}

func TestExchangeAuthorization(t *testing.T) {
	e := newEnv(t, Config{GitHubTokens: []secret.Secret{secret.New("gho_first"), secret.New("ghu_second")}})
	tests := []struct {
		name, path, auth string
		want             int
	}{
		{"token scheme", "/copilot_internal/v2/token", "token gho_first", 200},
		{"second token", "/copilot_internal/v2/token", "token ghu_second", 200},
		{"enterprise server prefix", "/api/v3/copilot_internal/v2/token", "token gho_first", 200},
		{"bearer scheme", "/copilot_internal/v2/token", "Bearer gho_first", 401},
		{"no header", "/copilot_internal/v2/token", "", 401},
		{"unknown token", "/copilot_internal/v2/token", "token gho_unknown", 401},
		{"empty token", "/copilot_internal/v2/token", "token ", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.auth != "" {
				h.Set("Authorization", tt.auth)
			}
			resp, body := e.do("GET", tt.path, h, "")
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s with %q = %d; want %d (body %s)", tt.path, tt.auth, resp.StatusCode, tt.want, body)
			}
			if tt.want == 401 {
				var m githubMessage
				mustUnmarshal(t, body, &m)
				if m.Message != "Bad credentials" {
					t.Errorf("401 message = %q; want Bad credentials", m.Message)
				}
			}
		})
	}
}

func TestExchangeAnswer(t *testing.T) {
	e := newEnv(t, Config{TokenLifetime: 90 * time.Second, RefreshIn: 60 * time.Second, SKU: "copilot_for_business"})
	ans := e.exchange()
	want := exchangeEndpoints{
		API: e.sb.URL, OriginTracker: e.sb.URL + "/_origin-tracker",
		Proxy: e.sb.URL + "/_proxy", Telemetry: e.sb.URL + "/_telemetry",
	}
	if diff := cmp.Diff(want, ans.Endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if ans.ExpiresAt != t0.Add(90*time.Second).Unix() {
		t.Errorf("expires_at = %d; want %d", ans.ExpiresAt, t0.Add(90*time.Second).Unix())
	}
	if ans.RefreshIn != 60 || ans.SKU != "copilot_for_business" || !ans.ChatEnabled || ans.Individual {
		t.Errorf("refresh_in, sku, chat_enabled, individual = %d, %q, %v, %v; want 60, copilot_for_business, true, false",
			ans.RefreshIn, ans.SKU, ans.ChatEnabled, ans.Individual)
	}
	fields, sig, ok := strings.Cut(ans.Token, ":")
	if !ok || len(sig) != 64 {
		t.Fatalf("token %q: want fields:64-hex-signature", ans.Token)
	}
	for key, want := range map[string]string{
		"exp": strconv.FormatInt(ans.ExpiresAt, 10), "sku": "copilot_for_business",
		"proxy-ep": "proxy.business.githubcopilot.com", "st": "dotcom", "chat": "1", "8kp": "1",
		"ip": "127.0.0.1", "asn": "AS0", "rd": "1",
	} {
		if got, _ := tokenField(fields, key); got != want {
			t.Errorf("token field %s = %q; want %q", key, got, want)
		}
	}
	if tid, _ := tokenField(fields, "tid"); len(tid) != 32 {
		t.Errorf("token field tid = %q; want 32 hex characters", tid)
	}
	if again := e.exchange(); again.Token == ans.Token {
		t.Errorf("two exchanges returned the same token")
	}
}

func TestExchangeFreeSKU(t *testing.T) {
	e := newEnv(t, Config{SKU: "free_limited_copilot"})
	ans := e.exchange()
	if ans.LimitedUserQuotas["chat"] != 50 || ans.LimitedUserResetDate == nil || !ans.Individual {
		t.Errorf("free sku: limited_user_quotas = %v, reset date set = %v, individual = %v; want chat 50, set, true",
			ans.LimitedUserQuotas, ans.LimitedUserResetDate != nil, ans.Individual)
	}
}

func TestCopilotTokenChecks(t *testing.T) {
	e := newEnv(t, Config{TokenLifetime: 10 * time.Second})
	good := e.exchange().Token
	fields, sig, _ := strings.Cut(good, ":")
	tests := []struct {
		name  string
		auth  string
		setup func()
		want  int
	}{
		{"valid", "Bearer " + good, nil, 200},
		{"token scheme", "token " + good, nil, 401},
		{"no header", "", nil, 401},
		{"tampered field", "Bearer " + strings.Replace(fields, "chat=1", "chat=2", 1) + ":" + sig, nil, 401},
		{"tampered signature", "Bearer " + fields + ":" + strings.Repeat("0", 64), nil, 401},
		{"no signature", "Bearer " + fields, nil, 401},
		{"garbage", "Bearer hello", nil, 401},
		{"one second before expiry", "Bearer " + good, func() { e.clock.Advance(9 * time.Second) }, 200},
		{"at expiry", "Bearer " + good, func() { e.clock.Advance(time.Second) }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			h := apiHeader("")
			h.Del("Authorization")
			if tt.auth != "" {
				h.Set("Authorization", tt.auth)
			}
			resp, body := e.do("GET", "/models", h, "")
			if resp.StatusCode != tt.want {
				t.Fatalf("GET /models = %d; want %d (body %s)", resp.StatusCode, tt.want, body)
			}
			if tt.want == 401 && errorCode(t, body) != "unauthorized" {
				t.Errorf("401 body %s; want error.code unauthorized", body)
			}
		})
	}
}

func TestInvalidateCopilotTokens(t *testing.T) {
	e := newEnv(t, Config{})
	old := e.exchange().Token
	e.sb.InvalidateCopilotTokens()
	if resp, _ := e.do("GET", "/models", apiHeader(old), ""); resp.StatusCode != 401 {
		t.Errorf("old token after InvalidateCopilotTokens: status %d; want 401", resp.StatusCode)
	}
	if resp, _ := e.do("GET", "/models", apiHeader(e.exchange().Token), ""); resp.StatusCode != 200 {
		t.Errorf("new token after InvalidateCopilotTokens: status %d; want 200", resp.StatusCode)
	}
}

func TestRequiredAPIHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	for _, name := range []string{"Copilot-Integration-Id", "Editor-Version"} {
		t.Run(name, func(t *testing.T) {
			h := apiHeader(tok)
			h.Del(name)
			resp, body := e.do("POST", "/chat/completions", h, `{"model":"gpt-4.1","messages":[]}`)
			if resp.StatusCode != 400 || errorCode(t, body) != "missing_header" || !strings.Contains(string(body), name) {
				t.Errorf("without %s: %d %s; want 400 missing_header naming it", name, resp.StatusCode, body)
			}
		})
	}
}

func TestUser(t *testing.T) {
	e := newEnv(t, Config{})
	if resp, _ := e.do("GET", "/copilot_internal/user", http.Header{"Authorization": {"Bearer x"}}, ""); resp.StatusCode != 401 {
		t.Errorf("user without token: status %d; want 401", resp.StatusCode)
	}
	// One billed chat request (X-Initiator: user) uses one premium interaction.
	if resp, body := e.api("POST", "/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	resp, body := e.do("GET", "/copilot_internal/user", ghHeader(e.sb.GitHubToken().Reveal()), "")
	if resp.StatusCode != 200 {
		t.Fatalf("user: %d %s", resp.StatusCode, body)
	}
	var got userAnswer
	mustUnmarshal(t, body, &got)
	want := userAnswer{
		AccessTypeSKU: "monthly_subscriber", AnalyticsTrackingID: "sandbox", ChatEnabled: true, CopilotPlan: "individual",
		OrganizationLoginList: []string{}, QuotaResetDate: "2026-04-01",
		QuotaSnapshots: map[string]quotaSnapshot{
			"chat":                 {QuotaID: "chat", Unlimited: true, PercentRemaining: 100},
			"completions":          {QuotaID: "completions", Unlimited: true, PercentRemaining: 100},
			"premium_interactions": {QuotaID: "premium_interactions", Entitlement: 300, Remaining: 299, PercentRemaining: 299.0 * 100 / 300},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("user (-want +got):\n%s", diff)
	}
}
