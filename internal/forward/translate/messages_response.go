package translate

import (
	"encoding/json"
	"fmt"
)

// Anthropic Messages answer wire types (anthropic-sdk-go Message).

type msgResponse struct {
	ID           string     `json:"id"`
	Type         string     `json:"type"`
	Role         string     `json:"role"`
	Model        string     `json:"model"`
	Content      []msgBlock `json:"content"`
	StopReason   *string    `json:"stop_reason"`
	StopSequence *string    `json:"stop_sequence"`
	Usage        msgUsage   `json:"usage"`
}

type msgUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

func (u msgUsage) ir() Usage {
	return Usage{
		Input:      u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens,
		Output:     u.OutputTokens,
		CacheRead:  u.CacheReadInputTokens,
		CacheWrite: u.CacheCreationInputTokens,
	}
}

func msgUsageOf(u Usage) msgUsage {
	return msgUsage{
		InputTokens:              max(0, u.Input-u.CacheRead-u.CacheWrite),
		CacheCreationInputTokens: u.CacheWrite,
		CacheReadInputTokens:     u.CacheRead,
		OutputTokens:             u.Output,
	}
}

func finishFromAnthropic(s string) Finish {
	switch s {
	case "end_turn", "":
		return FinishStop
	case "max_tokens", "model_context_window_exceeded":
		return FinishLength
	case "tool_use":
		return FinishToolCalls
	case "stop_sequence":
		return FinishStopSequence
	case "refusal":
		return FinishContentFilter
	case "pause_turn":
		return FinishPause
	}
	return FinishStop
}

func anthropicStopReason(f Finish) string {
	switch f {
	case FinishLength:
		return "max_tokens"
	case FinishToolCalls:
		return "tool_use"
	case FinishStopSequence:
		return "stop_sequence"
	case FinishContentFilter:
		return "refusal"
	case FinishPause:
		return "pause_turn"
	}
	return "end_turn"
}

func readMessagesResponse(body []byte) (*ResponseIR, error) {
	var in msgResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if in.Type != "message" {
		return nil, fmt.Errorf("type %q, want message", in.Type)
	}
	r := &ResponseIR{ID: in.ID, Model: in.Model, Usage: in.Usage.ir()}
	if in.StopReason != nil {
		r.Finish = finishFromAnthropic(*in.StopReason)
	} else {
		r.Finish = FinishStop
	}
	if in.StopSequence != nil {
		r.StopSequence = *in.StopSequence
	}
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			r.Parts = append(r.Parts, Part{Kind: PartText, Text: deref(b.Text)})
		case "tool_use":
			args := "{}"
			if !isNull(b.Input) {
				args = string(b.Input)
			}
			r.Parts = append(r.Parts, Part{Kind: PartToolCall, ID: b.ID, Name: b.Name, Arguments: args})
		case "thinking":
			p := Part{Kind: PartReasoning, Text: deref(b.Thinking), Signature: deref(b.Signature)}
			unwrapSignature(&p)
			r.Parts = append(r.Parts, p)
		case "redacted_thinking":
			r.Parts = append(r.Parts, Part{Kind: PartReasoning, Redacted: true, Encrypted: b.Data})
		}
	}
	return r, nil
}

func writeMessagesResponse(r *ResponseIR) ([]byte, error) {
	out := msgResponse{
		ID: r.ID, Type: "message", Role: "assistant", Model: r.Model,
		Content: []msgBlock{}, StopReason: ptr(anthropicStopReason(r.Finish)), Usage: msgUsageOf(r.Usage),
	}
	if r.Finish == FinishStopSequence && r.StopSequence != "" {
		out.StopSequence = ptr(r.StopSequence)
	}
	for i := range r.Parts {
		p := &r.Parts[i]
		switch p.Kind {
		case PartText:
			out.Content = append(out.Content, msgBlock{Type: "text", Text: ptr(p.Text)})
		case PartToolCall:
			input := compactJSON(p.Arguments)
			if input == nil {
				input = json.RawMessage("{}")
			}
			out.Content = append(out.Content, msgBlock{Type: "tool_use", ID: p.ID, Name: p.Name, Input: input})
		case PartReasoning:
			if p.Redacted {
				out.Content = append(out.Content, msgBlock{Type: "redacted_thinking", Data: p.Encrypted})
			} else {
				out.Content = append(out.Content, msgBlock{Type: "thinking", Thinking: ptr(p.Text), Signature: ptr(signatureOf(p))})
			}
		}
	}
	return marshal(out)
}
