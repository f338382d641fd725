package sandbox

import (
	"encoding/json"
	"net/http"
	"strings"
)

type anthropicRequest struct {
	Model     string          `json:"model"`
	MaxTokens int             `json:"max_tokens"`
	System    json.RawMessage `json:"system"`
	Messages  []chatMessage   `json:"messages"`
	Stream    bool            `json:"stream"`
}

type anthropicText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

type anthropicMessage struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Role         string          `json:"role"`
	Model        string          `json:"model"`
	Content      []anthropicText `json:"content"`
	StopReason   *string         `json:"stop_reason"`
	StopSequence *string         `json:"stop_sequence"`
	Usage        anthropicUsage  `json:"usage"`
}

// prompt returns the last user text, all the input's text (for counting) and
// whether an image is attached.
func (req *anthropicRequest) prompt() (last, all string, image bool) {
	var b strings.Builder
	sys, _ := contentText(req.System)
	b.WriteString(sys)
	for _, m := range req.Messages {
		text, img := contentText(m.Content)
		image = image || img
		b.WriteString(text)
		if m.Role == "user" {
			last = text
		}
	}
	return last, b.String(), image
}

// decodeAnthropic reads and checks a Messages request, answering 400 itself.
func (s *Server) decodeAnthropic(w http.ResponseWriter, r *http.Request, needMaxTokens bool) (*anthropicRequest, bool) {
	var req anthropicRequest
	if !decode(w, r, &req) {
		return nil, false
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return nil, false
	}
	if len(req.Messages) == 0 {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "messages: at least one message is required")
		return nil, false
	}
	if needMaxTokens && req.MaxTokens <= 0 {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "max_tokens: field required")
		return nil, false
	}
	return &req, true
}

func (s *Server) handleCountTokens(w http.ResponseWriter, r *http.Request) {
	// count_tokens resolves the model against /v1/messages.
	r2 := *r
	u := *r.URL
	u.Path = pathMessages
	r2.URL = &u
	req, ok := s.decodeAnthropic(w, &r2, false)
	if !ok {
		return
	}
	_, all, _ := req.prompt()
	writeJSON(w, http.StatusOK, map[string]int{"input_tokens": estimateTokens(all)})
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	req, ok := s.decodeAnthropic(w, r, true)
	if !ok {
		return
	}
	last, all, image := req.prompt()
	if !checkVision(w, r, image) {
		return
	}
	text, endTurn := reply(last), "end_turn"
	msg := anthropicMessage{
		ID: s.nextID("msg_sandbox_"), Type: "message", Role: "assistant", Model: req.Model,
		Content: []anthropicText{{Type: "text", Text: text}}, StopReason: &endTurn,
		Usage: anthropicUsage{InputTokens: estimateTokens(all), OutputTokens: estimateTokens(text)},
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, msg)
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	chunks := splitChunks(text, n)
	sse := startSSE(w, r)
	sse.end(func() error {
		start := msg
		start.Content, start.StopReason = []anthropicText{}, nil
		start.Usage.OutputTokens = 1
		err := sse.sendAll(
			sseEvent{"message_start", map[string]any{"type": "message_start", "message": start}},
			sseEvent{"content_block_start", map[string]any{"type": "content_block_start", "index": 0,
				"content_block": anthropicText{Type: "text", Text: ""}}},
			sseEvent{"ping", map[string]string{"type": "ping"}},
		)
		if err != nil {
			return err
		}
		for i, c := range chunks {
			if !sse.pace(i, delay) {
				return errClientGone
			}
			if err := sse.send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
				"delta": map[string]string{"type": "text_delta", "text": c}}); err != nil {
				return err
			}
		}
		return sse.sendAll(
			sseEvent{"content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}},
			sseEvent{"message_delta", map[string]any{"type": "message_delta",
				"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
				"usage": map[string]int{"output_tokens": msg.Usage.OutputTokens}}},
			sseEvent{"message_stop", map[string]string{"type": "message_stop"}},
		)
	}())
}
