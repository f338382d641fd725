package forward

import (
	"bytes"
	"io"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/translate"
)

// DefaultKeepAlive is how long a translated stream may stay silent before
// the proxy writes the client dialect's keep-alive (an Anthropic ping, an
// SSE comment otherwise), so that idle-timeouts of clients and middle boxes
// do not drop a connection while the model thinks.
const DefaultKeepAlive = 15 * time.Second

// xlateBody is the body of a translated stream as the reverse proxy reads
// it: each Read returns the client-dialect events of the upstream bytes that
// have arrived, as soon as they arrive (the reverse proxy flushes every
// write of an event stream), or a keep-alive after a silence. A goroutine
// reads the upstream body so that a silence can be noticed; it hands each
// chunk over and waits until it is translated, so at most one chunk is held.
type xlateBody struct {
	up    io.ReadCloser
	st    *translate.Stream
	out   bytes.Buffer // translated events not yet read
	timer clock.Timer
	idle  time.Duration

	chunks chan chunk
	ack    chan struct{}
	quit   chan struct{}
	pumped chan struct{} // closed when the reading goroutine has returned
	once   sync.Once
	ended  bool // the client's stream has ended; Read returns what is left, then EOF
}

type chunk struct {
	b   []byte
	err error
}

// newXlateBody translates up from the upstream's dialect to the client's.
func newXlateBody(up io.ReadCloser, from, to translate.Dialect, opt translate.StreamOptions, clk clock.Clock, idle time.Duration) (*xlateBody, error) {
	x := &xlateBody{
		up: up, idle: idle,
		chunks: make(chan chunk), ack: make(chan struct{}), quit: make(chan struct{}), pumped: make(chan struct{}),
	}
	st, err := translate.NewStream(from, to, &x.out, opt)
	if err != nil {
		return nil, err
	}
	x.st = st
	x.timer = clk.NewTimer(idle)
	go x.pump()
	return x, nil
}

// pumpBufferSize is the pump's read buffer. The pump holds it for the
// stream's life, blocked in the upstream's Read most of that time, so it is
// no larger than what one Read of the transport hands over: an HTTP/1.1
// connection's reader is 4 KiB (upstream.Config's ReadBufferSize); an
// HTTP/2 stream's larger DATA takes a few Reads, each translated as it
// comes (the translator keeps a partial event between writes).
const pumpBufferSize = 4 << 10

// pump reads the upstream body and hands every chunk to Read. It is the
// one goroutine a translated stream adds (a pass-through stream has none):
// Read must return a keep-alive after a silence while the upstream's Read
// blocks.
func (x *xlateBody) pump() {
	defer close(x.pumped)
	buf := make([]byte, pumpBufferSize)
	for {
		n, err := x.up.Read(buf)
		select {
		case x.chunks <- chunk{buf[:n], err}:
		case <-x.quit:
			return
		}
		if err != nil {
			return
		}
		select {
		case <-x.ack:
		case <-x.quit:
			return
		}
	}
}

// Read returns translated events, waiting for upstream bytes or for the
// keep-alive interval.
func (x *xlateBody) Read(p []byte) (int, error) {
	for x.out.Len() == 0 {
		if x.ended {
			return 0, io.EOF
		}
		select {
		case c := <-x.chunks:
			x.translate(c)
		case <-x.timer.C():
			_ = x.st.KeepAlive()
			x.timer.Reset(x.idle)
		}
	}
	return x.out.Read(p)
}

func (x *xlateBody) translate(c chunk) {
	if len(c.b) > 0 {
		x.timer.Reset(x.idle)
		if _, err := x.st.Write(c.b); err != nil {
			// Unreadable upstream: the client got an error event.
			x.ended = true
		}
	}
	switch {
	case x.ended:
	case x.st.Done():
		// The final event is out: the client need not wait for the
		// upstream's own end (Close drops the rest).
		x.ended = true
	case c.err == io.EOF:
		_ = x.st.Close() // an incomplete answer ends with an error event
		x.ended = true
	case c.err != nil:
		_ = x.st.Fail("reading the upstream stream failed: " + c.err.Error())
		x.ended = true
	default:
		x.ack <- struct{}{}
	}
}

// Close stops the reading goroutine and closes the upstream body.
func (x *xlateBody) Close() error {
	var err error
	x.once.Do(func() {
		close(x.quit)
		err = x.up.Close()
		<-x.pumped
		x.timer.Stop()
	})
	return err
}
