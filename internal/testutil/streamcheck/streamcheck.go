// Package streamcheck checks server-sent event streams of the three API
// dialects (Anthropic Messages, Chat Completions, Responses) against their
// wire grammar: event order, indexes, ids, and that the pieces add up to
// what the stream's end says. The official SDKs' accumulators accept some
// streams a real client would choke on; tests of the sandbox and of
// translated streams run both.
package streamcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Event is one server-sent event: its `event:` name (empty when the stream
// sends none) and its data.
type Event struct {
	Name string
	Data string
}

// Read reads every event of an SSE stream until EOF.
func Read(r io.Reader) ([]Event, error) {
	var out []Event
	var cur Event
	var data []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 {
				cur.Data = strings.Join(data, "\n")
				out = append(out, cur)
			}
			cur, data = Event{}, nil
		case strings.HasPrefix(line, ":"): // comment: a keep-alive
		case strings.HasPrefix(line, "event:"):
			cur.Name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		default:
			return out, fmt.Errorf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	if len(data) > 0 || cur.Name != "" {
		return out, fmt.Errorf("stream ended inside an event")
	}
	return out, nil
}

// Call is a tool call assembled from a stream.
type Call struct {
	ID, Name, Arguments string
}

// Result is what a valid stream said.
type Result struct {
	Text     string
	Thinking string // Anthropic thinking text or Responses reasoning summary
	Calls    []Call
	// Stop is the stream's end reason in its own dialect: Anthropic's
	// stop_reason, Chat's finish_reason, or the Responses terminal status.
	Stop string
	// Error is the type (or code) of an error event that ended the stream.
	Error string
	// Usage is the raw usage object of the end of the stream.
	Usage json.RawMessage
}

func decode(ev Event, v any) error {
	if err := json.Unmarshal([]byte(ev.Data), v); err != nil {
		return fmt.Errorf("event %q: data is not the expected JSON: %w: %s", ev.Name, err, ev.Data)
	}
	return nil
}

func validObject(s string) bool {
	var m map[string]any
	return json.Unmarshal([]byte(s), &m) == nil
}

// Anthropic checks a Messages stream: message_start, then each content
// block's start, deltas of its kind and stop, in index order, then
// message_delta with a stop reason and usage, then message_stop. ping may
// come anywhere after message_start; an error event may end the stream.
func Anthropic(events []Event) (Result, error) {
	var res Result
	type block struct {
		typ, id, name string
		input         strings.Builder
		signed        bool
	}
	var blocks []*block
	open := -1
	state := "start"
	for i, ev := range events {
		var e struct {
			Type    string `json:"type"`
			Index   *int   `json:"index"`
			Message *struct {
				Type    string            `json:"type"`
				Role    string            `json:"role"`
				ID      string            `json:"id"`
				Content []json.RawMessage `json:"content"`
				Usage   json.RawMessage   `json:"usage"`
			} `json:"message"`
			ContentBlock *struct {
				Type     string          `json:"type"`
				ID       string          `json:"id"`
				Name     string          `json:"name"`
				Text     *string         `json:"text"`
				Thinking *string         `json:"thinking"`
				Input    json.RawMessage `json:"input"`
			} `json:"content_block"`
			Delta struct {
				Type        string  `json:"type"`
				Text        string  `json:"text"`
				PartialJSON *string `json:"partial_json"`
				Thinking    string  `json:"thinking"`
				Signature   string  `json:"signature"`
				StopReason  *string `json:"stop_reason"`
			} `json:"delta"`
			Usage *json.RawMessage `json:"usage"`
			Error *struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if err := decode(ev, &e); err != nil {
			return res, err
		}
		at := fmt.Sprintf("event %d (%s)", i, e.Type)
		if ev.Name != "" && ev.Name != e.Type {
			return res, fmt.Errorf("%s: named %q", at, ev.Name)
		}
		if state == "stopped" {
			return res, fmt.Errorf("%s: after message_stop", at)
		}
		if e.Type == "error" {
			if e.Error == nil || e.Error.Type == "" {
				return res, fmt.Errorf("%s: error event without error.type", at)
			}
			if i != len(events)-1 {
				return res, fmt.Errorf("%s: events after an error", at)
			}
			res.Error = e.Error.Type
			return res, nil
		}
		if state == "start" && e.Type != "message_start" {
			return res, fmt.Errorf("%s: want message_start first", at)
		}
		idx := func() (int, error) {
			if e.Index == nil {
				return 0, fmt.Errorf("%s: no index", at)
			}
			return *e.Index, nil
		}
		switch e.Type {
		case "message_start":
			m := e.Message
			if state != "start" || m == nil || m.Type != "message" || m.Role != "assistant" || m.ID == "" || len(m.Content) != 0 || len(m.Usage) == 0 {
				return res, fmt.Errorf("%s: want one message_start with an empty assistant message, an id and usage: %s", at, ev.Data)
			}
			state = "blocks"
		case "ping":
		case "content_block_start":
			n, err := idx()
			if err != nil {
				return res, err
			}
			cb := e.ContentBlock
			if state != "blocks" || open >= 0 || n != len(blocks) || cb == nil {
				return res, fmt.Errorf("%s: block %d starts while block %d is open or out of order (%d blocks so far)", at, n, open, len(blocks))
			}
			b := &block{typ: cb.Type, id: cb.ID, name: cb.Name}
			switch cb.Type {
			case "text":
				if cb.Text == nil || *cb.Text != "" {
					return res, fmt.Errorf("%s: a text block starts with empty text", at)
				}
			case "thinking":
				if cb.Thinking == nil {
					return res, fmt.Errorf("%s: a thinking block starts with a thinking field", at)
				}
			case "redacted_thinking":
			case "tool_use":
				if cb.ID == "" || cb.Name == "" || string(cb.Input) != "{}" {
					return res, fmt.Errorf("%s: a tool_use block starts with an id, a name and input {}: %s", at, ev.Data)
				}
			default:
				return res, fmt.Errorf("%s: unknown block type %q", at, cb.Type)
			}
			blocks, open = append(blocks, b), n
		case "content_block_delta":
			n, err := idx()
			if err != nil {
				return res, err
			}
			if n != open {
				return res, fmt.Errorf("%s: delta for block %d while block %d is open", at, n, open)
			}
			b := blocks[n]
			d := e.Delta
			switch {
			case b.typ == "text" && d.Type == "text_delta":
				res.Text += d.Text
			case b.typ == "text" && d.Type == "citations_delta":
			case b.typ == "thinking" && d.Type == "thinking_delta" && !b.signed:
				res.Thinking += d.Thinking
			case b.typ == "thinking" && d.Type == "signature_delta" && d.Signature != "":
				b.signed = true
			case b.typ == "tool_use" && d.Type == "input_json_delta" && d.PartialJSON != nil:
				b.input.WriteString(*d.PartialJSON)
			default:
				return res, fmt.Errorf("%s: delta %q in a %s block", at, d.Type, b.typ)
			}
		case "content_block_stop":
			n, err := idx()
			if err != nil {
				return res, err
			}
			if n != open {
				return res, fmt.Errorf("%s: stop for block %d while block %d is open", at, n, open)
			}
			b := blocks[n]
			if b.typ == "thinking" && !b.signed {
				return res, fmt.Errorf("%s: a thinking block ends without its signature_delta", at)
			}
			if b.typ == "tool_use" {
				in := b.input.String()
				if in == "" {
					in = "{}"
				}
				if !validObject(in) {
					return res, fmt.Errorf("%s: tool_use input %q is not a JSON object", at, in)
				}
				res.Calls = append(res.Calls, Call{b.id, b.name, in})
			}
			open = -1
		case "message_delta":
			if state != "blocks" || open >= 0 {
				return res, fmt.Errorf("%s: message_delta while block %d is open or twice", at, open)
			}
			sr := e.Delta.StopReason
			if sr == nil || !slices.Contains([]string{"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"}, *sr) {
				return res, fmt.Errorf("%s: stop_reason %v is not a known one", at, sr)
			}
			if (*sr == "tool_use") != (len(res.Calls) > 0) {
				return res, fmt.Errorf("%s: stop_reason %q with %d tool calls", at, *sr, len(res.Calls))
			}
			if e.Usage == nil || !bytes.Contains(*e.Usage, []byte(`"output_tokens"`)) {
				return res, fmt.Errorf("%s: message_delta without usage.output_tokens", at)
			}
			res.Stop, res.Usage, state = *sr, *e.Usage, "delta"
		case "message_stop":
			if state != "delta" {
				return res, fmt.Errorf("%s: message_stop before message_delta", at)
			}
			state = "stopped"
		default:
			return res, fmt.Errorf("%s: unknown event type", at)
		}
	}
	if state != "stopped" {
		return res, errors.New("stream ended before message_stop")
	}
	return res, nil
}

// Chat checks a Chat Completions stream: chunks of one id, the first delta
// with role assistant, tool calls by index (id, type and name on a call's
// first delta only, new indexes in order), one finish_reason, an optional
// usage chunk without choices, then [DONE]. A chunk carrying an error may
// end the stream.
func Chat(events []Event) (Result, error) {
	var res Result
	id, roleSeen, finished, done := "", false, false, false
	args := map[int]*strings.Builder{}
	for i, ev := range events {
		at := fmt.Sprintf("chunk %d", i)
		if done {
			return res, fmt.Errorf("%s: after [DONE]", at)
		}
		if ev.Name != "" {
			return res, fmt.Errorf("%s: Chat streams name no events, got %q", at, ev.Name)
		}
		if ev.Data == "[DONE]" {
			if !finished {
				return res, fmt.Errorf("%s: [DONE] before a finish_reason", at)
			}
			done = true
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Choices []struct {
				Index int `json:"index"`
				Delta struct {
					Role      string  `json:"role"`
					Content   *string `json:"content"`
					ToolCalls []struct {
						Index    *int   `json:"index"`
						ID       string `json:"id"`
						Type     string `json:"type"`
						Function struct {
							Name      string  `json:"name"`
							Arguments *string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *json.RawMessage `json:"usage"`
			Error *struct {
				Type string `json:"type"`
				Code any    `json:"code"`
			} `json:"error"`
		}
		if err := decode(ev, &c); err != nil {
			return res, err
		}
		if c.Error != nil {
			if i != len(events)-1 {
				return res, fmt.Errorf("%s: chunks after an error", at)
			}
			res.Error = c.Error.Type
			if res.Error == "" {
				res.Error = fmt.Sprint(c.Error.Code)
			}
			return res, nil
		}
		if c.Object != "chat.completion.chunk" || c.ID == "" || (id != "" && c.ID != id) {
			return res, fmt.Errorf("%s: object %q id %q; want chat.completion.chunk with the stream's id %q", at, c.Object, c.ID, id)
		}
		id = c.ID
		if c.Usage != nil && string(*c.Usage) != "null" {
			res.Usage = *c.Usage
		}
		if len(c.Choices) > 1 {
			return res, fmt.Errorf("%s: %d choices; want at most 1", at, len(c.Choices))
		}
		if len(c.Choices) == 0 {
			continue
		}
		ch := c.Choices[0]
		if ch.Index != 0 {
			return res, fmt.Errorf("%s: choice index %d", at, ch.Index)
		}
		if finished {
			return res, fmt.Errorf("%s: a choice after finish_reason", at)
		}
		d := ch.Delta
		if !roleSeen {
			if d.Role != "assistant" {
				return res, fmt.Errorf("%s: the first delta has role %q; want assistant", at, d.Role)
			}
			roleSeen = true
		} else if d.Role != "" {
			return res, fmt.Errorf("%s: role repeated", at)
		}
		if d.Content != nil {
			res.Text += *d.Content
		}
		for _, tc := range d.ToolCalls {
			if tc.Index == nil {
				return res, fmt.Errorf("%s: a tool call delta without index", at)
			}
			n := *tc.Index
			b, known := args[n]
			switch {
			case !known && n != len(res.Calls):
				return res, fmt.Errorf("%s: tool call index %d after %d calls", at, n, len(res.Calls))
			case !known:
				if tc.ID == "" || tc.Type != "function" || tc.Function.Name == "" {
					return res, fmt.Errorf("%s: tool call %d's first delta lacks id, type function or name", at, n)
				}
				b = &strings.Builder{}
				args[n] = b
				res.Calls = append(res.Calls, Call{ID: tc.ID, Name: tc.Function.Name})
			case tc.ID != "" || tc.Function.Name != "":
				return res, fmt.Errorf("%s: tool call %d repeats its id or name", at, n)
			}
			if tc.Function.Arguments != nil {
				b.WriteString(*tc.Function.Arguments)
			}
		}
		if ch.FinishReason != nil {
			fr := *ch.FinishReason
			if !slices.Contains([]string{"stop", "length", "tool_calls", "content_filter", "function_call"}, fr) {
				return res, fmt.Errorf("%s: finish_reason %q is not a known one", at, fr)
			}
			if (fr == "tool_calls") != (len(res.Calls) > 0) {
				return res, fmt.Errorf("%s: finish_reason %q with %d tool calls", at, fr, len(res.Calls))
			}
			res.Stop, finished = fr, true
		}
	}
	if !done {
		return res, errors.New("stream ended before [DONE]")
	}
	for n := range res.Calls {
		res.Calls[n].Arguments = args[n].String()
		if !validObject(res.Calls[n].Arguments) {
			return res, fmt.Errorf("tool call %d: arguments %q are not a JSON object", n, res.Calls[n].Arguments)
		}
	}
	return res, nil
}
