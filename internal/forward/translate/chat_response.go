package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// OpenAI Chat Completions answer wire types (openai-go ChatCompletion).

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *chatUsage   `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatAnswerMsg   `json:"message"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs"`
}

type chatAnswerMsg struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"`
	Refusal   *string        `json:"refusal"`
	ToolCalls []chatToolCall `json:"tool_calls,omitempty"`
}

type chatUsage struct {
	PromptTokens            int                 `json:"prompt_tokens"`
	CompletionTokens        int                 `json:"completion_tokens"`
	TotalTokens             int                 `json:"total_tokens"`
	PromptTokensDetails     *chatPromptDetails  `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *chatCompletionDets `json:"completion_tokens_details,omitempty"`
}

type chatPromptDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type chatCompletionDets struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

func (u *chatUsage) ir() Usage {
	if u == nil {
		return Usage{}
	}
	r := Usage{Input: u.PromptTokens, Output: u.CompletionTokens}
	if u.PromptTokensDetails != nil {
		r.CacheRead = u.PromptTokensDetails.CachedTokens
	}
	if u.CompletionTokensDetails != nil {
		r.Reasoning = u.CompletionTokensDetails.ReasoningTokens
	}
	return r
}

func chatUsageOf(u Usage) *chatUsage {
	return &chatUsage{
		PromptTokens: u.Input, CompletionTokens: u.Output, TotalTokens: u.Input + u.Output,
		PromptTokensDetails:     &chatPromptDetails{CachedTokens: u.CacheRead},
		CompletionTokensDetails: &chatCompletionDets{ReasoningTokens: u.Reasoning},
	}
}

func finishFromChat(s string) Finish {
	switch s {
	case "length":
		return FinishLength
	case "tool_calls", "function_call":
		return FinishToolCalls
	case "content_filter":
		return FinishContentFilter
	}
	return FinishStop
}

func chatFinishReason(f Finish) string {
	switch f {
	case FinishLength:
		return "length"
	case FinishToolCalls:
		return "tool_calls"
	case FinishContentFilter:
		return "content_filter"
	}
	return "stop"
}

// readChatResponse merges every choice: the request asked for one, and the
// Copilot API splits one answer's text and tool calls over several choices
// for some models.
func readChatResponse(body []byte) (*ResponseIR, error) {
	var in chatResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if len(in.Choices) == 0 {
		return nil, fmt.Errorf("no choices")
	}
	r := &ResponseIR{ID: in.ID, Model: in.Model, Created: in.Created, Usage: in.Usage.ir(), Finish: FinishStop}
	var calls []Part
	for _, c := range in.Choices {
		if c.Message.Content != nil && *c.Message.Content != "" {
			r.Parts = append(r.Parts, Part{Kind: PartText, Text: *c.Message.Content})
		}
		if c.Message.Refusal != nil && *c.Message.Refusal != "" {
			r.Parts = append(r.Parts, Part{Kind: PartText, Text: *c.Message.Refusal})
			r.Finish = FinishContentFilter
		}
		for _, tc := range c.Message.ToolCalls {
			calls = append(calls, Part{Kind: PartToolCall, ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		if c.FinishReason != nil && *c.FinishReason != "" && r.Finish != FinishContentFilter {
			if f := finishFromChat(*c.FinishReason); f != FinishStop || r.Finish == FinishStop {
				r.Finish = f
			}
		}
	}
	r.Parts = append(r.Parts, calls...)
	if len(calls) > 0 && r.Finish == FinishStop {
		r.Finish = FinishToolCalls
	}
	return r, nil
}

func writeChatResponse(r *ResponseIR) ([]byte, error) {
	msg := chatAnswerMsg{Role: "assistant"}
	var b strings.Builder
	hasText := false
	for i := range r.Parts {
		p := &r.Parts[i]
		switch p.Kind {
		case PartText:
			b.WriteString(p.Text)
			hasText = true
		case PartToolCall:
			msg.ToolCalls = append(msg.ToolCalls, chatToolCall{ID: p.ID, Type: "function", Function: chatFuncCall{Name: p.Name, Arguments: p.Arguments}})
		}
	}
	if hasText {
		msg.Content = ptr(b.String())
	}
	out := chatResponse{
		ID: r.ID, Object: "chat.completion", Created: r.Created, Model: r.Model,
		Choices: []chatChoice{{Message: msg, FinishReason: ptr(chatFinishReason(r.Finish)), Logprobs: json.RawMessage("null")}},
		Usage:   chatUsageOf(r.Usage),
	}
	return marshal(out)
}
