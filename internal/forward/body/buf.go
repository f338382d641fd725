// Package body holds request bodies in memory for the proxy: read within a
// size limit, a read deadline and the process-wide in-flight budget, kept in
// pooled buffers, handed to the transport (and replayed once after an
// upstream 401 or a pool failover), and freed as soon as nothing reads them.
// It is the only owner of body memory; the handler asks it for a [Held]
// body and frees that once.
package body

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// ErrTooLarge is returned for a body over the limit.
var ErrTooLarge = errors.New("request body too large")

// maxPooledBody bounds the buffers kept for reuse, so that one huge request
// does not pin its memory for the life of the process.
const maxPooledBody = 1 << 20

// Small is the largest request body the transport gets as a private
// in-memory copy rather than a reader of the pooled buffer. net/http writes
// a request whose body it knows to be in memory with its headers in one
// write; any other body gets its headers flushed first, a second write (and
// TCP segment) per request. The copy is the transport's own, so it may
// outlive the handler; larger bodies take several writes anyway and are not
// copied.
const Small = 8 << 10

// Buf is a request body held in memory so that it can be inspected and
// replayed. It returns to its pool when the handler and every reader handed
// to the transport have let go: the transport may close a request body
// after RoundTrip returns, so the buffer cannot be reused before that.
type Buf struct {
	buf  []byte
	refs atomic.Int32
	pool *Pool
}

// Pool pools body buffers; it counts them so that tests can see reuse.
type Pool struct {
	p         sync.Pool
	made, out atomic.Int64
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	p := &Pool{}
	p.p.New = func() any { p.made.Add(1); return &Buf{buf: make([]byte, 0, 16<<10)} }
	return p
}

// Stats returns how many pooled buffers were made and how many are held now.
func (p *Pool) Stats() (made, held int64) { return p.made.Load(), p.out.Load() }

func (p *Pool) get() *Buf {
	p.out.Add(1)
	b := p.p.Get().(*Buf)
	b.pool = p
	return b
}

// Bytes returns the body. It must not be used after the body is freed.
func (b *Buf) Bytes() []byte { return b.buf }

// Set replaces the body (a translated one). It runs before any reader of
// the body exists.
func (b *Buf) Set(p []byte) { b.buf = p }

// Replace puts the JSON string id in place of the string content at
// buf[start:end] (its quotes at start-1 and end), keeping every other byte.
// It runs before any reader of the body exists.
func (b *Buf) Replace(start, end int, id string) {
	q, _ := json.Marshal(id) // a string always marshals
	old := b.buf
	nb := make([]byte, 0, len(old)-(end-start+2)+len(q))
	nb = append(nb, old[:start-1]...)
	nb = append(nb, q...)
	nb = append(nb, old[end+1:]...)
	b.buf = nb
}

// InMemory says whether the transport gets the body as an in-memory reader
// (see [Held.Out]): a body with a buffer of its own, or a small pooled one.
func (b *Buf) InMemory() bool { return b.pool == nil || len(b.buf) <= Small }

// errLength is read's error for a body that ends before, or runs past, its
// announced Content-Length (net/http reports the first itself).
var errLength = errors.New("request body does not match its Content-Length")

// read reads r up to limit bytes into a pooled buffer. sizeHint is the
// request's Content-Length (or -1). The body's bytes, and the buffer it
// allocates for them, never exceed what res (nil: no budget) has admitted,
// and both grow as the bytes arrive (see [Chunk]): an announced length is a
// promise, not bytes, so it bounds the growth but is never reserved up
// front. When growth finds no room, the bytes read so far are dropped and
// the error is res's ([ErrBudget], [ErrPreempted], or the request's).
func read(pool *Pool, r io.Reader, sizeHint, limit int64, res *Reservation) (*Buf, error) {
	if sizeHint > limit {
		return nil, ErrTooLarge
	}
	// The most the buffer needs: the announced length and one byte for the
	// read that sees EOF, or one byte past the limit.
	most := limit + 1
	if sizeHint >= 0 {
		most = sizeHint + 1
	}
	var b *Buf
	if sizeHint >= 0 && sizeHint <= Small {
		// A small body of known length gets a buffer of its own, exactly
		// its size: the transport can then be handed it as it is (see
		// Held.Out), and no pooled 16 KiB buffer sits under a small
		// request for the life of its stream.
		b = &Buf{buf: make([]byte, 0, most)}
	} else {
		b = pool.get()
	}
	b.refs.Store(1)
	buf := b.buf[:0]
	fail := func(err error) (*Buf, error) {
		b.buf = buf
		b.release()
		return nil, err
	}
	budgeted := res.budgeted()
	// The first grant is a step. A pooled buffer may be larger (up to
	// maxPooledBody): reused memory the budget does not count, of which a
	// body uses no more than it was granted.
	first := min(most, Chunk)
	for {
		room := int64(cap(buf))
		if budgeted {
			if held := res.held.Load(); int64(len(buf)) >= held {
				want := first
				if len(buf) > 0 || held > 0 {
					want = nextSize(int64(len(buf)), most)
				}
				if err := res.grow(want); err != nil {
					return fail(err)
				}
				if res.held.Load() <= int64(len(buf)) {
					return fail(ErrTooLarge) // over the key's share: the body limit should have said so
				}
			}
			room = min(room, res.held.Load())
		}
		if int64(len(buf)) == room {
			// A larger buffer, of exactly the admitted size: the copy's
			// old buffer is garbage at once.
			size := nextSize(int64(len(buf)), most)
			if budgeted {
				size = min(size, res.held.Load())
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			buf = nb
			room = size
		}
		// Never ask for more than one byte past the limit: a chunked body
		// (no Content-Length) is refused as soon as it is too large.
		end := min(room, limit+1, most)
		n, err := r.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		switch {
		case int64(len(buf)) > limit:
			return fail(ErrTooLarge)
		case sizeHint >= 0 && int64(len(buf)) > sizeHint:
			return fail(errLength)
		case err == io.EOF && sizeHint >= 0 && int64(len(buf)) < sizeHint:
			return fail(io.ErrUnexpectedEOF)
		case err == io.EOF:
			b.buf = buf
			return b, nil
		case err != nil:
			return fail(err)
		}
	}
}

// nextSize is the size a body of n bytes grows to: a step ([Chunk]), or
// half its size past two steps, so that a large body is copied a bounded
// number of times; never past most.
func nextSize(n, most int64) int64 { return min(most, n+max(Chunk, n/2)) }

// reader returns a new reader of the body; closing it drops its reference.
func (b *Buf) reader() *Reader {
	b.refs.Add(1)
	r := &Reader{b: b}
	r.r.Reset(b.buf)
	return r
}

// release drops one reference; the last one returns the buffer to the pool
// (a buffer of its own, pool nil, is left to the collector).
func (b *Buf) release() {
	if b.refs.Add(-1) != 0 || b.pool == nil {
		return
	}
	b.pool.out.Add(-1)
	if cap(b.buf) <= maxPooledBody {
		b.buf = b.buf[:0]
		b.pool.p.Put(b)
	}
}

// errClosed is what a request body reader returns once closed.
var errClosed = errors.New("request body already closed")

// Reader reads a pooled body. The reverse proxy closes the outbound body
// when the handler returns, but the transport's write loop may still be
// reading it (an upstream that answers before reading the whole body); the
// buffer may then already serve another request. So Read and Close exclude
// each other, and a Read after Close fails instead of reading memory that is
// no longer this request's.
type Reader struct {
	mu     sync.Mutex
	r      bytes.Reader
	b      *Buf
	closed bool
	eof    bool   // a Read has returned io.EOF: the reader is done with
	atEOF  func() // called once, outside the lock, when eof is reached
}

func (r *Reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, errClosed
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
func (r *Reader) onEOF(f func()) (done bool) {
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
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.b.release()
	}
	return nil
}
