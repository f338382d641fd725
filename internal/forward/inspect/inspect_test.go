package inspect

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	img := `{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}`
	tests := []struct {
		name       string
		kind       Shape
		body       string
		wantAgent  bool
		wantVision bool
	}{
		// OpenAI chat completions.
		{"openai user text", Messages, `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}`, false, false},
		{"openai user parts", Messages, `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, false, false},
		{"openai user image", Messages, `{"messages":[{"role":"user","content":[{"type":"text","text":"see"},` + img + `]}]}`, false, true},
		{"openai image earlier", Messages, `{"messages":[{"role":"user","content":[` + img + `]},{"role":"assistant","content":"ok"},{"role":"user","content":"and?"}]}`, false, true},
		{"openai assistant tool call", Messages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, true, false},
		{"openai tool result", Messages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1"}]},{"role":"tool","tool_call_id":"c1","content":"42"}]}`, true, false},
		{"openai text mentioning image_url", Messages, `{"messages":[{"role":"user","content":"what is \"type\":\"image_url\"?"}]}`, false, false},
		// Anthropic messages.
		{"anthropic user text", Messages, `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"anthropic user blocks", Messages, `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, false, false},
		{"anthropic assistant tool_use", Messages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]}]}`, true, false},
		{"anthropic tool result only", Messages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1"}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"}]}]}`, true, false},
		{"anthropic tool result and text", Messages, `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"},{"type":"text","text":"now do X"}]}]}`, false, false},
		{"anthropic image", Messages, `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA"}},{"type":"text","text":"?"}]}]}`, false, true},
		{"anthropic image in tool result", Messages, `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"image","source":{}}]}]}]}`, true, true},
		// Responses API.
		{"responses string", Responses, `{"model":"m","input":"hi"}`, false, false},
		{"responses user message", Responses, `{"input":[{"role":"user","content":"hi"}]}`, false, false},
		{"responses typed message with image", Responses, `{"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"?"},{"type":"input_image","image_url":"data:"}]}]}`, false, true},
		{"responses function output", Responses, `{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"42"}]}`, true, false},
		{"responses function call last", Responses, `{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c"}]}`, true, false},
		{"responses image in tool output", Responses, `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"x"}]}]}`, true, true},
		// Odd shapes fall back to agent without failing.
		{"not json", Messages, `not json`, true, false},
		{"no messages", Messages, `{"model":"m"}`, true, false},
		{"empty messages", Messages, `{"messages":[]}`, true, false},
		{"wrong types", Messages, `{"messages":[{"role":1,"content":{}},{"role":"user","content":"hi"}]}`, false, false},
		{"non-object parts", Messages, `{"messages":[{"role":"user","content":["x",` + img + `]}]}`, false, true},
		{"opaque", Opaque, `{"input":"embed me"}`, true, false},
		// Long histories: only the last turn decides the initiator, but an
		// image anywhere counts.
		{"history image first", Messages, string(agentHistory(200<<10, `{"role":"user","content":"and?"}`, img)), false, true},
		{"history no image", Messages, string(agentHistory(200<<10, `{"role":"user","content":"and?"}`, "")), false, false},
		{"history mentions images", Messages, string(agentHistory(200<<10, `{"role":"tool","tool_call_id":"c","content":"ok"}`, `{"type":"text","text":"an image_url or \"type\":\"image\" in prose"}`)), true, false},
		{"history ends in image", Messages, string(agentHistory(200<<10, `{"role":"user","content":[`+img+`]}`, "")), false, true},
		{"spaced image", Messages, `{ "messages" : [ { "role" : "user", "content" : [ { "type" : "image", "source" : { } } ] }, { "role": "assistant", "content": "ok" } ] }`, true, true},
		{"escaped image type", Messages, `{"messages":[{"role":"user","content":[{"type":"\u0069mage_url"}]}]}`, false, true},
		{"escaped key", Messages, `{"m\u0065ssages":[{"role":"user","content":"hi"}]}`, false, false},
		{"key case", Messages, `{"Messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"repeated key: refused, the agent default", Messages, `{"messages":[{"role":"user","content":[` + img + `]}],"messages":[{"role":"assistant","content":"x"}]}`, true, false},
		{"messages after other fields", Messages, `{"model":"m","tools":[{"x":[1,{"y":"]}"}]}],"stream":true,"temperature":0.5,"stop":null,"messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"trailing comma", Messages, `{"messages":[{"role":"user","content":"hi"},]}`, true, false},
		{"unclosed", Messages, `{"messages":[{"role":"user","content":"hi"}`, true, false},
		{"trailing garbage", Messages, `{"messages":[{"role":"user","content":"hi"}]} x`, true, false},
		{"top-level array", Messages, `[{"role":"user","content":"hi"}]`, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := inspect(tt.kind, []byte(tt.body))
			if got.Agent != tt.wantAgent || got.Vision != tt.wantVision {
				t.Errorf("inspect(%.300s) = agent %v, vision %v; want %v, %v", tt.body, got.Agent, got.Vision, tt.wantAgent, tt.wantVision)
			}
			if want := inspectReference(tt.kind, []byte(tt.body)); !sameInspection(tt.body, got, want) && comparable(tt.kind, tt.body) {
				t.Errorf("inspect(%.300s) = %+v; a full decode gives %+v", tt.body, got, want)
			}
		})
	}
}

// agentHistory builds an OpenAI chat body of about size bytes shaped like a
// coding agent's history: a system prompt, a user turn (with part, when not
// empty, as a second content part), then rounds of assistant tool calls and
// tool results, ending with last.
func agentHistory(size int, last, part string) []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4.1","stream":true,"tools":[{"type":"function","function":{"name":"read_file","parameters":{"type":"object"}}}],"messages":[{"role":"system","content":"You are a coding agent."}`)
	if part != "" {
		sb.WriteString(`,{"role":"user","content":[{"type":"text","text":"fix the bug"},` + part + `]}`)
	} else {
		sb.WriteString(`,{"role":"user","content":"fix the bug"}`)
	}
	for i := 0; sb.Len() < size; i++ {
		fmt.Fprintf(&sb, `,{"role":"assistant","content":null,"tool_calls":[{"id":"call_%d","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"internal/f%d.go\"}"}}]}`, i, i)
		fmt.Fprintf(&sb, `,{"role":"tool","tool_call_id":"call_%d","content":"%s"}`, i, strings.Repeat(`package f\n\nfunc F() { return \"x\" }\n`, 30))
	}
	sb.WriteString("," + last + "]}")
	return []byte(sb.String())
}

func BenchmarkInspect(b *testing.B) {
	benches := []struct {
		name string
		body []byte
	}{
		{"small", []byte(`{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}`)},
		{"history-200KB", agentHistory(200<<10, `{"role":"user","content":"now run the tests"}`, "")},
		{"history-200KB-image", agentHistory(200<<10, `{"role":"user","content":"now run the tests"}`, `{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}`)},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				if in := inspect(Messages, bb.body); in.Agent || in.Vision != strings.HasSuffix(bb.name, "image") {
					b.Fatalf("inspect = %+v; want user", in)
				}
			}
		})
	}
}

func TestFindModel(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"model":"a","input":"x"}`, "a"},
		{` { "input" : [1,{"model":"inner"}] , "model" : "b\"c" } `, `b\"c`},
		{`{"model":"a","model":7}`, ""}, // refused: a duplicate key (TestDuplicateKeys)
		{`{"model":"a",}`, ""},
		{`["model","a"]`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		s, e := findModel([]byte(tt.body))
		if got := tt.body[s:e]; got != tt.want {
			t.Errorf("findModel(%s) = %q; want %q", tt.body, got, tt.want)
		}
	}
}

// TestDuplicateKeys: a body naming a routing key twice, in any case or
// escaping, is refused; other keys may repeat, and nested ones are not
// looked at.
func TestDuplicateKeys(t *testing.T) {
	for _, tt := range []struct {
		shape Shape
		body  string
		dup   string // "" : accepted
	}{
		{Messages, `{"model":"a","messages":[],"model":"b"}`, "model"},
		{Messages, `{"model":"a","messages":[],"MODEL":"b"}`, "model"},
		{Messages, `{"model":"a","messages":[],"mod\u0065l":"b"}`, "model"},
		{Messages, `{"messages":[],"Messages":[]}`, "messages"},
		{Responses, `{"input":"a","INPUT":[]}`, "input"},
		{Messages, `{"stream":true,"messages":[],"Stream":false}`, "stream"},
		{Opaque, `{"input":"a","input":"b"}`, "input"},
		{Opaque, `{"model":"a","Model":"b"}`, "model"},
		{Messages, `{"model":"a","messages":[{"model":"x","model":"y"}]}`, ""},
		{Messages, `{"model":"a","messages":[],"temperature":1,"temperature":2}`, ""},
		{Messages, `{"model":"a","models":"b","messages":[]}`, ""},
	} {
		_, err := Scan(nil, tt.shape, []byte(tt.body))
		var dup *DuplicateKeyError
		if got := errors.As(err, &dup); got != (tt.dup != "") || got && dup.Key != tt.dup {
			t.Errorf("Scan(%s) error = %v; want a duplicate %q", tt.body, err, tt.dup)
		}
	}
}

// TestScanStream: the stream flag is the top-level "stream" true.
func TestScanStream(t *testing.T) {
	for _, tt := range []struct {
		body string
		want bool
	}{
		{`{"stream":true,"messages":[]}`, true},
		{`{"messages":[],"STREAM":true}`, true},
		{`{"stream":false,"messages":[]}`, false},
		{`{"stream":"true","messages":[]}`, false},
		{`{"messages":[{"stream":true}]}`, false},
	} {
		if r, err := Scan(nil, Messages, []byte(tt.body)); err != nil || r.Stream != tt.want {
			t.Errorf("Scan(%s) = stream %v, %v; want %v", tt.body, r.Stream, err, tt.want)
		}
	}
}

// TestScanCompaction: the compaction flag is Claude Code's compaction
// instruction in the text of the last turn, found in the scan's one pass.
func TestScanCompaction(t *testing.T) {
	const ask = `Your task is to create a detailed summary of the conversation so far, paying close attention to the user's explicit requests.`
	for _, tt := range []struct {
		name, body string
		want       bool
	}{
		{"last turn string", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"ok"},{"role":"user","content":"` + ask + `"}]}`, true},
		{"last turn text block", `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"CRITICAL: text only. ` + ask + `","cache_control":{"type":"ephemeral"}}]}]}`, true},
		{"escaped", `{"messages":[{"role":"user","content":"\u0059our task is to create a detailed summary of the conversation so far"}]}`, true},
		{"nested tool result text", `{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"` + ask + `"}]}]}]}`, true},
		{"earlier turn only", `{"messages":[{"role":"user","content":"` + ask + `"},{"role":"assistant","content":"summary"},{"role":"user","content":"go on"}]}`, false},
		{"in a key name", `{"messages":[{"role":"user","content":"hi","` + ask + `":1}]}`, false},
		{"in the system prompt", `{"system":"` + ask + `","messages":[{"role":"user","content":"hi"}]}`, false},
		{"cut short", `{"messages":[{"role":"user","content":"Your task is to create a detailed summary"}]}`, false},
		{"plain request", `{"messages":[{"role":"user","content":"hi"}]}`, false},
	} {
		if r, err := Scan(nil, Messages, []byte(tt.body)); err != nil || r.Compaction != tt.want {
			t.Errorf("%s: Scan(%.80s) = compaction %v, %v; want %v", tt.name, tt.body, r.Compaction, err, tt.want)
		}
	}
}
