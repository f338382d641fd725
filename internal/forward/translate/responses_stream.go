package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// respStreamReader reads Responses events.
type respStreamReader struct {
	open       bool // a translated part is open
	openKind   PartKind
	gotArgs    bool // the open function call got argument deltas
	summaries  int  // summary parts seen in the open reasoning item
	skipOutput map[int]bool
	hasCalls   bool
}

type respStreamEvent struct {
	Type         string        `json:"type"`
	Response     *respResponse `json:"response"`
	OutputIndex  int           `json:"output_index"`
	SummaryIndex int           `json:"summary_index"`
	Item         *respItem     `json:"item"`
	Part         *respPart     `json:"part"`
	Delta        string        `json:"delta"`
	Arguments    string        `json:"arguments"`
	Code         *string       `json:"code"`
	Message      string        `json:"message"`
}

func (r *respStreamReader) stop(emit func(*event) error) error {
	if !r.open {
		return nil
	}
	r.open = false
	return emit(&event{kind: evPartStop})
}

func (r *respStreamReader) event(name, data []byte, emit func(*event) error) error {
	var ev respStreamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("responses event %q: %w", name, err)
	}
	switch ev.Type {
	case "response.created":
		if ev.Response == nil {
			return fmt.Errorf("response.created without response")
		}
		return emit(&event{kind: evStart, id: ev.Response.ID, model: ev.Response.Model, created: ev.Response.CreatedAt})
	case "response.output_item.added":
		if ev.Item == nil {
			return fmt.Errorf("%s without item", ev.Type)
		}
		if err := r.stop(emit); err != nil {
			return err
		}
		switch ev.Item.Type {
		case "message":
		case "function_call":
			r.open, r.openKind, r.gotArgs, r.hasCalls = true, PartToolCall, false, true
			if err := emit(&event{kind: evPartStart, part: PartToolCall, id: ev.Item.CallID, name: ev.Item.Name}); err != nil {
				return err
			}
			if a := ev.Item.Arguments; a != nil && *a != "" {
				r.gotArgs = true
				return emit(&event{kind: evDelta, text: *a})
			}
		case "reasoning":
			r.open, r.openKind, r.summaries = true, PartReasoning, 0
			return emit(&event{kind: evPartStart, part: PartReasoning, id: ev.Item.ID})
		default:
			if r.skipOutput == nil {
				r.skipOutput = make(map[int]bool)
			}
			r.skipOutput[ev.OutputIndex] = true
		}
	case "response.content_part.added":
		if r.skipOutput[ev.OutputIndex] || ev.Part == nil {
			return nil
		}
		if ev.Part.Type == "output_text" || ev.Part.Type == "refusal" {
			if err := r.stop(emit); err != nil {
				return err
			}
			r.open, r.openKind = true, PartText
			if err := emit(&event{kind: evPartStart, part: PartText}); err != nil {
				return err
			}
			if t := deref(ev.Part.Text); t != "" {
				return emit(&event{kind: evDelta, text: t})
			}
		}
	case "response.output_text.delta", "response.refusal.delta":
		if r.open && r.openKind == PartText {
			return emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.content_part.done":
		if r.open && r.openKind == PartText {
			return r.stop(emit)
		}
	case "response.function_call_arguments.delta":
		if r.open && r.openKind == PartToolCall {
			r.gotArgs = true
			return emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.function_call_arguments.done":
		if r.open && r.openKind == PartToolCall && !r.gotArgs {
			r.gotArgs = true
			return emit(&event{kind: evDelta, text: ev.Arguments})
		}
	case "response.reasoning_summary_part.added":
		if r.open && r.openKind == PartReasoning {
			r.summaries++
			if r.summaries > 1 {
				return emit(&event{kind: evDelta, text: "\n\n"})
			}
		}
	case "response.reasoning_summary_text.delta", "response.reasoning_text.delta":
		if r.open && r.openKind == PartReasoning {
			return emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.output_item.done":
		if ev.Item == nil || r.skipOutput[ev.OutputIndex] {
			return nil
		}
		if ev.Item.Type == "reasoning" && r.open && r.openKind == PartReasoning && ev.Item.EncryptedContent != "" {
			if err := emit(&event{kind: evSignature, text: ev.Item.EncryptedContent}); err != nil {
				return err
			}
		}
		if ev.Item.Type != "message" {
			return r.stop(emit)
		}
	case "response.completed", "response.incomplete":
		if err := r.stop(emit); err != nil {
			return err
		}
		f := FinishStop
		var u Usage
		if resp := ev.Response; resp != nil {
			hasCalls := r.hasCalls
			for _, it := range resp.Output {
				hasCalls = hasCalls || it.Type == "function_call"
			}
			f = respFinish(resp.Status, resp.IncompleteDetails, hasCalls)
			u = resp.Usage.ir()
		}
		return emit(&event{kind: evFinish, finish: f, usage: u})
	case "response.failed":
		e := apiErr{status: 500, message: "response failed", anthropicType: "api_error", openaiType: "server_error"}
		if ev.Response != nil && ev.Response.Error != nil {
			e.message, e.openaiCode = ev.Response.Error.Message, ev.Response.Error.Code
		}
		return emit(&event{kind: evError, err: e})
	case "error":
		e := apiErr{status: 500, message: ev.Message, anthropicType: "api_error", openaiType: "server_error"}
		if ev.Code != nil {
			e.openaiCode = *ev.Code
		}
		return emit(&event{kind: evError, err: e})
	}
	return nil
}

func (r *respStreamReader) end(func(*event) error) error { return nil }

// respStreamWriter writes Responses events. It keeps the output items, as
// response.completed carries the whole response.
type respStreamWriter struct {
	created int64
	seq     int64
	resp    respResponse
	part    PartKind
	itemID  string
	text    strings.Builder // of the open part
	enc     string          // of the open reasoning part
	partID  string          // reasoning id or call id
	name    string
	summary bool // the open reasoning part has a summary part
}

// ev writes one event; fields are written in order after type and
// sequence_number.
func (w *respStreamWriter) ev(b *bytes.Buffer, typ string, fields ...any) {
	b.WriteString("event: ")
	b.WriteString(typ)
	b.WriteString("\ndata: {\"type\":\"")
	b.WriteString(typ)
	b.WriteString(`","sequence_number":`)
	appendInt(b, w.seq)
	w.seq++
	for i := 0; i+1 < len(fields); i += 2 {
		b.WriteString(`,"`)
		b.WriteString(fields[i].(string))
		b.WriteString(`":`)
		switch v := fields[i+1].(type) {
		case string:
			appendJSONString(b, v)
		case int:
			appendInt(b, int64(v))
		case json.RawMessage:
			b.Write(v)
		default:
			data, _ := marshal(v)
			b.Write(data)
		}
	}
	b.WriteString("}\n\n")
}

// delta writes a delta event without reflection: the hot path.
func (w *respStreamWriter) delta(b *bytes.Buffer, typ string, n int, mid, text, tail string) {
	b.WriteString("event: ")
	b.WriteString(typ)
	b.WriteString("\ndata: {\"type\":\"")
	b.WriteString(typ)
	b.WriteString(`","sequence_number":`)
	appendInt(b, w.seq)
	w.seq++
	b.WriteString(`,"item_id":`)
	appendJSONString(b, w.itemID)
	b.WriteString(`,"output_index":`)
	appendInt(b, int64(n))
	b.WriteString(mid)
	appendJSONString(b, text)
	b.WriteString(tail)
	b.WriteString("\n\n")
}

func (w *respStreamWriter) outputIndex() int { return len(w.resp.Output) }

func (w *respStreamWriter) write(b *bytes.Buffer, e *event) {
	switch e.kind {
	case evStart:
		created := e.created
		if created == 0 {
			created = w.created
		}
		w.resp = respResponse{
			ID: e.id, Object: "response", CreatedAt: created, Status: "in_progress", Model: e.model,
			Output: []respItem{}, ParallelToolCalls: true, ToolChoice: json.RawMessage(`"auto"`), Tools: ptr(json.RawMessage("[]")),
		}
		w.ev(b, "response.created", "response", &w.resp)
		w.ev(b, "response.in_progress", "response", &w.resp)
	case evPartStart:
		w.part, w.text, w.enc, w.partID, w.name, w.summary = e.part, strings.Builder{}, "", e.id, e.name, false
		n := w.outputIndex()
		switch e.part {
		case PartText:
			w.itemID = respMessageID(w.resp.ID, n)
			w.ev(b, "response.output_item.added", "output_index", n, "item", respItem{Type: "message", ID: w.itemID, Role: "assistant", Status: "in_progress", Content: json.RawMessage("[]")})
			w.ev(b, "response.content_part.added", "item_id", w.itemID, "output_index", n, "content_index", 0,
				"part", json.RawMessage(`{"type":"output_text","text":"","annotations":[]}`))
		case PartToolCall:
			w.itemID = respCallID(e.id)
			w.ev(b, "response.output_item.added", "output_index", n, "item", respItem{Type: "function_call", ID: w.itemID, CallID: e.id, Name: e.name, Arguments: ptr(""), Status: "in_progress"})
		case PartReasoning:
			w.itemID = e.id
			if w.itemID == "" {
				w.itemID = respReasoningID(w.resp.ID, n)
			}
			if e.redacted {
				w.enc = anthropicRedactPrefix + e.text
			}
			w.ev(b, "response.output_item.added", "output_index", n, "item", respItem{Type: "reasoning", ID: w.itemID, Summary: &[]respSummary{}})
		}
	case evDelta:
		if e.text == "" {
			return
		}
		w.text.WriteString(e.text)
		n := w.outputIndex()
		switch w.part {
		case PartText:
			w.delta(b, "response.output_text.delta", n, `,"content_index":0,"delta":`, e.text, `,"logprobs":[]}`)
		case PartToolCall:
			w.delta(b, "response.function_call_arguments.delta", n, `,"delta":`, e.text, `}`)
		case PartReasoning:
			if !w.summary {
				w.summary = true
				w.ev(b, "response.reasoning_summary_part.added", "item_id", w.itemID, "output_index", n, "summary_index", 0,
					"part", json.RawMessage(`{"type":"summary_text","text":""}`))
			}
			w.delta(b, "response.reasoning_summary_text.delta", n, `,"summary_index":0,"delta":`, e.text, `}`)
		}
	case evSignature:
		if w.part == PartReasoning {
			w.enc += e.text
		}
	case evPartStop:
		n := w.outputIndex()
		text := w.text.String()
		var item respItem
		switch w.part {
		case PartText:
			w.ev(b, "response.output_text.done", "item_id", w.itemID, "output_index", n, "content_index", 0, "text", text, "logprobs", json.RawMessage("[]"))
			part := respPart{Type: "output_text", Text: &text, Annotations: ptr(json.RawMessage("[]"))}
			w.ev(b, "response.content_part.done", "item_id", w.itemID, "output_index", n, "content_index", 0, "part", part)
			item = respTextMessage(w.itemID, text, "completed")
		case PartToolCall:
			w.ev(b, "response.function_call_arguments.done", "item_id", w.itemID, "output_index", n, "name", w.name, "arguments", text)
			item = respItem{Type: "function_call", ID: w.itemID, CallID: w.partID, Name: w.name, Arguments: &text, Status: "completed"}
		case PartReasoning:
			if w.summary {
				w.ev(b, "response.reasoning_summary_text.done", "item_id", w.itemID, "output_index", n, "summary_index", 0, "text", text)
				w.ev(b, "response.reasoning_summary_part.done", "item_id", w.itemID, "output_index", n, "summary_index", 0,
					"part", respSummary{Type: "summary_text", Text: text})
			}
			p := Part{Text: text}
			if strings.HasPrefix(w.enc, anthropicRedactPrefix) {
				p.Redacted, p.Encrypted = true, strings.TrimPrefix(w.enc, anthropicRedactPrefix)
			} else if w.partID != "" {
				p.ID, p.Encrypted = w.partID, w.enc // an OpenAI item: kept as is
			} else {
				p.Signature = w.enc
			}
			item = respReasoningItem(&p, w.itemID)
			item.ID = w.itemID
		default:
			return
		}
		w.ev(b, "response.output_item.done", "output_index", n, "item", item)
		w.resp.Output = append(w.resp.Output, item)
		w.part = 0
	case evFinish:
		w.resp.Status, w.resp.IncompleteDetails = respStatus(e.finish)
		w.resp.Usage = respUsageOf(e.usage)
		typ := "response.completed"
		if w.resp.Status == "incomplete" {
			typ = "response.incomplete"
		}
		w.ev(b, typ, "response", &w.resp)
	case evPing:
		w.keepAlive(b)
	case evError:
		code := e.err.openaiCode
		if code == "" {
			code = e.err.openaiType
		}
		w.ev(b, "error", "code", code, "message", e.err.message, "param", nil)
		if w.resp.ID != "" || w.resp.Object != "" {
			w.resp.Status = "failed"
			w.resp.Error = &respErrorObj{Code: "server_error", Message: e.err.message}
			w.ev(b, "response.failed", "response", &w.resp)
		}
	}
}

func (w *respStreamWriter) keepAlive(b *bytes.Buffer) {
	b.WriteString(": keep-alive\n\n")
}
