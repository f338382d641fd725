package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

type responsesTool struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Parameters json.RawMessage `json:"parameters"`
}

type reasoningConfig struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

type responsesRequest struct {
	Model             string           `json:"model"`
	Input             json.RawMessage  `json:"input"`
	Instructions      *string          `json:"instructions"`
	Stream            bool             `json:"stream"`
	Tools             []responsesTool  `json:"tools"`
	ToolChoice        json.RawMessage  `json:"tool_choice"`
	ParallelToolCalls *bool            `json:"parallel_tool_calls"`
	MaxOutputTokens   *int             `json:"max_output_tokens"`
	Reasoning         *reasoningConfig `json:"reasoning"`
	Include           []string         `json:"include"`
	Store             *bool            `json:"store"`
	Temperature       *float64         `json:"temperature"`
	TopP              *float64         `json:"top_p"`
	// PreviousResponseID continues a stored response (history.go).
	PreviousResponseID string `json:"previous_response_id"`
}

// responsesItem is one input item; a message may come without "type".
type responsesItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	Output    json.RawMessage `json:"output"`
	ID        string          `json:"id"`
}

// parseResponses checks a Responses request as the API does and returns
// what the answer depends on.
func parseResponses(req *responsesRequest) (*conv, error) {
	c := &conv{parallelOK: req.ParallelToolCalls == nil || *req.ParallelToolCalls}
	if req.MaxOutputTokens != nil {
		if *req.MaxOutputTokens < 16 {
			return nil, badRequest("max_output_tokens: integer below minimum value. Expected a value >= 16, but got %d instead.", *req.MaxOutputTokens)
		}
		c.maxTokens = *req.MaxOutputTokens
	}
	if r := req.Reasoning; r != nil && (r.Effort == nil || *r.Effort != "none") {
		c.reasoning = true
		c.reasoningSummary = r.Summary != nil && *r.Summary != ""
	}
	c.encrypted = slices.Contains(req.Include, "reasoning.encrypted_content")
	for i, t := range req.Tools {
		if t.Type != "function" {
			continue // hosted tools: offered, never called by the sandbox
		}
		if err := c.addTool(t.Name, t.Parameters); err != nil {
			return nil, fmt.Errorf("tools[%d]: %w", i, err)
		}
	}
	if err := parseOpenAIChoice(c, req.ToolChoice, false); err != nil {
		return nil, err
	}
	if req.Instructions != nil {
		c.text(*req.Instructions)
	}
	if len(req.Input) > 0 && req.Input[0] == '"' {
		var s string
		_ = json.Unmarshal(req.Input, &s)
		c.startTurn()
		c.lastUser = s
		c.text(s)
		return c, nil
	}
	var items []responsesItem
	if err := json.Unmarshal(req.Input, &items); err != nil {
		return nil, badRequest("input: want a string or an array of input items")
	}
	var calls callTracker
	prev := ""
	for i, it := range items {
		kind := it.Type
		if kind == "" && it.Role != "" {
			kind = "message"
		}
		turn := kind
		if kind == "function_call" || kind == "reasoning" || (kind == "message" && it.Role == "assistant") {
			turn = "assistant"
		}
		if kind == "message" && it.Role != "assistant" && it.Role != "user" {
			turn = "system"
		}
		if turn != prev && turn != "system" {
			c.startTurn()
		}
		switch kind {
		case "message":
			text, err := c.responsesContent(it.Role, it.Content)
			if err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			c.text(text)
			if it.Role == "user" {
				if open := calls.unanswered(); len(open) > 0 {
					return nil, badRequest("input[%d]: No tool output found for function call %s.", i, open[0])
				}
				c.lastUser, c.lastIsTool, c.results = text, false, nil
			}
		case "function_call":
			var args string
			if json.Unmarshal(it.Arguments, &args) != nil || it.Name == "" {
				return nil, badRequest("input[%d]: a function_call needs a name and arguments as a JSON string", i)
			}
			if err := calls.call(it.CallID); err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			c.text(it.Name + args)
		case "function_call_output":
			if calls.result(it.CallID) != nil {
				return nil, badRequest("input[%d]: No tool call found for function call output with call_id %s.", i, it.CallID)
			}
			if prev != "function_call_output" {
				c.results = nil
			}
			text, err := c.responsesContent("tool", it.Output)
			if err != nil {
				return nil, fmt.Errorf("input[%d].output: %w", i, err)
			}
			c.results, c.lastIsTool = append(c.results, text), true
			c.text(text)
		case "reasoning":
			if !strings.HasPrefix(it.ID, "rs_") {
				return nil, badRequest("input[%d]: a reasoning item needs its id (rs_...)", i)
			}
		default:
			return nil, badRequest("input[%d].type: %q is not a supported input item type", i, it.Type)
		}
		if turn != "system" {
			prev = turn
			if kind == "function_call_output" {
				prev = kind
			}
		}
	}
	return c, nil
}

// responsesContent reads a message content (or a function_call_output's
// output): a string or parts. Assistant parts are output_text or refusal;
// the others input_text, input_image or input_file.
func (c *conv) responsesContent(role string, raw json.RawMessage) (string, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Refusal  string `json:"refusal"`
		ImageURL string `json:"image_url"`
		FileID   string `json:"file_id"`
		Detail   string `json:"detail"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", badRequest("content: want a string or an array of content parts")
	}
	if role == "user" {
		c.images = imageCount{}
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case role == "assistant" && p.Type == "output_text":
			b.WriteString(p.Text)
		case role == "assistant" && p.Type == "refusal":
			b.WriteString(p.Refusal)
		case role == "assistant":
			return "", badRequest("content[%d].type: Invalid value: '%s'. Supported values are: 'output_text' and 'refusal'.", i, p.Type)
		case p.Type == "input_text":
			b.WriteString(p.Text)
		case p.Type == "input_image":
			if p.Detail != "" && p.Detail != "low" && p.Detail != "high" {
				// Some models refuse any other detail on /responses
				// (docs/protocol.md section 8); the sandbox refuses it
				// for all, so a proxy must normalise it.
				return "", badRequest("content[%d].detail: %q is not supported for this model; use low or high", i, p.Detail)
			}
			if p.FileID != "" {
				continue
			}
			if err := c.image(p.ImageURL, "", ""); err != nil {
				return "", fmt.Errorf("content[%d]: %w", i, err)
			}
		case p.Type == "input_file":
		default:
			return "", badRequest("content[%d].type: Invalid value: '%s'. Supported values are: 'input_text', 'input_image' and 'input_file'.", i, p.Type)
		}
	}
	return b.String(), nil
}

type responseText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

type summaryText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// responseItem is an output item: a message, a function_call or a
// reasoning item; the fields of the other kinds are left out.
type responseItem struct {
	Type             string          `json:"type"`
	ID               string          `json:"id"`
	Status           string          `json:"status,omitempty"`
	Role             string          `json:"role,omitempty"`
	Content          *[]responseText `json:"content,omitempty"`
	CallID           string          `json:"call_id,omitempty"`
	Name             string          `json:"name,omitempty"`
	Arguments        *string         `json:"arguments,omitempty"`
	Summary          *[]summaryText  `json:"summary,omitempty"`
	EncryptedContent *string         `json:"encrypted_content,omitempty"`
}

type responseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

type responseObject struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	CreatedAt         int64              `json:"created_at"`
	Status            string             `json:"status"`
	Error             *struct{}          `json:"error"`
	IncompleteDetails *incompleteDetails `json:"incomplete_details"`
	Instructions      *string            `json:"instructions"`
	MaxOutputTokens   *int               `json:"max_output_tokens"`
	Model             string             `json:"model"`
	Output            []responseItem     `json:"output"`
	ParallelToolCalls bool               `json:"parallel_tool_calls"`
	Reasoning         reasoningConfig    `json:"reasoning"`
	Store             bool               `json:"store"`
	Temperature       *float64           `json:"temperature"`
	Text              struct {
		Format struct {
			Type string `json:"type"`
		} `json:"format"`
	} `json:"text"`
	ToolChoice json.RawMessage   `json:"tool_choice"`
	Tools      []responsesTool   `json:"tools"`
	TopP       *float64          `json:"top_p"`
	Truncation string            `json:"truncation"`
	Usage      *responseUsage    `json:"usage"`
	Metadata   map[string]string `json:"metadata"`
}

// responsesOutput renders the answer's output items, complete.
func (s *Server) responsesOutput(c *conv, a *answer) []responseItem {
	var out []responseItem
	if a.reason {
		summary := []summaryText{}
		if c.reasoningSummary && a.thinking != "" {
			summary = append(summary, summaryText{"summary_text", a.thinking})
		}
		it := responseItem{Type: "reasoning", ID: s.nextID("rs_sandbox_"), Summary: &summary}
		if c.encrypted {
			enc := thinkingSignature(a.thinking)
			it.EncryptedContent = &enc
		}
		out = append(out, it)
	}
	if a.text != "" || len(a.calls) == 0 {
		status := "completed"
		if a.stop == stopLength {
			status = "incomplete"
		}
		out = append(out, responseItem{Type: "message", ID: s.nextID("msg_sandbox_"), Status: status, Role: "assistant",
			Content: &[]responseText{{Type: "output_text", Text: a.text, Annotations: []any{}, Logprobs: []any{}}}})
	}
	for _, tc := range a.calls {
		args := tc.args
		out = append(out, responseItem{Type: "function_call", ID: "fc_" + strings.TrimPrefix(tc.id, "call_"), Status: "completed",
			CallID: tc.id, Name: tc.name, Arguments: &args})
	}
	return out
}

func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	if !s.withHistory(w, r, &req) {
		return
	}
	c, err := parseResponses(&req)
	if err != nil {
		writeReqError(w, r, err)
		return
	}
	if !checkVision(w, r, c.images.total() > 0) {
		return
	}
	a := plan(c, func() string { return s.nextID("call_sandbox_") })
	s.countUsage(r, req.Model, &a)
	resp := responseObject{
		ID: s.nextID("resp_sandbox_"), Object: "response", CreatedAt: s.clock.Now().Unix(),
		Status: "in_progress", Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens,
		Model: req.Model, Output: []responseItem{}, ParallelToolCalls: c.parallelOK,
		Store: req.Store == nil || *req.Store, Temperature: req.Temperature, ToolChoice: req.ToolChoice,
		Tools: req.Tools, TopP: req.TopP, Truncation: "disabled", Metadata: map[string]string{},
	}
	resp.Text.Format.Type = "text"
	if len(resp.ToolChoice) == 0 {
		resp.ToolChoice = json.RawMessage(`"auto"`)
	}
	if resp.Tools == nil {
		resp.Tools = []responsesTool{}
	}
	if req.Reasoning != nil {
		resp.Reasoning = *req.Reasoning
	}
	output := s.responsesOutput(c, &a)
	final := resp
	final.Status, final.Output = "completed", output
	if a.stop == stopLength {
		final.Status, final.IncompleteDetails = "incomplete", &incompleteDetails{"max_output_tokens"}
	}
	u := responseUsage{InputTokens: a.input, OutputTokens: a.output, TotalTokens: a.input + a.output}
	u.InputTokensDetails.CachedTokens = a.cached
	u.OutputTokensDetails.ReasoningTokens = a.reasoningTokens
	final.Usage = &u
	if final.Store {
		s.remember(final.ID, req.Input, output)
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, final)
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	sse := startSSE(w, r)
	seq, paced := 0, 0
	send := func(typ string, fields map[string]any) error {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return sse.send(typ, fields)
	}
	// delta sends one delta event, pacing it like every other delta.
	delta := func(typ string, fields map[string]any) error {
		if !sse.pace(paced, delay) {
			return errClientGone
		}
		paced++
		return send(typ, fields)
	}
	sse.end(func() error {
		if err := send("response.created", map[string]any{"response": resp}); err != nil {
			return err
		}
		if err := send("response.in_progress", map[string]any{"response": resp}); err != nil {
			return err
		}
		for i, it := range output {
			if err := s.streamItem(i, it, a, n, send, delta); err != nil {
				return err
			}
		}
		terminal := "response.completed"
		if final.Status == "incomplete" {
			terminal = "response.incomplete"
		}
		return send(terminal, map[string]any{"response": final})
	}())
}

// streamItem sends the events of one output item, from output_item.added to
// output_item.done, in the API's order.
func (s *Server) streamItem(i int, it responseItem, a answer, n int, send, delta func(string, map[string]any) error) error {
	ids := func(m map[string]any) map[string]any {
		m["item_id"], m["output_index"] = it.ID, i
		return m
	}
	added := it
	switch it.Type {
	case "reasoning":
		added.Summary, added.EncryptedContent = &[]summaryText{}, nil
	case "message":
		added.Status, added.Content = "in_progress", &[]responseText{}
	case "function_call":
		empty := ""
		added.Status, added.Arguments = "in_progress", &empty
	}
	if err := send("response.output_item.added", map[string]any{"output_index": i, "item": added}); err != nil {
		return err
	}
	switch it.Type {
	case "reasoning":
		for j, sum := range *it.Summary {
			part := summaryText{"summary_text", ""}
			if err := send("response.reasoning_summary_part.added", ids(map[string]any{"summary_index": j, "part": part})); err != nil {
				return err
			}
			for _, p := range splitN(sum.Text, n) {
				if err := delta("response.reasoning_summary_text.delta", ids(map[string]any{"summary_index": j, "delta": p})); err != nil {
					return err
				}
			}
			if err := send("response.reasoning_summary_text.done", ids(map[string]any{"summary_index": j, "text": sum.Text})); err != nil {
				return err
			}
			if err := send("response.reasoning_summary_part.done", ids(map[string]any{"summary_index": j, "part": sum})); err != nil {
				return err
			}
		}
	case "message":
		text := (*it.Content)[0].Text
		part := responseText{Type: "output_text", Text: "", Annotations: []any{}, Logprobs: []any{}}
		if err := send("response.content_part.added", ids(map[string]any{"content_index": 0, "part": part})); err != nil {
			return err
		}
		pieces := splitN(text, n)
		if a.stop == stopEnd && len(a.calls) == 0 {
			pieces = splitChunks(text, n)
			text = strings.Join(pieces, "")
			(*it.Content)[0].Text = text
		}
		for _, p := range pieces {
			if err := delta("response.output_text.delta", ids(map[string]any{"content_index": 0, "delta": p, "logprobs": []any{}})); err != nil {
				return err
			}
		}
		if err := send("response.output_text.done", ids(map[string]any{"content_index": 0, "text": text, "logprobs": []any{}})); err != nil {
			return err
		}
		part.Text = text
		if err := send("response.content_part.done", ids(map[string]any{"content_index": 0, "part": part})); err != nil {
			return err
		}
	case "function_call":
		for _, p := range splitN(*it.Arguments, n) {
			if err := delta("response.function_call_arguments.delta", ids(map[string]any{"delta": p})); err != nil {
				return err
			}
		}
		if err := send("response.function_call_arguments.done", ids(map[string]any{"name": it.Name, "arguments": *it.Arguments})); err != nil {
			return err
		}
	}
	return send("response.output_item.done", map[string]any{"output_index": i, "item": it})
}
