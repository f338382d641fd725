package usage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// genAnswer writes an answer of one of the six shapes (three dialects,
// stream and JSON) as the upstream sends it: fillers content events (or
// output parts) of text, with usage figures in, out and cached where the
// dialect puts them. The shapes follow the recorded answers in
// usage_test.go; text goes through encoding/json, so quotes, backslashes,
// "usage" and non-ASCII in it come out escaped as upstreams send them.
func genAnswer(shape uint8, text string, fillers int, in, out, cached uint32, usage bool) []byte {
	q, _ := json.Marshal(text)
	var b bytes.Buffer
	event := func(name, data string) {
		if name != "" {
			fmt.Fprintf(&b, "event: %s\n", name)
		}
		fmt.Fprintf(&b, "data: %s\n\n", data)
	}
	switch shape % 7 {
	case 0: // Chat stream (include_usage: usage null until the last chunk)
		for i := range fillers {
			event("", fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":%s}}],"usage":null,"n":%d}`, q, i))
		}
		event("", `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`)
		if usage {
			event("", fmt.Sprintf(`{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d}}}`, in, out, in+out, cached))
		}
		event("", "[DONE]")
	case 1: // Chat JSON
		fmt.Fprintf(&b, `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}]`, strings.Repeat(string(q), max(1, fillers)))
		if usage {
			fmt.Fprintf(&b, `,"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d}}`, in, out, in+out, cached)
		}
		b.WriteString("}")
	case 2: // Responses stream: usage null at creation, whole in response.completed
		event("response.created", `{"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress","usage":null}}`)
		for i := range fillers {
			event("response.output_text.delta", fmt.Sprintf(`{"type":"response.output_text.delta","sequence_number":%d,"delta":%s}`, i+1, q))
		}
		u := "null"
		if usage {
			u = fmt.Sprintf(`{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}`, in, cached, out, in+out)
		}
		event("response.completed", fmt.Sprintf(`{"type":"response.completed","response":{"id":"r","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":%s}]}],"usage":%s,"user":null,"metadata":{}}}`, q, u))
	case 3: // Responses JSON
		fmt.Fprintf(&b, `{"id":"r","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":%s}]}]`, strings.Repeat(string(q), max(1, fillers)))
		if usage {
			fmt.Fprintf(&b, `,"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,"total_tokens":%d}`, in, cached, out, in+out)
		}
		b.WriteString(`,"user":null,"metadata":{}}`)
	case 4, 5: // Messages stream: input figures first, output at the end (5: the end cut off)
		event("message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"usage":{"input_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":%d,"output_tokens":1}}}`, in, cached))
		event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		for range fillers {
			event("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%s}}`, q))
		}
		if shape%7 == 5 {
			break
		}
		event("content_block_stop", `{"type":"content_block_stop","index":0}`)
		if usage {
			event("message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":%d}}`, out))
		}
		event("message_stop", `{"type":"message_stop"}`)
	case 6: // Messages JSON
		fmt.Fprintf(&b, `{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":%s}],"stop_reason":"end_turn"`, strings.Repeat(string(q), max(1, fillers)))
		if usage {
			fmt.Fprintf(&b, `,"usage":{"input_tokens":%d,"cache_creation_input_tokens":3,"cache_read_input_tokens":%d,"output_tokens":%d}`, in, cached, out)
		}
		b.WriteString("}")
	}
	return b.Bytes()
}

// refTapAll reads b through the reference tap in one read.
func refTapAll(t testing.TB, b []byte) (Usage, bool) {
	t.Helper()
	var got Usage
	var ok bool
	tap := newRefBuffers().newTap(io.NopCloser(bytes.NewReader(b)), func(u Usage, o bool) { got, ok = u, o })
	if _, err := io.Copy(io.Discard, tap); err != nil {
		t.Fatal(err)
	}
	return got, ok
}

// FuzzTapStreams checks the tap against the reference algorithm on
// generated answers of every dialect, short and far longer than the
// reference's windows, read in arbitrary splits: the same figures.
func FuzzTapStreams(f *testing.F) {
	for _, s := range []struct {
		shape   uint8
		text    string
		fillers uint16
		usage   bool
	}{
		{0, "Hi", 3, true}, {0, "Hi", 3, false}, {1, `say "usage": {"prompt_tokens": 9}`, 1, true},
		{2, "ok", 2, true}, {2, "ok", 400, true}, {3, "ok \\ \"usage\":{", 300, true}, {4, "x", 5, true},
		{4, "long", 2000, true}, {5, "cut", 50, true}, {6, "é\u2028\x00}{", 2, true}, {0, "data: [DONE]\n\n", 700, true},
	} {
		f.Add(s.shape, s.text, s.fillers, uint32(30), uint32(7), uint32(12), s.usage, uint64(1), uint16(64))
	}
	f.Fuzz(func(t *testing.T, shape uint8, text string, fillers uint16, in, out, cached uint32, usage bool, seed uint64, maxRead uint16) {
		if len(text)*int(fillers%3000) > 4<<20 {
			t.Skip("answer too large")
		}
		b := genAnswer(shape, text, int(fillers%3000), in, out, cached, usage)
		want, wantOK := refTapAll(t, b)
		rnd := rand.New(rand.NewPCG(seed, uint64(maxRead)))
		got, ok, oversized := tapChunks(t, b, func(int) int { return 1 + rnd.IntN(int(maxRead)+1) })
		if oversized {
			t.Fatalf("the tap let a usage object go in a generated answer of %d bytes", len(b))
		}
		if got != want || ok != wantOK {
			t.Fatalf("tap = %+v, %v; reference = %+v, %v (shape %d, %d bytes)", got, ok, want, wantOK, shape%7, len(b))
		}
	})
}

// TestTapHoldsNoWindow: a long stream leaves the tap holding only the usage
// objects, not the answer's bytes.
func TestTapHoldsNoWindow(t *testing.T) {
	b := genAnswer(4, strings.Repeat("x", 100), 2000, 10, 20, 5, true)
	f := finder{bufs: NewBuffers()}
	for p := b; len(p) > 0; p = p[min(len(p), 1000):] {
		f.write(p[:min(len(p), 1000)])
	}
	if f.capture != nil || len(f.open) != 0 {
		t.Errorf("after the stream: capture %v, %d objects open; want none", f.capture != nil, len(f.open))
	}
	if held := cap(f.first) + cap(f.last); held > 512 {
		t.Errorf("the tap holds %d bytes of usage objects; want < 512", held)
	}
	if u, ok := f.result(); !ok || u != (Usage{Input: 15, Output: 20, Cached: 5}) {
		t.Errorf("usage = %+v, %v", u, ok)
	}
}
