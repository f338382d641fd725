package forward

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// errBodyTooLarge is returned by readBody for a body over the limit.
var errBodyTooLarge = errors.New("request body too large")

// maxPooledBody bounds the buffers kept for reuse, so that one huge request
// does not pin its memory for the life of the process.
const maxPooledBody = 1 << 20

// bodyBuf is a request body held in memory so that it can be inspected and
// replayed once. It returns to its pool when the handler and every reader
// handed to the transport have let go: the transport may close a request
// body after RoundTrip returns, so the buffer cannot be reused before that.
type bodyBuf struct {
	buf  []byte
	refs atomic.Int32
	pool *sync.Pool
}

func newBodyPool() *sync.Pool {
	return &sync.Pool{New: func() any { return &bodyBuf{buf: make([]byte, 0, 16<<10)} }}
}

// readBody reads r up to limit bytes into a pooled buffer. sizeHint is the
// request's Content-Length (or -1). The body's bytes never exceed what res
// (nil: no budget) has admitted: a known length is admitted before the first
// read, an unknown one in doubling steps as it arrives.
func readBody(pool *sync.Pool, r io.Reader, sizeHint, limit int64, res *reservation) (*bodyBuf, error) {
	if sizeHint > limit {
		return nil, errBodyTooLarge
	}
	if sizeHint >= 0 {
		if err := res.grow(sizeHint + 1); err != nil { // +1: the read that sees EOF
			return nil, err
		}
	}
	var b *bodyBuf
	if sizeHint >= 0 && sizeHint <= smallBody {
		// A small body of known length gets a buffer of its own, exactly
		// its size: the transport can then be handed it as it is (see
		// call.outBody), and no pooled 16 KiB buffer sits under a small
		// request for the life of its stream.
		b = &bodyBuf{buf: make([]byte, 0, sizeHint+1)}
	} else {
		b = pool.Get().(*bodyBuf)
		b.pool = pool
	}
	b.refs.Store(1)
	buf := b.buf[:0]
	if sizeHint > int64(cap(buf)) {
		buf = make([]byte, 0, sizeHint+1) // +1 so the EOF read needs no growth
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		// Never ask for more than one byte past the limit: a chunked body
		// (no Content-Length) is refused as soon as it is too large.
		end := min(int64(cap(buf)), limit+1)
		if res.budgeted() {
			if held := res.held.Load(); int64(len(buf)) >= held {
				if err := res.grow(min(max(2*held, int64(len(buf))+64<<10), limit+1)); err != nil {
					b.buf = buf
					b.release()
					return nil, err
				}
			}
			end = min(end, res.held.Load())
		}
		n, err := r.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			b.buf = buf
			b.release()
			return nil, errBodyTooLarge
		}
		if err == io.EOF {
			b.buf = buf
			return b, nil
		}
		if err != nil {
			b.buf = buf
			b.release()
			return nil, err
		}
	}
}

// heldBody is a request's body with its share of the body budget, and the
// reader handed to the transport. The handler frees it when it returns; a
// streamed answer frees it as soon as the transport is done with the body
// (freeSent). The transport's goroutine may be the one that frees it.
type heldBody struct {
	body *bodyBuf
	res  *reservation
	rd   *bodyReader // nil until the body is forwarded
	// copied says the transport got private copies of the body (see
	// call.outBody), never rd: once the answer has begun, nothing reads the
	// buffer.
	copied bool
	once   sync.Once
}

// free releases the body, the transport's reader and the reservation once.
func (h *heldBody) free() {
	h.once.Do(func() {
		if h.rd != nil {
			_ = h.rd.Close()
		}
		h.body.release()
		h.res.release()
	})
}

// freeSent frees the body now if the transport has read it to the end, or
// else as soon as it does: an upstream may answer before the transport's
// last read, and a read must never find the body closed (that fails the
// request's write and closes its connection).
func (h *heldBody) freeSent() {
	if h.copied {
		h.free()
		return
	}
	if h.rd == nil {
		return
	}
	if h.rd.onEOF(h.free) {
		h.free()
	}
}

// reader returns a new reader of the body; closing it drops its reference.
func (b *bodyBuf) reader() *bodyReader {
	b.refs.Add(1)
	r := &bodyReader{b: b}
	r.r.Reset(b.buf)
	return r
}

// release drops one reference; the last one returns the buffer to the pool
// (a buffer of its own, pool nil, is left to the collector).
func (b *bodyBuf) release() {
	if b.refs.Add(-1) != 0 || b.pool == nil {
		return
	}
	if cap(b.buf) <= maxPooledBody {
		b.buf = b.buf[:0]
		b.pool.Put(b)
	}
}

// errBodyClosed is what a request body reader returns once closed.
var errBodyClosed = errors.New("request body already closed")

// bodyReader reads a pooled body. The reverse proxy closes the outbound body
// when the handler returns, but the transport's write loop may still be
// reading it (an upstream that answers before reading the whole body); the
// buffer may then already serve another request. So Read and Close exclude
// each other, and a Read after Close fails instead of reading memory that is
// no longer this request's.
type bodyReader struct {
	mu     sync.Mutex
	r      bytes.Reader
	b      *bodyBuf
	closed bool
	eof    bool   // a Read has returned io.EOF: the reader is done with
	atEOF  func() // called once, outside the lock, when eof is reached
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, errBodyClosed
	}
	n, err := r.r.Read(p)
	var then func()
	if err == io.EOF && !r.eof {
		r.eof, then, r.atEOF = true, r.atEOF, nil
	}
	r.mu.Unlock()
	if then != nil {
		then()
	}
	return n, err
}

// onEOF says whether the reader has been read to io.EOF; if not, f runs
// when it is. Having read the last byte is not enough: a transport that
// knows the length reads once more to check that nothing follows.
func (r *bodyReader) onEOF(f func()) (done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return true
	}
	r.atEOF = f
	return false
}

// Close releases the reader's reference once, however often it is called
// (the transport and the reverse proxy both close request bodies).
func (r *bodyReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.b.release()
	}
	return nil
}
