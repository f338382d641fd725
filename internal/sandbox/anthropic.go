package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

type anthropicTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthropicRequest struct {
	Model      string          `json:"model"`
	MaxTokens  int             `json:"max_tokens"`
	System     json.RawMessage `json:"system"`
	Messages   []anthropicTurn `json:"messages"`
	Stream     bool            `json:"stream"`
	Tools      []anthropicTool `json:"tools"`
	ToolChoice *struct {
		Type                   string `json:"type"`
		Name                   string `json:"name"`
		DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
	} `json:"tool_choice"`
	Thinking *struct {
		Type         string `json:"type"`
		BudgetTokens int    `json:"budget_tokens"`
		Display      string `json:"display"`
	} `json:"thinking"`
	StopSequences []string `json:"stop_sequences"`
}

type anthropicTurn struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// anthropicBlock is a content block of a request, every kind's fields.
type anthropicBlock struct {
	Type   string `json:"type"`
	Text   string `json:"text"`
	Source *struct {
		Type      string `json:"type"`
		MediaType string `json:"media_type"`
		Data      string `json:"data"`
		URL       string `json:"url"`
	} `json:"source"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	Thinking  string          `json:"thinking"`
	Signature string          `json:"signature"`
}

var toolUseIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// parseAnthropic checks a Messages request as the API does and returns what
// the answer depends on.
func parseAnthropic(req *anthropicRequest, needMaxTokens bool) (*conv, error) {
	if len(req.Messages) == 0 {
		return nil, badRequest("messages: at least one message is required")
	}
	if needMaxTokens && req.MaxTokens <= 0 {
		return nil, badRequest("max_tokens: field required")
	}
	c := &conv{parallelOK: true, maxTokens: req.MaxTokens, stop: req.StopSequences}
	if t := req.Thinking; t != nil {
		switch t.Type {
		case "enabled":
			if t.BudgetTokens < 1024 {
				return nil, badRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
			}
			if needMaxTokens && t.BudgetTokens >= req.MaxTokens {
				return nil, badRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
			}
			c.reasoning = true
		case "adaptive":
			c.reasoning = true
		case "disabled":
		default:
			return nil, badRequest("thinking.type: %q is not one of enabled, adaptive, disabled", t.Type)
		}
		c.thinkingOmitted = c.reasoning && t.Display == "omitted"
	}
	for i, t := range req.Tools {
		if t.Type != "" && t.Type != "custom" {
			continue // server tools: offered, never called by the sandbox
		}
		if len(t.InputSchema) == 0 {
			return nil, badRequest("tools.%d.custom.input_schema: Field required", i)
		}
		if err := c.addTool(t.Name, t.InputSchema); err != nil {
			return nil, fmt.Errorf("tools.%d: %w", i, err)
		}
	}
	c.choice.mode = "auto"
	if tc := req.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto", "none":
			c.choice.mode = tc.Type
		case "any":
			c.choice.mode = "required"
		case "tool":
			c.choice = toolChoice{"named", tc.Name}
		default:
			return nil, badRequest("tool_choice.type: %q is not one of auto, any, tool, none", tc.Type)
		}
		c.parallelOK = !tc.DisableParallelToolUse
		if err := c.checkChoice(); err != nil {
			return nil, err
		}
	}
	sys, err := c.anthropicText(req.System)
	if err != nil {
		return nil, fmt.Errorf("system: %w", err)
	}
	c.text(sys)
	var pending []string // tool_use ids of the previous assistant message
	for i, m := range req.Messages {
		blocks, err := anthropicBlocks(m.Content)
		if err != nil {
			return nil, fmt.Errorf("messages.%d.content: %w", i, err)
		}
		if m.Role == "system" { // newer clients put system turns among the messages
			for _, b := range blocks {
				c.text(b.Text)
			}
			continue
		}
		c.startTurn()
		var uses []string
		answered := map[string]bool{}
		var text strings.Builder
		if m.Role == "user" {
			c.images, c.results = imageCount{}, nil
		}
		for j, b := range blocks {
			if err := c.anthropicBlock(m.Role, b, &text, &uses, answered, pending); err != nil {
				return nil, fmt.Errorf("messages.%d.content.%d: %w", i, j, err)
			}
		}
		var missing []string
		for _, id := range pending {
			if !answered[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return nil, badRequest("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i-1, strings.Join(missing, ", "))
		}
		pending = uses
		c.text(text.String())
		switch m.Role {
		case "user":
			c.lastUser, c.lastIsTool = text.String(), len(answered) > 0
		case "assistant":
		default:
			return nil, badRequest("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
	}
	return c, nil
}

// anthropicBlocks reads a content that is a string or an array of blocks.
func anthropicBlocks(raw json.RawMessage) ([]anthropicBlock, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return []anthropicBlock{{Type: "text", Text: s}}, err
	}
	var blocks []anthropicBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, badRequest("want a string or an array of content blocks")
	}
	return blocks, nil
}

// anthropicText reads a system prompt or a tool result's content: a string
// or text (and, in tool results, image) blocks.
func (c *conv) anthropicText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	blocks, err := anthropicBlocks(raw)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i, bl := range blocks {
		switch bl.Type {
		case "text":
			b.WriteString(bl.Text)
		case "image":
			if err := c.anthropicImage(bl); err != nil {
				return "", fmt.Errorf("%d: %w", i, err)
			}
		default:
			return "", badRequest("%d.type: %q is not valid here", i, bl.Type)
		}
	}
	return b.String(), nil
}

func (c *conv) anthropicImage(b anthropicBlock) error {
	switch {
	case b.Source == nil:
		return badRequest("image.source: Field required")
	case b.Source.Type == "base64":
		return c.image("", b.Source.MediaType, b.Source.Data)
	case b.Source.Type == "url" && !strings.HasPrefix(b.Source.URL, "data:"):
		return c.image(b.Source.URL, "", "")
	}
	return badRequest("image.source.type: %q is not one of base64, url (with an http(s) URL)", b.Source.Type)
}

// anthropicBlock checks one block of a role's message and adds its text.
func (c *conv) anthropicBlock(role string, b anthropicBlock, text *strings.Builder, uses *[]string, answered map[string]bool, pending []string) error {
	switch {
	case b.Type == "text":
		text.WriteString(b.Text)
	case b.Type == "image" && role == "user":
		return c.anthropicImage(b)
	case b.Type == "document" && role == "user":
	case b.Type == "tool_use" && role == "assistant":
		if !toolUseIDRe.MatchString(b.ID) {
			return badRequest("tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
		}
		if len(b.Input) == 0 || b.Input[0] != '{' {
			return badRequest("tool_use.input: Input should be a valid dictionary")
		}
		*uses = append(*uses, b.ID)
		text.WriteString(b.Name)
		text.Write(b.Input)
	case b.Type == "tool_result" && role == "user":
		if !slices.Contains(pending, b.ToolUseID) || answered[b.ToolUseID] {
			return badRequest("unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", b.ToolUseID)
		}
		answered[b.ToolUseID] = true
		result, err := c.anthropicText(b.Content)
		if err != nil {
			return fmt.Errorf("tool_result.content.%w", err)
		}
		c.results = append(c.results, result)
		text.WriteString(result)
	case b.Type == "thinking" && role == "assistant":
		if !validSignature(b.Signature) {
			return badRequest("Invalid `signature` in `thinking` block")
		}
	case b.Type == "redacted_thinking" && role == "assistant":
	default:
		return badRequest("type: %q is not a valid block in a %s message", b.Type, role)
	}
	return nil
}

type anthropicUsage struct {
	InputTokens              int    `json:"input_tokens"`
	CacheCreationInputTokens int    `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int    `json:"cache_read_input_tokens"`
	OutputTokens             int    `json:"output_tokens"`
	ServiceTier              string `json:"service_tier,omitempty"`
}

// anthropicContent is an answer's content block: text, thinking or tool_use.
type anthropicContent struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text,omitempty"`
	Thinking  *string         `json:"thinking,omitempty"`
	Signature *string         `json:"signature,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
}

type anthropicMessage struct {
	ID           string             `json:"id"`
	Type         string             `json:"type"`
	Role         string             `json:"role"`
	Model        string             `json:"model"`
	Content      []anthropicContent `json:"content"`
	StopReason   *string            `json:"stop_reason"`
	StopSequence *string            `json:"stop_sequence"`
	Usage        anthropicUsage     `json:"usage"`
}

func anthropicStop(k stopKind) string {
	switch k {
	case stopTool:
		return "tool_use"
	case stopLength:
		return "max_tokens"
	case stopSequence:
		return "stop_sequence"
	}
	return "end_turn"
}

// anthropicBlocksOf renders the answer's content: thinking, then text (a
// short preamble before tool calls, as Claude writes), then tool_use blocks.
func anthropicBlocksOf(a *answer) []anthropicContent {
	var out []anthropicContent
	if a.reason {
		th, sig := a.thinking, thinkingSignature(a.thinking)
		out = append(out, anthropicContent{Type: "thinking", Thinking: &th, Signature: &sig})
	}
	text := a.text
	if len(a.calls) > 0 && text == "" {
		text = "Calling " + a.calls[0].name + "."
	}
	if text != "" {
		out = append(out, anthropicContent{Type: "text", Text: &text})
	}
	for _, tc := range a.calls {
		out = append(out, anthropicContent{Type: "tool_use", ID: "toolu_" + strings.TrimPrefix(tc.id, "call_"), Name: tc.name, Input: json.RawMessage(tc.args)})
	}
	return out
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	var req anthropicRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	c, err := parseAnthropic(&req, true)
	if err != nil {
		writeReqError(w, r, err)
		return
	}
	// Images need Copilot-Vision-Request here too (docs/protocol.md
	// section 8, correcting section 4).
	if !checkVision(w, r, c.images.total() > 0) {
		return
	}
	a := plan(c, func() string { return s.nextID("call_sandbox_") })
	s.countUsage(r, req.Model, &a)
	stop := anthropicStop(a.stop)
	var stopSeq *string
	if a.stop == stopSequence {
		stopSeq = &a.stopSeq
	}
	usage := anthropicUsage{InputTokens: a.input - a.cached, CacheReadInputTokens: a.cached, OutputTokens: a.output, ServiceTier: "standard"}
	msg := anthropicMessage{
		ID: s.nextID("msg_sandbox_"), Type: "message", Role: "assistant", Model: req.Model,
		Content: anthropicBlocksOf(&a), StopReason: &stop, StopSequence: stopSeq, Usage: usage,
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, msg)
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	sse := startSSE(w, r)
	paced := 0
	delta := func(index int, d map[string]any) error {
		if !sse.pace(paced, delay) {
			return errClientGone
		}
		paced++
		return sse.send("content_block_delta", map[string]any{"type": "content_block_delta", "index": index, "delta": d})
	}
	sse.end(func() error {
		start := msg
		start.Content, start.StopReason, start.StopSequence = []anthropicContent{}, nil, nil
		start.Usage.OutputTokens = 1
		if err := sse.send("message_start", map[string]any{"type": "message_start", "message": start}); err != nil {
			return err
		}
		for i, b := range msg.Content {
			if err := s.streamBlock(sse, i, b, &a, n, delta); err != nil {
				return err
			}
		}
		u := usage
		u.ServiceTier = ""
		return sse.sendAll(
			sseEvent{"message_delta", map[string]any{"type": "message_delta",
				"delta": map[string]any{"stop_reason": stop, "stop_sequence": stopSeq}, "usage": u}},
			sseEvent{"message_stop", map[string]string{"type": "message_stop"}},
		)
	}())
}

// streamBlock sends one content block: its start (with empty content), its
// deltas and its stop; a ping follows the first block's start.
func (s *Server) streamBlock(sse *sseWriter, i int, b anthropicContent, a *answer, n int, delta func(int, map[string]any) error) error {
	start := b
	empty := ""
	switch b.Type {
	case "thinking":
		start.Thinking, start.Signature = &empty, &empty
	case "text":
		start.Text = &empty
	case "tool_use":
		start.Input = json.RawMessage(`{}`)
	}
	events := []sseEvent{{"content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": start}}}
	if i == 0 {
		events = append(events, sseEvent{"ping", map[string]string{"type": "ping"}})
	}
	if err := sse.sendAll(events...); err != nil {
		return err
	}
	switch b.Type {
	case "thinking":
		for _, p := range splitN(*b.Thinking, n) {
			if err := delta(i, map[string]any{"type": "thinking_delta", "thinking": p}); err != nil {
				return err
			}
		}
		if err := delta(i, map[string]any{"type": "signature_delta", "signature": *b.Signature}); err != nil {
			return err
		}
	case "text":
		pieces := splitN(*b.Text, n)
		if a.stop == stopEnd && len(a.calls) == 0 {
			pieces = splitChunks(*b.Text, n)
		}
		for _, p := range pieces {
			if err := delta(i, map[string]any{"type": "text_delta", "text": p}); err != nil {
				return err
			}
		}
	case "tool_use":
		for _, p := range splitN(string(b.Input), n) {
			if err := delta(i, map[string]any{"type": "input_json_delta", "partial_json": p}); err != nil {
				return err
			}
		}
	}
	return sse.send("content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
}
