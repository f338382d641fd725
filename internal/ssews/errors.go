package ssews

import (
	"encoding/json"
	"net/http"
)

// ErrorDetail is the "error" object of an error event, in the OpenAI shape.
type ErrorDetail struct {
	Type    string `json:"type,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
}

// errorEvent is what a Responses WebSocket sends for a failed
// response.create: {"type":"error","status":N,"error":{...}}.
type errorEvent struct {
	Type   string          `json:"type"`
	Status int             `json:"status,omitempty"`
	Error  json.RawMessage `json:"error"`
}

// ErrorEvent renders an error event with status and detail.
func ErrorEvent(status int, d ErrorDetail) []byte {
	raw, _ := json.Marshal(d)
	out, _ := json.Marshal(errorEvent{Type: "error", Status: status, Error: raw})
	return out
}

// ErrorEventFromBody turns an HTTP error answer into an error event: the
// body's "error" object is kept as it is when it has one (the OpenAI shape,
// which the proxy and the API use), else its text becomes the message.
func ErrorEventFromBody(status int, body []byte) []byte {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && len(v.Error) > 0 && v.Error[0] == '{' {
		out, _ := json.Marshal(errorEvent{Type: "error", Status: status, Error: v.Error})
		return out
	}
	msg := string(body)
	if len(msg) > 512 {
		msg = msg[:512]
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return ErrorEvent(status, ErrorDetail{Type: "api_error", Message: msg})
}
