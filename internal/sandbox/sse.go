package sandbox

import (
	"encoding/json"
	"net/http"
	"time"
)

// sseWriter writes server-sent events, flushing each one on its own so a
// client sees it as soon as it is sent.
type sseWriter struct {
	w   http.ResponseWriter
	r   *http.Request
	rc  *http.ResponseController
	buf []byte
}

func startSSE(w http.ResponseWriter, r *http.Request) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	e := &sseWriter{w: w, r: r, rc: http.NewResponseController(w)}
	_ = e.rc.Flush()
	return e
}

// send writes one event: an `event:` line when name is set, then `data:`.
// v is marshalled to JSON unless it is already a []byte.
func (e *sseWriter) send(name string, v any) error {
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			return err
		}
	}
	e.buf = e.buf[:0]
	if name != "" {
		e.buf = append(e.buf, "event: "...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, '\n')
	}
	e.buf = append(e.buf, "data: "...)
	e.buf = append(e.buf, data...)
	e.buf = append(e.buf, "\n\n"...)
	if _, err := e.w.Write(e.buf); err != nil {
		return err
	}
	return e.rc.Flush()
}

// sseEvent is one event for [sseWriter.sendAll].
type sseEvent struct {
	name string
	v    any
}

// sendAll sends events in order, stopping at the first error.
func (e *sseWriter) sendAll(events ...sseEvent) error {
	for _, ev := range events {
		if err := e.send(ev.name, ev.v); err != nil {
			return err
		}
	}
	return nil
}

// pace waits delay before every chunk but the first; it reports false when
// the client has gone away, which the handler then records.
func (e *sseWriter) pace(i int, delay time.Duration) bool {
	if i == 0 {
		return e.r.Context().Err() == nil
	}
	return sleep(e.r, delay)
}

// end records on the request log how the stream ended.
func (e *sseWriter) end(err error) {
	markStream(e.w, err != nil || e.r.Context().Err() != nil)
}
