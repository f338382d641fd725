package sandbox

import (
	"encoding/json"
	"net/http"
)

type responsesRequest struct {
	Model        string          `json:"model"`
	Input        json.RawMessage `json:"input"`
	Instructions string          `json:"instructions"`
	Stream       bool            `json:"stream"`
}

type responseText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type responseItem struct {
	Type    string         `json:"type"`
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Role    string         `json:"role"`
	Content []responseText `json:"content"`
}

type responseUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type responseObject struct {
	ID        string         `json:"id"`
	Object    string         `json:"object"`
	CreatedAt int64          `json:"created_at"`
	Status    string         `json:"status"`
	Model     string         `json:"model"`
	Output    []responseItem `json:"output"`
	Usage     *responseUsage `json:"usage"`
}

// responsesPrompt returns the last user text of a Responses input, which is
// a string or a list of items, and whether it carries an image.
func responsesPrompt(raw json.RawMessage) (string, bool) {
	if len(raw) > 0 && raw[0] == '"' {
		return contentText(raw)
	}
	var items []chatMessage
	_ = json.Unmarshal(raw, &items)
	prompt, image := "", false
	for _, it := range items {
		text, img := contentText(it.Content)
		image = image || img
		if it.Role == "user" {
			prompt = text
		}
	}
	return prompt, image
}

func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	prompt, image := responsesPrompt(req.Input)
	if !checkVision(w, r, image) {
		return
	}
	text := reply(prompt)
	resp := responseObject{
		ID: s.nextID("resp_sandbox_"), Object: "response", CreatedAt: s.clock.Now().Unix(),
		Status: "in_progress", Model: req.Model, Output: []responseItem{},
	}
	item := responseItem{Type: "message", ID: s.nextID("msg_sandbox_"), Status: "in_progress", Role: "assistant",
		Content: []responseText{}}
	done := func(text string) responseObject {
		final := resp
		it := item
		it.Status = "completed"
		it.Content = []responseText{{Type: "output_text", Text: text, Annotations: []any{}}}
		final.Status, final.Output = "completed", []responseItem{it}
		in, out := estimateTokens(prompt), estimateTokens(text)
		final.Usage = &responseUsage{InputTokens: in, OutputTokens: out, TotalTokens: in + out}
		return final
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, done(text))
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	chunks := splitChunks(text, n)
	full := ""
	for _, c := range chunks {
		full += c
	}
	sse := startSSE(w, r)
	seq := 0
	send := func(typ string, fields map[string]any) error {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return sse.send(typ, fields)
	}
	ids := func(m map[string]any) map[string]any {
		m["item_id"], m["output_index"], m["content_index"] = item.ID, 0, 0
		return m
	}
	sse.end(func() error {
		part := responseText{Type: "output_text", Text: "", Annotations: []any{}}
		steps := []func() error{
			func() error { return send("response.created", map[string]any{"response": resp}) },
			func() error {
				return send("response.output_item.added", map[string]any{"output_index": 0, "item": item})
			},
			func() error { return send("response.content_part.added", ids(map[string]any{"part": part})) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		for i, c := range chunks {
			if !sse.pace(i, delay) {
				return errClientGone
			}
			if err := send("response.output_text.delta", ids(map[string]any{"delta": c})); err != nil {
				return err
			}
		}
		final := done(full)
		part.Text = full
		if err := send("response.output_text.done", ids(map[string]any{"text": full})); err != nil {
			return err
		}
		if err := send("response.content_part.done", ids(map[string]any{"part": part})); err != nil {
			return err
		}
		if err := send("response.output_item.done", map[string]any{"output_index": 0, "item": final.Output[0]}); err != nil {
			return err
		}
		return send("response.completed", map[string]any{"response": final})
	}())
}
