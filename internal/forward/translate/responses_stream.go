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

// start opens a part (emit closes the one open).
func (r *respStreamReader) start(kind PartKind, emit func(*event), ev *event) {
	r.open, r.openKind = true, kind
	ev.kind, ev.part = evPartStart, kind
	emit(ev)
}

func (r *respStreamReader) stop(emit func(*event)) {
	r.open = false
	emit(&event{kind: evPartStop})
}

// in reports whether a part of kind is open.
func (r *respStreamReader) in(kind PartKind) bool { return r.open && r.openKind == kind }

func (r *respStreamReader) event(name, data []byte, emit func(*event)) error {
	var ev respStreamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("responses event %q: %w", name, err)
	}
	switch ev.Type {
	case "response.created":
		if ev.Response == nil {
			return fmt.Errorf("response.created without response")
		}
		emit(&event{kind: evStart, id: ev.Response.ID, model: ev.Response.Model, created: ev.Response.CreatedAt})
	case "response.output_item.added":
		if ev.Item == nil {
			return fmt.Errorf("%s without item", ev.Type)
		}
		switch ev.Item.Type {
		case "message":
			r.stop(emit)
		case "function_call":
			r.gotArgs, r.hasCalls = false, true
			r.start(PartToolCall, emit, &event{id: ev.Item.CallID, name: ev.Item.Name})
			if a := ev.Item.Arguments; a != nil && *a != "" {
				r.gotArgs = true
				emit(&event{kind: evDelta, text: *a})
			}
		case "reasoning":
			r.summaries = 0
			r.start(PartReasoning, emit, &event{id: ev.Item.ID})
		default:
			r.stop(emit)
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
			r.start(PartText, emit, &event{})
			emit(&event{kind: evDelta, text: deref(ev.Part.Text)})
		}
	case "response.output_text.delta", "response.refusal.delta":
		if r.in(PartText) {
			emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.content_part.done":
		if r.in(PartText) {
			r.stop(emit)
		}
	case "response.function_call_arguments.delta":
		if r.in(PartToolCall) {
			r.gotArgs = true
			emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.function_call_arguments.done":
		if r.in(PartToolCall) && !r.gotArgs {
			r.gotArgs = true
			emit(&event{kind: evDelta, text: ev.Arguments})
		}
	case "response.reasoning_summary_part.added":
		if r.in(PartReasoning) {
			r.summaries++
			if r.summaries > 1 {
				emit(&event{kind: evDelta, text: paraBreak})
			}
		}
	case "response.reasoning_summary_text.delta", "response.reasoning_text.delta":
		if r.in(PartReasoning) {
			emit(&event{kind: evDelta, text: ev.Delta})
		}
	case "response.output_item.done":
		if ev.Item == nil || r.skipOutput[ev.OutputIndex] {
			return nil
		}
		if ev.Item.Type == "reasoning" && r.in(PartReasoning) && ev.Item.EncryptedContent != "" {
			emit(&event{kind: evSignature, text: ev.Item.EncryptedContent})
		}
		if ev.Item.Type != "message" {
			r.stop(emit)
		}
	case "response.completed", "response.incomplete":
		r.open = false
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
		emit(&event{kind: evFinish, finish: f, usage: u})
	case "response.failed":
		e := apiErr{status: 500, message: "response failed", anthropicType: "api_error", openaiType: "server_error"}
		if ev.Response != nil && ev.Response.Error != nil {
			e.message, e.openaiCode = ev.Response.Error.Message, ev.Response.Error.Code
		}
		emit(&event{kind: evError, err: e})
	case "error":
		e := apiErr{status: 500, message: ev.Message, anthropicType: "api_error", openaiType: "server_error"}
		if ev.Code != nil {
			e.openaiCode = *ev.Code
		}
		emit(&event{kind: evError, err: e})
	}
	return nil
}

func (r *respStreamReader) end(func(*event)) {}

// respStreamWriter writes Responses events. It keeps the output items, as
// response.completed carries the whole response.
type respStreamWriter struct {
	created int64
	seq     int64
	resp    respResponse
	part    PartKind
	itemID  string
	text    strings.Builder // of the open part
	enc     strings.Builder // of the open reasoning part
	partID  string          // reasoning id or call id
	name    string
	summary bool // the open reasoning part has a summary part
}

// Each event shape has a typed writer below: begin writes the event's name,
// type and sequence number, the writer its fields in the API's order, and
// "}" and a blank line close it.

func (w *respStreamWriter) begin(b *bytes.Buffer, typ string) {
	b.WriteString("event: ")
	b.WriteString(typ)
	b.WriteString("\ndata: {\"type\":\"")
	b.WriteString(typ)
	b.WriteString(`","sequence_number":`)
	appendInt(b, w.seq)
	w.seq++
}

// beginItem is begin followed by the open item's id and its output index.
func (w *respStreamWriter) beginItem(b *bytes.Buffer, typ string, n int) {
	w.begin(b, typ)
	b.WriteString(`,"item_id":`)
	appendJSONString(b, w.itemID)
	b.WriteString(`,"output_index":`)
	appendInt(b, int64(n))
}

func endEvent(b *bytes.Buffer) { b.WriteString("}\n\n") }

// responseEvent carries the whole response (created, in_progress and the
// final events).
func (w *respStreamWriter) responseEvent(b *bytes.Buffer, typ string) {
	w.begin(b, typ)
	b.WriteString(`,"response":`)
	data, _ := marshal(&w.resp)
	b.Write(data)
	endEvent(b)
}

// itemEvent carries an output item (output_item.added and .done).
func (w *respStreamWriter) itemEvent(b *bytes.Buffer, typ string, n int, item *respItem) {
	w.begin(b, typ)
	b.WriteString(`,"output_index":`)
	appendInt(b, int64(n))
	b.WriteString(`,"item":`)
	data, _ := marshal(item)
	b.Write(data)
	endEvent(b)
}

// partEvent carries a content or summary part (index names which): the
// .added and .done events of content_part and reasoning_summary_part.
func (w *respStreamWriter) partEvent(b *bytes.Buffer, typ string, n int, index string, part json.RawMessage) {
	w.beginItem(b, typ, n)
	b.WriteString(`,"` + index + `":0,"part":`)
	b.Write(part)
	endEvent(b)
}

// textDone carries a part's whole text (output_text.done,
// reasoning_summary_text.done); tail is raw JSON fields after it.
func (w *respStreamWriter) textDone(b *bytes.Buffer, typ string, n int, index, text, tail string) {
	w.beginItem(b, typ, n)
	b.WriteString(`,"` + index + `":0,"text":`)
	appendJSONString(b, text)
	b.WriteString(tail)
	endEvent(b)
}

// argumentsDone is function_call_arguments.done.
func (w *respStreamWriter) argumentsDone(b *bytes.Buffer, n int, args string) {
	w.beginItem(b, "response.function_call_arguments.done", n)
	b.WriteString(`,"name":`)
	appendJSONString(b, w.name)
	b.WriteString(`,"arguments":`)
	appendJSONString(b, args)
	endEvent(b)
}

// errorEvent is the stream's error event.
func (w *respStreamWriter) errorEvent(b *bytes.Buffer, code, message string) {
	w.begin(b, "error")
	b.WriteString(`,"code":`)
	appendJSONString(b, code)
	b.WriteString(`,"message":`)
	appendJSONString(b, message)
	b.WriteString(`,"param":null`)
	endEvent(b)
}

// delta writes a delta event: the hot path.
func (w *respStreamWriter) delta(b *bytes.Buffer, typ string, n int, mid, text, tail string) {
	w.beginItem(b, typ, n)
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
		w.responseEvent(b, "response.created")
		w.responseEvent(b, "response.in_progress")
	case evPartStart:
		w.part, w.partID, w.name, w.summary = e.part, e.id, e.name, false
		w.text.Reset()
		w.enc.Reset()
		n := w.outputIndex()
		switch e.part {
		case PartText:
			w.itemID = respMessageID(w.resp.ID, n)
			w.itemEvent(b, "response.output_item.added", n, &respItem{Type: "message", ID: w.itemID, Role: "assistant", Status: "in_progress", Content: json.RawMessage("[]")})
			w.partEvent(b, "response.content_part.added", n, "content_index", json.RawMessage(`{"type":"output_text","text":"","annotations":[]}`))
		case PartToolCall:
			w.itemID = respCallID(e.id)
			w.itemEvent(b, "response.output_item.added", n, &respItem{Type: "function_call", ID: w.itemID, CallID: e.id, Name: e.name, Arguments: ptr(""), Status: "in_progress"})
		case PartReasoning:
			w.itemID = e.id
			if w.itemID == "" {
				w.itemID = respReasoningID(w.resp.ID, n)
			}
			if e.redacted {
				w.enc.WriteString(anthropicRedactPrefix + e.text)
			}
			w.itemEvent(b, "response.output_item.added", n, &respItem{Type: "reasoning", ID: w.itemID, Summary: &[]respSummary{}})
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
				w.partEvent(b, "response.reasoning_summary_part.added", n, "summary_index", json.RawMessage(`{"type":"summary_text","text":""}`))
			}
			w.delta(b, "response.reasoning_summary_text.delta", n, `,"summary_index":0,"delta":`, e.text, `}`)
		}
	case evSignature:
		if w.part == PartReasoning {
			w.enc.WriteString(e.text)
		}
	case evPartStop:
		n := w.outputIndex()
		text := w.text.String()
		var item respItem
		switch w.part {
		case PartText:
			w.textDone(b, "response.output_text.done", n, "content_index", text, `,"logprobs":[]`)
			part, _ := marshal(respPart{Type: "output_text", Text: &text, Annotations: ptr(json.RawMessage("[]"))})
			w.partEvent(b, "response.content_part.done", n, "content_index", part)
			item = respTextMessage(w.itemID, text, "completed")
		case PartToolCall:
			w.argumentsDone(b, n, text)
			item = respItem{Type: "function_call", ID: w.itemID, CallID: w.partID, Name: w.name, Arguments: &text, Status: "completed"}
		case PartReasoning:
			if w.summary {
				w.textDone(b, "response.reasoning_summary_text.done", n, "summary_index", text, "")
				part, _ := marshal(respSummary{Type: "summary_text", Text: text})
				w.partEvent(b, "response.reasoning_summary_part.done", n, "summary_index", part)
			}
			p := Part{Text: text}
			enc := w.enc.String()
			if strings.HasPrefix(enc, anthropicRedactPrefix) {
				p.Redacted, p.Encrypted = true, strings.TrimPrefix(enc, anthropicRedactPrefix)
			} else if w.partID != "" {
				p.ID, p.Encrypted = w.partID, enc // an OpenAI item: kept as is
			} else {
				p.Signature = enc
			}
			item = respReasoningItem(&p, w.itemID)
			item.ID = w.itemID
		default:
			return
		}
		w.itemEvent(b, "response.output_item.done", n, &item)
		w.resp.Output = append(w.resp.Output, item)
		w.part = 0
	case evFinish:
		w.resp.Status, w.resp.IncompleteDetails = respStatus(e.finish)
		w.resp.Usage = respUsageOf(e.usage)
		typ := "response.completed"
		if w.resp.Status == "incomplete" {
			typ = "response.incomplete"
		}
		w.responseEvent(b, typ)
	case evPing:
		w.keepAlive(b)
	case evError:
		code := e.err.openaiCode
		if code == "" {
			code = e.err.openaiType
		}
		w.errorEvent(b, code, e.err.message)
		if w.resp.ID != "" || w.resp.Object != "" {
			w.resp.Status = "failed"
			w.resp.Error = &respErrorObj{Code: "server_error", Message: e.err.message}
			w.responseEvent(b, "response.failed")
		}
	}
}

func (w *respStreamWriter) keepAlive(b *bytes.Buffer) {
	b.WriteString(": keep-alive\n\n")
}
