package forward

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// chunkBody is an upstream stream body fed by the test: a Read takes the
// next chunk, or blocks until Close when there is none.
type chunkBody struct {
	chunks chan string
	closed chan struct{}
	once   sync.Once
}

func newChunkBody() *chunkBody {
	return &chunkBody{chunks: make(chan string, 8), closed: make(chan struct{})}
}

func (b *chunkBody) Read(p []byte) (int, error) {
	select {
	case c := <-b.chunks:
		return copy(p, c), nil
	case <-b.closed:
		return 0, errors.New("read on closed body")
	}
}

func (b *chunkBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// idleHandler is a Handler with stream idle timeout idle on clk.
func idleHandler(t *testing.T, clk clock.Clock, idle time.Duration) *Handler {
	t.Helper()
	h, err := New(Config{Source: &fakeSource{}, Clock: clk, StreamIdleTimeout: idle, Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("unused")
	})})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sseResponse(body io.ReadCloser) *http.Response {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, Body: body}
}

// A stream whose upstream goes silent for the idle timeout (counted from
// its last bytes) ends with an error event in the route's dialect: a Read
// blocked on the upstream returns the event, the upstream body is closed,
// and the stream is counted once. No goroutine waits for the timer (goleak
// in TestMain checks none is left).
func TestStreamIdleEndsSilentStream(t *testing.T) {
	const idle = time.Minute
	tests := []struct {
		rt   *route
		want string
	}{
		{routeChat, `data: {"error":{"message":"the Copilot API sent nothing for 1m0s; the proxy ended the stream","type":"server_error","param":null,"code":"stream_idle_timeout"}}` + "\n\n"},
		{routeMessages, `event: error` + "\n" + `data: {"type":"error","error":{"type":"api_error","message":"the Copilot API sent nothing for 1m0s; the proxy ended the stream"}}` + "\n\n"},
		{routeResponses, `event: error` + "\n" + `data: {"type":"error","code":"stream_idle_timeout","message":"the Copilot API sent nothing for 1m0s; the proxy ended the stream","param":null}` + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.rt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			h := idleHandler(t, clk, idle)
			up := newChunkBody()
			resp := sseResponse(up)
			h.watchStreamIdle(resp, &call{route: tt.rt, key: "alice", requestID: "r1"})
			if resp.Body == io.ReadCloser(up) {
				t.Fatal("event stream body not watched")
			}
			counted := func() float64 { return testutil.ToFloat64(h.metrics.streamIdle.WithLabelValues(tt.rt.name)) }

			// Bytes 50 s in push the deadline to 110 s.
			clk.Advance(50 * time.Second)
			up.chunks <- "data: 1\n\n"
			buf := make([]byte, 64)
			if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "data: 1\n\n" {
				t.Fatalf("Read() = %q, %v; want the upstream's chunk", buf[:n], err)
			}
			clk.Advance(idle - time.Second)
			if got := counted(); got != 0 {
				t.Fatalf("idle counted %v times %v after the last bytes; want 0", got, idle-time.Second)
			}

			// A Read blocked on the silent upstream gets the error event.
			got := make(chan string, 1)
			go func() {
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					b = append(b, " error: "+err.Error()...)
				}
				got <- string(b)
			}()
			clk.Advance(time.Second)
			if body := <-got; body != tt.want {
				t.Errorf("stream after idle:\n%s\nwant\n%s", body, tt.want)
			}
			select {
			case <-up.closed:
			default:
				t.Error("upstream body not closed when the stream went idle")
			}
			resp.Body.Close()
			clk.Advance(time.Hour)
			if got := counted(); got != 1 {
				t.Errorf("idle streams counted %v; want 1", got)
			}
			if n := clk.Pending(); n != 0 {
				t.Errorf("%d timers pending after the stream ended; want 0", n)
			}
		})
	}
}

// Closing the body (the client left, or the stream ended) stops the timer:
// nothing is counted later and no timer stays pending.
func TestStreamIdleClosedStreamIsNotCounted(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := idleHandler(t, clk, time.Minute)
	up := newChunkBody()
	resp := sseResponse(up)
	h.watchStreamIdle(resp, &call{route: routeChat, key: "alice", requestID: "r1"})
	if n := clk.Pending(); n != 1 {
		t.Fatalf("%d timers pending for one watched stream; want 1", n)
	}
	resp.Body.Close()
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timers pending after Close; want 0", n)
	}
	clk.Advance(time.Hour)
	if got := testutil.ToFloat64(h.metrics.streamIdle.WithLabelValues(routeChat.name)); got != 0 {
		t.Errorf("closed stream counted idle %v times; want 0", got)
	}
}

// Only event streams are watched, and only with a positive timeout.
// TestStreamIdleWatchesEveryAnswer: every answer is watched (issue 22: a
// non-SSE answer that stalled after its headers never timed out).
func TestStreamIdleWatchesEveryAnswer(t *testing.T) {
	tests := []struct {
		name        string
		idle        time.Duration
		contentType string
		want        bool
	}{
		{"event stream", time.Minute, "text/event-stream", true},
		{"json", time.Minute, "application/json", true},
		{"disabled", -1, "text/event-stream", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			h := idleHandler(t, clk, tt.idle)
			up := newChunkBody()
			resp := &http.Response{Header: http.Header{"Content-Type": {tt.contentType}}, Body: up}
			h.watchStreamIdle(resp, &call{route: routeChat})
			if got := resp.Body != io.ReadCloser(up); got != tt.want {
				t.Errorf("watched = %v; want %v", got, tt.want)
			}
			if got := clk.Pending() == 1; got != tt.want {
				t.Errorf("timer armed = %v; want %v", got, tt.want)
			}
			resp.Body.Close()
		})
	}
}

func TestIdleErrorEventIsOneEvent(t *testing.T) {
	for _, rt := range []*route{routeChat, routeMessages, routeResponses} {
		ev := string(idleErrorEvent(rt, time.Second))
		if !strings.HasSuffix(ev, "\n\n") || strings.Count(ev, "\n\n") != 1 {
			t.Errorf("%s: idle event %q is not one SSE event", rt.name, ev)
		}
	}
}

// TestIdleJSONAnswerFails: a JSON answer whose upstream goes silent ends
// with a read error at the idle timeout, not with a clean end that would
// pass a cut body for a whole one.
func TestIdleJSONAnswerFails(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := idleHandler(t, clk, time.Minute)
	up := newChunkBody()
	resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: up}
	h.watchStreamIdle(resp, &call{route: routeChat, key: "alice", requestID: "r1"})
	up.chunks <- `{"id":"x",`
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != `{"id":"x",` {
		t.Fatalf("Read() = %q, %v; want the upstream's bytes", buf[:n], err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		got <- err
	}()
	clk.Advance(time.Minute)
	select {
	case err := <-got:
		if !errors.Is(err, errUpstreamIdle) {
			t.Errorf("read after the idle timeout = %v; want errUpstreamIdle", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a read on the silent answer never ended")
	}
	if got := testutil.ToFloat64(h.metrics.streamIdle.WithLabelValues(routeChat.name)); got != 1 {
		t.Errorf("idle counted %v times; want 1", got)
	}
	resp.Body.Close()
}

// TestIsEventStream checks the media type test that replaced
// mime.ParseMediaType on every answer.
func TestIsEventStream(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want bool
	}{
		{"text/event-stream", true},
		{"text/event-stream; charset=utf-8", true},
		{"Text/Event-Stream", true},
		{" text/event-stream ;charset=utf-8", true},
		{"application/json", false},
		{"text/event-streams", false},
		{"", false},
	} {
		if got := isEventStream(tc.ct); got != tc.want {
			t.Errorf("isEventStream(%q) = %v; want %v", tc.ct, got, tc.want)
		}
	}
}
