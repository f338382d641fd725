package forward

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/forward/upstreamerr"
	"github.com/copilot-broker/copilot-broker/internal/identity"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// Upstream errors (docs/protocol.md section 5) are classified: a 401, and a
// 403 without a quota or policy body, mean the token was refused (refresh
// once and retry, retry.go); 402 (quota), 429 and 503 (rate limits) and
// 466 (client not supported) reach the client in its own dialect with the
// upstream's status and headers (Retry-After included), and each kind is
// counted so an alert can fire.

// errorKind names an upstream error class for
// copilot_proxy_upstream_errors_total{kind}.
func errorKind(status int) string {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "token_refused"
	case http.StatusPaymentRequired:
		return "quota"
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return "rate_limited"
	case 466:
		return "client_not_supported"
	}
	return ""
}

// maxErrorBody bounds the upstream error body read to reshape it.
const maxErrorBody = 64 << 10

// refreshable403 reports whether a 403 means a refused token: its body
// names no quota or policy. The body read is put back.
func refreshable403(resp *http.Response) bool {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	l := bytes.ToLower(b)
	return !bytes.Contains(l, []byte("quota")) && !bytes.Contains(l, []byte("policy"))
}

// classifyError counts an upstream error answer and rewrites its body into
// the client's dialect, keeping the status and headers. Called from
// ModifyResponse for every answer; a success costs one switch. A 400 or 404
// is looked into only for a refusal of the upstream profile
// (identity_rejected); other 400s and 404s pass as they are.
func (h *Handler) classifyError(resp *http.Response, c *call) {
	kind := errorKind(resp.StatusCode)
	if kind == "" {
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound ||
			!identity.IsRejection(resp.StatusCode, peekBody(resp, 4<<10)) {
			return
		}
		kind = "client_not_supported"
	}
	h.metrics.upstreamErrors.WithLabelValues(kind).Inc()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	info := upstreamerr.Classify(resp.StatusCode, resp.Header, raw, false, h.clock.Now())
	if info.Class != upstreamerr.None {
		h.metrics.classMetrics().count(info.Class)
	}
	msg := info.Message
	if msg == "" {
		msg = upstreamMessage(raw)
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := dialect.Error{Status: resp.StatusCode, Message: "Copilot API: " + msg}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "invalid_request_error", "invalid_api_key", "authentication_error"
	case http.StatusForbidden:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "invalid_request_error", "forbidden", "permission_error"
	case http.StatusPaymentRequired:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "insufficient_quota", "quota_exceeded", "billing_error"
	case http.StatusTooManyRequests:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"
	case http.StatusServiceUnavailable:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "server_error", "upstream_unavailable", "overloaded_error"
	default:
		e.OpenAIType, e.OpenAICode, e.AnthropicType = "invalid_request_error", "client_not_supported", "invalid_request_error"
	}
	if info.Code != "" && info.Class != upstreamerr.IdentityRejected {
		e.OpenAICode = info.Code // the upstream's own code, :plan suffix dropped
	}
	if info.Class == upstreamerr.IdentityRejected {
		e.Message += " (the editor identity is too old or retired: " + identity.ProfileAdvice +
			"; or this proxy's " + identity.FlagNames + " where they override it)"
		h.identityRejected(c, resp.StatusCode, msg)
	}
	setJSONBody(resp, append(e.JSON(c.route.dialect), '\n'))
}

// upstreamMessage finds the message of an error body in the OpenAI,
// Anthropic or GitHub shape.
func upstreamMessage(raw []byte) string {
	var b struct {
		Message string `json:"message"`
		Error   *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &b) != nil {
		s := strings.TrimSpace(string(raw))
		if len(s) > 200 || strings.ContainsAny(s, "<>") {
			return ""
		}
		return s
	}
	if b.Error != nil && b.Error.Message != "" {
		return b.Error.Message
	}
	return b.Message
}
