// Package sdktest checks translated streams with the official SDKs, in a
// package of its own so that the translate package's test binary (and its
// fuzzing builds) need not compile the SDKs.
package sdktest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicsse "github.com/anthropics/anthropic-sdk-go/v2/packages/ssestream"
	"github.com/openai/openai-go/v3"
	openaisse "github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/copilot-broker/copilot-broker/internal/forward/translate"
)

// The translated streams are decoded by the official SDKs' stream helpers,
// which are strict about event order, after being fed byte by byte.

func sseResponse(b []byte) *http.Response {
	return &http.Response{
		StatusCode: 200,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       io.NopCloser(bytes.NewReader(b)),
	}
}

// wantAnswer is what the tools.* upstream streams say, in every dialect.
type wantAnswer struct {
	text      string
	reasoning string // empty when the client's dialect cannot carry it
	calls     []string
	input     int
	cached    int
	output    int
}

func toolsWant(upstream, client translate.Dialect) wantAnswer {
	w := wantAnswer{
		text: "Checking \"both\"…\n", reasoning: "Two cities, two calls.",
		calls: []string{`toolu_01A get_weather {"city":"Paris"}`, `toolu_01B get_weather {"city":"Oslo"}`},
		input: 125, cached: 100, output: 40,
	}
	if upstream != translate.Messages {
		w.calls = []string{`call_A get_weather {"city":"Paris"}`, `call_B get_weather {"city":"Oslo"}`}
	}
	if upstream == translate.Chat || client == translate.Chat {
		w.reasoning = ""
	}
	return w
}

func compactArgs(t *testing.T, s string) string {
	t.Helper()
	c := compact(s)
	if c == nil {
		t.Fatalf("tool arguments %q are not JSON", s)
	}
	return string(c)
}

func TestStreamAnthropicSDK(t *testing.T) {
	for _, up := range []translate.Dialect{translate.Chat, translate.Responses} {
		t.Run(up.String(), func(t *testing.T) {
			out := translateStream(t, up, translate.Messages, readFixture(t, "tools."+up.String()+".sse"), 1)
			stream := anthropicsse.NewStream[anthropic.MessageStreamEventUnion](anthropicsse.NewDecoder(sseResponse(out)), nil)
			var msg anthropic.Message
			stopped := false
			for stream.Next() {
				ev := stream.Current()
				if err := msg.Accumulate(ev); err != nil {
					t.Fatalf("Accumulate(%s): %v", ev.Type, err)
				}
				stopped = stopped || ev.Type == "message_stop"
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !stopped {
				t.Fatal("no message_stop")
			}
			want := toolsWant(up, translate.Messages)
			var got wantAnswer
			for _, b := range msg.Content {
				switch b.Type {
				case "text":
					got.text += b.Text
				case "thinking":
					got.reasoning += b.Thinking
					if b.Signature == "" {
						t.Error("thinking block without signature")
					}
				case "tool_use":
					got.calls = append(got.calls, b.ID+" "+b.Name+" "+compactArgs(t, string(b.Input)))
				}
			}
			got.input = int(msg.Usage.InputTokens + msg.Usage.CacheReadInputTokens + msg.Usage.CacheCreationInputTokens)
			got.cached, got.output = int(msg.Usage.CacheReadInputTokens), int(msg.Usage.OutputTokens)
			checkAnswer(t, got, want)
			if msg.StopReason != anthropic.StopReasonToolUse {
				t.Errorf("stop_reason = %q; want tool_use", msg.StopReason)
			}
		})
	}
}

func TestStreamChatSDK(t *testing.T) {
	for _, up := range []translate.Dialect{translate.Messages, translate.Responses} {
		t.Run(up.String(), func(t *testing.T) {
			out := translateStream(t, up, translate.Chat, readFixture(t, "tools."+up.String()+".sse"), 1)
			stream := openaisse.NewStream[openai.ChatCompletionChunk](openaisse.NewDecoder(sseResponse(out)), nil)
			var acc openai.ChatCompletionAccumulator
			for stream.Next() {
				if !acc.AddChunk(stream.Current()) {
					t.Fatalf("accumulator refused chunk %s", stream.Current().RawJSON())
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if len(acc.Choices) != 1 {
				t.Fatalf("%d choices", len(acc.Choices))
			}
			c := acc.Choices[0]
			got := wantAnswer{text: c.Message.Content}
			for _, tc := range c.Message.ToolCalls {
				got.calls = append(got.calls, tc.ID+" "+tc.Function.Name+" "+compactArgs(t, tc.Function.Arguments))
			}
			got.input, got.output = int(acc.Usage.PromptTokens), int(acc.Usage.CompletionTokens)
			got.cached = int(acc.Usage.PromptTokensDetails.CachedTokens)
			checkAnswer(t, got, toolsWant(up, translate.Chat))
			if c.FinishReason != "tool_calls" {
				t.Errorf("finish_reason = %q; want tool_calls", c.FinishReason)
			}
		})
	}
}

func TestStreamResponsesSDK(t *testing.T) {
	for _, up := range []translate.Dialect{translate.Messages, translate.Chat} {
		t.Run(up.String(), func(t *testing.T) {
			out := translateStream(t, up, translate.Responses, readFixture(t, "tools."+up.String()+".sse"), 1)
			final := decodeResponsesStream(t, out)
			if final == nil {
				t.Fatal("no response.completed")
			}
			var got wantAnswer
			for _, it := range final.Output {
				switch it.Type {
				case "message":
					for _, c := range it.Content {
						got.text += c.Text
					}
				case "reasoning":
					for _, s := range it.Summary {
						got.reasoning += s.Text
					}
					if it.EncryptedContent == "" {
						t.Error("reasoning item without encrypted_content")
					}
				case "function_call":
					fc := it.AsFunctionCall()
					got.calls = append(got.calls, fc.CallID+" "+fc.Name+" "+compactArgs(t, fc.Arguments))
				}
			}
			got.input, got.output = int(final.Usage.InputTokens), int(final.Usage.OutputTokens)
			got.cached = int(final.Usage.InputTokensDetails.CachedTokens)
			checkAnswer(t, got, toolsWant(up, translate.Responses))
			if final.Status != "completed" {
				t.Errorf("status = %q", final.Status)
			}
		})
	}
}

// decodeResponsesStream decodes a translate.Responses stream with openai-go and checks
// the order rules the SDK's helpers rely on: sequence numbers from 0 without
// gaps; items added at the next output index, and their deltas, done events
// and output_item.done for the open item only; the terminal event last.
// It returns the response of response.completed or response.incomplete.
func decodeResponsesStream(t *testing.T, out []byte) *responses.Response {
	t.Helper()
	stream := openaisse.NewStream[responses.ResponseStreamEventUnion](openaisse.NewDecoder(sseResponse(out)), nil)
	var (
		seq      int64
		items    int
		openItem = ""
		final    *responses.Response
		text     strings.Builder
		created  bool
	)
	for stream.Next() {
		ev := stream.Current()
		if final != nil {
			t.Fatalf("%s after the terminal event", ev.Type)
		}
		if ev.SequenceNumber != seq {
			t.Fatalf("%s: sequence_number %d; want %d", ev.Type, ev.SequenceNumber, seq)
		}
		seq++
		if !created && ev.Type != "response.created" {
			t.Fatalf("first event %s; want response.created", ev.Type)
		}
		switch e := ev.AsAny().(type) {
		case responses.ResponseCreatedEvent:
			created = true
		case responses.ResponseOutputItemAddedEvent:
			if openItem != "" || int(e.OutputIndex) != items {
				t.Fatalf("output_item.added at %d while %q open, %d items done", e.OutputIndex, openItem, items)
			}
			openItem = e.Item.ID
			text.Reset()
		case responses.ResponseTextDeltaEvent:
			if e.ItemID != openItem || int(e.OutputIndex) != items {
				t.Fatalf("output_text.delta for %s/%d; open %s/%d", e.ItemID, e.OutputIndex, openItem, items)
			}
			text.WriteString(e.Delta)
		case responses.ResponseTextDoneEvent:
			if e.Text != text.String() {
				t.Fatalf("output_text.done %q; deltas made %q", e.Text, text.String())
			}
		case responses.ResponseFunctionCallArgumentsDeltaEvent:
			if e.ItemID != openItem {
				t.Fatalf("arguments delta for %s; open %s", e.ItemID, openItem)
			}
			text.WriteString(e.Delta)
		case responses.ResponseFunctionCallArgumentsDoneEvent:
			if e.Arguments != text.String() {
				t.Fatalf("arguments.done %q; deltas made %q", e.Arguments, text.String())
			}
		case responses.ResponseReasoningSummaryTextDeltaEvent:
			if e.ItemID != openItem {
				t.Fatalf("summary delta for %s; open %s", e.ItemID, openItem)
			}
		case responses.ResponseOutputItemDoneEvent:
			if e.Item.ID != openItem || int(e.OutputIndex) != items {
				t.Fatalf("output_item.done for %s/%d; open %s/%d", e.Item.ID, e.OutputIndex, openItem, items)
			}
			openItem = ""
			items++
		case responses.ResponseCompletedEvent:
			final = &e.Response
		case responses.ResponseIncompleteEvent:
			final = &e.Response
		case responses.ResponseFailedEvent, responses.ResponseErrorEvent:
			t.Fatalf("stream failed: %s", ev.RawJSON())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if final != nil && len(final.Output) != items {
		t.Fatalf("final response has %d items; stream had %d", len(final.Output), items)
	}
	return final
}

func checkAnswer(t *testing.T, got, want wantAnswer) {
	t.Helper()
	if got.text != want.text || got.reasoning != want.reasoning || strings.Join(got.calls, "|") != strings.Join(want.calls, "|") ||
		got.input != want.input || got.cached != want.cached || got.output != want.output {
		t.Errorf("answer = %+v\nwant %+v", got, want)
	}
}

// TestStreamCutSDK: a stream the upstream cuts ends, for every client SDK,
// as an error.
func TestStreamCutSDK(t *testing.T) {
	for _, up := range dialects {
		for _, client := range dialects {
			if up == client {
				continue
			}
			t.Run(up.String()+"_to_"+client.String(), func(t *testing.T) {
				out := translateStream(t, up, client, readFixture(t, "cut."+up.String()+".sse"), 1)
				var err error
				switch client {
				case translate.Messages:
					s := anthropicsse.NewStream[anthropic.MessageStreamEventUnion](anthropicsse.NewDecoder(sseResponse(out)), nil)
					for s.Next() {
					}
					err = s.Err()
				case translate.Chat:
					s := openaisse.NewStream[openai.ChatCompletionChunk](openaisse.NewDecoder(sseResponse(out)), nil)
					for s.Next() {
					}
					err = s.Err()
				case translate.Responses:
					s := openaisse.NewStream[responses.ResponseStreamEventUnion](openaisse.NewDecoder(sseResponse(out)), nil)
					var last string
					for s.Next() {
						last = s.Current().Type
						if last == "error" {
							var e struct{ Message string }
							_ = json.Unmarshal([]byte(s.Current().RawJSON()), &e)
							err = io.ErrUnexpectedEOF
						}
					}
					if last != "response.failed" {
						t.Errorf("last event %q; want response.failed", last)
					}
				}
				if err == nil || !strings.Contains(err.Error(), "") {
					t.Fatalf("SDK saw no error in %s", out)
				}
				if !bytes.Contains(out, []byte(translate.ErrStreamCut.Error())) {
					t.Errorf("error event does not say the stream was cut:\n%s", out)
				}
			})
		}
	}
}

var dialects = []translate.Dialect{translate.Messages, translate.Chat, translate.Responses}

func compact(s string) []byte {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil || s == "" {
		return nil
	}
	return b.Bytes()
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "streams", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// translateStream feeds in to a Stream byte by byte and returns what the
// client got.
func translateStream(t *testing.T, from, to translate.Dialect, in []byte, _ int) []byte {
	t.Helper()
	var out bytes.Buffer
	s, err := translate.NewStream(from, to, &out, translate.StreamOptions{IncludeUsage: true, Now: time.Unix(1795867920, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if _, err := s.Write(in[i : i+1]); err != nil {
			break
		}
	}
	_ = s.Close()
	return out.Bytes()
}
