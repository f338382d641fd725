package streamcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

type respItem struct {
	Type      string     `json:"type"`
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	CallID    string     `json:"call_id"`
	Name      string     `json:"name"`
	Arguments *string    `json:"arguments"`
	Content   []respPart `json:"content"`
	Summary   []respPart `json:"summary"`
}

type respPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type respEvent struct {
	Type         string    `json:"type"`
	Seq          *int      `json:"sequence_number"`
	OutputIndex  *int      `json:"output_index"`
	ContentIndex *int      `json:"content_index"`
	SummaryIndex *int      `json:"summary_index"`
	ItemID       string    `json:"item_id"`
	Item         *respItem `json:"item"`
	Part         *respPart `json:"part"`
	Delta        *string   `json:"delta"`
	Text         *string   `json:"text"`
	Arguments    *string   `json:"arguments"`
	Response     *struct {
		ID     string          `json:"id"`
		Object string          `json:"object"`
		Status string          `json:"status"`
		Output []respItem      `json:"output"`
		Usage  json.RawMessage `json:"usage"`
	} `json:"response"`
	Code    any    `json:"code"`
	Message string `json:"message"`
}

// Responses checks a Responses stream: consecutive sequence numbers from 0;
// response.created (then optionally response.in_progress); each output item
// from output_item.added to output_item.done in output_index order, with the
// events of its kind in between (content parts and text deltas, function call
// argument deltas, reasoning summary parts) whose done events equal the sum
// of their deltas; then response.completed, .incomplete or .failed with the
// whole output and usage. An error event may end the stream.
func Responses(events []Event) (Result, error) {
	var res Result
	var items []respItem
	var open *respItem
	var text, args, summary strings.Builder
	partOpen, summaryOpen := false, false
	state := "start"
	respID := ""
	for i, ev := range events {
		var e respEvent
		if err := decode(ev, &e); err != nil {
			return res, err
		}
		at := fmt.Sprintf("event %d (%s)", i, e.Type)
		if ev.Name != "" && ev.Name != e.Type {
			return res, fmt.Errorf("%s: named %q", at, ev.Name)
		}
		if e.Seq == nil || *e.Seq != i {
			return res, fmt.Errorf("%s: sequence_number %v; want %d", at, e.Seq, i)
		}
		if state == "done" {
			return res, fmt.Errorf("%s: after the terminal event", at)
		}
		if e.Type == "error" {
			if i != len(events)-1 {
				return res, fmt.Errorf("%s: events after an error", at)
			}
			res.Error = fmt.Sprint(e.Code)
			return res, nil
		}
		if state == "start" && e.Type != "response.created" {
			return res, fmt.Errorf("%s: want response.created first", at)
		}
		inItem := func(kind string) error {
			if open == nil || open.Type != kind || e.OutputIndex == nil || *e.OutputIndex != len(items) || e.ItemID != open.ID {
				return fmt.Errorf("%s: not inside an open %s item (output_index %v item_id %q)", at, kind, e.OutputIndex, e.ItemID)
			}
			return nil
		}
		switch e.Type {
		case "response.created", "response.in_progress":
			r := e.Response
			if r == nil || r.ID == "" || r.Object != "response" || (state != "start" && (e.Type == "response.created" || state != "created")) {
				return res, fmt.Errorf("%s: want one response.created, then at most one response.in_progress, with a response", at)
			}
			if r.Status != "in_progress" && r.Status != "queued" {
				return res, fmt.Errorf("%s: status %q", at, r.Status)
			}
			if respID != "" && r.ID != respID {
				return res, fmt.Errorf("%s: response id changed", at)
			}
			respID, state = r.ID, "created"
		case "response.output_item.added":
			if open != nil || e.Item == nil || e.OutputIndex == nil || *e.OutputIndex != len(items) || e.Item.ID == "" {
				return res, fmt.Errorf("%s: an item added while another is open, out of order or without id", at)
			}
			it := *e.Item
			switch it.Type {
			case "message":
				if len(it.Content) != 0 {
					return res, fmt.Errorf("%s: a message item is added with empty content", at)
				}
			case "function_call":
				if it.CallID == "" || it.Name == "" {
					return res, fmt.Errorf("%s: a function_call item is added with call_id and name", at)
				}
			case "reasoning":
			default:
				return res, fmt.Errorf("%s: unexpected item type %q", at, it.Type)
			}
			open = &it
			text.Reset()
			args.Reset()
			summary.Reset()
		case "response.content_part.added", "response.content_part.done":
			if err := inItem("message"); err != nil {
				return res, err
			}
			added := e.Type == "response.content_part.added"
			if e.ContentIndex == nil || *e.ContentIndex != 0 || e.Part == nil || partOpen != !added {
				return res, fmt.Errorf("%s: content parts must open and close in order (one output_text part)", at)
			}
			if added && e.Part.Text != "" || !added && e.Part.Text != text.String() {
				return res, fmt.Errorf("%s: part text %q; want %q", at, e.Part.Text, text.String())
			}
			partOpen = added
		case "response.output_text.delta", "response.output_text.done":
			if err := inItem("message"); err != nil {
				return res, err
			}
			if !partOpen || e.ContentIndex == nil || *e.ContentIndex != 0 {
				return res, fmt.Errorf("%s: text outside an open content part", at)
			}
			if e.Type == "response.output_text.delta" {
				if e.Delta == nil {
					return res, fmt.Errorf("%s: no delta", at)
				}
				text.WriteString(*e.Delta)
			} else if e.Text == nil || *e.Text != text.String() {
				return res, fmt.Errorf("%s: text %v; want the deltas' %q", at, e.Text, text.String())
			}
		case "response.function_call_arguments.delta", "response.function_call_arguments.done":
			if err := inItem("function_call"); err != nil {
				return res, err
			}
			if e.Type == "response.function_call_arguments.delta" {
				if e.Delta == nil {
					return res, fmt.Errorf("%s: no delta", at)
				}
				args.WriteString(*e.Delta)
			} else if e.Arguments == nil || *e.Arguments != args.String() {
				return res, fmt.Errorf("%s: arguments %v; want the deltas' %q", at, e.Arguments, args.String())
			}
		case "response.reasoning_summary_part.added", "response.reasoning_summary_part.done":
			if err := inItem("reasoning"); err != nil {
				return res, err
			}
			added := e.Type == "response.reasoning_summary_part.added"
			if e.SummaryIndex == nil || e.Part == nil || summaryOpen != !added {
				return res, fmt.Errorf("%s: summary parts must open and close in order", at)
			}
			if added {
				summary.Reset()
			} else if e.Part.Text != summary.String() {
				return res, fmt.Errorf("%s: summary part text %q; want %q", at, e.Part.Text, summary.String())
			}
			summaryOpen = added
		case "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done":
			if err := inItem("reasoning"); err != nil {
				return res, err
			}
			if !summaryOpen {
				return res, fmt.Errorf("%s: summary text outside an open summary part", at)
			}
			if e.Type == "response.reasoning_summary_text.delta" {
				if e.Delta == nil {
					return res, fmt.Errorf("%s: no delta", at)
				}
				summary.WriteString(*e.Delta)
				res.Thinking += *e.Delta
			} else if e.Text == nil || *e.Text != summary.String() {
				return res, fmt.Errorf("%s: summary text %v; want the deltas' %q", at, e.Text, summary.String())
			}
		case "response.output_item.done":
			if open == nil || e.Item == nil || e.OutputIndex == nil || *e.OutputIndex != len(items) || e.Item.ID != open.ID || e.Item.Type != open.Type || partOpen || summaryOpen {
				return res, fmt.Errorf("%s: done for an item that is not the open one, or with a part still open", at)
			}
			it := *e.Item
			switch it.Type {
			case "message":
				if len(it.Content) != 1 || it.Content[0].Text != text.String() {
					return res, fmt.Errorf("%s: message item content %+v; want the streamed text %q", at, it.Content, text.String())
				}
				res.Text += text.String()
			case "function_call":
				if it.Arguments == nil || *it.Arguments != args.String() || it.CallID != open.CallID || it.Name != open.Name {
					return res, fmt.Errorf("%s: function_call item %+v; want the streamed arguments %q and the added call_id and name", at, it, args.String())
				}
				if !validObject(args.String()) {
					return res, fmt.Errorf("%s: arguments %q are not a JSON object", at, args.String())
				}
				res.Calls = append(res.Calls, Call{it.CallID, it.Name, args.String()})
			}
			items, open = append(items, it), nil
		case "response.completed", "response.incomplete", "response.failed":
			r := e.Response
			if open != nil || r == nil || r.ID != respID {
				return res, fmt.Errorf("%s: terminal event with an item open, or for another response", at)
			}
			want := strings.TrimPrefix(e.Type, "response.")
			if r.Status != want {
				return res, fmt.Errorf("%s: status %q; want %q", at, r.Status, want)
			}
			if len(r.Output) != len(items) {
				return res, fmt.Errorf("%s: %d output items; %d were streamed", at, len(r.Output), len(items))
			}
			for k, it := range r.Output {
				if it.ID != items[k].ID || it.Type != items[k].Type {
					return res, fmt.Errorf("%s: output[%d] is %s %s; %s %s was streamed", at, k, it.Type, it.ID, items[k].Type, items[k].ID)
				}
			}
			if want != "failed" && len(r.Usage) == 0 {
				return res, fmt.Errorf("%s: no usage", at)
			}
			res.Stop, res.Usage, state = want, r.Usage, "done"
		default:
			if strings.HasPrefix(e.Type, "response.") && open != nil {
				continue // events of kinds this checker does not follow (annotations, refusals)
			}
			return res, fmt.Errorf("%s: unexpected event", at)
		}
	}
	if state != "done" {
		return res, errors.New("stream ended before a terminal event")
	}
	return res, nil
}
