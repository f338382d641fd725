package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// msgStreamReader reads Anthropic's stream: message_start,
// content_block_start/delta/stop, message_delta, message_stop, ping, error.
type msgStreamReader struct {
	usage    msgUsage
	finish   Finish
	stopSeq  string
	skipping bool // the open upstream block has no counterpart (server tools)
}

type msgStreamEvent struct {
	Type    string `json:"type"`
	Message *struct {
		ID    string   `json:"id"`
		Model string   `json:"model"`
		Usage msgUsage `json:"usage"`
	} `json:"message"`
	ContentBlock *msgBlock `json:"content_block"`
	Delta        *struct {
		Type         string  `json:"type"`
		Text         string  `json:"text"`
		PartialJSON  string  `json:"partial_json"`
		Thinking     string  `json:"thinking"`
		Signature    string  `json:"signature"`
		StopReason   *string `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	} `json:"delta"`
	Usage *struct {
		InputTokens              *int `json:"input_tokens"`
		OutputTokens             *int `json:"output_tokens"`
		CacheCreationInputTokens *int `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     *int `json:"cache_read_input_tokens"`
	} `json:"usage"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r *msgStreamReader) event(name, data []byte, emit func(*event)) error {
	var ev msgStreamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("messages event %q: %w", name, err)
	}
	switch ev.Type {
	case "message_start":
		if ev.Message == nil {
			return fmt.Errorf("message_start without message")
		}
		r.usage = ev.Message.Usage
		emit(&event{kind: evStart, id: ev.Message.ID, model: ev.Message.Model, usage: r.usage.ir()})
	case "content_block_start":
		b := ev.ContentBlock
		if b == nil {
			return fmt.Errorf("content_block_start without content_block")
		}
		r.skipping = false
		switch b.Type {
		case "text":
			emit(&event{kind: evPartStart, part: PartText})
			emit(&event{kind: evDelta, text: deref(b.Text)})
		case "tool_use":
			emit(&event{kind: evPartStart, part: PartToolCall, id: b.ID, name: b.Name})
		case "thinking":
			emit(&event{kind: evPartStart, part: PartReasoning})
		case "redacted_thinking":
			emit(&event{kind: evPartStart, part: PartReasoning, redacted: true, text: b.Data})
		default:
			// Server tool blocks and the like have no counterpart: this
			// block's events are skipped.
			r.skipping = true
		}
	case "content_block_delta":
		if r.skipping || ev.Delta == nil {
			return nil
		}
		d := ev.Delta
		switch d.Type {
		case "text_delta":
			emit(&event{kind: evDelta, text: d.Text})
		case "input_json_delta":
			emit(&event{kind: evDelta, text: d.PartialJSON})
		case "thinking_delta":
			emit(&event{kind: evDelta, text: d.Thinking})
		case "signature_delta":
			emit(&event{kind: evSignature, text: d.Signature})
		}
	case "content_block_stop":
		if r.skipping {
			r.skipping = false
			return nil
		}
		emit(&event{kind: evPartStop})
	case "message_delta":
		if d := ev.Delta; d != nil {
			if d.StopReason != nil {
				r.finish = finishFromAnthropic(*d.StopReason)
			}
			if d.StopSequence != nil {
				r.stopSeq = *d.StopSequence
			}
		}
		if u := ev.Usage; u != nil {
			setInt(&r.usage.InputTokens, u.InputTokens)
			setInt(&r.usage.OutputTokens, u.OutputTokens)
			setInt(&r.usage.CacheCreationInputTokens, u.CacheCreationInputTokens)
			setInt(&r.usage.CacheReadInputTokens, u.CacheReadInputTokens)
		}
	case "message_stop":
		if r.finish == "" {
			r.finish = FinishStop
		}
		emit(&event{kind: evFinish, finish: r.finish, stopSeq: r.stopSeq, usage: r.usage.ir()})
	case "ping":
		emit(&event{kind: evPing})
	case "error":
		e := apiErr{status: 500, message: "upstream error"}
		if ev.Error != nil {
			e.message, e.anthropicType = ev.Error.Message, ev.Error.Type
		}
		if e.anthropicType == "" {
			e.anthropicType = "api_error"
		}
		e.openaiType, e.openaiCode = openAIErrorType(0, e.anthropicType)
		emit(&event{kind: evError, err: e})
	}
	return nil
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}

func (r *msgStreamReader) end(func(*event)) {}

// msgStreamWriter writes Anthropic's stream.
type msgStreamWriter struct {
	index int // of the open block
	part  PartKind
	id    string // of the open reasoning part
}

func (w *msgStreamWriter) write(b *bytes.Buffer, ev *event) {
	switch ev.kind {
	case evStart:
		writeSSEJSON(b, "message_start", struct {
			Type    string      `json:"type"`
			Message msgResponse `json:"message"`
		}{"message_start", msgResponse{
			ID: ev.id, Type: "message", Role: "assistant", Model: ev.model, Content: []msgBlock{}, Usage: msgUsageOf(ev.usage),
		}})
	case evPartStart:
		w.part, w.id = ev.part, ev.id
		b.WriteString("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":")
		appendInt(b, int64(w.index))
		b.WriteString(`,"content_block":`)
		switch {
		case ev.part == PartText:
			b.WriteString(`{"type":"text","text":""}`)
		case ev.part == PartToolCall:
			b.WriteString(`{"type":"tool_use","id":`)
			appendJSONString(b, ev.id)
			b.WriteString(`,"name":`)
			appendJSONString(b, ev.name)
			b.WriteString(`,"input":{}}`)
		case ev.redacted:
			b.WriteString(`{"type":"redacted_thinking","data":`)
			appendJSONString(b, ev.text)
			b.WriteString(`}`)
		default:
			b.WriteString(`{"type":"thinking","thinking":"","signature":""}`)
		}
		b.WriteString("}\n\n")
	case evDelta:
		if ev.text == "" {
			return
		}
		b.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":")
		appendInt(b, int64(w.index))
		switch w.part {
		case PartText:
			b.WriteString(`,"delta":{"type":"text_delta","text":`)
		case PartToolCall:
			b.WriteString(`,"delta":{"type":"input_json_delta","partial_json":`)
		default:
			b.WriteString(`,"delta":{"type":"thinking_delta","thinking":`)
		}
		appendJSONString(b, ev.text)
		b.WriteString("}}\n\n")
	case evSignature:
		if w.part != PartReasoning || ev.text == "" {
			return
		}
		sig := ev.text
		if w.id != "" {
			// An OpenAI reasoning item: see reasoning.go.
			sig = signatureOf(&Part{ID: w.id, Encrypted: ev.text})
		}
		b.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":")
		appendInt(b, int64(w.index))
		b.WriteString(`,"delta":{"type":"signature_delta","signature":`)
		appendJSONString(b, sig)
		b.WriteString("}}\n\n")
	case evPartStop:
		b.WriteString("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":")
		appendInt(b, int64(w.index))
		b.WriteString("}\n\n")
		w.index++
	case evFinish:
		type delta struct {
			StopReason   string  `json:"stop_reason"`
			StopSequence *string `json:"stop_sequence"`
		}
		d := delta{StopReason: anthropicStopReason(ev.finish)}
		if ev.finish == FinishStopSequence && ev.stopSeq != "" {
			d.StopSequence = &ev.stopSeq
		}
		writeSSEJSON(b, "message_delta", struct {
			Type  string   `json:"type"`
			Delta delta    `json:"delta"`
			Usage msgUsage `json:"usage"`
		}{"message_delta", d, msgUsageOf(ev.usage)})
		writeSSE(b, "message_stop", []byte(`{"type":"message_stop"}`))
	case evPing:
		w.keepAlive(b)
	case evError:
		writeSSE(b, "error", ev.err.body(Messages))
	}
}

func (w *msgStreamWriter) keepAlive(b *bytes.Buffer) {
	writeSSE(b, "ping", []byte(`{"type":"ping"}`))
}
