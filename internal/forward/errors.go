package forward

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// dialect is the error format a caller's SDK understands.
type dialect uint8

const (
	dialectOpenAI dialect = iota
	dialectAnthropic
)

// apiError is an error the proxy answers itself.
type apiError struct {
	status  int
	message string
	// openaiType/openaiCode and anthropicType classify it per dialect.
	openaiType, openaiCode, anthropicType string
}

func errUnauthorized(msg string) apiError {
	return apiError{http.StatusUnauthorized, msg, "invalid_request_error", "invalid_api_key", "authentication_error"}
}

func errNotFound(msg string) apiError {
	return apiError{http.StatusNotFound, msg, "invalid_request_error", "not_found", "not_found_error"}
}

func errMethod(msg string) apiError {
	return apiError{http.StatusMethodNotAllowed, msg, "invalid_request_error", "method_not_allowed", "invalid_request_error"}
}

func errTooLarge(msg string) apiError {
	return apiError{http.StatusRequestEntityTooLarge, msg, "invalid_request_error", "request_too_large", "request_too_large"}
}

func errBadRequest(msg string) apiError {
	return apiError{http.StatusBadRequest, msg, "invalid_request_error", "bad_request", "invalid_request_error"}
}

func errUnavailable(msg string) apiError {
	return apiError{http.StatusServiceUnavailable, msg, "server_error", "token_unavailable", "api_error"}
}

func errOverloaded(msg string) apiError {
	return apiError{http.StatusServiceUnavailable, msg, "server_error", "overloaded", "overloaded_error"}
}

func errBadGateway(msg string) apiError {
	return apiError{http.StatusBadGateway, msg, "server_error", "upstream_error", "api_error"}
}

func errGatewayTimeout(msg string) apiError {
	return apiError{http.StatusGatewayTimeout, msg, "server_error", "upstream_timeout", "api_error"}
}

type openaiBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

type anthropicBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers e as JSON in dialect d: OpenAI's
// {"error":{"message","type","code"}} or Anthropic's
// {"type":"error","error":{"type","message"}}.
func writeError(w http.ResponseWriter, d dialect, e apiError) {
	b := errorBody(d, e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// errorBody is e as JSON in dialect d, with a final newline.
func errorBody(d dialect, e apiError) []byte {
	var b []byte
	if d == dialectAnthropic {
		var a anthropicBody
		a.Type = "error"
		a.Error.Type, a.Error.Message = e.anthropicType, e.message
		b, _ = json.Marshal(a)
	} else {
		var o openaiBody
		o.Error.Message, o.Error.Type, o.Error.Code = e.message, e.openaiType, e.openaiCode
		b, _ = json.Marshal(o)
	}
	return append(b, '\n')
}
