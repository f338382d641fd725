package translate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// agentRequest is a typical coding-agent request in Chat form: 20 tools with
// JSON Schemas, a system prompt and a 30-turn tool-use history.
func agentRequest(tb testing.TB) []byte {
	tb.Helper()
	var tools []map[string]any
	for i := range 20 {
		tools = append(tools, map[string]any{"type": "function", "function": map[string]any{
			"name": fmt.Sprintf("tool_%d", i), "description": strings.Repeat("Does a thing with files. ", 8),
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"path":    map[string]any{"type": "string", "description": "A path"},
				"content": map[string]any{"type": "string"},
				"lines":   map[string]any{"type": "array", "items": map[string]any{"type": "integer"}},
			}, "required": []string{"path"}},
		}})
	}
	msgs := []map[string]any{{"role": "system", "content": strings.Repeat("You are a careful coding agent. ", 60)}}
	for i := range 10 {
		id := fmt.Sprintf("call_%d", i)
		msgs = append(msgs,
			map[string]any{"role": "user", "content": "Please fix the bug in file " + fmt.Sprint(i)},
			map[string]any{"role": "assistant", "content": "Reading it.", "tool_calls": []map[string]any{{"id": id, "type": "function", "function": map[string]any{"name": "tool_1", "arguments": `{"path":"a/b.go"}`}}}},
			map[string]any{"role": "tool", "tool_call_id": id, "content": strings.Repeat("package main\n", 80)},
		)
	}
	b, err := json.Marshal(map[string]any{"model": "m", "messages": msgs, "tools": tools, "stream": true, "max_tokens": 4096})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkRequestAgent(b *testing.B) {
	chat := agentRequest(b)
	bodies := map[Dialect][]byte{Chat: chat}
	for _, to := range []Dialect{Messages, Responses} {
		out, _, err := Request(context.Background(), Chat, to, chat, Options{})
		if err != nil {
			b.Fatal(err)
		}
		bodies[to] = out
	}
	for _, from := range dialects {
		for _, to := range dialects {
			if from == to {
				continue
			}
			b.Run(from.String()+"_to_"+to.String(), func(b *testing.B) {
				body := bodies[from]
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := Request(context.Background(), from, to, body, Options{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// longStream is an upstream stream of n text deltas (and one tool call),
// taken from a translated fixture so that every dialect has one.
func longStream(tb testing.TB, d Dialect, n int) ([]byte, int) {
	tb.Helper()
	var up bytes.Buffer
	up.WriteString(`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}` + "\n\n")
	up.WriteString(`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n")
	for range n {
		up.WriteString(`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"some words of text "}}` + "\n\n")
	}
	up.WriteString(`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n")
	up.WriteString(`event: message_delta` + "\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":100}}` + "\n\n")
	up.WriteString(`event: message_stop` + "\n" + `data: {"type":"message_stop"}` + "\n\n")
	if d == Messages {
		return up.Bytes(), n + 6
	}
	out := translateStream(tb, Messages, d, up.Bytes(), 0)
	return out, bytes.Count(out, []byte("\n\n"))
}

func BenchmarkStream(b *testing.B) {
	for _, from := range dialects {
		in, events := longStream(b, from, 500)
		for _, to := range dialects {
			if from == to {
				continue
			}
			b.Run(from.String()+"_to_"+to.String(), func(b *testing.B) {
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				for b.Loop() {
					s, _ := NewStream(from, to, io.Discard, StreamOptions{IncludeUsage: true, Now: testNow})
					// Upstream reads arrive in chunks of about one event.
					for i := 0; i < len(in); i += 256 {
						if _, err := s.Write(in[i:min(i+256, len(in))]); err != nil {
							b.Fatal(err)
						}
					}
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
			})
		}
	}
}
