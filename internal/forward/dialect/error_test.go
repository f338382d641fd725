package dialect

import (
	"net/http/httptest"
	"testing"
)

// TestErrorShapes: one error in each dialect, as a body and as the event
// that ends a stream.
func TestErrorShapes(t *testing.T) {
	e := Error{Status: 429, Message: "slow <down>", OpenAIType: "rate_limit_error", OpenAICode: "rate_limit_exceeded", AnthropicType: "rate_limit_error"}
	for _, tt := range []struct {
		d           Dialect
		body, event string
	}{
		{Messages, `{"type":"error","error":{"type":"rate_limit_error","message":"slow <down>"}}`,
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow <down>\"}}\n\n"},
		{Chat, `{"error":{"message":"slow <down>","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`,
			"data: {\"error\":{\"message\":\"slow <down>\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n"},
		{Responses, `{"error":{"message":"slow <down>","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`,
			"event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow <down>\",\"param\":null}\n\n"},
	} {
		if got := string(e.JSON(tt.d)); got != tt.body {
			t.Errorf("JSON(%s) = %s; want %s", tt.d, got, tt.body)
		}
		if got := string(e.Event(tt.d)); got != tt.event {
			t.Errorf("Event(%s) = %q; want %q", tt.d, got, tt.event)
		}
		w := httptest.NewRecorder()
		Write(w, tt.d, e)
		if w.Code != 429 || w.Body.String() != tt.body+"\n" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("Write(%s) = %d %q %v", tt.d, w.Code, w.Body, w.Header())
		}
	}
	if got := ForStatus(503, "x"); got.AnthropicType != "overloaded_error" || got.OpenAIType != "server_error" || got.OpenAICode != "overloaded_error" {
		t.Errorf("ForStatus(503) = %+v", got)
	}
	if got := ForStatus(400, "x").JSON(Chat); string(got) != `{"error":{"message":"x","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}` {
		t.Errorf("ForStatus(400).JSON = %s", got)
	}
}
