package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// chatStreamReader reads Chat chunks. Chat does not delimit parts: a part
// starts when a delta of another kind (text, another tool call index)
// arrives, and ends when the next starts or at the finish. All choices are
// read as one answer (see readChatResponse).
type chatStreamReader struct {
	started  bool
	open     PartKind
	openCall int // key of the open tool call
	seen     map[int]bool
	finish   Finish
	usage    *chatUsage
	done     bool
}

type chatChunk struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content          *string        `json:"content"`
			Refusal          *string        `json:"refusal"`
			ReasoningContent *string        `json:"reasoning_content"`
			ReasoningText    *string        `json:"reasoning_text"`
			ToolCalls        []chatToolCall `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
	Error *struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

// switchTo starts a part of kind unless the open part is of that kind
// ([Stream.emit] closes the open one).
func (r *chatStreamReader) switchTo(kind PartKind, emit func(*event)) {
	if r.open == kind {
		return
	}
	r.open = kind
	emit(&event{kind: evPartStart, part: kind})
}

func (r *chatStreamReader) event(_, data []byte, emit func(*event)) error {
	if r.done {
		return nil
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
		r.end(emit)
		return nil
	}
	var c chatChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("chat chunk: %w", err)
	}
	if c.Error != nil {
		e := apiErr{status: 500, message: c.Error.Message, openaiType: c.Error.Type}
		if isString(c.Error.Code) {
			_ = json.Unmarshal(c.Error.Code, &e.openaiCode)
		}
		if e.openaiType == "" {
			e.openaiType = "server_error"
		}
		e.anthropicType = "api_error"
		r.done = true
		emit(&event{kind: evError, err: e})
		return nil
	}
	if !r.started {
		r.started = true
		emit(&event{kind: evStart, id: c.ID, model: c.Model, created: c.Created})
	}
	for _, ch := range c.Choices {
		d := &ch.Delta
		if rc := d.ReasoningText; rc != nil || d.ReasoningContent != nil {
			if rc == nil {
				rc = d.ReasoningContent
			}
			if *rc != "" {
				r.switchTo(PartReasoning, emit)
				emit(&event{kind: evDelta, text: *rc})
			}
		}
		for _, t := range []*string{d.Content, d.Refusal} {
			if t == nil || *t == "" {
				continue
			}
			r.switchTo(PartText, emit)
			emit(&event{kind: evDelta, text: *t})
		}
		for _, tc := range d.ToolCalls {
			key := ch.Index<<16 | derefInt(tc.Index)
			if r.open != PartToolCall || r.openCall != key {
				if r.seen[key] {
					return fmt.Errorf("chat chunk: tool call %d continued after another part began", derefInt(tc.Index))
				}
				if r.seen == nil {
					r.seen = make(map[int]bool)
				}
				r.seen[key], r.open, r.openCall = true, PartToolCall, key
				emit(&event{kind: evPartStart, part: PartToolCall, id: tc.ID, name: tc.Function.Name})
			}
			if tc.Function.Arguments != "" {
				emit(&event{kind: evDelta, text: tc.Function.Arguments})
			}
		}
		if f := ch.FinishReason; f != nil && *f != "" {
			if nf := finishFromChat(*f); r.finish == "" || r.finish == FinishStop {
				r.finish = nf
			}
		}
	}
	if c.Usage != nil {
		r.usage = c.Usage
	}
	return nil
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// end finishes the answer at [DONE], or at the end of the body when a
// finish_reason came (some servers omit [DONE]).
func (r *chatStreamReader) end(emit func(*event)) {
	if r.done || !r.started || r.finish == "" {
		return
	}
	r.done = true
	if r.finish == FinishStop && len(r.seen) > 0 {
		r.finish = FinishToolCalls
	}
	emit(&event{kind: evFinish, finish: r.finish, usage: r.usage.ir()})
}

// chatStreamWriter writes Chat chunks.
type chatStreamWriter struct {
	includeUsage bool
	created      int64
	prefix       []byte // `{"id":...,"object":...,"created":...,"model":...,"choices":`
	calls        int    // tool calls started
	part         PartKind
}

func (w *chatStreamWriter) chunk(b *bytes.Buffer) {
	b.WriteString("data: ")
	b.Write(w.prefix)
}

func (w *chatStreamWriter) write(b *bytes.Buffer, ev *event) {
	switch ev.kind {
	case evStart:
		created := ev.created
		if created == 0 {
			created = w.created
		}
		var p bytes.Buffer
		p.WriteString(`{"id":`)
		appendJSONString(&p, ev.id)
		p.WriteString(`,"object":"chat.completion.chunk","created":`)
		appendInt(&p, created)
		p.WriteString(`,"model":`)
		appendJSONString(&p, ev.model)
		p.WriteString(`,"choices":`)
		w.prefix = p.Bytes()
		w.chunk(b)
		b.WriteString(`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n")
	case evPartStart:
		w.part = ev.part
		if ev.part != PartToolCall {
			return
		}
		w.chunk(b)
		b.WriteString(`[{"index":0,"delta":{"tool_calls":[{"index":`)
		appendInt(b, int64(w.calls))
		b.WriteString(`,"id":`)
		appendJSONString(b, ev.id)
		b.WriteString(`,"type":"function","function":{"name":`)
		appendJSONString(b, ev.name)
		b.WriteString(`,"arguments":""}}]},"finish_reason":null}]}` + "\n\n")
		w.calls++
	case evDelta:
		if ev.text == "" {
			return
		}
		switch w.part {
		case PartText:
			w.chunk(b)
			b.WriteString(`[{"index":0,"delta":{"content":`)
			appendJSONString(b, ev.text)
			b.WriteString(`},"finish_reason":null}]}` + "\n\n")
		case PartToolCall:
			w.chunk(b)
			b.WriteString(`[{"index":0,"delta":{"tool_calls":[{"index":`)
			appendInt(b, int64(w.calls-1))
			b.WriteString(`,"function":{"arguments":`)
			appendJSONString(b, ev.text)
			b.WriteString(`}}]},"finish_reason":null}]}` + "\n\n")
		}
		// Reasoning has no place in Chat's public API: dropped.
	case evFinish:
		w.chunk(b)
		b.WriteString(`[{"index":0,"delta":{},"finish_reason":"`)
		b.WriteString(chatFinishReason(ev.finish))
		b.WriteString(`"}]}` + "\n\n")
		if w.includeUsage {
			u, _ := marshal(chatUsageOf(ev.usage))
			w.chunk(b)
			b.WriteString(`[],"usage":`)
			b.Write(u)
			b.WriteString("}\n\n")
		}
		b.WriteString("data: [DONE]\n\n")
	case evPing:
		w.keepAlive(b)
	case evError:
		writeSSE(b, "", ev.err.openAIBody())
	}
}

func (w *chatStreamWriter) keepAlive(b *bytes.Buffer) {
	b.WriteString(": keep-alive\n\n")
}
