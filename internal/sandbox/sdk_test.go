package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/copilot-broker/copilot-broker/internal/testutil/streamcheck"
)

// events returns the events of the last stream the SDKs read.
func (s *sdkEnv) events(tb testing.TB) []streamcheck.Event {
	tb.Helper()
	evs, err := s.tap.Events()
	if err != nil {
		tb.Fatalf("reading the stream: %v", err)
	}
	return evs
}

// sdkEnv is a sandbox with the official SDKs pointed at it, sending the
// headers the Copilot API wants (vision included).
type sdkEnv struct {
	*env
	tap *streamcheck.Tap
	oa  openai.Client
	ant anthropic.Client
}

func newSDKEnv(t *testing.T) *sdkEnv {
	t.Helper()
	e := newEnv(t, Config{Chunks: 3})
	tok := e.exchange().Token
	tp := &streamcheck.Tap{Base: e.client.Transport}
	hc := &http.Client{Transport: tp}
	hdr := map[string]string{"Copilot-Integration-Id": "vscode-chat", "Editor-Version": "vscode/1.104.3", "Copilot-Vision-Request": "true"}
	oaOpts := []option.RequestOption{option.WithBaseURL(e.sb.URL + "/"), option.WithAPIKey(tok), option.WithHTTPClient(hc), option.WithMaxRetries(0)}
	antOpts := []anthropicopt.RequestOption{anthropicopt.WithBaseURL(e.sb.URL), anthropicopt.WithAuthToken(tok), anthropicopt.WithHTTPClient(hc), anthropicopt.WithMaxRetries(0)}
	for k, v := range hdr {
		oaOpts = append(oaOpts, option.WithHeader(k, v))
		antOpts = append(antOpts, anthropicopt.WithHeader(k, v))
	}
	return &sdkEnv{env: e, tap: tp, oa: openai.NewClient(oaOpts...), ant: anthropic.NewClient(antOpts...)}
}

var weatherSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"location": map[string]any{"type": "string"},
		"unit":     map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
		"days":     map[string]any{"type": "integer"},
	},
	"required": []string{"location"},
}

const weatherQ = "What is the weather in Paris?"

// wantArgs is what the sandbox derives from weatherSchema and weatherQ.
const wantArgs = `{"days":1,"location":"What is the weather in Paris?","unit":"celsius"}`

func chatTools() []openai.ChatCompletionToolUnionParam {
	return []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Parameters: weatherSchema}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_time", Parameters: shared.FunctionParameters{"type": "object"}}),
	}
}

// chatTurn runs one chat completion, streamed through the SDK's accumulator
// (and streamcheck) or not, and returns the assistant's message.
func (s *sdkEnv) chatTurn(t *testing.T, stream bool, p openai.ChatCompletionNewParams) (openai.ChatCompletionChoice, openai.CompletionUsage) {
	t.Helper()
	ctx := context.Background()
	if !stream {
		c, err := s.oa.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		return c.Choices[0], c.Usage
	}
	st := s.oa.Chat.Completions.NewStreaming(ctx, p)
	defer st.Close()
	var acc openai.ChatCompletionAccumulator
	for st.Next() {
		if !acc.AddChunk(st.Current()) {
			t.Fatalf("the accumulator refused chunk %s", st.Current().RawJSON())
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	res, err := streamcheck.Chat(s.events(t))
	if err != nil {
		t.Fatalf("streamcheck.Chat: %v", err)
	}
	if res.Stop != string(acc.Choices[0].FinishReason) {
		t.Errorf("streamcheck finish %q; SDK %q", res.Stop, acc.Choices[0].FinishReason)
	}
	return acc.Choices[0], acc.Usage
}

func TestSDKChatToolConversation(t *testing.T) {
	s := newSDKEnv(t)
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "json", true: "stream"}[stream], func(t *testing.T) {
			p := openai.ChatCompletionNewParams{
				Model:    "gpt-4.1",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage(weatherQ)},
				Tools:    chatTools(),
			}
			ch, u1 := s.chatTurn(t, stream, p)
			calls := ch.Message.ToolCalls
			if ch.FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" ||
				calls[0].Function.Arguments != wantArgs || !strings.HasPrefix(calls[0].ID, "call_") {
				t.Fatalf("turn 1 = %s %+v; want one get_weather call with %s", ch.FinishReason, calls, wantArgs)
			}
			if u1.PromptTokens == 0 || u1.CompletionTokens == 0 || u1.PromptTokensDetails.CachedTokens != 0 {
				t.Errorf("turn 1 usage = %+v; want tokens, none cached", u1)
			}
			p.Messages = append(p.Messages, ch.Message.ToParam(), openai.ToolMessage("18C and sunny", calls[0].ID))
			ch, u2 := s.chatTurn(t, stream, p)
			if want := "Sandbox reply to tool results: 18C and sunny"; ch.FinishReason != "stop" || ch.Message.Content != want || len(ch.Message.ToolCalls) != 0 {
				t.Errorf("turn 2 = %s %q; want stop %q", ch.FinishReason, ch.Message.Content, want)
			}
			if u2.PromptTokensDetails.CachedTokens == 0 || u2.PromptTokensDetails.CachedTokens >= u2.PromptTokens {
				t.Errorf("turn 2 usage = %+v; want some (not all) prompt tokens cached", u2)
			}
		})
	}
	t.Run("parallel", func(t *testing.T) {
		p := openai.ChatCompletionNewParams{
			Model:    "gpt-4.1",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather and time in parallel please")},
			Tools:    chatTools(),
		}
		ch, _ := s.chatTurn(t, true, p)
		calls := ch.Message.ToolCalls
		if len(calls) != 2 || calls[0].Function.Name != "get_weather" || calls[1].Function.Name != "get_time" || calls[0].ID == calls[1].ID {
			t.Fatalf("calls = %+v; want get_weather and get_time with distinct ids", calls)
		}
		p.Messages = append(p.Messages, ch.Message.ToParam(), openai.ToolMessage("sunny", calls[0].ID), openai.ToolMessage("noon", calls[1].ID))
		ch, _ = s.chatTurn(t, true, p)
		if want := "Sandbox reply to tool results: sunny | noon"; ch.Message.Content != want {
			t.Errorf("final = %q; want %q", ch.Message.Content, want)
		}
		p.ParallelToolCalls = openai.Bool(false)
		p.Messages = p.Messages[:1]
		if ch, _ := s.chatTurn(t, false, p); len(ch.Message.ToolCalls) != 1 {
			t.Errorf("parallel_tool_calls false: %d calls; want 1", len(ch.Message.ToolCalls))
		}
	})
	t.Run("images", func(t *testing.T) {
		p := openai.ChatCompletionNewParams{Model: "gpt-4.1", Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
				openai.TextContentPart("what are these?"),
				openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="}),
				openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/cat.png"}),
			})}}
		ch, _ := s.chatTurn(t, true, p)
		if want := "Sandbox reply to: what are these? (images: 1 base64, 1 url)"; ch.Message.Content != want {
			t.Errorf("content = %q; want %q", ch.Message.Content, want)
		}
	})
	t.Run("length and stop", func(t *testing.T) {
		p := openai.ChatCompletionNewParams{Model: "gpt-4.1", MaxCompletionTokens: openai.Int(3),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a long story about brokers")}}
		if ch, _ := s.chatTurn(t, true, p); ch.FinishReason != "length" || ch.Message.Content != "Sandbox repl" {
			t.Errorf("max_completion_tokens 3: %s %q; want length and the first 12 bytes", ch.FinishReason, ch.Message.Content)
		}
		p.MaxCompletionTokens = openai.Int(100)
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String("long")}
		if ch, _ := s.chatTurn(t, false, p); ch.FinishReason != "stop" || ch.Message.Content != "Sandbox reply to: tell me a " {
			t.Errorf("stop \"long\": %s %q; want stop and the text before it", ch.FinishReason, ch.Message.Content)
		}
	})
}

// responsesTurn runs one response, streamed (through streamcheck and the
// SDK's accumulator) or not.
func (s *sdkEnv) responsesTurn(t *testing.T, stream bool, p responses.ResponseNewParams) *responses.Response {
	t.Helper()
	ctx := context.Background()
	if !stream {
		r, err := s.oa.Responses.New(ctx, p)
		if err != nil {
			t.Fatalf("Responses.New: %v", err)
		}
		return r
	}
	st := s.oa.Responses.NewStreaming(ctx, p)
	defer st.Close()
	var acc responses.ResponseAccumulator
	for st.Next() {
		var ev responses.ResponsesServerEventUnion
		if err := json.Unmarshal([]byte(st.Current().RawJSON()), &ev); err != nil {
			t.Fatalf("event %s: %v", st.Current().RawJSON(), err)
		}
		if err := acc.AddEvent(ev); err != nil {
			t.Fatalf("accumulator: %v on %s", err, st.Current().RawJSON())
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if _, err := streamcheck.Responses(s.events(t)); err != nil {
		t.Fatalf("streamcheck.Responses: %v", err)
	}
	r, err := acc.ReconstructedResponse()
	if err != nil {
		t.Fatalf("ReconstructedResponse: %v", err)
	}
	return r
}

func TestSDKResponsesToolConversation(t *testing.T) {
	s := newSDKEnv(t)
	tools := []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{Name: "get_weather", Parameters: weatherSchema}}}
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "json", true: "stream"}[stream], func(t *testing.T) {
			p := responses.ResponseNewParams{
				Model:        "gpt-5-codex",
				Instructions: openai.String("be brief"),
				Input:        responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage(weatherQ, responses.EasyInputMessageRoleUser)}},
				Tools:        tools,
				Reasoning:    shared.ReasoningParam{Effort: shared.ReasoningEffortMedium, Summary: shared.ReasoningSummaryAuto},
			}
			r := s.responsesTurn(t, stream, p)
			if r.Status != "completed" || len(r.Output) != 2 || r.Output[0].Type != "reasoning" || r.Output[1].Type != "function_call" {
				t.Fatalf("turn 1 = %s %s; want a reasoning item and a function call", r.Status, r.RawJSON())
			}
			if sum := r.Output[0].Summary; len(sum) != 1 || !strings.HasPrefix(sum[0].Text, "Sandbox thinking about: ") {
				t.Errorf("reasoning summary = %+v; want the sandbox's thinking", sum)
			}
			fc := r.Output[1]
			if fc.Name != "get_weather" || fc.Arguments.OfString != wantArgs || !strings.HasPrefix(fc.CallID, "call_") {
				t.Fatalf("function call = %s; want get_weather with %s", fc.RawJSON(), wantArgs)
			}
			if r.Usage.OutputTokensDetails.ReasoningTokens == 0 || r.Usage.InputTokensDetails.CachedTokens != 0 {
				t.Errorf("turn 1 usage = %s; want reasoning tokens, none cached", r.Usage.RawJSON())
			}
			out := responses.ResponseInputItemParamOfFunctionCallOutput("18C and sunny")
			out.OfFunctionCallOutput.CallID = openai.String(fc.CallID)
			p.Input.OfInputItemList = append(p.Input.OfInputItemList,
				responses.ResponseInputItemUnionParam{OfReasoning: &responses.ResponseReasoningItemParam{ID: r.Output[0].ID, Summary: []responses.ResponseReasoningItemSummaryParam{{Text: r.Output[0].Summary[0].Text}}}},
				responses.ResponseInputItemParamOfFunctionCall(fc.Arguments.OfString, fc.CallID, fc.Name), out)
			r = s.responsesTurn(t, stream, p)
			if want := "Sandbox reply to tool results: 18C and sunny"; r.OutputText() != want || r.Output[len(r.Output)-1].Type != "message" {
				t.Errorf("turn 2 text = %q; want %q", r.OutputText(), want)
			}
			if c := r.Usage.InputTokensDetails.CachedTokens; c == 0 || c >= r.Usage.InputTokens {
				t.Errorf("turn 2 usage = %s; want some (not all) input tokens cached", r.Usage.RawJSON())
			}
		})
	}
	t.Run("images and length", func(t *testing.T) {
		content := responses.ResponseInputMessageContentListParam{
			{OfInputText: &responses.ResponseInputTextParam{Text: "and these?"}},
			{OfInputImage: &responses.ResponseInputImageParam{ImageURL: openai.String("data:image/jpeg;base64,/9j/4AAQ"), Detail: responses.ResponseInputImageDetailHigh}},
			{OfInputImage: &responses.ResponseInputImageParam{ImageURL: openai.String("https://example.com/a.png"), Detail: responses.ResponseInputImageDetailLow}},
		}
		p := responses.ResponseNewParams{Model: "gpt-5-mini", Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage(content, responses.EasyInputMessageRoleUser)}}}
		if r := s.responsesTurn(t, true, p); r.OutputText() != "Sandbox reply to: and these? (images: 1 base64, 1 url)" {
			t.Errorf("text = %q; want the images acknowledged", r.OutputText())
		}
		p.MaxOutputTokens = openai.Int(16)
		p.Input.OfInputItemList = responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage(strings.Repeat("long story ", 20), responses.EasyInputMessageRoleUser)}
		if r := s.responsesTurn(t, true, p); r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" {
			t.Errorf("max_output_tokens 16: status %s %s; want incomplete max_output_tokens", r.Status, r.IncompleteDetails.RawJSON())
		}
	})
}

// messageTurn runs one Anthropic message, streamed (through streamcheck and
// the SDK's accumulator) or not.
func (s *sdkEnv) messageTurn(t *testing.T, stream bool, p anthropic.MessageNewParams) anthropic.Message {
	t.Helper()
	ctx := context.Background()
	if !stream {
		m, err := s.ant.Messages.New(ctx, p)
		if err != nil {
			t.Fatalf("Messages.New: %v", err)
		}
		return *m
	}
	st := s.ant.Messages.NewStreaming(ctx, p)
	defer st.Close()
	var m anthropic.Message
	for st.Next() {
		if err := m.Accumulate(st.Current()); err != nil {
			t.Fatalf("Accumulate: %v", err)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	res, err := streamcheck.Anthropic(s.events(t))
	if err != nil {
		t.Fatalf("streamcheck.Anthropic: %v", err)
	}
	if res.Stop != string(m.StopReason) {
		t.Errorf("streamcheck stop %q; SDK %q", res.Stop, m.StopReason)
	}
	return m
}

func TestSDKMessagesToolConversation(t *testing.T) {
	s := newSDKEnv(t)
	tools := []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "get_weather",
		InputSchema: anthropic.ToolInputSchemaParam{Properties: weatherSchema["properties"], Required: []string{"location"}}}}}
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "json", true: "stream"}[stream], func(t *testing.T) {
			p := anthropic.MessageNewParams{
				Model: "claude-sonnet-4.5", MaxTokens: 4096,
				System:   []anthropic.TextBlockParam{{Text: "be brief"}},
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(weatherQ))},
				Tools:    tools,
				Thinking: anthropic.ThinkingConfigParamOfEnabled(2048),
			}
			m := s.messageTurn(t, stream, p)
			if m.StopReason != "tool_use" || len(m.Content) != 3 || m.Content[0].Type != "thinking" || m.Content[1].Type != "text" || m.Content[2].Type != "tool_use" {
				t.Fatalf("turn 1 = %s %s; want thinking, text, tool_use", m.StopReason, m.RawJSON())
			}
			if th := m.Content[0]; !strings.HasPrefix(th.Thinking, "Sandbox thinking about: ") || !validSignature(th.Signature) {
				t.Errorf("thinking block = %q signed %q; want the sandbox's thinking and signature", th.Thinking, th.Signature)
			}
			tu := m.Content[2]
			if tu.Name != "get_weather" || string(tu.Input) != wantArgs || !strings.HasPrefix(tu.ID, "toolu_") {
				t.Fatalf("tool_use = %s; want get_weather with %s", tu.RawJSON(), wantArgs)
			}
			if m.Usage.CacheReadInputTokens != 0 || m.Usage.InputTokens == 0 {
				t.Errorf("turn 1 usage = %s; want input tokens, none cached", m.Usage.RawJSON())
			}
			p.Messages = append(p.Messages, m.ToParam(), anthropic.NewUserMessage(anthropic.NewToolResultBlock(tu.ID, "18C and sunny", false)))
			m = s.messageTurn(t, stream, p)
			text := m.Content[len(m.Content)-1]
			if want := "Sandbox reply to tool results: 18C and sunny"; m.StopReason != "end_turn" || text.Text != want {
				t.Errorf("turn 2 = %s %s; want end_turn %q", m.StopReason, m.RawJSON(), want)
			}
			if m.Usage.CacheReadInputTokens == 0 {
				t.Errorf("turn 2 usage = %s; want cache_read_input_tokens", m.Usage.RawJSON())
			}
		})
	}
	t.Run("parallel, images, stop sequence", func(t *testing.T) {
		p := anthropic.MessageNewParams{Model: "claude-sonnet-4", MaxTokens: 512, Tools: tools,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("two places in parallel"))}}
		m := s.messageTurn(t, true, p)
		if m.StopReason != "tool_use" || len(m.Content) != 3 || m.Content[1].ID == m.Content[2].ID {
			t.Fatalf("parallel = %s; want a text and two tool_use blocks", m.RawJSON())
		}
		p.Tools = nil
		p.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("see"),
			anthropic.NewImageBlockBase64("image/png", "iVBORw0KGgo="),
			anthropic.NewImageBlock(anthropic.URLImageSourceParam{URL: "https://example.com/b.png"}))}
		if m := s.messageTurn(t, true, p); m.Content[0].Text != "Sandbox reply to: see (images: 1 base64, 1 url)" {
			t.Errorf("images: %s; want both acknowledged", m.RawJSON())
		}
		p.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("tell me a long story"))}
		p.StopSequences = []string{"long"}
		m = s.messageTurn(t, true, p)
		if m.StopReason != "stop_sequence" || m.StopSequence != "long" || m.Content[0].Text != "Sandbox reply to: tell me a " {
			t.Errorf("stop sequence: %s; want stop_sequence \"long\"", m.RawJSON())
		}
	})
}

// TestSDKUnsupportedAPIForModel checks the refusal the real API gives a
// model on an endpoint it is not served on, through each SDK.
func TestSDKUnsupportedAPIForModel(t *testing.T) {
	s := newSDKEnv(t)
	ctx := context.Background()
	var oaErr *openai.Error
	_, err := s.oa.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-5-codex", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	if !errors.As(err, &oaErr) || oaErr.StatusCode != 400 || oaErr.Code != "unsupported_api_for_model" {
		t.Errorf("chat with a responses-only model: %v; want 400 unsupported_api_for_model", err)
	}
	_, err = s.oa.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "claude-sonnet-4.5", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	if !errors.As(err, &oaErr) || oaErr.StatusCode != 400 || oaErr.Code != "unsupported_api_for_model" {
		t.Errorf("chat with a messages-only model: %v; want 400 unsupported_api_for_model", err)
	}
	_, err = s.oa.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	if !errors.As(err, &oaErr) || oaErr.StatusCode != 400 || oaErr.Code != "unsupported_api_for_model" {
		t.Errorf("responses with a chat-only model: %v; want 400 unsupported_api_for_model", err)
	}
	var antErr *anthropic.Error
	_, err = s.ant.Messages.New(ctx, anthropic.MessageNewParams{Model: "gpt-5-codex", MaxTokens: 10, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
	if !errors.As(err, &antErr) || antErr.StatusCode != 400 || !strings.Contains(antErr.RawJSON(), "unsupported_api_for_model") {
		t.Errorf("messages with a responses-only model: %v; want 400 unsupported_api_for_model", err)
	}
}
