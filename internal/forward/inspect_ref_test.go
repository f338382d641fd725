package forward

import (
	"encoding/json"
	"strings"
	"testing"
)

// inspectReference is the straightforward inspection inspect must agree
// with: the whole body decoded by encoding/json.
func inspectReference(kind bodyKind, body []byte) inspection {
	var turns []turn
	switch kind {
	case bodyMessages:
		var b struct {
			Messages []turn `json:"messages"`
		}
		if !decodeLenient(body, &b) {
			return inspection{agent: true}
		}
		turns = b.Messages
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
		turns = b.Input.items
	default:
		return inspection{agent: true}
	}
	in := inspection{agent: true}
	for i := range turns {
		in.vision = in.vision || turns[i].hasImage()
	}
	if n := len(turns); n > 0 {
		in.agent = !turns[n-1].genuineUser()
	}
	return in
}

// sameInspection reports whether got, inspect's answer for body, agrees
// with want, the reference's, and its model span holds the "model" string a
// full decode finds.
func sameInspection(body string, got, want inspection) bool {
	if got.agent != want.agent || got.vision != want.vision {
		return false
	}
	var b struct {
		Model json.RawMessage `json:"model"`
	}
	decodeLenient([]byte(body), &b)
	if len(b.Model) == 0 || b.Model[0] != '"' {
		return got.modelEnd == 0
	}
	var model string
	if json.Unmarshal(b.Model, &model) != nil || got.modelEnd == 0 {
		return false
	}
	raw := `"` + body[got.modelStart:got.modelEnd] + `"`
	var span string
	return json.Unmarshal([]byte(raw), &span) == nil && span == model
}

// comparable reports whether inspectReference is the standard for body:
// it must be JSON, and name the list of turns at most once. encoding/json
// decodes a repeated field into the slice the first one filled, so turns of
// the first list leak into the second; inspect takes the last list alone,
// as other JSON parsers do.
func comparable(kind bodyKind, body string) bool {
	if !json.Valid([]byte(body)) {
		return false
	}
	field := map[bodyKind]string{bodyMessages: "messages", bodyResponses: "input"}[kind]
	dec := json.NewDecoder(strings.NewReader(body))
	n := 0
	for depth := 0; ; {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok := tok.(type) {
		case json.Delim:
			if tok == '{' || tok == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			// At depth 1 in an object, keys and string values alternate;
			// counting both over-counts, which only skips more bodies.
			if depth == 1 && strings.EqualFold(tok, field) {
				n++
			}
		}
	}
	return n <= 1
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
}

// FuzzInspect checks that inspect agrees with a full decode on every JSON
// body, and never panics on anything else.
func FuzzInspect(f *testing.F) {
	for _, s := range inspectSeeds {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, body string, responses bool) {
		kind := bodyMessages
		if responses {
			kind = bodyResponses
		}
		got := inspect(kind, []byte(body))
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
