package forward

import (
	"bytes"
	"encoding/json"
	"errors"
)

// inspection is what the Copilot headers need to know about a request body.
type inspection struct {
	// agent is true unless the last turn is a genuine user message; Copilot
	// bills a premium request only for X-Initiator: user, so anything unsure
	// counts as agent.
	agent bool
	// vision is true when any turn carries an image.
	vision bool
}

// inspect decodes body once, according to the route's shape. A body that is
// not JSON of the expected shape is forwarded as it is (the upstream answers
// it) with the agent default.
func inspect(kind bodyKind, body []byte) inspection {
	switch kind {
	case bodyMessages:
		var b struct {
			Messages []turn `json:"messages"`
		}
		if !decodeLenient(body, &b) {
			return inspection{agent: true}
		}
		return inspectTurns(b.Messages)
	case bodyResponses:
		var b struct {
			Input content `json:"input"`
		}
		if !decodeLenient(body, &b) {
			return inspection{agent: true}
		}
		if b.Input.isString {
			return inspection{}
		}
		// The Responses API input is a list of items; messages among them
		// use the same role/content shape as chat turns.
		return inspectTurns(b.Input.items)
	}
	return inspection{agent: true}
}

// decodeLenient decodes body into v, tolerating fields of unexpected types;
// it reports false only for a body that is not JSON at all.
func decodeLenient(body []byte, v any) bool {
	err := json.Unmarshal(body, v)
	var te *json.UnmarshalTypeError
	return err == nil || errors.As(err, &te)
}

func inspectTurns(turns []turn) inspection {
	in := inspection{agent: true}
	for i := range turns {
		if turns[i].hasImage() {
			in.vision = true
			break
		}
	}
	if n := len(turns); n > 0 {
		in.agent = !turns[n-1].genuineUser()
	}
	return in
}

// turn is one chat message (OpenAI or Anthropic) or one Responses API input
// item; only the fields that classify it are decoded.
type turn struct {
	Role      string          `json:"role"`
	Type      string          `json:"type"` // Responses API item type
	Content   content         `json:"content"`
	Output    content         `json:"output"` // Responses API tool outputs may carry images
	ToolCalls json.RawMessage `json:"tool_calls"`
}

// genuineUser reports whether t is a message a person typed: role user, and
// not a turn made only of tool results (Anthropic puts tool results in user
// messages).
func (t *turn) genuineUser() bool {
	if t.Role != "user" || (t.Type != "" && t.Type != "message") || hasContent(t.ToolCalls) {
		return false
	}
	if t.Content.isString || len(t.Content.items) == 0 {
		return true
	}
	for i := range t.Content.items {
		if !isToolResult(t.Content.items[i].Type) {
			return true
		}
	}
	return false
}

func (t *turn) hasImage() bool {
	if isImage(t.Type) {
		return true
	}
	for i := range t.Content.items {
		if t.Content.items[i].hasImage() {
			return true
		}
	}
	for i := range t.Output.items {
		if t.Output.items[i].hasImage() {
			return true
		}
	}
	return false
}

func isToolResult(typ string) bool {
	switch typ {
	case "tool_result", "function_call_output", "custom_tool_call_output", "computer_call_output",
		"local_shell_call_output", "mcp_tool_result", "web_search_tool_result", "code_execution_tool_result":
		return true
	}
	return false
}

func isImage(typ string) bool {
	switch typ {
	case "image_url", "image", "input_image", "computer_screenshot":
		return true
	}
	return false
}

func hasContent(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) && !bytes.Equal(raw, []byte("[]"))
}

// content is a string or a list of parts/items; nested parts (an Anthropic
// tool_result's content) decode the same way.
type content struct {
	isString bool
	items    []turn
}

// UnmarshalJSON accepts a string, an array of objects, or anything else
// (ignored), so that an unexpected shape never fails the inspection.
func (c *content) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
	case b[0] == '"':
		c.isString = true
	case b[0] == '[':
		// Elements of the wrong type decode as zero turns: encoding/json
		// reports a type error but fills in everything else.
		_ = json.Unmarshal(b, &c.items)
	}
	return nil
}
