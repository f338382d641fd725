package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Anthropic Messages request wire types (anthropic-sdk-go MessageNewParams).

type msgRequest struct {
	Model         string          `json:"model"`
	MaxTokens     int             `json:"max_tokens"`
	System        json.RawMessage `json:"system,omitempty"`
	Messages      []msgMessage    `json:"messages"`
	Tools         []msgTool       `json:"tools,omitempty"`
	ToolChoice    *msgToolChoice  `json:"tool_choice,omitempty"`
	Thinking      *msgThinking    `json:"thinking,omitempty"`
	OutputConfig  *msgOutputCfg   `json:"output_config,omitempty"`
	Temperature   *float64        `json:"temperature,omitempty"`
	TopP          *float64        `json:"top_p,omitempty"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	Metadata      *msgMetadata    `json:"metadata,omitempty"`
}

var msgRequestKeys = []string{"max_tokens", "messages", "metadata", "model", "output_config", "stop_sequences", "stream", "system", "temperature", "thinking", "tool_choice", "tools", "top_p"}

type msgMetadata struct {
	UserID string `json:"user_id,omitempty"`
}

type msgOutputCfg struct {
	Effort string          `json:"effort,omitempty"`
	Format json.RawMessage `json:"format,omitempty"`
}

type msgThinking struct {
	Type         string `json:"type"`
	BudgetTokens int    `json:"budget_tokens,omitempty"`
}

type msgToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

type msgTool struct {
	Type        string          `json:"type,omitempty"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type msgMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type msgSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type msgBlock struct {
	Type      string          `json:"type"`
	Text      *string         `json:"text,omitempty"`
	Source    *msgSource      `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"`
	IsError   bool            `json:"is_error,omitempty"`
	Thinking  *string         `json:"thinking,omitempty"`
	Signature *string         `json:"signature,omitempty"`
	Data      string          `json:"data,omitempty"`
	// CacheControl is read only to report it dropped.
	CacheControl json.RawMessage `json:"cache_control,omitempty"`
}

func readMessagesRequest(body []byte, info *Info) (*RequestIR, error) {
	var in msgRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badField(Messages, "", "invalid JSON: %v", err)
	}
	dropUnknown(body, msgRequestKeys, info)
	r := &RequestIR{
		Model: in.Model, MaxTokens: in.MaxTokens, Temperature: in.Temperature, TopP: in.TopP,
		Stop: in.StopSequences, Stream: in.Stream,
	}
	if in.Metadata != nil {
		r.User = in.Metadata.UserID
	}
	if len(in.System) > 0 && !isNull(in.System) {
		parts, err := readMsgContent(in.System, "system", info)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if p.Kind == PartText {
				r.System = append(r.System, p.Text)
			}
		}
	}
	for i, m := range in.Messages {
		if err := info.work.step(); err != nil {
			return nil, err
		}
		field := fmt.Sprintf("messages[%d]", i)
		role := Role(m.Role)
		switch role {
		case RoleUser, RoleAssistant, RoleSystem:
		default:
			return nil, badField(Messages, field+".role", "unknown role %q", m.Role)
		}
		parts, err := readMsgContent(m.Content, field+".content", info)
		if err != nil {
			return nil, err
		}
		r.Messages = append(r.Messages, Message{Role: role, Parts: parts})
	}
	for i, t := range in.Tools {
		if t.Type != "" && t.Type != "custom" {
			info.drop("tool:" + t.Type)
			continue
		}
		if t.Name == "" {
			return nil, badField(Messages, fmt.Sprintf("tools[%d].name", i), "missing")
		}
		r.Tools = append(r.Tools, Tool{Name: t.Name, Description: t.Description, Parameters: t.InputSchema, Strict: t.Strict})
	}
	if tc := in.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto":
			r.ToolChoice = ToolAuto
		case "any":
			r.ToolChoice = ToolRequired
		case "none":
			r.ToolChoice = ToolNone
		case "tool":
			r.ToolChoice, r.ToolName = ToolNamed, tc.Name
		default:
			return nil, badField(Messages, "tool_choice.type", "unknown value %q", tc.Type)
		}
		if tc.DisableParallelToolUse {
			r.ParallelToolCalls = ptr(false)
		}
	}
	if th := in.Thinking; th != nil {
		switch th.Type {
		case "enabled":
			r.Reasoning = &Reasoning{Budget: th.BudgetTokens}
		case "adaptive":
			r.Reasoning = &Reasoning{Adaptive: true}
		case "disabled":
		default:
			return nil, badField(Messages, "thinking.type", "unknown value %q", th.Type)
		}
	}
	if oc := in.OutputConfig; oc != nil {
		if oc.Effort != "" {
			if r.Reasoning == nil {
				r.Reasoning = &Reasoning{}
			}
			r.Reasoning.Effort = oc.Effort
		}
		if len(oc.Format) > 0 {
			if r.Format = readMsgFormat(oc.Format); r.Format == nil {
				info.drop("output_config.format")
			}
		}
	}
	return r, nil
}

// readMsgContent reads a string or an array of content blocks.
func readMsgContent(raw json.RawMessage, field string, info *Info) ([]Part, error) {
	if isNull(raw) {
		return nil, nil
	}
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField(Messages, field, "%v", err)
		}
		return []Part{{Kind: PartText, Text: s}}, nil
	}
	var blocks []msgBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, badField(Messages, field, "want a string or an array of content blocks: %v", err)
	}
	parts := make([]Part, 0, len(blocks))
	for i, b := range blocks {
		if len(b.CacheControl) > 0 {
			info.drop("cache_control")
		}
		f := fmt.Sprintf("%s[%d]", field, i)
		switch b.Type {
		case "text":
			parts = append(parts, Part{Kind: PartText, Text: deref(b.Text)})
		case "image":
			if b.Source == nil {
				return nil, badField(Messages, f+".source", "missing")
			}
			switch b.Source.Type {
			case "base64":
				parts = append(parts, Part{Kind: PartImage, MediaType: b.Source.MediaType, Data: b.Source.Data})
			case "url":
				parts = append(parts, Part{Kind: PartImage, URL: b.Source.URL})
			default:
				return nil, badField(Messages, f+".source.type", "unsupported image source %q", b.Source.Type)
			}
		case "tool_use":
			args := "{}"
			if len(b.Input) > 0 && !isNull(b.Input) {
				args = string(b.Input)
			}
			parts = append(parts, Part{Kind: PartToolCall, ID: b.ID, Name: b.Name, Arguments: args})
		case "tool_result":
			content, err := readMsgContent(b.Content, f+".content", info)
			if err != nil {
				return nil, err
			}
			parts = append(parts, Part{Kind: PartToolResult, ID: b.ToolUseID, Content: content, IsError: b.IsError})
		case "thinking":
			p := Part{Kind: PartReasoning, Text: deref(b.Thinking), Signature: deref(b.Signature)}
			unwrapSignature(&p)
			parts = append(parts, p)
		case "redacted_thinking":
			parts = append(parts, Part{Kind: PartReasoning, Redacted: true, Encrypted: b.Data})
		default:
			// document, search_result, server tool blocks...: no
			// counterpart in the OpenAI dialects.
			info.drop("content:" + b.Type)
		}
	}
	return parts, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func writeMessagesRequest(r *RequestIR, info *Info, opt Options) ([]byte, error) {
	out := msgRequest{
		Model: r.Model, MaxTokens: r.MaxTokens, TopP: r.TopP,
		StopSequences: r.Stop, Stream: r.Stream,
	}
	if out.MaxTokens <= 0 {
		out.MaxTokens = opt.MaxOutputTokens
		if out.MaxTokens <= 0 {
			out.MaxTokens = DefaultMaxTokens
		}
	}
	if t := r.Temperature; t != nil {
		v := *t
		if v > 1 {
			v = 1
			info.drop("temperature>1 (clamped to 1)")
		}
		out.Temperature = &v
	}
	if r.User != "" {
		out.Metadata = &msgMetadata{UserID: r.User}
	}
	// Instructions: top-level ones first, then system/developer turns in
	// conversation order (Messages has only the top-level field).
	var system []msgBlock
	for _, s := range r.System {
		if s != "" {
			system = append(system, msgBlock{Type: "text", Text: ptr(s)})
		}
	}
	type turn struct {
		role   string
		blocks []msgBlock
	}
	var turns []turn
	for _, m := range r.Messages {
		if err := info.work.step(); err != nil {
			return nil, err
		}
		if m.Role == RoleSystem || m.Role == RoleDeveloper {
			for _, p := range m.Parts {
				if p.Kind == PartText && p.Text != "" {
					system = append(system, msgBlock{Type: "text", Text: ptr(p.Text)})
				}
			}
			continue
		}
		blocks := msgBlocks(m.Parts, info)
		if len(blocks) == 0 {
			continue
		}
		// Consecutive turns of one role are merged, as the API would do.
		if n := len(turns); n > 0 && turns[n-1].role == string(m.Role) {
			turns[n-1].blocks = append(turns[n-1].blocks, blocks...)
			continue
		}
		turns = append(turns, turn{string(m.Role), blocks})
	}
	msgs := make([]msgMessage, len(turns))
	for i, t := range turns {
		b, err := marshal(orderToolResults(t.blocks))
		if err != nil {
			return nil, err
		}
		msgs[i] = msgMessage{Role: t.role, Content: b}
	}
	out.Messages = msgs
	if len(system) > 0 {
		b, err := marshal(system)
		if err != nil {
			return nil, err
		}
		out.System = b
	}
	for _, t := range r.Tools {
		out.Tools = append(out.Tools, msgTool{Name: t.Name, Description: t.Description, InputSchema: schemaOrEmpty(t.Parameters), Strict: t.Strict})
	}
	var tc *msgToolChoice
	switch r.ToolChoice {
	case ToolAuto:
		tc = &msgToolChoice{Type: "auto"}
	case ToolRequired:
		tc = &msgToolChoice{Type: "any"}
	case ToolNone:
		tc = &msgToolChoice{Type: "none"}
	case ToolNamed:
		tc = &msgToolChoice{Type: "tool", Name: r.ToolName}
	}
	if r.ParallelToolCalls != nil && !*r.ParallelToolCalls && len(r.Tools) > 0 {
		if tc == nil {
			tc = &msgToolChoice{Type: "auto"}
		}
		if tc.Type != "none" {
			tc.DisableParallelToolUse = true
		}
	}
	out.ToolChoice = tc
	writeMsgThinking(r, &out, info)
	if f := msgFormatOf(r.Format, info); f != nil {
		if out.OutputConfig == nil {
			out.OutputConfig = &msgOutputCfg{}
		}
		out.OutputConfig.Format = f
	}
	return marshal(out)
}

// orderToolResults moves tool results to the front of a user turn: the API
// wants them first after a turn with tool calls. The order within each
// group is kept.
func orderToolResults(blocks []msgBlock) []msgBlock {
	sorted := true
	for i := 1; i < len(blocks) && sorted; i++ {
		sorted = !(blocks[i].Type == "tool_result" && blocks[i-1].Type != "tool_result")
	}
	if sorted {
		return blocks
	}
	out := make([]msgBlock, 0, len(blocks))
	for _, b := range blocks {
		if b.Type == "tool_result" {
			out = append(out, b)
		}
	}
	for _, b := range blocks {
		if b.Type != "tool_result" {
			out = append(out, b)
		}
	}
	return out
}

func schemaOrEmpty(s json.RawMessage) json.RawMessage {
	if isNull(s) {
		return json.RawMessage(`{"type":"object","properties":{}}`)
	}
	return s
}

// msgBlocks writes IR parts as Messages content blocks.
func msgBlocks(parts []Part, info *Info) []msgBlock {
	blocks := make([]msgBlock, 0, len(parts))
	for _, p := range parts {
		switch p.Kind {
		case PartText:
			if p.Text == "" {
				continue // the API refuses empty text blocks
			}
			blocks = append(blocks, msgBlock{Type: "text", Text: ptr(p.Text)})
		case PartImage:
			if p.Detail != "" {
				info.drop("image detail")
			}
			blocks = append(blocks, msgImage(&p))
		case PartToolCall:
			input := compactJSON(p.Arguments)
			if input == nil {
				if strings.TrimSpace(p.Arguments) != "" {
					info.drop("invalid tool call arguments (sent as {})")
				}
				input = json.RawMessage("{}")
			}
			blocks = append(blocks, msgBlock{Type: "tool_use", ID: toolID(p.ID), Name: p.Name, Input: input})
		case PartToolResult:
			b := msgBlock{Type: "tool_result", ToolUseID: toolID(p.ID), IsError: p.IsError}
			inner := msgBlocks(p.Content, info)
			if len(inner) > 0 {
				b.Content, _ = marshal(inner)
			}
			blocks = append(blocks, b)
		case PartReasoning:
			switch {
			case p.Redacted:
				blocks = append(blocks, msgBlock{Type: "redacted_thinking", Data: p.Encrypted})
			case p.Signature != "":
				blocks = append(blocks, msgBlock{Type: "thinking", Thinking: ptr(p.Text), Signature: ptr(p.Signature)})
			default:
				// Reasoning from an OpenAI model is not signed by Anthropic
				// and cannot be sent back as a thinking block.
				info.drop("reasoning history")
			}
		}
	}
	return blocks
}

func msgImage(p *Part) msgBlock {
	if p.URL != "" {
		return msgBlock{Type: "image", Source: &msgSource{Type: "url", URL: p.URL}}
	}
	return msgBlock{Type: "image", Source: &msgSource{Type: "base64", MediaType: p.MediaType, Data: p.Data}}
}

// toolID makes a tool call id acceptable to the Messages API, whose ids match
// ^[a-zA-Z0-9_-]+$. Valid ids (every id OpenAI and Anthropic make) are kept
// byte for byte; others are escaped the same way in the call and in its
// result, so they still pair up.
func toolID(id string) string {
	ok := id != ""
	for i := 0; i < len(id) && ok; i++ {
		c := id[i]
		ok = c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if ok {
		return id
	}
	var b strings.Builder
	b.WriteString("x-")
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "-%02x", c)
		}
	}
	return b.String()
}

// writeMsgThinking sets thinking from the IR's reasoning (see effort.go).
func writeMsgThinking(r *RequestIR, out *msgRequest, info *Info) {
	rs := r.Reasoning
	if rs == nil || rs.Effort == "none" {
		return
	}
	if tc := out.ToolChoice; tc != nil && (tc.Type == "any" || tc.Type == "tool") {
		// The API refuses thinking when the tool choice forces a call.
		info.drop("reasoning (tool_choice forces a tool)")
		return
	}
	budget := rs.Budget
	if budget == 0 && !rs.Adaptive {
		budget = effortBudget(rs.Effort)
	}
	if rs.Adaptive {
		out.Thinking = &msgThinking{Type: "adaptive"}
		if e := anthropicEffort(rs.Effort); e != "" {
			out.OutputConfig = &msgOutputCfg{Effort: e}
		}
	} else {
		// budget_tokens must be at least 1024 and below max_tokens.
		if budget >= out.MaxTokens {
			budget = out.MaxTokens - 1
		}
		if budget < 1024 {
			info.drop("reasoning (max_tokens too small for thinking)")
			return
		}
		out.Thinking = &msgThinking{Type: "enabled", BudgetTokens: budget}
	}
	// With thinking on, the API wants the last assistant turn of a tool loop
	// to start with a thinking block; a history from another dialect has
	// none, so thinking is left off for this turn.
	if !lastAssistantThinks(out.Messages) {
		out.Thinking, out.OutputConfig = nil, nil
		info.drop("reasoning (history has tool calls without thinking blocks)")
		return
	}
	// The API refuses temperature and top_k with thinking on.
	if out.Temperature != nil && *out.Temperature != 1 {
		out.Temperature = nil
		info.drop("temperature (not allowed with thinking)")
	}
}

func lastAssistantThinks(msgs []msgMessage) bool {
	n := len(msgs)
	if n < 2 || msgs[n-1].Role != "user" || msgs[n-2].Role != "assistant" {
		return true
	}
	var user, asst []msgBlock
	if json.Unmarshal(msgs[n-1].Content, &user) != nil || json.Unmarshal(msgs[n-2].Content, &asst) != nil || len(asst) == 0 {
		return true
	}
	if len(user) == 0 || user[0].Type != "tool_result" {
		return true // not inside a tool loop
	}
	return asst[0].Type == "thinking" || asst[0].Type == "redacted_thinking"
}
