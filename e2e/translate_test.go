package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/copilot-broker/copilot-broker/internal/testutil/streamcheck"
)

// Models the sandbox serves on one endpoint only.
const (
	chatOnlyModel      = "gpt-4.1"           // /chat/completions
	responsesOnlyModel = "gpt-5-codex"       // /responses
	messagesOnlyModel  = "claude-sonnet-4.5" // /v1/messages
)

// The tool every conversation offers, and what the sandbox answers with it:
// it calls the first tool with arguments derived from the schema and the
// user's text, then quotes the tool's result.
var weatherSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"location": map[string]any{"type": "string"},
		"unit":     map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
	},
	"required": []string{"location"},
}

const (
	weatherQuestion = "What is the weather in Paris?"
	weatherArgs     = `{"location":"What is the weather in Paris?","unit":"celsius"}`
	weatherResult   = "18C and sunny"
	finalAnswer     = "Sandbox reply to tool results: 18C and sunny"
)

// xlateEnv is one sandbox, broker and proxy, and SDK clients whose event
// streams are kept for streamcheck.
type xlateEnv struct {
	sb  *sandboxProc
	tap *streamcheck.Tap
	oai openai.Client
	ant anthropic.Client
}

func newXlateEnv(t *testing.T) *xlateEnv {
	t.Helper()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 4, chunkDelay: 5 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	hc := newHTTPClient(t)
	tap := &streamcheck.Tap{Base: hc.Transport}
	hc.Transport = tap
	return &xlateEnv{
		sb: sb, tap: tap,
		oai: openai.NewClient(option.WithBaseURL(px.url+"/v1/"), option.WithAPIKey(px.apiKey), option.WithMaxRetries(0), option.WithHTTPClient(hc)),
		ant: anthropic.NewClient(anthropicopt.WithBaseURL(px.url), anthropicopt.WithAPIKey(px.apiKey), anthropicopt.WithMaxRetries(0), anthropicopt.WithHTTPClient(hc)),
	}
}

// upstreamPath returns the path the proxy called upstream for the client
// request answered with requestID, from the sandbox's request log.
func (x *xlateEnv) upstreamPath(t *testing.T, requestID string) string {
	t.Helper()
	var reqs []struct {
		Path   string      `json:"path"`
		Header http.Header `json:"header"`
	}
	x.sb.admin(t, http.MethodGet, "requests", nil, &reqs)
	for _, r := range reqs {
		if r.Header.Get("X-Request-Id") == requestID {
			return r.Path
		}
	}
	t.Fatalf("no upstream request with X-Request-Id %q", requestID)
	return ""
}

func (x *xlateEnv) events(t *testing.T) []streamcheck.Event {
	t.Helper()
	evs, err := x.tap.Events()
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestAnyClientAnyModel runs, with each official SDK, a streamed two-turn
// tool conversation (tool call, tool result, final answer) against a model
// that is not served on the SDK's endpoint: the proxy translates the request
// to an endpoint the model has and the stream back, event by event.
func TestAnyClientAnyModel(t *testing.T) {
	t.Parallel()
	x := newXlateEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	// Subtests run one after the other: the tap keeps one stream at a time.
	t.Run("anthropic-sdk/chat-only model", func(t *testing.T) {
		x.messagesConversation(ctx, t, chatOnlyModel, "/chat/completions")
	})
	t.Run("anthropic-sdk/responses-only model", func(t *testing.T) {
		x.messagesConversation(ctx, t, responsesOnlyModel, "/responses")
	})
	t.Run("openai-sdk chat/responses-only model", func(t *testing.T) {
		x.chatConversation(ctx, t, responsesOnlyModel, "/responses")
	})
	t.Run("openai-sdk chat/Claude model", func(t *testing.T) {
		x.chatConversation(ctx, t, messagesOnlyModel, "/v1/messages")
	})
	t.Run("openai-sdk responses/chat-only model", func(t *testing.T) {
		x.responsesConversation(ctx, t, chatOnlyModel, "/chat/completions")
	})
}

func (x *xlateEnv) messagesConversation(ctx context.Context, t *testing.T, model, wantUpstream string) {
	p := anthropic.MessageNewParams{
		Model: model, MaxTokens: 1024,
		System:   []anthropic.TextBlockParam{{Text: "You are terse."}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(weatherQuestion))},
		Tools: []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "get_weather",
			InputSchema: anthropic.ToolInputSchemaParam{Properties: weatherSchema["properties"], Required: []string{"location"}}}}},
	}
	turn := func(n int) anthropic.Message {
		t.Helper()
		var httpResp *http.Response
		st := x.ant.Messages.NewStreaming(ctx, p, anthropicopt.WithResponseInto(&httpResp))
		defer st.Close()
		var m anthropic.Message
		events := 0
		for st.Next() {
			events++
			if err := m.Accumulate(st.Current()); err != nil {
				t.Fatalf("turn %d, event %d: Accumulate: %v", n, events, err)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatalf("turn %d: stream after %d events: %v", n, events, err)
		}
		if _, err := streamcheck.Anthropic(x.events(t)); err != nil {
			t.Fatalf("turn %d: the translated stream breaks the Messages grammar: %v", n, err)
		}
		if got := x.upstreamPath(t, httpResp.Header.Get("X-Request-Id")); got != wantUpstream {
			t.Errorf("turn %d went upstream to %s; want %s", n, got, wantUpstream)
		}
		return m
	}
	m := turn(1)
	var use *anthropic.ContentBlockUnion
	for i := range m.Content {
		if m.Content[i].Type == "tool_use" {
			use = &m.Content[i]
		}
	}
	if m.StopReason != anthropic.StopReasonToolUse || use == nil || use.Name != "get_weather" || string(use.Input) != weatherArgs || use.ID == "" {
		t.Fatalf("turn 1 = stop %q, %s; want a get_weather tool_use with %s", m.StopReason, m.RawJSON(), weatherArgs)
	}
	p.Messages = append(p.Messages, m.ToParam(), anthropic.NewUserMessage(anthropic.NewToolResultBlock(use.ID, weatherResult, false)))
	m = turn(2)
	if got := messageText(m); m.StopReason != anthropic.StopReasonEndTurn || got != finalAnswer {
		t.Errorf("turn 2 = stop %q, text %q; want end_turn and %q", m.StopReason, got, finalAnswer)
	}
	if m.Usage.InputTokens == 0 || m.Usage.OutputTokens == 0 || m.Usage.CacheReadInputTokens == 0 {
		t.Errorf("turn 2 usage = %s; want input, output and cache-read tokens", m.Usage.RawJSON())
	}
}

func (x *xlateEnv) chatConversation(ctx context.Context, t *testing.T, model, wantUpstream string) {
	p := openai.ChatCompletionNewParams{
		Model:         model,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage(weatherQuestion)},
		Tools:         []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Parameters: weatherSchema})},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	turn := func(n int) openai.ChatCompletionAccumulator {
		t.Helper()
		var httpResp *http.Response
		st := x.oai.Chat.Completions.NewStreaming(ctx, p, option.WithResponseInto(&httpResp))
		defer st.Close()
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for st.Next() {
			chunks++
			if !acc.AddChunk(st.Current()) {
				t.Fatalf("turn %d: the accumulator refused chunk %d: %s", n, chunks, st.Current().RawJSON())
			}
		}
		if err := st.Err(); err != nil {
			t.Fatalf("turn %d: stream after %d chunks: %v", n, chunks, err)
		}
		if _, err := streamcheck.Chat(x.events(t)); err != nil {
			t.Fatalf("turn %d: the translated stream breaks the Chat grammar: %v", n, err)
		}
		if got := x.upstreamPath(t, httpResp.Header.Get("X-Request-Id")); got != wantUpstream {
			t.Errorf("turn %d went upstream to %s; want %s", n, got, wantUpstream)
		}
		if len(acc.Choices) != 1 {
			t.Fatalf("turn %d: %d choices; want 1", n, len(acc.Choices))
		}
		return acc
	}
	acc := turn(1)
	ch := acc.Choices[0]
	calls := ch.Message.ToolCalls
	if ch.FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != weatherArgs || calls[0].ID == "" {
		t.Fatalf("turn 1 = finish %q, tool calls %+v; want one get_weather call with %s", ch.FinishReason, calls, weatherArgs)
	}
	p.Messages = append(p.Messages, ch.Message.ToParam(), openai.ToolMessage(weatherResult, calls[0].ID))
	acc = turn(2)
	ch = acc.Choices[0]
	if ch.FinishReason != "stop" || ch.Message.Content != finalAnswer {
		t.Errorf("turn 2 = finish %q, content %q; want stop and %q", ch.FinishReason, ch.Message.Content, finalAnswer)
	}
	if u := acc.Usage; u.PromptTokens == 0 || u.CompletionTokens == 0 || u.PromptTokensDetails.CachedTokens == 0 {
		t.Errorf("turn 2 usage = %+v; want prompt, completion and cached tokens", u)
	}
}

func (x *xlateEnv) responsesConversation(ctx context.Context, t *testing.T, model, wantUpstream string) {
	p := responses.ResponseNewParams{
		Model:        model,
		Instructions: openai.String("You are terse."),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage(weatherQuestion, responses.EasyInputMessageRoleUser)}},
		Tools: []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{Name: "get_weather", Parameters: weatherSchema}}},
		Store: openai.Bool(false),
	}
	turn := func(n int) *responses.Response {
		t.Helper()
		var httpResp *http.Response
		st := x.oai.Responses.NewStreaming(ctx, p, option.WithResponseInto(&httpResp))
		defer st.Close()
		var final *responses.Response
		events := 0
		for st.Next() {
			events++
			if ev := st.Current(); ev.Type == "response.completed" {
				r := ev.Response
				final = &r
			}
		}
		if err := st.Err(); err != nil {
			t.Fatalf("turn %d: stream after %d events: %v", n, events, err)
		}
		if _, err := streamcheck.Responses(x.events(t)); err != nil {
			t.Fatalf("turn %d: the translated stream breaks the Responses grammar: %v", n, err)
		}
		if got := x.upstreamPath(t, httpResp.Header.Get("X-Request-Id")); got != wantUpstream {
			t.Errorf("turn %d went upstream to %s; want %s", n, got, wantUpstream)
		}
		if final == nil {
			t.Fatalf("turn %d: no response.completed in %d events", n, events)
		}
		return final
	}
	r := turn(1)
	var fc *responses.ResponseOutputItemUnion
	for i := range r.Output {
		if r.Output[i].Type == "function_call" {
			fc = &r.Output[i]
		}
	}
	if fc == nil || fc.Name != "get_weather" || fc.Arguments.OfString != weatherArgs || fc.CallID == "" {
		t.Fatalf("turn 1 = %s; want a get_weather function_call with %s", r.RawJSON(), weatherArgs)
	}
	out := responses.ResponseInputItemParamOfFunctionCallOutput(weatherResult)
	out.OfFunctionCallOutput.CallID = openai.String(fc.CallID)
	p.Input.OfInputItemList = append(p.Input.OfInputItemList,
		responses.ResponseInputItemParamOfFunctionCall(fc.Arguments.OfString, fc.CallID, fc.Name), out)
	r = turn(2)
	if got := r.OutputText(); r.Status != "completed" || !strings.HasPrefix(got, finalAnswer) || got != finalAnswer {
		t.Errorf("turn 2 = status %q, text %q; want completed and %q", r.Status, got, finalAnswer)
	}
	if u := r.Usage; u.InputTokens == 0 || u.OutputTokens == 0 || u.InputTokensDetails.CachedTokens == 0 {
		t.Errorf("turn 2 usage = %s; want input, output and cached tokens", u.RawJSON())
	}
}
