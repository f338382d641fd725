package translate

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"
)

// apiErr is an error in IR form.
type apiErr struct {
	status                 int
	message                string
	anthropicType          string
	openaiType, openaiCode string
}

// maxErrorMessage bounds a message taken from a non-JSON error body.
const maxErrorMessage = 1024

func readError(d Dialect, status int, body []byte) apiErr {
	e := apiErr{status: status}
	var w struct {
		Type  string `json:"type"`
		Error json.RawMessage
	}
	if json.Unmarshal(body, &w) == nil && len(w.Error) > 0 {
		var inner struct {
			Type    string          `json:"type"`
			Message string          `json:"message"`
			Code    json.RawMessage `json:"code"`
		}
		if isString(w.Error) {
			_ = json.Unmarshal(w.Error, &e.message)
		} else if json.Unmarshal(w.Error, &inner) == nil {
			e.message = inner.Message
			if d == Messages {
				e.anthropicType = inner.Type
			} else {
				e.openaiType = inner.Type
				if isString(inner.Code) {
					_ = json.Unmarshal(inner.Code, &e.openaiCode)
				}
			}
		}
	}
	if e.message == "" {
		msg := strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
		if len(msg) > maxErrorMessage {
			msg = msg[:maxErrorMessage]
			for !utf8.ValidString(msg) {
				msg = msg[:len(msg)-1]
			}
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		e.message = msg
	}
	if e.anthropicType == "" {
		e.anthropicType = anthropicErrorType(status)
	}
	if e.openaiType == "" {
		e.openaiType, e.openaiCode = openAIErrorType(status, e.anthropicType)
	}
	return e
}

func anthropicErrorType(status int) string {
	switch status {
	case 400, 422:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 504:
		return "timeout_error"
	case 529, 503:
		return "overloaded_error"
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error"
	}
	return "api_error"
}

func openAIErrorType(status int, anthropicType string) (typ, code string) {
	switch {
	case status == 429:
		return "rate_limit_error", "rate_limit_exceeded"
	case status == 401:
		return "invalid_request_error", "invalid_api_key"
	case status >= 500 || anthropicType == "api_error" || anthropicType == "overloaded_error":
		return "server_error", anthropicType
	}
	return "invalid_request_error", anthropicType
}

func (e apiErr) body(d Dialect) []byte {
	if d == Messages {
		b, _ := marshal(struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}{Type: "error", Error: struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}{e.anthropicType, e.message}})
		return b
	}
	return e.openAIBody()
}

func (e apiErr) openAIBody() []byte {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	in := inner{Message: e.message, Type: e.openaiType}
	if e.openaiCode != "" {
		in.Code = &e.openaiCode
	}
	b, _ := marshal(struct {
		Error inner `json:"error"`
	}{in})
	return b
}

// Error renders an upstream's error body, answered with HTTP status, in the
// client's dialect; the proxy answers it with the same status. A body in no
// known shape becomes the message (bounded).
func Error(upstream, client Dialect, status int, body []byte) []byte {
	return readError(upstream, status, body).body(client)
}

// ErrorBody renders an error the proxy makes itself (message, HTTP status)
// in the client's dialect, e.g. a 400 for an [InputError].
func ErrorBody(client Dialect, status int, message string) []byte {
	e := apiErr{status: status, message: message, anthropicType: anthropicErrorType(status)}
	e.openaiType, e.openaiCode = openAIErrorType(status, e.anthropicType)
	return e.body(client)
}
