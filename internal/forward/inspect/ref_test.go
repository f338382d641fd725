package inspect

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
)

// inspectReference is the straightforward Result inspect must agree
// with: the whole body decoded by encoding/json.
func inspectReference(kind Shape, body []byte) Result {
	var turns []refTurn
	switch kind {
	case Messages:
		var b struct {
			Messages []refTurn `json:"messages"`
		}
		if !decodeLenient(body, &b) {
			return Result{Agent: true}
		}
		turns = b.Messages
	case Responses:
		var b struct {
			Input refContent `json:"input"`
		}
		if !decodeLenient(body, &b) {
			return Result{Agent: true}
		}
		if b.Input.isString {
			return Result{}
		}
		turns = b.Input.items
	default:
		return Result{Agent: true}
	}
	in := Result{Agent: true}
	for i := range turns {
		in.Vision = in.Vision || turns[i].hasImage()
	}
	if n := len(turns); n > 0 {
		in.Agent = !turns[n-1].genuineUser()
		in.Compaction = turns[n-1].compaction()
	}
	return in
}

// sameInspection reports whether got, inspect's answer for body, agrees
// with want, the reference's, and its model span holds the "model" string a
// full decode finds.
func sameInspection(body string, got, want Result) bool {
	if got.Agent != want.Agent || got.Vision != want.Vision || got.Compaction != want.Compaction {
		return false
	}
	var b struct {
		Model json.RawMessage `json:"model"`
	}
	decodeLenient([]byte(body), &b)
	if len(b.Model) == 0 || b.Model[0] != '"' {
		return got.ModelEnd == 0
	}
	var model string
	if json.Unmarshal(b.Model, &model) != nil || got.ModelEnd == 0 {
		return false
	}
	raw := `"` + body[got.ModelStart:got.ModelEnd] + `"`
	var span string
	return json.Unmarshal([]byte(raw), &span) == nil && span == model
}

// decodeLenient decodes body into v, tolerating fields of unexpected types;
// it reports false only for a body that is not JSON at all.
func decodeLenient(body []byte, v any) bool {
	err := json.Unmarshal(body, v)
	var te *json.UnmarshalTypeError
	return err == nil || errors.As(err, &te)
}

// refTurn is one chat message (OpenAI or Anthropic) or one Responses API
// input item; only the fields that classify it are decoded. (The proxy's
// Result used these types until a body nesting content thousands of
// levels deep showed encoding/json re-scanning every level: they stay here
// as the reference.)
type refTurn struct {
	Role      string          `json:"role"`
	Type      string          `json:"type"` // Responses API item type
	Content   refContent      `json:"content"`
	Output    refContent      `json:"output"` // Responses API tool outputs may carry images
	ToolCalls json.RawMessage `json:"tool_calls"`
	Text      json.RawMessage `json:"text"` // a content part's text
}

// compaction reports whether some text of t (its content or output string,
// a part's text, at any depth) holds compactionMarker.
func (t *refTurn) compaction() bool {
	var text string
	if json.Unmarshal(t.Text, &text) == nil && strings.Contains(text, compactionMarker) {
		return true
	}
	for _, c := range []*refContent{&t.Content, &t.Output} {
		if c.isString && strings.Contains(c.text, compactionMarker) {
			return true
		}
		for i := range c.items {
			if c.items[i].compaction() {
				return true
			}
		}
	}
	return false
}

func (t *refTurn) genuineUser() bool {
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

func (t *refTurn) hasImage() bool {
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

// refContent is a string or a list of parts/items; nested parts (an
// Anthropic tool_result's content) decode the same way.
type refContent struct {
	isString bool
	text     string // the string, when isString
	items    []refTurn
}

// UnmarshalJSON accepts a string, an array of objects, or anything else
// (ignored), so that an unexpected shape never fails the Result.
func (c *refContent) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
	case b[0] == '"':
		c.isString = true
		_ = json.Unmarshal(b, &c.text)
	case b[0] == '[':
		// Elements of the wrong type decode as zero turns: encoding/json
		// reports a type error but fills in everything else.
		_ = json.Unmarshal(b, &c.items)
	}
	return nil
}

// comparable reports whether inspectReference is the standard for body:
// it must be JSON with unique member names in every object (RFC 8259 leaves
// repeated names undefined). encoding/json decodes a repeated member into
// what the first one filled (turns of a first list leak into the second, a
// reused element keeps fields the second lacks); inspect takes the last
// value alone for lists, as other JSON parsers do. Names are compared as
// encoding/json matches them to fields: case-insensitively.
func comparable(_ Shape, body string) bool {
	if !json.Valid([]byte(body)) {
		return false
	}
	type frame struct {
		obj, wantKey bool
		keys         map[string]bool
	}
	var stack []*frame
	dec := json.NewDecoder(strings.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{', '[':
				if top != nil && top.obj {
					top.wantKey = true // after this value, a name
				}
				stack = append(stack, &frame{obj: tok == '{', wantKey: true, keys: map[string]bool{}})
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.obj && top.wantKey {
				f := foldName(tok)
				if top.keys[f] {
					return false
				}
				top.keys[f] = true
				top.wantKey = false
				continue
			}
			if top != nil && top.obj {
				top.wantKey = true
			}
		default:
			if top != nil && top.obj {
				top.wantKey = true
			}
		}
	}
}

// foldName maps each rune of s to the smallest rune of its case-folding
// orbit, so that names equal under bytes.EqualFold map to one string.
func foldName(s string) string {
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// inspectSeeds are bodies of every shape the table tests use and more.
var inspectSeeds = []string{
	`{"messages":[{"role":"user","content":"hi"}]}`,
	`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":"ok"}]}`,
	`{"messages" : [ {"role" : "user", "content" : [ {"type" : "image", "source" : {}} ]} ] }`,
	`{"Messages":[{"role":"user","content":"hi"}]}`,
	`{"m\u0065ssages":[{"role":"user","content":"hi"}]}`,
	`{"messages":[{"role":"user","content":[{"type":"\u0069mage"}]}]}`,
	`{"messages":[{"role":"user","content":"a \"quoted\" \\ image"}],"messages":[{"role":"assistant","content":"x"}]}`,
	`{"messages":null}`, `{"messages":"hi"}`, `{"messages":{}}`, `[]`, `null`, `"x"`, `12`, `{}`,
	`{"input":"hi"}`, `{"input":[{"type":"function_call_output","output":[{"type":"input_image"}]}]}`,
	`{"input":[{"type":"computer_call_output","output":{"type":"computer_screenshot"}},{"role":"user","content":"go"}]}`,
	`{"messages":[1,true,null,"x",[],{"role":"user","content":"hi"}],"n":-1.5e+3,"b":false}`,
	`{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"image"}]}]}]}`,
	`{"model":"gpt-4.1","messages":[],"MODEL":"claude-sonnet-4-5","mod\u0065l":"a\"b"}`,
	`{"model":"x","messages":[],"Model":5}`, `{"model":null,"input":"hi"}`,
	`{"messages":[{"role":"user","content":[{"type":"text","text":"Your task is to create a detailed summary of the conversation so far."}]}]}`,
	`{"input":[{"role":"user","content":"x"},{"type":"function_call_output","output":"\u0059our task is to create a detailed summary of the conversation so far"}]}`,
	`{"messages":[{"role":"user","content":"Your task is to create a detailed summary of the conversation so far"},{"role":"assistant","text":5}]}`,
}

// FuzzInspect checks that inspect agrees with a full decode on every JSON
// body, and never panics on anything else.
func FuzzInspect(f *testing.F) {
	for _, s := range inspectSeeds {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, body string, responses bool) {
		kind := Messages
		if responses {
			kind = Responses
		}
		got, err := Scan(nil, kind, []byte(body))
		var dup *DuplicateKeyError
		if json.Valid([]byte(body)) && errors.As(err, &dup) != refDuplicate(body) {
			t.Errorf("Scan(%.300s) error = %v; a duplicate routing key: %v", body, err, refDuplicate(body))
		}
		if !comparable(kind, body) {
			return
		}
		if want := inspectReference(kind, []byte(body)); !sameInspection(body, got, want) {
			t.Errorf("inspect(%.300s) = %+v; want %+v (a full decode's)", body, got, want)
		}
	})
}

func TestJSONWalker(t *testing.T) {
	tests := []string{
		`{}`, `[]`, `{"a":1}`, `[1,2]`, `{"a":{"b":[1,{"c":"d"}]}}`, `" \"\\"`, `"\\\\"`, `true`, `false`, `null`,
		`-1.5e+3`, ` { "a" : [ 1 , 2 ] } `, `{"a\"b":"c\\"}`,
		// Malformed.
		``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `[,1]`, `{"a"}`, `{"a":}`, `{a:1}`, `[1 2]`, `"abc`, `"abc\"`,
		`tru`, `nul`, `{"a":1}}`, `[1]x`, `{"a":1 "b":2}`, `[}`, `{]`, `x`,
		strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
	}
	for _, s := range tests {
		w := jsonWalker{data: []byte(s)}
		_, err := w.value()
		if err == nil {
			err = w.end()
		}
		// Numbers are checked loosely; none of these cases depends on it.
		if got, want := err == nil, json.Valid([]byte(s)); got != want {
			t.Errorf("jsonWalker accepts %.60q = %v; want %v (json.Valid)", s, got, want)
		}
	}
}

// refDuplicate reports whether a valid JSON body's top-level object names
// a routing key more than once, names compared as encoding/json matches
// them.
func refDuplicate(body string) bool {
	dec := json.NewDecoder(strings.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		seen[foldName(tok.(string))]++
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return false
		}
	}
	for _, k := range routingKeys {
		if seen[foldName(k)] > 1 {
			return true
		}
	}
	return false
}
