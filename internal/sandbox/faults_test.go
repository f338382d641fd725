package sandbox

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestExchangeFaults(t *testing.T) {
	tests := []struct {
		name           string
		fault          Fault
		wantRetryAfter string
		check          func(t *testing.T, h http.Header, body []byte)
	}{
		{"server error", Fault{Status: 500}, "", func(t *testing.T, _ http.Header, body []byte) {
			var m githubMessage
			mustUnmarshal(t, body, &m)
			if m.Message != "Server Error" {
				t.Errorf("500 message = %q; want Server Error", m.Message)
			}
		}},
		{"unauthorized", Fault{Status: 401}, "", func(t *testing.T, _ http.Header, body []byte) {
			var m githubMessage
			mustUnmarshal(t, body, &m)
			if m.Message != "Bad credentials" {
				t.Errorf("401 message = %q; want Bad credentials", m.Message)
			}
		}},
		{"rate limited 429", Fault{Status: 429, RetryAfter: 7 * time.Second}, "7", func(t *testing.T, h http.Header, body []byte) {
			var m githubMessage
			mustUnmarshal(t, body, &m)
			if m.DocumentationURL == "" || h.Get("X-RateLimit-Remaining") != "0" ||
				h.Get("X-RateLimit-Reset") != strconv.FormatInt(t0.Add(time.Minute).Unix(), 10) {
				t.Errorf("429: body %s headers %v; want the rate-limit body and X-RateLimit-* headers", body, h)
			}
		}},
		{"rate limited 403", Fault{Status: 403, Reason: ReasonRateLimit, RetryAfter: 90 * time.Second}, "90", func(t *testing.T, h http.Header, body []byte) {
			var m map[string]any
			mustUnmarshal(t, body, &m)
			if m["error_details"] != nil || h.Get("X-RateLimit-Reset") != strconv.FormatInt(t0.Add(90*time.Second).Unix(), 10) {
				t.Errorf("403 rate limit: body %s; want no error_details, reset in 90 s", body)
			}
		}},
		{"no copilot access", Fault{Status: 403}, "", func(t *testing.T, _ http.Header, body []byte) {
			var got accessDenied
			mustUnmarshal(t, body, &got)
			want := accessDenied{
				ErrorDetails: errorDetails{
					Message:        "No access to GitHub Copilot found. You are currently logged in as sandbox-user.",
					NotificationID: "no_copilot_access", Title: "Copilot access unavailable", URL: "https://github.com/features/copilot",
				},
				Message:             "No access to GitHub Copilot found. You are currently logged in as sandbox-user.",
				CanSignupForLimited: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("no_copilot_access body (-want +got):\n%s", diff)
			}
		}},
		{"subscription ended", Fault{Status: 403, Reason: ReasonSubscriptionEnded}, "", func(t *testing.T, _ http.Header, body []byte) {
			var got accessDenied
			mustUnmarshal(t, body, &got)
			if got.ErrorDetails.NotificationID != "subscription_ended" || got.CanSignupForLimited {
				t.Errorf("subscription_ended body %s", body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			e.sb.FailExchanges(2, tt.fault)
			gh := ghHeader(e.sb.GitHubToken().Reveal())
			for i := range 2 {
				resp, body := e.do("GET", "/copilot_internal/v2/token", gh, "")
				if resp.StatusCode != tt.fault.Status || resp.Header.Get("Retry-After") != tt.wantRetryAfter {
					t.Fatalf("exchange %d: %d Retry-After %q; want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), tt.fault.Status, tt.wantRetryAfter)
				}
				tt.check(t, resp.Header, body)
			}
			e.exchange() // the third succeeds
			want := map[int]int{tt.fault.Status: 2, 200: 1}
			if diff := cmp.Diff(want, e.sb.Stats().Exchanges); diff != "" {
				t.Errorf("Stats().Exchanges (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExchangeOutage(t *testing.T) {
	e := newEnv(t, Config{})
	e.sb.FailExchangesUntilCleared(Fault{Status: 503})
	gh := ghHeader(e.sb.GitHubToken().Reveal())
	for range 5 {
		if resp, _ := e.do("GET", "/copilot_internal/v2/token", gh, ""); resp.StatusCode != 503 {
			t.Fatalf("exchange during outage = %d; want 503", resp.StatusCode)
		}
	}
	e.sb.ClearFaults()
	e.exchange()
	if got := e.sb.Stats().ExchangeCount(); got != 6 {
		t.Errorf("ExchangeCount() = %d; want 6", got)
	}
}

func TestInvalidFaultPanics(t *testing.T) {
	for _, f := range []Fault{{Status: 200}, {Status: 500, Reason: "nope"}, {Status: 429, RetryAfter: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("FailExchanges(%+v) did not panic", f)
				}
			}()
			New(Config{}).FailExchanges(1, f)
		}()
	}
}

func TestRevokeAndRestoreGitHubToken(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.sb.GitHubToken()
	if !e.sb.RevokeGitHubToken(tok) {
		t.Errorf("RevokeGitHubToken(accepted token) = false; want true")
	}
	for _, path := range []string{"/copilot_internal/v2/token", "/copilot_internal/user"} {
		if resp, _ := e.do("GET", path, ghHeader(tok.Reveal()), ""); resp.StatusCode != 401 {
			t.Errorf("GET %s with a revoked token = %d; want 401", path, resp.StatusCode)
		}
	}
	e.sb.AddGitHubToken(tok)
	e.exchange()
}

func TestAPIFaults(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	e.sb.FailAPI(1, Fault{Status: 429, RetryAfter: 3 * time.Second})
	resp, body := e.do("GET", "/models", apiHeader(tok), "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" || errorCode(t, body) != "rate_limited" {
		t.Errorf("API fault: %d Retry-After %q %s; want 429, 3, rate_limited", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	e.sb.FailAPIUntilCleared(Fault{Status: 401})
	for range 2 {
		if resp, _ := e.do("POST", "/v1/messages", apiHeader(tok), `{}`); resp.StatusCode != 401 {
			t.Errorf("API outage = %d; want 401", resp.StatusCode)
		}
	}
	e.sb.ClearFaults()
	e.do("GET", "/models", apiHeader(tok), "")
	want := map[string]map[int]int{"/models": {429: 1, 200: 1}, "/v1/messages": {401: 2}}
	if diff := cmp.Diff(want, e.sb.Stats().API); diff != "" {
		t.Errorf("Stats().API (-want +got):\n%s", diff)
	}
}

func TestLatency(t *testing.T) {
	const d = 150 * time.Millisecond
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	e.sb.SetExchangeLatency(d)
	e.sb.SetAPILatency(d)
	for _, c := range []struct{ path, auth string }{
		{"/copilot_internal/v2/token", "token " + e.sb.GitHubToken().Reveal()},
		{"/models", "Bearer " + tok},
	} {
		h := apiHeader(tok)
		h.Set("Authorization", c.auth)
		start := time.Now()
		resp, _ := e.do("GET", c.path, h, "")
		if took := time.Since(start); resp.StatusCode != 200 || took < d {
			t.Errorf("GET %s with latency %v: %d after %v; want 200 after at least %v", c.path, d, resp.StatusCode, took, d)
		}
	}
	e.sb.ClearFaults()
	if ex, api := e.sb.exchangeLatency.Load(), e.sb.apiLatency.Load(); ex != 0 || api != 0 {
		t.Errorf("latencies after ClearFaults = %v, %v; want 0, 0", time.Duration(ex), time.Duration(api))
	}
}
