package streamcheck

import (
	"strings"
	"testing"
)

func sse(lines ...string) []Event {
	evs, err := Read(strings.NewReader(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		panic(err)
	}
	return evs
}

func TestRead(t *testing.T) {
	evs, err := Read(strings.NewReader("event: a\ndata: {\"x\":1}\n\n: keep-alive\n\ndata: [DONE]\n\n"))
	if err != nil || len(evs) != 2 || evs[0].Name != "a" || evs[0].Data != `{"x":1}` || evs[1].Data != "[DONE]" {
		t.Fatalf("Read = %+v, %v; want two events", evs, err)
	}
	if _, err := Read(strings.NewReader("data: {}\n")); err == nil {
		t.Error("Read of a stream cut inside an event: no error")
	}
}

const (
	msgStart = `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}`
	toolUse  = `data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}`
	argDelta = `data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}`
	stop0    = `data: {"type":"content_block_stop","index":0}`
	msgDelta = `data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":5}}`
	msgStop  = `data: {"type":"message_stop"}`
)

func TestAnthropic(t *testing.T) {
	good := sse(msgStart, "", toolUse, "", argDelta, "", stop0, "", msgDelta, "", msgStop, "")
	res, err := Anthropic(good)
	if err != nil || len(res.Calls) != 1 || res.Calls[0].Arguments != `{"a":1}` || res.Stop != "tool_use" {
		t.Fatalf("Anthropic(good) = %+v, %v", res, err)
	}
	bad := map[string][]Event{
		"no message_start":        sse(toolUse, "", argDelta, "", stop0, "", msgDelta, "", msgStop, ""),
		"delta after stop":        sse(msgStart, "", toolUse, "", stop0, "", argDelta, "", msgDelta, "", msgStop, ""),
		"no message_stop":         sse(msgStart, "", toolUse, "", argDelta, "", stop0, "", msgDelta, ""),
		"stop reason without use": sse(msgStart, "", msgDelta, "", msgStop, ""),
		"event name differs":      sse("event: ping", msgStart, "", msgStop, ""),
	}
	for name, evs := range bad {
		if _, err := Anthropic(evs); err == nil {
			t.Errorf("Anthropic(%s) = nil error", name)
		}
	}
	cut := sse(msgStart, "", `data: {"type":"error","error":{"type":"api_error","message":"cut"}}`, "")
	if res, err := Anthropic(cut); err != nil || res.Error != "api_error" {
		t.Errorf("Anthropic(error end) = %+v, %v; want the error type", res, err)
	}
}

const (
	chunk0 = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}`
	chunk1 = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}]}`
	chunkF = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`
	done   = `data: [DONE]`
)

func TestChat(t *testing.T) {
	if res, err := Chat(sse(chunk0, "", chunk1, "", chunkF, "", done, "")); err != nil || len(res.Calls) != 1 || res.Stop != "tool_calls" {
		t.Fatalf("Chat(good) = %+v, %v", res, err)
	}
	bad := map[string][]Event{
		"no [DONE]":          sse(chunk0, "", chunk1, "", chunkF, ""),
		"no role":            sse(chunk1, "", chunkF, "", done, ""),
		"id repeated":        sse(chunk0, "", chunk0, "", chunkF, "", done, ""),
		"chunk after finish": sse(chunk0, "", chunkF, "", chunk1, "", done, ""),
		"other stream id":    sse(chunk0, "", strings.Replace(chunk1, `"c1"`, `"c2"`, 1), "", chunkF, "", done, ""),
	}
	for name, evs := range bad {
		if _, err := Chat(evs); err == nil {
			t.Errorf("Chat(%s) = nil error", name)
		}
	}
}

func TestResponses(t *testing.T) {
	resp := func(status, output string) string {
		return `"response":{"id":"resp_1","object":"response","status":"` + status + `","output":` + output + `,"usage":{"input_tokens":1}}`
	}
	item := `{"type":"function_call","id":"fc_1","call_id":"call_1","name":"f","arguments":"{}"}`
	good := sse(
		`data: {"type":"response.created","sequence_number":0,`+resp("in_progress", "[]")+`}`, "",
		`data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"f","arguments":""}}`, "",
		`data: {"type":"response.function_call_arguments.delta","sequence_number":2,"output_index":0,"item_id":"fc_1","delta":"{}"}`, "",
		`data: {"type":"response.function_call_arguments.done","sequence_number":3,"output_index":0,"item_id":"fc_1","arguments":"{}"}`, "",
		`data: {"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":`+item+`}`, "",
		`data: {"type":"response.completed","sequence_number":5,`+resp("completed", "["+item+"]")+`}`, "")
	if res, err := Responses(good); err != nil || len(res.Calls) != 1 || res.Stop != "completed" {
		t.Fatalf("Responses(good) = %+v, %v", res, err)
	}
	skipped := append(append([]Event{}, good[:2]...), good[3:]...)
	if _, err := Responses(skipped); err == nil {
		t.Error("Responses with a sequence number skipped = nil error")
	}
	wrong := append([]Event{}, good...)
	wrong[3].Data = strings.Replace(wrong[3].Data, `"arguments":"{}"`, `"arguments":"{ }"`, 1)
	if _, err := Responses(wrong); err == nil {
		t.Error("Responses whose arguments.done differs from the deltas = nil error")
	}
	if _, err := Responses(good[:5]); err == nil {
		t.Error("Responses without a terminal event = nil error")
	}
}
