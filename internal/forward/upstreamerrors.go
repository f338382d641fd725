package forward

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// Upstream errors (docs/protocol.md section 5) are classified: a 401, and a
// 403 without a quota or policy body, mean the token was refused (refresh
// once and retry, transport.go); 402 (quota), 429 and 503 (rate limits) and
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
// ModifyResponse for every answer; a success costs one switch.
func (h *Handler) classifyError(resp *http.Response, c *call) {
	kind := errorKind(resp.StatusCode)
	if kind == "" {
		return
	}
	h.metrics.upstreamErrors.WithLabelValues(kind).Inc()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	msg := upstreamMessage(raw)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := apiError{status: resp.StatusCode, message: "Copilot API: " + msg}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.openaiType, e.openaiCode, e.anthropicType = "invalid_request_error", "invalid_api_key", "authentication_error"
	case http.StatusForbidden:
		e.openaiType, e.openaiCode, e.anthropicType = "invalid_request_error", "forbidden", "permission_error"
	case http.StatusPaymentRequired:
		e.openaiType, e.openaiCode, e.anthropicType = "insufficient_quota", "quota_exceeded", "billing_error"
	case http.StatusTooManyRequests:
		e.openaiType, e.openaiCode, e.anthropicType = "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"
	case http.StatusServiceUnavailable:
		e.openaiType, e.openaiCode, e.anthropicType = "server_error", "upstream_unavailable", "overloaded_error"
	case 466:
		e.openaiType, e.openaiCode, e.anthropicType = "invalid_request_error", "client_not_supported", "invalid_request_error"
		e.message += " (the proxy's editor identity is too old: update " + identity.FlagNames + ")"
		h.log.Warn("the Copilot API refused the editor identity as too old (466); update "+identity.FlagNames+" on the proxy and the broker",
			"editor_version", h.currentEditor().Version, "editor_plugin_version", h.currentEditor().PluginVersion, "request_id", c.requestID)
	}
	setJSONBody(resp, errorBody(c.route.dialect, e))
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
