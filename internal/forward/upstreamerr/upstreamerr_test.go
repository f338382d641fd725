package upstreamerr

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)

// TestEveryCode runs every code of docs/protocol.md section 8, with and
// without a :plan suffix, with and without Retry-After, in both error
// shapes, and with a "retry after N seconds" message.
func TestEveryCode(t *testing.T) {
	codes := []struct {
		code   string
		status int
		class  Class
	}{
		{"rate_limited", 429, RateLimited},
		{"user_global_rate_limited", 429, RateLimited},
		{"user_model_rate_limited", 429, ModelRateLimited},
		{"integration_rate_limited", 429, RateLimited},
		{"model_overloaded", 503, ModelOverloaded},
		{"agent_mode_limit_exceeded", 429, AgentModeLimit},
		{"quota_exceeded", 402, QuotaExceeded},
		{"free_quota_exceeded", 402, QuotaExceeded},
		{"overage_limit_reached", 402, QuotaExceeded},
		{"billing_not_configured", 403, BillingNotConfigured},
	}
	for _, c := range codes {
		for _, suffix := range []string{"", ":pro", ":free_limited_copilot"} {
			for _, retryAfter := range []string{"", "120"} {
				for _, msgWait := range []bool{false, true} {
					for _, shape := range []string{"openai", "github"} {
						name := fmt.Sprintf("%s%s/ra=%s/msg=%v/%s", c.code, suffix, retryAfter, msgWait, shape)
						t.Run(name, func(t *testing.T) {
							msg := "You have hit a limit."
							if msgWait {
								msg += " Please retry after 840 seconds."
							}
							body := fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, c.code+suffix, msg)
							if shape == "github" {
								body = fmt.Sprintf(`{"code":%q,"message":%q}`, c.code+suffix, msg)
							}
							h := http.Header{}
							if retryAfter != "" {
								h.Set("Retry-After", retryAfter)
							}
							in := Classify(c.status, h, []byte(body), false, now)
							if in.Class != c.class || in.Code != c.code || in.Plan != strings.TrimPrefix(suffix, ":") || in.Message != msg {
								t.Fatalf("Classify = %+v; want class %s, code %s, plan %q", in, c.class, c.code, strings.TrimPrefix(suffix, ":"))
							}
							if !in.Class.Failover() {
								t.Errorf("class %s does not allow failover", in.Class)
							}
							switch {
							case !c.class.RateFamily():
								if in.Wait != 0 {
									t.Errorf("quota class has a wait %v", in.Wait)
								}
							case retryAfter != "":
								if in.Wait != 120*time.Second || in.WaitFrom != "retry-after" {
									t.Errorf("wait = %v from %s; want 2m0s from retry-after", in.Wait, in.WaitFrom)
								}
							case msgWait:
								if in.Wait != 840*time.Second || in.WaitFrom != "message" {
									t.Errorf("wait = %v from %s; want 14m0s from message", in.Wait, in.WaitFrom)
								}
							default:
								if in.Wait != DefaultWait || in.WaitFrom != "default" {
									t.Errorf("wait = %v from %s; want the default", in.Wait, in.WaitFrom)
								}
							}
						})
					}
				}
			}
		}
	}
}

func TestStatusesWithoutCode(t *testing.T) {
	tests := []struct {
		status    int
		body      string
		exhausted bool
		want      Class
	}{
		{200, `{}`, false, None},
		{400, `{"error":{"code":"unsupported_api_for_model"}}`, false, None},
		{401, `unauthorized`, false, TokenRefused},
		{403, `{"message":"forbidden"}`, false, TokenRefused},
		{403, `{"message":"Your organization's policy disables this model"}`, false, Forbidden},
		{402, `{"message":"quota"}`, false, QuotaExceeded},
		{429, `{"message":"slow down"}`, false, RateLimited},
		{429, `{"error":{"code":"rate_limited:pro"}}`, true, UsageLimit},
		{429, `{"message":"slow down"}`, true, UsageLimit},
		{503, `<html>bad gateway</html>`, false, Unavailable},
		{466, `{"message":"client not supported"}`, false, IdentityRejected},
		{400, `{"error":{"message":"API version no longer supported"}}`, false, IdentityRejected},
		{404, `{"message":"unknown editor version vscode/1.0.0"}`, false, IdentityRejected},
		{400, `{"error":{"type":"rate_limited","message":"x"}}`, false, RateLimited},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, nil, []byte(tt.body), tt.exhausted, now).Class; got != tt.want {
			t.Errorf("Classify(%d, %s, %v) = %q; want %q", tt.status, tt.body, tt.exhausted, got, tt.want)
		}
	}
}

func TestWait(t *testing.T) {
	date := now.Add(90 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		ra, msg string
		want    time.Duration
		from    string
	}{
		{"5", "", 5 * time.Second, "retry-after"},
		{date, "", 90 * time.Second, "retry-after"},
		{"junk", "Please retry after 12 seconds", 12 * time.Second, "message"},
		{"", "retry in 7s", 7 * time.Second, "message"},
		{"", "Retry After 3 second", 3 * time.Second, "message"},
		{"", "retry after 99999999999 seconds", 0, "default"}, // more than 9 digits: not a wait
		{"", "retry after 5 minutes", DefaultWait, "default"},
		{"", "retry after soon, or retry after 9 sec", 9 * time.Second, "message"},
		{"99999999999", "", MaxWait, "retry-after"},
		{"", "", DefaultWait, "default"},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.ra != "" {
			h.Set("Retry-After", tt.ra)
		}
		got, from := Wait(h, tt.msg, now)
		want := tt.want
		if want == 0 {
			want = DefaultWait
		}
		if got != want || from != tt.from {
			t.Errorf("Wait(%q, %q) = %v %s; want %v %s", tt.ra, tt.msg, got, from, want, tt.from)
		}
	}
}

func TestClassProperties(t *testing.T) {
	for _, c := range Classes {
		if c.RateFamily() && c.Status() != 429 || c.QuotaFamily() && c.Status() != 402 {
			t.Errorf("class %s: status %d", c, c.Status())
		}
	}
	if IdentityRejected.Failover() {
		t.Error("identity_rejected fails over: every member shares the profile")
	}
}

func FuzzMessageWait(f *testing.F) {
	for _, s := range []string{"Please retry after 840 seconds", "retry in 5s", "retry after", "retry after 1", "try again in 12 sec.", "RETRY AFTER 0 SECONDS"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		d, ok := MessageWait(msg)
		if !ok {
			if d != 0 {
				t.Fatalf("no wait found but d = %v", d)
			}
			return
		}
		if d < 0 || d > MaxWait {
			t.Fatalf("wait %v out of [0, %v]", d, MaxWait)
		}
		if !strings.Contains(strings.ToLower(msg), "retry") && !strings.Contains(strings.ToLower(msg), "try again") {
			t.Fatalf("wait found in %q without a retry phrase", msg)
		}
	})
}

func FuzzClassify(f *testing.F) {
	f.Add(429, []byte(`{"error":{"code":"user_global_rate_limited:pro","message":"Please retry after 840 seconds"}}`), "")
	f.Add(402, []byte(`{"code":"quota_exceeded"}`), "10")
	f.Add(466, []byte(`x`), "Mon, 07 Dec 2026 20:00:00 GMT")
	f.Fuzz(func(t *testing.T, status int, body []byte, ra string) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		in := Classify(status, h, body, false, now)
		if in.Wait < 0 || in.Wait > MaxWait {
			t.Fatalf("wait %v", in.Wait)
		}
		if in.Class.RateFamily() && in.Wait == 0 && in.WaitFrom == "default" {
			t.Fatal("default wait of zero")
		}
	})
}
