package server

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// memListener is a [net.Listener] whose connections live in memory, made by
// [memListener.DialContext]: the REST gateway reaches the broker's own gRPC
// server through it without a socket, a port or TLS to itself.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// memPipeSize bounds the bytes in flight one way on a connection; a writer
// waits while the reader is this far behind. HTTP/2 flow control keeps gRPC
// well below it in practice.
const memPipeSize = 1 << 20

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next DialContext, or returns [net.ErrClosed] once the
// listener is closed.
func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and DialContext fail; connections already made stay
// open until their ends are closed. It is idempotent.
func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr names the listener; the address means nothing to the network.
func (l *memListener) Addr() net.Addr { return memAddr{} }

// DialContext connects to the listener: it returns the client end of a new
// connection once Accept has taken the server end, or fails when ctx ends or
// the listener closes.
func (l *memListener) DialContext(ctx context.Context) (net.Conn, error) {
	client, server := memPipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, net.ErrClosed
	}
}

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "broker-gateway" }

// memPipe returns the two ends of a buffered, full-duplex in-memory
// connection. Unlike [net.Pipe], a write returns once its bytes are
// buffered, without waiting for the reader, so the HTTP/2 writer and reader
// of each side run without handing off to each other on every frame.
func memPipe() (net.Conn, net.Conn) {
	a, b := newHalfPipe(), newHalfPipe()
	return &memConn{r: a, w: b}, &memConn{r: b, w: a}
}

// halfPipe is one direction of a memConn: bytes written by one end, read by
// the other.
type halfPipe struct {
	mu      sync.Mutex
	data    []byte
	off     int           // data[off:] is unread
	changed chan struct{} // closed and replaced on every change of the fields
	// readerGone: the reading end was closed; writerGone: the writing end was.
	readerGone, writerGone bool
	readDeadline           time.Time
	writeDeadline          time.Time
}

func newHalfPipe() *halfPipe { return &halfPipe{changed: make(chan struct{})} }

// broadcast wakes every waiter; p.mu is held.
func (p *halfPipe) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait releases p.mu until the next change or the deadline, and takes it
// again; the caller checks the deadline.
func (p *halfPipe) wait(deadline time.Time) {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	ch := p.changed
	p.mu.Unlock()
	select {
	case <-ch:
	case <-timeout:
	}
	p.mu.Lock()
}

// past reports whether a deadline is set and has passed.
func past(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// memConn is one end of a memPipe: it reads r and writes w.
type memConn struct {
	r, w *halfPipe
	once sync.Once
}

func (c *memConn) Read(b []byte) (int, error) {
	p := c.r
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.readerGone:
			return 0, net.ErrClosed
		case past(p.readDeadline):
			return 0, os.ErrDeadlineExceeded
		case p.off < len(p.data):
			if len(b) == 0 {
				return 0, nil
			}
			n := copy(b, p.data[p.off:])
			p.off += n
			if p.off == len(p.data) {
				p.data, p.off = p.data[:0], 0
			}
			p.broadcast()
			return n, nil
		case p.writerGone:
			return 0, io.EOF
		}
		p.wait(p.readDeadline)
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	p := c.w
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for {
		switch {
		case p.writerGone:
			return n, net.ErrClosed
		case p.readerGone:
			return n, io.ErrClosedPipe
		case past(p.writeDeadline):
			return n, os.ErrDeadlineExceeded
		case len(b) == 0:
			return n, nil
		}
		if free := memPipeSize - (len(p.data) - p.off); free > 0 {
			if p.off > 0 && len(p.data)+min(free, len(b)) > cap(p.data) {
				p.data, p.off = p.data[:copy(p.data, p.data[p.off:])], 0
			}
			k := min(free, len(b))
			p.data = append(p.data, b[:k]...)
			b, n = b[k:], n+k
			p.broadcast()
			continue
		}
		p.wait(p.writeDeadline)
	}
}

// Close ends both directions: the peer reads what was written and then EOF,
// and its writes fail.
func (c *memConn) Close() error {
	c.once.Do(func() {
		c.r.mu.Lock()
		c.r.readerGone = true
		c.r.broadcast()
		c.r.mu.Unlock()
		c.w.mu.Lock()
		c.w.writerGone = true
		c.w.broadcast()
		c.w.mu.Unlock()
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

func (c *memConn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.r.readDeadline = t
	c.r.broadcast()
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	c.w.writeDeadline = t
	c.w.broadcast()
	return nil
}
