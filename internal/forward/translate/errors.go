package translate

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
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
		e.anthropicType = dialect.AnthropicType(status)
	}
	if e.openaiType == "" {
		e.openaiType, e.openaiCode = dialect.OpenAIType(status, e.anthropicType)
	}
	return e
}

// dialectError is e for the shared renderer ([dialect.Error]).
func (e apiErr) dialectError() dialect.Error {
	return dialect.Error{Status: e.status, Message: e.message, OpenAIType: e.openaiType, OpenAICode: e.openaiCode, AnthropicType: e.anthropicType}
}

// openAIErrorType is [dialect.OpenAIType], for the stream readers.
func openAIErrorType(status int, anthropicType string) (typ, code string) {
	return dialect.OpenAIType(status, anthropicType)
}

func (e apiErr) body(d Dialect) []byte { return e.dialectError().JSON(d) }

func (e apiErr) openAIBody() []byte { return e.dialectError().JSON(Chat) }

// Error renders an upstream's error body, answered with HTTP status, in the
// client's dialect; the proxy answers it with the same status. A body in no
// known shape becomes the message (bounded).
func Error(upstream, client Dialect, status int, body []byte) []byte {
	return readError(upstream, status, body).body(client)
}

// ErrorBody renders an error the proxy makes itself (message, HTTP status)
// in the client's dialect, e.g. a 400 for an [InputError].
func ErrorBody(client Dialect, status int, message string) []byte {
	e := apiErr{status: status, message: message, anthropicType: dialect.AnthropicType(status)}
	e.openaiType, e.openaiCode = dialect.OpenAIType(status, e.anthropicType)
	return e.body(client)
}
