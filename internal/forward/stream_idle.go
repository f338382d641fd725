package forward

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// DefaultStreamIdleTimeout is how long an upstream event stream may send
// nothing before the proxy ends it. It matches the wait for response
// headers (TransportConfig.ResponseHeaderTimeout): a reasoning model may
// think that long before its first token, and a streamed request may spend
// that time after its headers instead of before them.
const DefaultStreamIdleTimeout = 5 * time.Minute

// watchStreamIdle replaces an event-stream response's body with one that
// ends the stream with an error event in the client's dialect, and closes
// the upstream body (freeing its connection), once the upstream has sent
// nothing for the stream idle timeout.
func (h *Handler) watchStreamIdle(resp *http.Response, c *call) {
	if h.streamIdle <= 0 || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return
	}
	b := &idleBody{
		body:    resp.Body,
		timeout: h.streamIdle,
		timer:   h.clock.NewTimer(h.streamIdle),
		done:    make(chan struct{}),
		tail:    idleErrorEvent(c.route, h.streamIdle),
	}
	go b.watch(func() {
		h.metrics.streamIdle.WithLabelValues(c.route.name).Inc()
		h.log.Warn("upstream stream idle; ending it with an error event", "route", c.route.name, "key", c.key,
			"request_id", c.requestID, "idle", h.streamIdle)
	})
	resp.Body = b
}

// idleBody is an upstream stream body with an idle timer.
type idleBody struct {
	body    io.ReadCloser
	timeout time.Duration
	timer   clock.Timer
	done    chan struct{}
	once    sync.Once
	fired   atomic.Bool
	tail    []byte // the error event handed out once fired
}

func (b *idleBody) watch(onFire func()) {
	select {
	case <-b.timer.C():
		b.fired.Store(true)
		onFire()
		_ = b.body.Close() // ends a Read blocked on the upstream
	case <-b.done:
	}
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.fired.Load() {
		return b.readTail(p)
	}
	n, err := b.body.Read(p)
	if b.fired.Load() {
		if n > 0 {
			return n, nil
		}
		return b.readTail(p)
	}
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	return n, err
}

func (b *idleBody) readTail(p []byte) (int, error) {
	if len(b.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.tail)
	b.tail = b.tail[n:]
	return n, nil
}

func (b *idleBody) Close() error {
	b.once.Do(func() {
		close(b.done)
		b.timer.Stop()
	})
	return b.body.Close()
}

// idleErrorEvent is the server-sent event that ends an idle stream, in the
// shape the route's SDKs read as an error: Anthropic's "event: error" with
// {"type":"error","error":{...}}, the Responses API's "event: error" with
// {"type":"error","code","message"}, and Chat Completions' data line with
// {"error":{...}}.
func idleErrorEvent(rt *route, idle time.Duration) []byte {
	msg := "the Copilot API sent nothing for " + idle.String() + "; the proxy ended the stream"
	var b []byte
	switch {
	case rt.dialect == dialectAnthropic:
		var a anthropicBody
		a.Type = "error"
		a.Error.Type, a.Error.Message = "api_error", msg
		j, _ := json.Marshal(a)
		b = append(append([]byte("event: error\ndata: "), j...), "\n\n"...)
	case rt == routeResponses:
		j, _ := json.Marshal(struct {
			Type    string  `json:"type"`
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Param   *string `json:"param"`
		}{"error", "stream_idle_timeout", msg, nil})
		b = append(append([]byte("event: error\ndata: "), j...), "\n\n"...)
	default:
		var o openaiBody
		o.Error.Message, o.Error.Type, o.Error.Code = msg, "server_error", "stream_idle_timeout"
		j, _ := json.Marshal(o)
		b = append(append([]byte("data: "), j...), "\n\n"...)
	}
	return b
}
