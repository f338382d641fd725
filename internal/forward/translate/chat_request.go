package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// OpenAI Chat Completions request wire types (openai-go
// ChatCompletionNewParams).

type chatRequest struct {
	Model               string              `json:"model"`
	Messages            []chatMessage       `json:"messages"`
	Tools               []chatTool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage     `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool               `json:"parallel_tool_calls,omitempty"`
	ReasoningEffort     string              `json:"reasoning_effort,omitempty"`
	MaxCompletionTokens int                 `json:"max_completion_tokens,omitempty"`
	MaxTokens           int                 `json:"max_tokens,omitempty"`
	Temperature         *float64            `json:"temperature,omitempty"`
	TopP                *float64            `json:"top_p,omitempty"`
	Stop                json.RawMessage     `json:"stop,omitempty"`
	Stream              bool                `json:"stream,omitempty"`
	StreamOptions       *chatStreamOpts     `json:"stream_options,omitempty"`
	User                string              `json:"user,omitempty"`
	N                   *int                `json:"n,omitempty"`
	ResponseFormat      *chatResponseFormat `json:"response_format,omitempty"`
}

var chatRequestKeys = []string{"max_completion_tokens", "max_tokens", "messages", "model", "n", "parallel_tool_calls", "reasoning_effort", "response_format", "stop", "stream", "stream_options", "temperature", "tool_choice", "tools", "top_p", "user"}

type chatStreamOpts struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatTool struct {
	Type     string       `json:"type"`
	Function *chatFuncDef `json:"function,omitempty"`
}

type chatFuncDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	ToolCalls  []chatToolCall  `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Refusal    string          `json:"refusal,omitempty"`
}

type chatToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function chatFuncCall `json:"function"`
}

type chatFuncCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type chatPart struct {
	Type     string        `json:"type"`
	Text     *string       `json:"text,omitempty"`
	ImageURL *chatImageURL `json:"image_url,omitempty"`
	Refusal  string        `json:"refusal,omitempty"`
}

type chatImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

func readChatRequest(body []byte, info *Info) (*RequestIR, error) {
	var in chatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badField(Chat, "", "invalid JSON: %v", err)
	}
	dropUnknown(body, chatRequestKeys, info)
	if in.N != nil && *in.N > 1 {
		return nil, badField(Chat, "n", "%d choices cannot be translated for this model; use n=1", *in.N)
	}
	r := &RequestIR{
		Model: in.Model, MaxTokens: in.MaxCompletionTokens, Temperature: in.Temperature, TopP: in.TopP,
		Stream: in.Stream, User: in.User, ParallelToolCalls: in.ParallelToolCalls,
		Format: in.ResponseFormat.ir(),
	}
	if r.MaxTokens == 0 {
		r.MaxTokens = in.MaxTokens
	}
	if in.StreamOptions != nil {
		r.IncludeUsage = in.StreamOptions.IncludeUsage
	}
	if !isNull(in.Stop) {
		if isString(in.Stop) {
			var s string
			if err := json.Unmarshal(in.Stop, &s); err != nil {
				return nil, badField(Chat, "stop", "%v", err)
			}
			r.Stop = []string{s}
		} else if err := json.Unmarshal(in.Stop, &r.Stop); err != nil {
			return nil, badField(Chat, "stop", "want a string or an array of strings")
		}
	}
	if in.ReasoningEffort != "" {
		r.Reasoning = &Reasoning{Effort: in.ReasoningEffort}
	}
	// toolTurn is the index of the user turn the last tool messages went
	// to, -1 when the last turn is another.
	toolTurn := -1
	for i, m := range in.Messages {
		if err := info.work.step(); err != nil {
			return nil, err
		}
		field := fmt.Sprintf("messages[%d]", i)
		parts, err := readChatContent(m.Content, field+".content")
		if err != nil {
			return nil, err
		}
		switch m.Role {
		case "system", "developer", "user":
			r.Messages = append(r.Messages, Message{Role: Role(m.Role), Parts: parts})
		case "assistant":
			if m.Refusal != "" && len(parts) == 0 {
				parts = append(parts, Part{Kind: PartText, Text: m.Refusal})
			}
			for _, tc := range m.ToolCalls {
				if tc.Type != "" && tc.Type != "function" {
					info.drop("tool call:" + tc.Type)
					continue
				}
				parts = append(parts, Part{Kind: PartToolCall, ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
			}
			r.Messages = append(r.Messages, Message{Role: RoleAssistant, Parts: parts})
		case "tool":
			res := Part{Kind: PartToolResult, ID: m.ToolCallID, Content: parts}
			// Consecutive tool messages answer one assistant turn: one
			// user turn with several results.
			if n := len(r.Messages); n > 0 && toolTurn == n-1 {
				r.Messages[n-1].Parts = append(r.Messages[n-1].Parts, res)
			} else {
				r.Messages = append(r.Messages, Message{Role: RoleUser, Parts: []Part{res}})
				toolTurn = len(r.Messages) - 1
			}
		case "function":
			info.drop("messages:function")
		default:
			return nil, badField(Chat, field+".role", "unknown role %q", m.Role)
		}
	}
	for i, t := range in.Tools {
		if t.Type != "function" || t.Function == nil {
			info.drop("tool:" + t.Type)
			continue
		}
		if t.Function.Name == "" {
			return nil, badField(Chat, fmt.Sprintf("tools[%d].function.name", i), "missing")
		}
		r.Tools = append(r.Tools, Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters, Strict: t.Function.Strict})
	}
	if err := readOpenAIToolChoice(Chat, in.ToolChoice, r, info); err != nil {
		return nil, err
	}
	return r, nil
}

// readOpenAIToolChoice reads Chat's or Responses' tool_choice: a mode string
// or a named function ({type: function, function: {name}} in Chat, {type:
// function, name} in Responses).
func readOpenAIToolChoice(d Dialect, raw json.RawMessage, r *RequestIR, info *Info) error {
	if isNull(raw) {
		return nil
	}
	if isString(raw) {
		var s string
		_ = json.Unmarshal(raw, &s)
		switch s {
		case "auto":
			r.ToolChoice = ToolAuto
		case "none":
			r.ToolChoice = ToolNone
		case "required":
			r.ToolChoice = ToolRequired
		default:
			return badField(d, "tool_choice", "unknown value %q", s)
		}
		return nil
	}
	var tc struct {
		Type     string `json:"type"`
		Name     string `json:"name"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &tc); err != nil {
		return badField(d, "tool_choice", "%v", err)
	}
	if tc.Type != "function" {
		info.drop("tool_choice:" + tc.Type)
		return nil
	}
	r.ToolChoice, r.ToolName = ToolNamed, tc.Name
	if r.ToolName == "" {
		r.ToolName = tc.Function.Name
	}
	return nil
}

// readChatContent reads a string, null, or an array of content parts.
func readChatContent(raw json.RawMessage, field string) ([]Part, error) {
	if isNull(raw) {
		return nil, nil
	}
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField(Chat, field, "%v", err)
		}
		return []Part{{Kind: PartText, Text: s}}, nil
	}
	var in []chatPart
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, badField(Chat, field, "want a string or an array of content parts: %v", err)
	}
	parts := make([]Part, 0, len(in))
	for i, p := range in {
		switch p.Type {
		case "text":
			parts = append(parts, Part{Kind: PartText, Text: deref(p.Text)})
		case "refusal":
			parts = append(parts, Part{Kind: PartText, Text: p.Refusal})
		case "image_url":
			if p.ImageURL == nil {
				return nil, badField(Chat, fmt.Sprintf("%s[%d].image_url", field, i), "missing")
			}
			parts = append(parts, imagePart(p.ImageURL.URL, p.ImageURL.Detail))
		default:
			return nil, badField(Chat, fmt.Sprintf("%s[%d].type", field, i), "content part %q cannot be translated for this model", p.Type)
		}
	}
	return parts, nil
}

func writeChatRequest(r *RequestIR, info *Info) ([]byte, error) {
	out := chatRequest{
		Model: r.Model, MaxCompletionTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP,
		Stream: r.Stream, User: r.User, ParallelToolCalls: r.ParallelToolCalls,
		ResponseFormat: chatFormatOf(r.Format),
	}
	if r.Stream {
		// Messages and Responses streams always end with usage.
		out.StreamOptions = &chatStreamOpts{IncludeUsage: true}
	}
	switch len(r.Stop) {
	case 0:
	default:
		out.Stop, _ = marshal(r.Stop)
	}
	if r.Reasoning != nil {
		out.ReasoningEffort = openAIEffort(r.Reasoning)
	}
	for _, s := range r.System {
		c, _ := marshal(s)
		out.Messages = append(out.Messages, chatMessage{Role: "system", Content: c})
	}
	for _, m := range r.Messages {
		if err := info.work.step(); err != nil {
			return nil, err
		}
		out.Messages = appendChatMessages(out.Messages, &m, info)
	}
	for _, t := range r.Tools {
		out.Tools = append(out.Tools, chatTool{Type: "function", Function: &chatFuncDef{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict}})
	}
	switch r.ToolChoice {
	case ToolAuto, ToolNone, ToolRequired:
		out.ToolChoice, _ = marshal(string(r.ToolChoice))
	case ToolNamed:
		out.ToolChoice, _ = marshal(map[string]any{"type": "function", "function": map[string]string{"name": r.ToolName}})
	}
	if len(r.Tools) == 0 {
		out.ParallelToolCalls = nil // the API refuses it without tools
	}
	return marshal(out)
}

// appendChatMessages writes one IR turn as Chat messages: tool results
// become "tool" messages (before the rest of the turn), tool calls go in
// tool_calls.
func appendChatMessages(out []chatMessage, m *Message, info *Info) []chatMessage {
	var parts []chatPart
	var calls []chatToolCall
	for _, p := range m.Parts {
		switch p.Kind {
		case PartText:
			parts = append(parts, chatPart{Type: "text", Text: ptr(p.Text)})
		case PartImage:
			parts = append(parts, chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: p.imageURL(), Detail: p.Detail}})
		case PartToolCall:
			calls = append(calls, chatToolCall{ID: p.ID, Type: "function", Function: chatFuncCall{Name: p.Name, Arguments: p.Arguments}})
		case PartToolResult:
			out = append(out, chatMessage{Role: "tool", ToolCallID: p.ID, Content: chatToolResultContent(&p, info)})
		case PartReasoning:
			info.drop("reasoning history")
		}
	}
	if len(parts) == 0 && len(calls) == 0 {
		return out
	}
	msg := chatMessage{Role: string(m.Role), ToolCalls: calls}
	switch {
	case len(parts) == 0:
		msg.Content = json.RawMessage("null")
	case len(parts) == 1 && parts[0].Type == "text":
		msg.Content, _ = marshal(*parts[0].Text)
	case m.Role == RoleAssistant || m.Role == RoleSystem || m.Role == RoleDeveloper:
		// These roles take text parts only.
		msg.Content, _ = marshal(joinText(parts, info))
	default:
		msg.Content, _ = marshal(parts)
	}
	return append(out, msg)
}

func joinText(parts []chatPart, info *Info) string {
	var s strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			info.drop("image in a non-user turn")
			continue
		}
		if s.Len() > 0 {
			s.WriteString(paraBreak)
		}
		s.WriteString(*p.Text)
	}
	return s.String()
}

// chatToolResultContent is a tool message's content: text only in Chat.
func chatToolResultContent(p *Part, info *Info) json.RawMessage {
	var s strings.Builder
	for _, c := range p.Content {
		if c.Kind != PartText {
			info.drop("image in a tool result")
			continue
		}
		if s.Len() > 0 {
			s.WriteString(paraBreak)
		}
		s.WriteString(c.Text)
	}
	if p.IsError {
		info.drop("tool result is_error")
	}
	b, _ := marshal(s.String())
	return b
}
