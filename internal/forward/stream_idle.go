package forward

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// DefaultStreamIdleTimeout is how long an upstream event stream may send
// nothing before the proxy ends it. It matches the wait for response
// headers (TransportConfig.ResponseHeaderTimeout): a reasoning model may
// think that long before its first token, and a streamed request may spend
// that time after its headers instead of before them.
const DefaultStreamIdleTimeout = 5 * time.Minute

// watchStreamIdle replaces every answer's body with one that closes the
// upstream body (freeing its connection) once the upstream has sent nothing
// for the stream idle timeout. An event stream then ends with an error event
// in the upstream's dialect (the client's, unless the call is translated);
// any other answer ends with a read error ([errUpstreamIdle]), never a
// clean end, so a cut JSON body is not taken for a whole one (the reverse
// proxy then drops the client's connection, a translated answer becomes a
// 502). No goroutine waits per answer: a clock timer calls
// [idleBody.fire], and each read that brings bytes resets it.
func (h *Handler) watchStreamIdle(resp *http.Response, c *call) {
	if h.streamIdle <= 0 || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	// The event joins the upstream's bytes: in the upstream's dialect, which
	// a translated call's translator (above this body) turns into the
	// client's.
	b := &idleBody{body: resp.Body, h: h, route: c.route, event: c.targetRoute(), key: c.key, requestID: c.requestID,
		sse: isEventStream(resp.Header.Get("Content-Type"))}
	b.timer = h.clock.AfterFunc(h.streamIdle, b.fire)
	resp.Body = b
}

// isEventStream reports whether a Content-Type value names an event
// stream: its media type, before any parameters, is text/event-stream in
// any case (what mime.ParseMediaType would return, without the map of
// parameters it makes for every answer).
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// The states of an [idleBody].
const (
	idleLive   int32 = iota // reading the upstream; the timer is armed
	idleFiring              // the timer fired; the tail is being made
	idleFired               // the tail is ready; the upstream body is closed
	idleClosed              // closed before the timer fired
)

// idleBody is an upstream stream body with an idle timer.
type idleBody struct {
	body      io.ReadCloser
	h         *Handler
	route     *route // the client's: the metric's and the log's
	event     *route // whose dialect the error event is in
	key       string
	requestID string
	timer     clock.Timer
	state     atomic.Int32
	sse       bool   // an event stream: it ends with tail, else with errUpstreamIdle
	tail      []byte // the error event handed out once fired; made on firing
}

// errUpstreamIdle ends an answer other than an event stream whose upstream
// went silent.
var errUpstreamIdle = errors.New("the Copilot API sent nothing for the idle timeout; the proxy ended the answer")

// fire is the timer's function: it ends the stream unless it was closed or
// already ended.
func (b *idleBody) fire() {
	if !b.state.CompareAndSwap(idleLive, idleFiring) {
		return
	}
	if b.sse {
		b.tail = idleErrorEvent(b.event, b.h.streamIdle)
	}
	b.state.Store(idleFired)
	b.h.metrics.streamIdle.WithLabelValues(b.route.name).Inc()
	b.h.log.Warn("upstream stream idle; ending it with an error event", "route", b.route.name, "key", b.key,
		"request_id", b.requestID, "idle", b.h.streamIdle)
	_ = b.body.Close() // ends a Read blocked on the upstream
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.state.Load() == idleFired {
		return b.readTail(p)
	}
	n, err := b.body.Read(p)
	switch b.state.Load() {
	case idleFired:
		if n > 0 {
			return n, nil
		}
		return b.readTail(p)
	case idleLive:
		if n > 0 {
			b.timer.Reset(b.h.streamIdle)
		}
	}
	return n, err
}

func (b *idleBody) readTail(p []byte) (int, error) {
	if !b.sse {
		return 0, errUpstreamIdle
	}
	if len(b.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.tail)
	b.tail = b.tail[n:]
	return n, nil
}

func (b *idleBody) Close() error {
	b.state.CompareAndSwap(idleLive, idleClosed)
	b.timer.Stop() // also when fired: a Read racing the firing may have armed it again
	return b.body.Close()
}

// idleErrorEvent is the server-sent event that ends an idle stream, in the
// route's dialect ([dialect.Error.Event]).
func idleErrorEvent(rt *route, idle time.Duration) []byte {
	return dialect.Error{
		Status: http.StatusGatewayTimeout, Message: "the Copilot API sent nothing for " + idle.String() + "; the proxy ended the stream",
		OpenAIType: "server_error", OpenAICode: "stream_idle_timeout", AnthropicType: "api_error",
	}.Event(rt.dialect)
}
