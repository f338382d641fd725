package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// OpenAI Responses answer wire types (openai-go responses.Response).

type respResponse struct {
	ID                string           `json:"id"`
	Object            string           `json:"object"`
	CreatedAt         int64            `json:"created_at"`
	Status            string           `json:"status"`
	Model             string           `json:"model"`
	Output            []respItem       `json:"output"`
	Usage             *respUsage       `json:"usage,omitempty"`
	IncompleteDetails *respIncomplete  `json:"incomplete_details"`
	Error             *respErrorObj    `json:"error"`
	ParallelToolCalls bool             `json:"parallel_tool_calls"`
	ToolChoice        json.RawMessage  `json:"tool_choice,omitempty"`
	Tools             *json.RawMessage `json:"tools,omitempty"`
}

type respIncomplete struct {
	Reason string `json:"reason"`
}

type respErrorObj struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type respUsage struct {
	InputTokens         int               `json:"input_tokens"`
	InputTokensDetails  respInputDetails  `json:"input_tokens_details"`
	OutputTokens        int               `json:"output_tokens"`
	OutputTokensDetails respOutputDetails `json:"output_tokens_details"`
	TotalTokens         int               `json:"total_tokens"`
}

type respInputDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type respOutputDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

func (u *respUsage) ir() Usage {
	if u == nil {
		return Usage{}
	}
	return Usage{Input: u.InputTokens, Output: u.OutputTokens, CacheRead: u.InputTokensDetails.CachedTokens, Reasoning: u.OutputTokensDetails.ReasoningTokens}
}

func respUsageOf(u Usage) *respUsage {
	return &respUsage{
		InputTokens: u.Input, InputTokensDetails: respInputDetails{CachedTokens: u.CacheRead},
		OutputTokens: u.Output, OutputTokensDetails: respOutputDetails{ReasoningTokens: u.Reasoning},
		TotalTokens: u.Input + u.Output,
	}
}

// respFinish reads status and incomplete_details; hasCalls turns a
// completed answer with function calls into FinishToolCalls.
func respFinish(status string, inc *respIncomplete, hasCalls bool) Finish {
	if status == "incomplete" && inc != nil {
		switch inc.Reason {
		case "max_output_tokens":
			return FinishLength
		case "content_filter":
			return FinishContentFilter
		}
	}
	if hasCalls {
		return FinishToolCalls
	}
	return FinishStop
}

// respStatus is the status and incomplete_details for an IR finish.
func respStatus(f Finish) (string, *respIncomplete) {
	switch f {
	case FinishLength:
		return "incomplete", &respIncomplete{Reason: "max_output_tokens"}
	case FinishContentFilter:
		return "incomplete", &respIncomplete{Reason: "content_filter"}
	}
	return "completed", nil
}

func readResponsesResponse(body []byte) (*ResponseIR, error) {
	var in respResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if in.Object != "response" {
		return nil, fmt.Errorf("object %q, want response", in.Object)
	}
	r := &ResponseIR{ID: in.ID, Model: in.Model, Created: in.CreatedAt, Usage: in.Usage.ir()}
	hasCalls := false
	for _, it := range in.Output {
		parts, calls := respOutputParts(&it)
		r.Parts = append(r.Parts, parts...)
		hasCalls = hasCalls || calls
	}
	r.Finish = respFinish(in.Status, in.IncompleteDetails, hasCalls)
	return r, nil
}

func respOutputParts(it *respItem) (parts []Part, call bool) {
	switch it.Type {
	case "message":
		var content []respPart
		_ = json.Unmarshal(it.Content, &content)
		for _, c := range content {
			switch c.Type {
			case "output_text":
				parts = append(parts, Part{Kind: PartText, Text: deref(c.Text)})
			case "refusal":
				parts = append(parts, Part{Kind: PartText, Text: c.Refusal})
			}
		}
	case "function_call":
		args := ""
		if it.Arguments != nil {
			args = *it.Arguments
		}
		parts = append(parts, Part{Kind: PartToolCall, ID: it.CallID, Name: it.Name, Arguments: args})
		call = true
	case "reasoning":
		p := Part{Kind: PartReasoning, ID: it.ID, Encrypted: it.EncryptedContent}
		unwrapEncrypted(&p)
		if it.Summary != nil {
			p.Text = joinSummaries(*it.Summary)
		}
		parts = append(parts, p)
	}
	return parts, call
}

// respItemIDs names the output items of a translated answer: ids derive
// from the answer's id and the item's position, and a function call's from
// its call id, so they are stable.
func respMessageID(respID string, n int) string {
	return fmt.Sprintf("msg_%s_%d", trimIDPrefix(respID), n)
}
func respReasoningID(respID string, n int) string {
	return fmt.Sprintf("rs_%s_%d", trimIDPrefix(respID), n)
}
func respCallID(callID string) string { return "fc_" + callID }

func trimIDPrefix(id string) string {
	for _, p := range []string{"msg_", "resp_", "chatcmpl-"} {
		if s, ok := strings.CutPrefix(id, p); ok {
			return s
		}
	}
	return id
}

func respReasoningItem(p *Part, id string) respItem {
	sum := []respSummary{}
	if p.Text != "" {
		sum = append(sum, respSummary{Type: "summary_text", Text: p.Text})
	}
	if p.ID != "" {
		id = p.ID
	}
	return respItem{Type: "reasoning", ID: id, Summary: &sum, EncryptedContent: encryptedOf(p)}
}

func respTextMessage(id, text, status string) respItem {
	c, _ := marshal([]respPart{{Type: "output_text", Text: &text, Annotations: ptr(json.RawMessage("[]"))}})
	return respItem{Type: "message", ID: id, Role: "assistant", Status: status, Content: c}
}

func writeResponsesResponse(r *ResponseIR) ([]byte, error) {
	status, inc := respStatus(r.Finish)
	out := respResponse{
		ID: r.ID, Object: "response", CreatedAt: r.Created, Status: status, Model: r.Model,
		Output: []respItem{}, Usage: respUsageOf(r.Usage), IncompleteDetails: inc,
		ParallelToolCalls: true, ToolChoice: json.RawMessage(`"auto"`), Tools: ptr(json.RawMessage("[]")),
	}
	for i := range r.Parts {
		p := &r.Parts[i]
		n := len(out.Output)
		switch p.Kind {
		case PartText:
			out.Output = append(out.Output, respTextMessage(respMessageID(r.ID, n), p.Text, "completed"))
		case PartToolCall:
			out.Output = append(out.Output, respItem{Type: "function_call", ID: respCallID(p.ID), CallID: p.ID, Name: p.Name, Arguments: ptr(p.Arguments), Status: "completed"})
		case PartReasoning:
			out.Output = append(out.Output, respReasoningItem(p, respReasoningID(r.ID, n)))
		}
	}
	return marshal(out)
}

// joinSummaries is the text of a reasoning item's summary parts, one
// paragraph each.
func joinSummaries(sum []respSummary) string {
	var b strings.Builder
	for i, s := range sum {
		if i > 0 {
			b.WriteString(paraBreak)
		}
		b.WriteString(s.Text)
	}
	return b.String()
}
