package dialect

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// Error is an error as a client sees it, classified for every dialect.
type Error struct {
	Status  int
	Message string
	// OpenAIType and OpenAICode classify it for the OpenAI dialects
	// (OpenAICode may be empty: null), AnthropicType for Messages.
	OpenAIType, OpenAICode, AnthropicType string
}

// ForStatus is an error with the types a status has by default.
func ForStatus(status int, message string) Error {
	e := Error{Status: status, Message: message, AnthropicType: AnthropicType(status)}
	e.OpenAIType, e.OpenAICode = OpenAIType(status, e.AnthropicType)
	return e
}

// AnthropicType is the Anthropic error type of an HTTP status.
func AnthropicType(status int) string {
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

// OpenAIType is the OpenAI error type and code of an HTTP status, given
// the Anthropic type it has (which becomes the code when no better one is
// known).
func OpenAIType(status int, anthropicType string) (typ, code string) {
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

type openAIInner struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type anthropicInner struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// JSON is e as the error body of dialect d: Anthropic's
// {"type":"error","error":{"type","message"}}, or OpenAI's
// {"error":{"message","type","param","code"}} for both OpenAI dialects.
func (e Error) JSON(d Dialect) []byte {
	if d == Messages {
		return marshal(struct {
			Type  string         `json:"type"`
			Error anthropicInner `json:"error"`
		}{"error", anthropicInner{e.AnthropicType, e.Message}})
	}
	return marshal(struct {
		Error openAIInner `json:"error"`
	}{e.openAI()})
}

func (e Error) openAI() openAIInner {
	in := openAIInner{Message: e.Message, Type: e.OpenAIType}
	if e.OpenAICode != "" {
		in.Code = &e.OpenAICode
	}
	return in
}

// Event is e as the server-sent event that ends a stream of dialect d, in
// the shape its SDKs read as an error: Anthropic's "event: error" with the
// error body, the Responses API's "event: error" with
// {"type":"error","code","message","param"}, and Chat Completions' data line
// with the error body.
func (e Error) Event(d Dialect) []byte {
	var b []byte
	switch d {
	case Messages:
		b = append([]byte("event: error\ndata: "), e.JSON(d)...)
	case Responses:
		code := e.OpenAICode
		if code == "" {
			code = e.OpenAIType
		}
		b = append([]byte("event: error\ndata: "), marshal(struct {
			Type    string  `json:"type"`
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Param   *string `json:"param"`
		}{"error", code, e.Message, nil})...)
	default:
		b = append([]byte("data: "), e.JSON(d)...)
	}
	return append(b, "\n\n"...)
}

// Write answers e as JSON in dialect d, with a final newline.
func Write(w http.ResponseWriter, d Dialect, e Error) {
	b := append(e.JSON(d), '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

// marshal is json.Marshal without HTML escaping (messages quote code).
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the types above always encode
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
