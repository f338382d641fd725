package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// OpenAI Responses request wire types (openai-go responses.ResponseNewParams).

type respRequest struct {
	Model              string          `json:"model"`
	Instructions       string          `json:"instructions,omitempty"`
	Input              json.RawMessage `json:"input,omitempty"`
	Tools              []respTool      `json:"tools,omitempty"`
	ToolChoice         json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls  *bool           `json:"parallel_tool_calls,omitempty"`
	Reasoning          *respReasoning  `json:"reasoning,omitempty"`
	MaxOutputTokens    int             `json:"max_output_tokens,omitempty"`
	Temperature        *float64        `json:"temperature,omitempty"`
	TopP               *float64        `json:"top_p,omitempty"`
	Stream             bool            `json:"stream,omitempty"`
	User               string          `json:"user,omitempty"`
	Store              *bool           `json:"store,omitempty"`
	Include            []string        `json:"include,omitempty"`
	PreviousResponseID string          `json:"previous_response_id,omitempty"`
	Text               *respText       `json:"text,omitempty"`
}

var respRequestKeys = []string{"include", "input", "instructions", "max_output_tokens", "model", "parallel_tool_calls", "previous_response_id", "reasoning", "store", "stream", "temperature", "text", "tool_choice", "tools", "top_p", "user"}

type respReasoning struct {
	Effort  string `json:"effort,omitempty"`
	Summary string `json:"summary,omitempty"`
}

type respTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type respItem struct {
	Type             string          `json:"type,omitempty"`
	ID               string          `json:"id,omitempty"`
	Role             string          `json:"role,omitempty"`
	Content          json.RawMessage `json:"content,omitempty"`
	CallID           string          `json:"call_id,omitempty"`
	Name             string          `json:"name,omitempty"`
	Arguments        *string         `json:"arguments,omitempty"`
	Output           json.RawMessage `json:"output,omitempty"`
	Summary          *[]respSummary  `json:"summary,omitempty"`
	EncryptedContent string          `json:"encrypted_content,omitempty"`
	Status           string          `json:"status,omitempty"`
}

type respSummary struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type respPart struct {
	Type        string           `json:"type"`
	Text        *string          `json:"text,omitempty"`
	ImageURL    string           `json:"image_url,omitempty"`
	Detail      string           `json:"detail,omitempty"`
	Refusal     string           `json:"refusal,omitempty"`
	Annotations *json.RawMessage `json:"annotations,omitempty"`
}

func readResponsesRequest(body []byte, info *Info) (*RequestIR, error) {
	var in respRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badField(Responses, "", "invalid JSON: %v", err)
	}
	dropUnknown(body, respRequestKeys, info)
	if in.PreviousResponseID != "" {
		// The history lives on the server that made the response; a
		// translated request has no way to reach it.
		return nil, badField(Responses, "previous_response_id", "not supported for this model; send the whole conversation in input")
	}
	if in.Store != nil && *in.Store {
		info.drop("store")
	}
	if len(in.Include) > 0 {
		info.drop("include")
	}
	r := &RequestIR{
		Model: in.Model, MaxTokens: in.MaxOutputTokens, Temperature: in.Temperature, TopP: in.TopP,
		Stream: in.Stream, User: in.User, ParallelToolCalls: in.ParallelToolCalls,
	}
	if in.Instructions != "" {
		r.System = []string{in.Instructions}
	}
	if t := in.Text; t != nil {
		r.Format = t.Format.ir()
		if t.Verbosity != "" {
			info.drop("text.verbosity")
		}
	}
	if rs := in.Reasoning; rs != nil && (rs.Effort != "" || rs.Summary != "") {
		r.Reasoning = &Reasoning{Effort: rs.Effort, Summary: rs.Summary}
	}
	if err := readRespInput(in.Input, r, info); err != nil {
		return nil, err
	}
	for i, t := range in.Tools {
		if t.Type != "function" {
			info.drop("tool:" + t.Type)
			continue
		}
		if t.Name == "" {
			return nil, badField(Responses, fmt.Sprintf("tools[%d].name", i), "missing")
		}
		r.Tools = append(r.Tools, Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict})
	}
	if err := readOpenAIToolChoice(Responses, in.ToolChoice, r, info); err != nil {
		return nil, err
	}
	return r, nil
}

// readRespInput reads input: a string (one user turn) or items. Assistant
// items in a row (reasoning, message, function_call) form one assistant turn;
// function_call_output items in a row form one user turn of tool results.
func readRespInput(raw json.RawMessage, r *RequestIR, info *Info) error {
	if isNull(raw) {
		return nil
	}
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return badField(Responses, "input", "%v", err)
		}
		r.Messages = append(r.Messages, Message{Role: RoleUser, Parts: []Part{{Kind: PartText, Text: s}}})
		return nil
	}
	var items []respItem
	if err := json.Unmarshal(raw, &items); err != nil {
		return badField(Responses, "input", "want a string or an array of items: %v", err)
	}
	// merge is the index of the turn the next assistant item, or tool
	// result, joins; -1 when the last turn takes neither.
	merge := -1
	add := func(role Role, toolResult bool, p ...Part) {
		if n := len(r.Messages); n > 0 && merge == n-1 && r.Messages[n-1].Role == role {
			r.Messages[n-1].Parts = append(r.Messages[n-1].Parts, p...)
			return
		}
		r.Messages = append(r.Messages, Message{Role: role, Parts: p})
		if role == RoleAssistant || toolResult {
			merge = len(r.Messages) - 1
		}
	}
	for i, it := range items {
		if err := info.work.step(); err != nil {
			return err
		}
		field := fmt.Sprintf("input[%d]", i)
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			parts, err := readRespContent(it.Content, field+".content")
			if err != nil {
				return err
			}
			switch Role(it.Role) {
			case RoleAssistant:
				add(RoleAssistant, false, parts...)
			case RoleUser, RoleSystem, RoleDeveloper:
				r.Messages = append(r.Messages, Message{Role: Role(it.Role), Parts: parts})
				merge = -1
			default:
				return badField(Responses, field+".role", "unknown role %q", it.Role)
			}
		case "function_call":
			args := ""
			if it.Arguments != nil {
				args = *it.Arguments
			}
			add(RoleAssistant, false, Part{Kind: PartToolCall, ID: it.CallID, Name: it.Name, Arguments: args})
		case "function_call_output":
			content, err := readRespOutput(it.Output, field+".output")
			if err != nil {
				return err
			}
			add(RoleUser, true, Part{Kind: PartToolResult, ID: it.CallID, Content: content})
		case "reasoning":
			p := Part{Kind: PartReasoning, ID: it.ID, Encrypted: it.EncryptedContent}
			if it.Summary != nil {
				p.Text = joinSummaries(*it.Summary)
			}
			unwrapEncrypted(&p)
			add(RoleAssistant, false, p)
		default:
			info.drop("input:" + typ)
		}
	}
	return nil
}

func readRespContent(raw json.RawMessage, field string) ([]Part, error) {
	if isNull(raw) {
		return nil, nil
	}
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField(Responses, field, "%v", err)
		}
		return []Part{{Kind: PartText, Text: s}}, nil
	}
	var in []respPart
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, badField(Responses, field, "want a string or an array of content parts: %v", err)
	}
	parts := make([]Part, 0, len(in))
	for i, p := range in {
		switch p.Type {
		case "input_text", "output_text", "text":
			parts = append(parts, Part{Kind: PartText, Text: deref(p.Text)})
		case "refusal":
			parts = append(parts, Part{Kind: PartText, Text: p.Refusal})
		case "input_image":
			if p.ImageURL == "" {
				return nil, badField(Responses, fmt.Sprintf("%s[%d].image_url", field, i), "missing (file_id images cannot be translated)")
			}
			parts = append(parts, imagePart(p.ImageURL, p.Detail))
		default:
			return nil, badField(Responses, fmt.Sprintf("%s[%d].type", field, i), "content part %q cannot be translated for this model", p.Type)
		}
	}
	return parts, nil
}

// readRespOutput reads a function_call_output's output: a string or parts.
func readRespOutput(raw json.RawMessage, field string) ([]Part, error) {
	if isString(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField(Responses, field, "%v", err)
		}
		return []Part{{Kind: PartText, Text: s}}, nil
	}
	return readRespContent(raw, field)
}

func writeResponsesRequest(r *RequestIR, info *Info) ([]byte, error) {
	out := respRequest{
		Model: r.Model, MaxOutputTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP,
		Stream: r.Stream, User: r.User, ParallelToolCalls: r.ParallelToolCalls,
		// A translated conversation is always sent whole.
		Store: ptr(false),
		Text:  respFormatOf(r.Format),
	}
	if len(r.Stop) > 0 {
		info.drop("stop")
	}
	out.Instructions = strings.Join(r.System, paraBreak)
	if rs := r.Reasoning; rs != nil {
		out.Reasoning = &respReasoning{Effort: openAIEffort(rs), Summary: rs.Summary}
		// Reasoning comes back encrypted so that the client can send it
		// back (the conversation is not stored).
		out.Include = []string{"reasoning.encrypted_content"}
		if out.Reasoning.Summary == "" && (rs.Budget > 0 || rs.Adaptive) {
			// Anthropic clients asked for visible thinking.
			out.Reasoning.Summary = "auto"
		}
	}
	var items []respItem
	for _, m := range r.Messages {
		if err := info.work.step(); err != nil {
			return nil, err
		}
		items = appendRespItems(items, &m, info)
	}
	if items == nil {
		items = []respItem{}
	}
	out.Input, _ = marshal(items)
	for _, t := range r.Tools {
		out.Tools = append(out.Tools, respTool{Type: "function", Name: t.Name, Description: t.Description, Parameters: schemaOrEmpty(t.Parameters), Strict: strictOrFalse(t.Strict)})
	}
	switch r.ToolChoice {
	case ToolAuto, ToolNone, ToolRequired:
		out.ToolChoice, _ = marshal(string(r.ToolChoice))
	case ToolNamed:
		out.ToolChoice, _ = marshal(map[string]string{"type": "function", "name": r.ToolName})
	}
	return marshal(out)
}

// strictOrFalse: Responses treats a missing strict as true, which changes
// the meaning of schemas written for the other dialects.
func strictOrFalse(s *bool) *bool {
	if s == nil {
		return ptr(false)
	}
	return s
}

func appendRespItems(items []respItem, m *Message, info *Info) []respItem {
	var parts []respPart
	flush := func() {
		if len(parts) > 0 {
			c, _ := marshal(parts)
			items = append(items, respItem{Type: "message", Role: string(m.Role), Content: c})
			parts = nil
		}
	}
	textType := "input_text"
	if m.Role == RoleAssistant {
		textType = "output_text"
	}
	for _, p := range m.Parts {
		switch p.Kind {
		case PartText:
			rp := respPart{Type: textType, Text: ptr(p.Text)}
			if m.Role == RoleAssistant {
				rp.Annotations = ptr(json.RawMessage("[]"))
			}
			parts = append(parts, rp)
		case PartImage:
			if m.Role == RoleAssistant {
				info.drop("image in an assistant turn")
				continue
			}
			parts = append(parts, respPart{Type: "input_image", ImageURL: p.imageURL(), Detail: detailOrAuto(p.Detail)})
		case PartToolCall:
			flush()
			items = append(items, respItem{Type: "function_call", CallID: p.ID, Name: p.Name, Arguments: ptr(p.Arguments)})
		case PartToolResult:
			flush()
			items = append(items, respItem{Type: "function_call_output", CallID: p.ID, Output: respToolOutput(&p, info)})
		case PartReasoning:
			if p.Encrypted == "" || p.Redacted || p.ID == "" {
				// Anthropic's signed thinking cannot be checked by OpenAI.
				info.drop("reasoning history")
				continue
			}
			flush()
			sum := []respSummary{}
			if p.Text != "" {
				sum = append(sum, respSummary{Type: "summary_text", Text: p.Text})
			}
			items = append(items, respItem{Type: "reasoning", ID: p.ID, Summary: &sum, EncryptedContent: p.Encrypted})
		}
	}
	flush()
	return items
}

func detailOrAuto(d string) string {
	if d == "" {
		return "auto"
	}
	return d
}

func respToolOutput(p *Part, info *Info) json.RawMessage {
	if p.IsError {
		info.drop("tool result is_error")
	}
	hasImage := false
	for _, c := range p.Content {
		hasImage = hasImage || c.Kind == PartImage
	}
	if !hasImage {
		var s strings.Builder
		for _, c := range p.Content {
			if s.Len() > 0 {
				s.WriteString(paraBreak)
			}
			s.WriteString(c.Text)
		}
		b, _ := marshal(s.String())
		return b
	}
	parts := make([]respPart, 0, len(p.Content))
	for _, c := range p.Content {
		if c.Kind == PartImage {
			parts = append(parts, respPart{Type: "input_image", ImageURL: c.imageURL(), Detail: detailOrAuto(c.Detail)})
		} else {
			parts = append(parts, respPart{Type: "input_text", Text: ptr(c.Text)})
		}
	}
	b, _ := marshal(parts)
	return b
}
