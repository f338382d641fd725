package forward

import (
	"fmt"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	img := `{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}`
	tests := []struct {
		name       string
		kind       bodyKind
		body       string
		wantAgent  bool
		wantVision bool
	}{
		// OpenAI chat completions.
		{"openai user text", bodyMessages, `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}`, false, false},
		{"openai user parts", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, false, false},
		{"openai user image", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"text","text":"see"},` + img + `]}]}`, false, true},
		{"openai image earlier", bodyMessages, `{"messages":[{"role":"user","content":[` + img + `]},{"role":"assistant","content":"ok"},{"role":"user","content":"and?"}]}`, false, true},
		{"openai assistant tool call", bodyMessages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, true, false},
		{"openai tool result", bodyMessages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1"}]},{"role":"tool","tool_call_id":"c1","content":"42"}]}`, true, false},
		{"openai text mentioning image_url", bodyMessages, `{"messages":[{"role":"user","content":"what is \"type\":\"image_url\"?"}]}`, false, false},
		// Anthropic messages.
		{"anthropic user text", bodyMessages, `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"anthropic user blocks", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, false, false},
		{"anthropic assistant tool_use", bodyMessages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]}]}`, true, false},
		{"anthropic tool result only", bodyMessages, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1"}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"}]}]}`, true, false},
		{"anthropic tool result and text", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"},{"type":"text","text":"now do X"}]}]}`, false, false},
		{"anthropic image", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA"}},{"type":"text","text":"?"}]}]}`, false, true},
		{"anthropic image in tool result", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"image","source":{}}]}]}]}`, true, true},
		// Responses API.
		{"responses string", bodyResponses, `{"model":"m","input":"hi"}`, false, false},
		{"responses user message", bodyResponses, `{"input":[{"role":"user","content":"hi"}]}`, false, false},
		{"responses typed message with image", bodyResponses, `{"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"?"},{"type":"input_image","image_url":"data:"}]}]}`, false, true},
		{"responses function output", bodyResponses, `{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"42"}]}`, true, false},
		{"responses function call last", bodyResponses, `{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c"}]}`, true, false},
		{"responses image in tool output", bodyResponses, `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"x"}]}]}`, true, true},
		// Odd shapes fall back to agent without failing.
		{"not json", bodyMessages, `not json`, true, false},
		{"no messages", bodyMessages, `{"model":"m"}`, true, false},
		{"empty messages", bodyMessages, `{"messages":[]}`, true, false},
		{"wrong types", bodyMessages, `{"messages":[{"role":1,"content":{}},{"role":"user","content":"hi"}]}`, false, false},
		{"non-object parts", bodyMessages, `{"messages":[{"role":"user","content":["x",` + img + `]}]}`, false, true},
		{"opaque", bodyOpaque, `{"input":"embed me"}`, true, false},
		// Long histories: only the last turn decides the initiator, but an
		// image anywhere counts.
		{"history image first", bodyMessages, string(agentHistory(200<<10, `{"role":"user","content":"and?"}`, img)), false, true},
		{"history no image", bodyMessages, string(agentHistory(200<<10, `{"role":"user","content":"and?"}`, "")), false, false},
		{"history mentions images", bodyMessages, string(agentHistory(200<<10, `{"role":"tool","tool_call_id":"c","content":"ok"}`, `{"type":"text","text":"an image_url or \"type\":\"image\" in prose"}`)), true, false},
		{"history ends in image", bodyMessages, string(agentHistory(200<<10, `{"role":"user","content":[`+img+`]}`, "")), false, true},
		{"spaced image", bodyMessages, `{ "messages" : [ { "role" : "user", "content" : [ { "type" : "image", "source" : { } } ] }, { "role": "assistant", "content": "ok" } ] }`, true, true},
		{"escaped image type", bodyMessages, `{"messages":[{"role":"user","content":[{"type":"\u0069mage_url"}]}]}`, false, true},
		{"escaped key", bodyMessages, `{"m\u0065ssages":[{"role":"user","content":"hi"}]}`, false, false},
		{"key case", bodyMessages, `{"Messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"repeated key: the last wins", bodyMessages, `{"messages":[{"role":"user","content":[` + img + `]}],"messages":[{"role":"assistant","content":"x"}]}`, true, false},
		{"messages after other fields", bodyMessages, `{"model":"m","tools":[{"x":[1,{"y":"]}"}]}],"stream":true,"temperature":0.5,"stop":null,"messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"trailing comma", bodyMessages, `{"messages":[{"role":"user","content":"hi"},]}`, true, false},
		{"unclosed", bodyMessages, `{"messages":[{"role":"user","content":"hi"}`, true, false},
		{"trailing garbage", bodyMessages, `{"messages":[{"role":"user","content":"hi"}]} x`, true, false},
		{"top-level array", bodyMessages, `[{"role":"user","content":"hi"}]`, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := inspect(tt.kind, []byte(tt.body))
			if got.agent != tt.wantAgent || got.vision != tt.wantVision {
				t.Errorf("inspect(%.300s) = agent %v, vision %v; want %v, %v", tt.body, got.agent, got.vision, tt.wantAgent, tt.wantVision)
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
				if in := inspect(bodyMessages, bb.body); in.agent || in.vision != strings.HasSuffix(bb.name, "image") {
					b.Fatalf("inspect = %+v; want user", in)
				}
			}
		})
	}
}
