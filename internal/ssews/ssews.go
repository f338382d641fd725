// Package ssews runs an [http.Handler]'s server-sent event answer as
// WebSocket messages: [Writer] is the handler's ResponseWriter and hands the
// data of each event, as it completes, to a send function (one text message
// an event). The proxy's WebSocket front (internal/forward/wsresponses) and
// the sandbox's ws:/responses use it, so one Responses turn over a WebSocket
// runs through the same handler as an HTTP request.
package ssews

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
)

// ErrEventTooLarge is returned by Write when one event's data passes the
// Writer's bound.
var ErrEventTooLarge = errors.New("ssews: event larger than the limit")

// DefaultMaxEvent bounds one event's data (and a non-stream body).
const DefaultMaxEvent = 8 << 20

// Terminal event types of a Responses stream.
var terminals = [...]string{"response.completed", "response.failed", "response.incomplete", "response.cancelled", "error"}

// Writer is an [http.ResponseWriter] (and [http.Flusher]) for one turn. An
// answer that is not 200 text/event-stream is kept (bounded) for
// [Writer.Body]; a stream's events go to send as they complete, comments and
// `[DONE]` dropped. Not safe for concurrent use (a handler writes from one
// goroutine).
type Writer struct {
	header   http.Header
	status   int
	stream   bool
	send     func([]byte) error
	max      int
	line     []byte // the incomplete line
	data     []byte // the event's data so far
	hasData  bool
	body     []byte // a non-stream answer
	events   int
	terminal string
	err      error
}

// NewWriter returns a Writer that sends each event's data with send; max
// bounds one event (0: [DefaultMaxEvent]). A send error ends the turn: every
// later Write returns it, which makes the handler stop.
func NewWriter(send func([]byte) error, max int) *Writer {
	if max <= 0 {
		max = DefaultMaxEvent
	}
	return &Writer{header: http.Header{}, send: send, max: max}
}

// Header returns the answer's header map.
func (w *Writer) Header() http.Header { return w.header }

// WriteHeader records the status; the first call wins.
func (w *Writer) WriteHeader(status int) {
	if w.status != 0 || status < 200 {
		return
	}
	w.status = status
	ct := w.header.Get("Content-Type")
	w.stream = status == http.StatusOK && len(ct) >= 17 && ct[:17] == "text/event-stream"
}

// Flush does nothing: events are sent as soon as they are complete.
func (w *Writer) Flush() {}

// Write takes the answer's bytes in any chunking.
func (w *Writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.stream {
		if len(w.body)+len(p) > w.max {
			w.err = ErrEventTooLarge
			return 0, w.err
		}
		w.body = append(w.body, p...)
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.line)+len(p) > w.max {
				w.err = ErrEventTooLarge
				return 0, w.err
			}
			w.line = append(w.line, p...)
			break
		}
		var line []byte
		if len(w.line) > 0 {
			w.line = append(w.line, p[:i]...)
			line = w.line
		} else {
			line = p[:i]
		}
		p = p[i+1:]
		if err := w.takeLine(bytes.TrimSuffix(line, []byte{'\r'})); err != nil {
			w.err = err
			return 0, err
		}
		w.line = w.line[:0]
	}
	return n, nil
}

// takeLine handles one complete SSE line.
func (w *Writer) takeLine(line []byte) error {
	if len(line) == 0 {
		return w.dispatch()
	}
	v, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil // event:, id:, retry: and comments carry nothing the message needs
	}
	v = bytes.TrimPrefix(v, []byte{' '})
	if w.hasData {
		w.data = append(w.data, '\n')
	}
	if len(w.data)+len(v) > w.max {
		return ErrEventTooLarge
	}
	w.data, w.hasData = append(w.data, v...), true
	return nil
}

// dispatch sends the event collected so far.
func (w *Writer) dispatch() error {
	if !w.hasData {
		return nil
	}
	data := w.data
	w.data, w.hasData = w.data[:0], false
	if string(data) == "[DONE]" {
		return nil
	}
	if t := terminalType(data); t != "" {
		w.terminal = t
	}
	w.events++
	return w.send(data)
}

// Close sends an event left without its closing blank line.
func (w *Writer) Close() error {
	if w.err != nil || !w.stream {
		return w.err
	}
	if len(w.line) > 0 {
		if err := w.takeLine(w.line); err != nil {
			return err
		}
	}
	return w.dispatch()
}

// terminalType returns the type of a terminal event, or "".
func terminalType(data []byte) string {
	for _, t := range terminals {
		if bytes.Contains(data, []byte(`"`+t+`"`)) {
			if got := EventType(data); got == t {
				return t
			}
		}
	}
	return ""
}

// EventType returns the "type" of a JSON event ("" when it has none).
func EventType(data []byte) string {
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	return v.Type
}

// Status is the answer's status (200 when the handler wrote without one, 0
// when it wrote nothing).
func (w *Writer) Status() int { return w.status }

// Stream reports whether the answer was a 200 event stream.
func (w *Writer) Stream() bool { return w.stream }

// Body is a non-stream answer's body.
func (w *Writer) Body() []byte { return w.body }

// Events is the number of events sent.
func (w *Writer) Events() int { return w.events }

// Terminal is the type of the terminal event sent ("" when none was).
func (w *Writer) Terminal() string { return w.terminal }

// Err is the error that stopped the Writer (a send failure or an event too
// large), or nil.
func (w *Writer) Err() error { return w.err }
