// Package upstreamerr is the proxy's taxonomy of Copilot API error answers
// (docs/protocol.md section 8, "Limits and errors"): it turns a status,
// headers and body into a class (a metric label and a dialect error type),
// the upstream's code and message, and how long to wait. It is pure: no
// I/O, no clock of its own, no knowledge of routing.
package upstreamerr

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// Class is an error class; its string is the metric label.
type Class string

// The classes. None is an answer that is not an error the proxy classifies.
const (
	None Class = ""
	// TokenRefused: 401, or 403 without a quota or policy body.
	TokenRefused Class = "token_refused"
	// Forbidden: a 403 naming a quota or policy.
	Forbidden Class = "forbidden"
	// RateLimited: rate_limited, user_global_rate_limited,
	// integration_rate_limited, or a 429 without a known code.
	RateLimited Class = "rate_limited"
	// ModelRateLimited: user_model_rate_limited (this model, this account).
	ModelRateLimited Class = "model_rate_limited"
	// ModelOverloaded: model_overloaded; another account may serve at once.
	ModelOverloaded Class = "model_overloaded"
	// AgentModeLimit: agent_mode_limit_exceeded.
	AgentModeLimit Class = "agent_mode_limit"
	// UsageLimit: a 429 while the session or weekly limit is used up
	// (x-usage-ratelimit-session / -weekly).
	UsageLimit Class = "usage_limit"
	// QuotaExceeded: 402, quota_exceeded, free_quota_exceeded,
	// overage_limit_reached.
	QuotaExceeded Class = "quota_exceeded"
	// BillingNotConfigured: billing_not_configured.
	BillingNotConfigured Class = "billing_not_configured"
	// Unavailable: 503 without a known code (may be a rate limit).
	Unavailable Class = "upstream_unavailable"
	// IdentityRejected: the editor identity or API version refused
	// ([identity.IsRejection]).
	IdentityRejected Class = "identity_rejected"
)

// Classes lists every class but None, for metrics initialised at zero.
var Classes = []Class{TokenRefused, Forbidden, RateLimited, ModelRateLimited, ModelOverloaded, AgentModeLimit,
	UsageLimit, QuotaExceeded, BillingNotConfigured, Unavailable, IdentityRejected}

// DefaultWait is the wait of a rate-limit class when neither Retry-After
// nor the message names one.
const DefaultWait = 30 * time.Second

// MaxWait caps any wait read from an answer.
const MaxWait = 24 * time.Hour

// codeClass maps an error code of docs/protocol.md section 8, without its
// :plan suffix, to its class; "" for a code not listed there.
func codeClass(code string) Class {
	switch code {
	case "rate_limited", "user_global_rate_limited", "integration_rate_limited":
		return RateLimited
	case "user_model_rate_limited":
		return ModelRateLimited
	case "model_overloaded":
		return ModelOverloaded
	case "agent_mode_limit_exceeded":
		return AgentModeLimit
	case "quota_exceeded", "free_quota_exceeded", "overage_limit_reached":
		return QuotaExceeded
	case "billing_not_configured":
		return BillingNotConfigured
	}
	return ""
}

// Info is a classified error answer.
type Info struct {
	Class Class
	// Code is the upstream's code without its suffix; Plan the suffix
	// (user_global_rate_limited:pro → "user_global_rate_limited", "pro").
	Code, Plan string
	// Message is the upstream's message ("" when it sent none).
	Message string
	// Wait is how long the account should rest, for the rate-limit and
	// usage-limit classes; WaitFrom says where it came from:
	// "retry-after", "message" or "default".
	Wait     time.Duration
	WaitFrom string
}

// RateFamily reports whether c is of the rate-limit family: the account
// rests for Wait.
func (c Class) RateFamily() bool {
	switch c {
	case RateLimited, ModelRateLimited, ModelOverloaded, AgentModeLimit, UsageLimit:
		return true
	}
	return false
}

// QuotaFamily reports whether c is of the quota family.
func (c Class) QuotaFamily() bool { return c == QuotaExceeded || c == BillingNotConfigured }

// Failover reports whether a pool may send the request to another member:
// the refusal is this account's, not the request's.
func (c Class) Failover() bool {
	return c.RateFamily() || c.QuotaFamily() || c == TokenRefused
}

// Status is the HTTP status a client sees for c when the proxy answers
// itself (no member left): 429 for the rate family, 402 for the quota
// family, 0 (keep the upstream's) otherwise.
func (c Class) Status() int {
	switch {
	case c.RateFamily():
		return http.StatusTooManyRequests
	case c.QuotaFamily():
		return http.StatusPaymentRequired
	}
	return 0
}

// Classify classifies an answer. body is the error body (or its first
// bytes); usageExhausted says that the answer's session or weekly usage
// header shows nothing left. now anchors an HTTP-date Retry-After.
func Classify(status int, h http.Header, body []byte, usageExhausted bool, now time.Time) Info {
	if status < 400 {
		return Info{}
	}
	code, msg := parseBody(body)
	in := Info{Message: msg}
	in.Code, in.Plan, _ = strings.Cut(code, ":")
	switch cl := codeClass(in.Code); {
	case identity.IsRejection(status, body):
		in.Class = IdentityRejected
	case cl != "":
		in.Class = cl
	case status == http.StatusTooManyRequests && usageExhausted:
		in.Class = UsageLimit
	case status == http.StatusTooManyRequests:
		in.Class = RateLimited
	case status == http.StatusPaymentRequired:
		in.Class = QuotaExceeded
	case status == http.StatusUnauthorized:
		in.Class = TokenRefused
	case status == http.StatusForbidden:
		l := strings.ToLower(string(body))
		if strings.Contains(l, "quota") || strings.Contains(l, "policy") {
			in.Class = Forbidden
		} else {
			in.Class = TokenRefused
		}
	case status == http.StatusServiceUnavailable:
		in.Class = Unavailable
	default:
		return Info{}
	}
	if in.Class == RateLimited && usageExhausted {
		in.Class = UsageLimit
	}
	if in.Class.RateFamily() || in.Class == Unavailable {
		in.Wait, in.WaitFrom = Wait(h, msg, now)
	}
	return in
}

// Wait is how long a rate-limited answer asks to wait: Retry-After
// (seconds or an HTTP date), else a "retry after N seconds" in the
// message, else [DefaultWait]. Capped at [MaxWait].
func Wait(h http.Header, msg string, now time.Time) (time.Duration, string) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return capWait(time.Duration(min(n, int64(MaxWait/time.Second))) * time.Second), "retry-after"
		}
		if t, err := http.ParseTime(v); err == nil {
			return capWait(max(t.Sub(now), 0)), "retry-after"
		}
	}
	if d, ok := MessageWait(msg); ok {
		return d, "message"
	}
	return DefaultWait, "default"
}

func capWait(d time.Duration) time.Duration { return min(d, MaxWait) }

// MessageWait finds "retry after N seconds" (also "retry in N seconds",
// "second" or "s", any case) in a message.
func MessageWait(msg string) (time.Duration, bool) {
	l := strings.ToLower(msg)
	for _, lead := range []string{"retry after ", "retry in ", "try again in ", "try again after "} {
		for rest := l; ; {
			i := strings.Index(rest, lead)
			if i < 0 {
				break
			}
			rest = rest[i+len(lead):]
			j := 0
			for j < len(rest) && j < 9 && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			if j == 0 {
				continue
			}
			unit := strings.TrimLeft(rest[j:], " ")
			if !strings.HasPrefix(unit, "second") && !strings.HasPrefix(unit, "sec") && !(strings.HasPrefix(unit, "s") && (len(unit) == 1 || !isLetter(unit[1]))) {
				continue
			}
			n, _ := strconv.ParseInt(rest[:j], 10, 64)
			return capWait(time.Duration(n) * time.Second), true
		}
	}
	return 0, false
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' }

// parseBody finds the error code and message in the OpenAI
// ({"error":{"code","message"}}), Anthropic ({"error":{"type","message"}})
// or GitHub ({"code"?, "message"}) shape.
func parseBody(raw []byte) (code, msg string) {
	var b struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(raw, &b) != nil {
		s := strings.TrimSpace(string(raw))
		if len(s) > 300 || strings.ContainsAny(s, "<>") {
			return "", ""
		}
		return "", s
	}
	code, msg = str(b.Code), b.Message
	var e struct {
		Code    json.RawMessage `json:"code"`
		Type    string          `json:"type"`
		Message string          `json:"message"`
	}
	if len(b.Error) > 0 && json.Unmarshal(b.Error, &e) == nil {
		if c := str(e.Code); c != "" {
			code = c
		} else if code == "" && codeClass(strings.SplitN(e.Type, ":", 2)[0]) != "" {
			code = e.Type
		}
		if e.Message != "" {
			msg = e.Message
		}
	} else if s := str(b.Error); s != "" && msg == "" {
		msg = s
	}
	return code, msg
}

// str is a JSON string's value, "" for anything else.
func str(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
