package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// inspection is what the Copilot headers need to know about a request body.
type inspection struct {
	// agent is true unless the last turn is a genuine user message; Copilot
	// bills a premium request only for X-Initiator: user, so anything unsure
	// counts as agent.
	agent bool
	// vision is true when any turn carries an image.
	vision bool
	// model locates the top-level "model" string (the last one, as
	// encoding/json takes it): body[modelStart:modelEnd] is its raw content
	// without the quotes. modelEnd is 0 when the body names no model as a
	// string. Stage 4 (models.go) resolves it.
	modelStart, modelEnd int
}

// inspect classifies body according to the route's shape. A body that is
// not JSON of the expected shape is forwarded as it is (the upstream answers
// it) with the agent default.
//
// Agent histories run to hundreds of kilobytes, so the body is not decoded
// whole: the walker skips every turn but the last, which alone decides the
// initiator, and decodes an earlier turn only when, while skipping it, it
// saw a "type" naming an image. The result is the one a full decode with
// encoding/json gives.
func inspect(kind bodyKind, body []byte) inspection {
	var field string
	switch kind {
	case bodyMessages:
		field = "messages"
	case bodyResponses:
		field = "input"
	default:
		return inspection{agent: true}
	}
	in, err := inspectBody(body, field, kind == bodyResponses)
	if err != nil {
		return inspection{agent: true}
	}
	return in
}

// inspectBody walks the top-level object for field, the list of turns.
// stringOK says the field may be a plain string, a single user turn (the
// Responses API's input).
func inspectBody(body []byte, field string, stringOK bool) (inspection, error) {
	in := inspection{agent: true}
	w := jsonWalker{data: body}
	if w.next() != '{' {
		// Any other JSON value has no turns; encoding/json would report a
		// type error, which decodeLenient tolerates.
		_, err := w.value()
		return in, errors.Join(err, w.end())
	}
	if err := w.enter('{'); err != nil {
		return in, err
	}
	for first := true; ; first = false {
		ok, err := w.more('}', first)
		if err != nil {
			return in, err
		}
		if !ok {
			break
		}
		k, err := w.key()
		if err != nil {
			return in, err
		}
		if keyIs(k, "model") {
			if in.modelStart, in.modelEnd, err = w.stringValue(); err != nil {
				return in, err
			}
			continue
		}
		if !keyIs(k, field) {
			if err := w.skipValue(); err != nil {
				return in, err
			}
			continue
		}
		// A repeated field replaces the earlier one.
		turns, err := inspectTurns(&w, stringOK)
		in.agent, in.vision = turns.agent, turns.vision
		if err != nil {
			return in, err
		}
	}
	return in, w.end()
}

// inspectTurns classifies the list of turns at w's position.
func inspectTurns(w *jsonWalker, stringOK bool) (inspection, error) {
	in := inspection{agent: true}
	switch w.next() {
	case '[':
	case '"':
		if stringOK {
			return inspection{}, w.skipString()
		}
		fallthrough
	default: // a type error for encoding/json: no turns
		return in, w.skipValue()
	}
	if err := w.enter('['); err != nil {
		return in, err
	}
	var last []byte
	var lastTurn *turn // decoded already when it was checked for images
	for first := true; ; first = false {
		ok, err := w.more(']', first)
		if err != nil {
			return in, err
		}
		if !ok {
			break
		}
		w.sawImage = false
		if last, err = w.value(); err != nil {
			return in, err
		}
		lastTurn = nil
		if w.sawImage && !in.vision {
			lastTurn = new(turn)
			decodeLenient(last, lastTurn)
			in.vision = lastTurn.hasImage()
		}
	}
	if last == nil {
		return in, nil
	}
	if lastTurn == nil {
		lastTurn = new(turn)
		decodeLenient(last, lastTurn)
	}
	in.agent = !lastTurn.genuineUser()
	return in, nil
}

// isImageType reports whether the raw string value v (without its quotes)
// may be one of the types [isImage] accepts; an escaped value may be.
func isImageType(v []byte) bool {
	return isImage(string(v)) || bytes.IndexByte(v, '\\') >= 0
}

// keyIs reports whether the raw object key k names field the way
// encoding/json matches struct fields: case-insensitively, after unescaping.
func keyIs(k []byte, field string) bool {
	if bytes.IndexByte(k, '\\') < 0 {
		return bytes.EqualFold(k, []byte(field))
	}
	var s string
	q := make([]byte, 0, len(k)+2)
	q = append(append(append(q, '"'), k...), '"')
	return json.Unmarshal(q, &s) == nil && strings.EqualFold(s, field)
}

// decodeLenient decodes body into v, tolerating fields of unexpected types;
// it reports false only for a body that is not JSON at all.
func decodeLenient(body []byte, v any) bool {
	err := json.Unmarshal(body, v)
	var te *json.UnmarshalTypeError
	return err == nil || errors.As(err, &te)
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
