package inspect

import (
	"bytes"
	"encoding/json"
	"strings"
)

// turns is what the list of turns says.
type turns struct {
	agent, vision bool
	// compaction: the last turn's text holds [compactionMarker].
	compaction bool
}

// inspectTurns classifies the list of turns at w's position and notes the
// first affinityTurns of them (a value that is not a list: itself) in r.
func inspectTurns(w *jsonWalker, stringOK bool, r *Result) (turns, error) {
	in := turns{agent: true}
	if w.next() != '[' {
		start := w.pos
		isString := w.next() == '"'
		err := w.skipValue()
		r.addPart(span{}, span{start, w.pos})
		if isString && stringOK {
			return turns{}, err // a plain string is one user turn
		}
		return in, err // a type error for encoding/json: no turns
	}
	if err := w.enter('['); err != nil {
		return in, err
	}
	last := -1             // where the last turn starts
	n := 0                 // turns seen
	var lastTurn *turnInfo // read already when it was checked for images
	for first := true; ; first = false {
		ok, err := w.more(']', first)
		if err != nil {
			return in, err
		}
		if !ok {
			break
		}
		w.sawImage = false
		w.next()
		last = w.pos
		if err := w.skipValue(); err != nil {
			return in, err
		}
		if n < affinityTurns {
			r.addPart(span{}, span{last, w.pos})
		}
		n++
		lastTurn = nil
		if w.sawImage && !in.vision {
			if lastTurn, err = w.turnAt(last); err != nil {
				return in, err
			}
			in.vision = lastTurn.hasImage()
		}
	}
	if last < 0 {
		return in, nil
	}
	if lastTurn == nil {
		var err error
		if lastTurn, err = w.turnAt(last); err != nil {
			return in, err
		}
	}
	in.agent = !lastTurn.genuineUser()
	in.compaction = lastTurn.compaction
	return in, nil
}

// turnAt reads the turn that starts at pos, a value w has already walked
// over (so it is well formed), and leaves w where it was.
func (w *jsonWalker) turnAt(pos int) (*turnInfo, error) {
	saved := w.pos
	w.pos = pos
	t := new(turnInfo)
	err := w.turn(t)
	w.pos = saved
	return t, err
}

// isImageType reports whether the raw string value v (without its quotes)
// may be one of the types [isImage] accepts; an escaped value may be.
func isImageType(v []byte) bool {
	return isImage(string(v)) || bytes.IndexByte(v, '\\') >= 0
}

// turnInfo is what classifying needs of one chat message (OpenAI or
// Anthropic), one Responses API input item, or one content part nested in
// them, read in a single pass. The classification is the one a decode of the
// turn with encoding/json into {role, type, content, output, tool_calls}
// gives (see inspect_ref_test.go), without its cost: encoding/json re-scans
// a nested value at every level a custom decoder sits on, which made the
// work depth × size.
type turnInfo struct {
	role, typ string
	toolCalls bool        // a tool_calls member with content
	content   contentInfo // "content": the message's parts
	output    contentInfo // "output": Responses API tool outputs may carry images
	image     bool        // some nested content or output part is an image
	// compaction is set when some text of the turn (a content or output
	// string, a part's "text", at any depth) holds [compactionMarker].
	compaction bool
}

// contentInfo summarises a content value: a string, or a list of parts.
type contentInfo struct {
	isString      bool
	parts         int  // list elements (any JSON value; non-objects count as empty parts)
	nonToolResult bool // some part's type is not a tool result
}

// genuineUser reports whether t is a message a person typed: role user, and
// not a turn made only of tool results (Anthropic puts tool results in user
// messages).
func (t *turnInfo) genuineUser() bool {
	if t.role != "user" || (t.typ != "" && t.typ != "message") || t.toolCalls {
		return false
	}
	return t.content.isString || t.content.parts == 0 || t.content.nonToolResult
}

func (t *turnInfo) hasImage() bool { return t.image || isImage(t.typ) }

// turn reads the value at w's position as a turn. A value that is not an
// object is an empty turn, as encoding/json leaves it.
func (w *jsonWalker) turn(t *turnInfo) error {
	if w.next() != '{' {
		return w.skipValue()
	}
	if err := w.step(); err != nil {
		return err
	}
	if err := w.enter('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		ok, err := w.more('}', first)
		if err != nil || !ok {
			return err
		}
		k, err := w.key()
		if err != nil {
			return err
		}
		switch {
		case keyIs(k, "role"):
			err = w.stringInto(&t.role)
		case keyIs(k, "type"):
			err = w.stringInto(&t.typ)
		case keyIs(k, "content"):
			err = w.contentInto(&t.content, t)
		case keyIs(k, "output"):
			err = w.contentInto(&t.output, t)
		case keyIs(k, "text"):
			err = w.markText(&t.compaction)
		case keyIs(k, "tool_calls"):
			var raw []byte
			raw, err = w.value()
			t.toolCalls = hasContent(raw)
		default:
			err = w.skipValue()
		}
		if err != nil {
			return err
		}
	}
}

// contentInto reads a content value of the turn t: a string, a list of
// parts (each a turn), or anything else (ignored).
func (w *jsonWalker) contentInto(c *contentInfo, t *turnInfo) error {
	if err := w.step(); err != nil {
		return err
	}
	switch w.next() {
	case '"':
		c.isString = true
		return w.markText(&t.compaction)
	case '[':
	default:
		return w.skipValue()
	}
	if err := w.enter('['); err != nil {
		return err
	}
	for first := true; ; first = false {
		ok, err := w.more(']', first)
		if err != nil || !ok {
			return err
		}
		var part turnInfo
		if err := w.turn(&part); err != nil {
			return err
		}
		c.parts++
		c.nonToolResult = c.nonToolResult || !isToolResult(part.typ)
		t.image = t.image || part.hasImage()
		t.compaction = t.compaction || part.compaction
	}
}

// stringInto sets *s to the string value at w's position, unescaped; any
// other value leaves *s as it is, as encoding/json does.
func (w *jsonWalker) stringInto(s *string) error {
	if err := w.step(); err != nil {
		return err
	}
	q, ok, err := w.quoted()
	if !ok {
		return err
	}
	if v, ok := w.unquote(q); ok {
		*s = v
	}
	return nil
}

// compactionMarker starts the instruction of Claude Code's history
// compaction request, its last turn (docs/protocol.md section 4,
// "X-Interaction-Type").
const compactionMarker = "Your task is to create a detailed summary of the conversation so far"

// markText skips the value at w's position and sets *found when it is a
// string holding [compactionMarker]. The turn it is in has been walked
// already (it is well formed); only the classified turns are read so.
func (w *jsonWalker) markText(found *bool) error {
	q, ok, err := w.quoted()
	if !ok || *found || len(q) < len(compactionMarker)+2 {
		return err
	}
	if raw := q[1 : len(q)-1]; bytes.IndexByte(raw, '\\') < 0 {
		*found = bytes.Contains(raw, []byte(compactionMarker))
		return nil
	}
	v, ok := w.unquote(q)
	*found = ok && strings.Contains(v, compactionMarker)
	return nil
}

// quoted skips the value at w's position and, when it is a string,
// returns it as it stands in the document, quotes and escapes included.
func (w *jsonWalker) quoted() (q []byte, ok bool, err error) {
	if w.next() != '"' {
		return nil, false, w.skipValue()
	}
	start := w.pos
	if err := w.skipString(); err != nil {
		return nil, false, err
	}
	return w.data[start:w.pos], true, nil
}

// unquote returns the string q (from quoted) unescaped; ok is false when
// encoding/json refuses its escapes.
func (w *jsonWalker) unquote(q []byte) (string, bool) {
	raw := q[1 : len(q)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	w.steps += len(raw) // unescaping reads the string once more
	var v string
	return v, json.Unmarshal(q, &v) == nil
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

func hasContent(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) && !bytes.Equal(raw, []byte("[]"))
}
