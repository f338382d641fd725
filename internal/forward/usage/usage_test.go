package usage

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	chatJSON = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 99} is quoted"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":12},"completion_tokens_details":{"reasoning_tokens":0}}}`

	chatStream = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7,\"total_tokens\":10}}\n\n" +
		"data: [DONE]\n\n"

	chatStreamNoUsage = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"

	responsesJSON = `{"id":"resp_1","object":"response","status":"completed","model":"gpt-5","output":[{"type":"message","content":[{"type":"output_text","text":"ok"}]}],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":64},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":120},"user":null,"metadata":{}}`

	responsesStream = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"ok\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":21,\"total_tokens\":121}}}\n\n"

	messagesJSON = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4.5","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":40,"output_tokens":9}}`

	messagesStream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":40,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

func TestParseDialects(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   Usage
		ok     bool
	}{
		{"chat json", chatJSON, Usage{Input: 30, Output: 7, Cached: 12}, true},
		{"chat stream", chatStream, Usage{Input: 3, Output: 7}, true},
		{"chat stream without usage", chatStreamNoUsage, Usage{}, false},
		{"responses json", responsesJSON, Usage{Input: 100, Output: 20, Cached: 64}, true},
		{"responses stream", responsesStream, Usage{Input: 100, Output: 21}, true},
		{"messages json", messagesJSON, Usage{Input: 55, Output: 9, Cached: 40}, true},
		{"messages stream", messagesStream, Usage{Input: 50, Output: 15, Cached: 40}, true},
		{"error body", `{"error":{"message":"no","type":"x"}}`, Usage{}, false},
		{"usage as a string value", `{"note":"usage","x":{"y":"usage"}}`, Usage{}, false},
		{"usage cut off", `{"usage":{"prompt_tokens":3`, Usage{}, false},
		{"negative figures", `{"usage":{"prompt_tokens":-3,"completion_tokens":2}}`, Usage{Output: 2}, true},
		{"empty", ``, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tapAll(t, tt.answer, 7)
			if ok != tt.ok || got != tt.want {
				t.Errorf("usage of %s = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// tapAll reads answer through a Tap in reads of at most chunk bytes and
// returns what the Tap reported, checking that the bytes passed unchanged.
func tapAll(t *testing.T, answer string, chunk int) (Usage, bool) {
	t.Helper()
	var got Usage
	var ok, called bool
	bp := NewBuffers()
	tap := bp.NewTap(io.NopCloser(&chunkReader{r: strings.NewReader(answer), n: chunk}), func(u Usage, o bool) {
		if called {
			t.Fatal("done called twice")
		}
		got, ok, called = u, o, true
	})
	out, err := io.ReadAll(tap)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != answer {
		t.Fatalf("the tap changed the bytes")
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if !called {
		t.Fatal("done not called")
	}
	return got, ok
}

type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestLongStreams puts usage behind far more than the tail holds of
// content, and an Anthropic message_start before it.
func TestLongStreams(t *testing.T) {
	filler := strings.Repeat("data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}\n\n", 3000)
	parts := strings.SplitN(messagesStream, "event: message_delta", 2)
	long := parts[0] + filler + "event: message_delta" + parts[1]
	for _, chunk := range []int{1 << 20, 32 << 10, 4096, 100, 1} {
		got, ok := tapAll(t, long, chunk)
		if want := (Usage{Input: 50, Output: 15, Cached: 40}); !ok || got != want {
			t.Errorf("long Anthropic stream in reads of %d: %+v, %v; want %+v", chunk, got, ok, want)
		}
		got, ok = tapAll(t, filler+chatStream, chunk)
		if want := (Usage{Input: 3, Output: 7}); !ok || got != want {
			t.Errorf("long chat stream in reads of %d: %+v, %v; want %+v", chunk, got, ok, want)
		}
	}
}

func TestTapReportsOnCloseWithoutEOF(t *testing.T) {
	bp := NewBuffers()
	var calls int
	var ok bool
	tap := bp.NewTap(io.NopCloser(strings.NewReader(messagesStream)), func(_ Usage, o bool) { calls++; ok = o })
	buf := make([]byte, 40)
	if _, err := io.ReadFull(tap, buf); err != nil {
		t.Fatal(err)
	}
	tap.Close()
	tap.Close()
	if calls != 1 || ok {
		t.Errorf("a client that left after 40 bytes: done called %d times, ok %v; want once, no usage", calls, ok)
	}
	// Reads after Close neither panic nor report again.
	_, _ = tap.Read(buf)
	if calls != 1 {
		t.Errorf("done called %d times; want 1", calls)
	}
}

func TestTapPassesErrors(t *testing.T) {
	bp := NewBuffers()
	called := false
	tap := bp.NewTap(io.NopCloser(iotest.ErrReader(io.ErrUnexpectedEOF)), func(Usage, bool) { called = true })
	if _, err := tap.Read(make([]byte, 8)); err != io.ErrUnexpectedEOF {
		t.Errorf("Read error = %v; want the body's own", err)
	}
	tap.Close()
	if !called {
		t.Error("done not called at Close")
	}
}

func TestModels(t *testing.T) {
	m := NewModels(func(s string) bool { return s == "gpt-4.1" }, 2)
	for _, tt := range []struct{ in, want string }{
		{"gpt-4.1", "gpt-4.1"},
		{"a", "a"},
		{"b", "b"},
		{"c", Other},
		{"a", "a"},
		{"gpt-4.1", "gpt-4.1"},
		{"", Other},
		{"bad name", Other},
		{strings.Repeat("x", 101), Other},
	} {
		if got := m.Label(tt.in); got != tt.want {
			t.Errorf("Label(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParse checks the tap against the reference algorithm (oracle_test.go)
// on any answer short enough that the reference's windows hold all of it:
// the same figures whatever the read sizes.
func FuzzParse(f *testing.F) {
	for _, s := range []string{chatJSON, chatStream, responsesJSON, responsesStream, messagesJSON, messagesStream,
		`{"usage":{"usage":{}}}`, `"usage":{[[[[[[[[[[`, `"usage":{"usage":{"prompt_tokens":1}`, `\"usage":{"input_tokens":2}`,
		`"usage" : {"a":"}\"{"} "usage":{"output_tokens":3}`, `{"usage":{"prompt_tokens":"x","completion_tokens":2}}{"usage":{"prompt_tokens":5}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:min(len(b), HeadSize)]
		u, ok := refParse(b, b)
		if u.Input < 0 || u.Output < 0 || u.Cached < 0 || (!ok && u != Usage{}) {
			t.Fatalf("refParse = %+v, %v", u, ok)
		}
		for _, n := range []int{1, 13, 4096} {
			got, gotOK, oversized := tapChunks(t, b, func(int) int { return n })
			if oversized {
				continue // crafted nesting past maxOpen: the tap may let the first object go
			}
			if got != u || gotOK != ok {
				t.Fatalf("tap in reads of %d = %+v, %v; reference = %+v, %v", n, got, gotOK, u, ok)
			}
		}
	})
}

// tapChunks reads b through a Tap in reads of size(i) bytes (the i-th
// read) and returns what it reported and whether it let an object go.
func tapChunks(t testing.TB, b []byte, size func(i int) int) (Usage, bool, bool) {
	t.Helper()
	var got Usage
	var ok bool
	bp := NewBuffers()
	tap := bp.NewTap(io.NopCloser(&splitReader{b: b, size: size}), func(u Usage, o bool) { got, ok = u, o })
	out, err := io.ReadAll(tap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatal("the tap changed the bytes")
	}
	return got, ok, bp.Oversized() > 0
}

// splitReader returns b in reads of size(i) bytes (at least 1).
type splitReader struct {
	b    []byte
	i    int
	size func(i int) int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), max(1, s.size(s.i)))], s.b)
	s.b, s.i = s.b[n:], s.i+1
	return n, nil
}

func BenchmarkTapStream(b *testing.B) {
	stream := strings.Repeat("data: {\"choices\":[{\"delta\":{\"content\":\"xxxxxxxxxxxxxxxx\"}}]}\n\n", 2000) + chatStream
	bp := NewBuffers()
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		tap := bp.NewTap(io.NopCloser(&chunkReader{r: strings.NewReader(stream), n: 200}), func(Usage, bool) {})
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{tap}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode checks the fast usage decoder against encoding/json: the same
// result and the same verdict for any object.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}`,
		`{"prompt_tokens":9,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}`,
		`{"input_tokens":10,"input_tokens_details":{"cached_tokens":3},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":15}`,
		`{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":7,"output_tokens":12,"service_tier":"standard","server_tool_use":{"web_search_requests":0},"cost":0.25e-3,"x":[1,[true,false,null],{}]}`,
		`{"PROMPT_TOKENS":1,"prompt_tokens":null}`,
		`{"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":{}}`,
		`{"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":null}`,
		`{"prompt_tokens":1.0}`, `{"prompt_tokens":"1"}`, `{"prompt_tokens":-0}`, `{"prompt_tokens":01}`,
		`{"prompt_tokens":9223372036854775807}`, `{"prompt_tokens":9223372036854775808}`,
		`{"prompt_\u0074okens":4}`, "{\"prompt_tokens\":1,\"\u212a\":2}", `{"a":"\u00e9"}`, `{"a":"x\ty"}`,
		`{}`, `{ }`, `{"a":1,}`, `{"a" 1}`, `{"prompt_tokens":1} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast raw
		s := scanner{b: b}
		fastOK := s.object(func(key []byte) bool { return s.usageField(key, &fast) }) && s.end()
		var std raw
		stdOK := json.Unmarshal(b, &std) == nil
		if fastOK && (!stdOK || fast.usage() != std.usage() || !sameFields(fast, std)) {
			t.Fatalf("fast path accepted %q as %+v; encoding/json: ok=%v %+v", b, fast.usage(), stdOK, std.usage())
		}
		var got raw
		if ok := decode(b, &got); ok != stdOK || got.usage() != std.usage() {
			t.Fatalf("decode(%q) = %+v, %v; encoding/json %+v, %v", b, got.usage(), ok, std.usage(), stdOK)
		}
	})
}

// sameFields compares which fields are set and their values.
func sameFields(a, b raw) bool {
	eq := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	det := func(x, y *cachedDetails) bool {
		return (x == nil) == (y == nil) && (x == nil || eq(x.CachedTokens, y.CachedTokens))
	}
	return eq(a.PromptTokens, b.PromptTokens) && eq(a.CompletionTokens, b.CompletionTokens) &&
		eq(a.InputTokens, b.InputTokens) && eq(a.OutputTokens, b.OutputTokens) &&
		eq(a.CacheReadInputTokens, b.CacheReadInputTokens) && eq(a.CacheCreationInputTokens, b.CacheCreationInputTokens) &&
		det(a.PromptTokensDetails, b.PromptTokensDetails) && det(a.InputTokensDetails, b.InputTokensDetails)
}

func BenchmarkParseJSONAnswer(b *testing.B) {
	answer := []byte(`{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}}}`)
	bp := NewBuffers()
	for b.Loop() {
		f := finder{bufs: bp}
		f.write(answer)
		f.release()
		if _, ok := f.result(); !ok {
			b.Fatal("no usage")
		}
	}
}

// TestOversizedCounted: a usage object past MaxObject is let go and
// counted on the metric.
func TestOversizedCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	bp := m.TapBuffers()
	answer := `{"usage":{"prompt_tokens":1,"pad":"` + strings.Repeat("x", MaxObject) + `"}}`
	var ok bool
	tap := bp.NewTap(io.NopCloser(strings.NewReader(answer)), func(_ Usage, o bool) { ok = o })
	if _, err := io.Copy(io.Discard, tap); err != nil {
		t.Fatal(err)
	}
	if ok || bp.Oversized() != 1 || testutil.ToFloat64(m.oversized) != 1 {
		t.Errorf("usage found %v, oversized %d, metric %v; want none, 1, 1", ok, bp.Oversized(), testutil.ToFloat64(m.oversized))
	}
}
