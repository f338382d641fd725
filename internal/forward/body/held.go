package body

import (
	"bytes"
	"io"
	"sync"
)

// Held is a request's body with its share of the body budget, and the
// reader handed to the transport. The handler frees it when it returns; a
// streamed answer frees it as soon as the transport is done with the body
// (FreeSent). The transport's goroutine may be the one that frees it.
type Held struct {
	*Buf
	res *Reservation
	rd  *Reader // nil until the body is forwarded
	// copied says the transport got private copies of the body (see Out),
	// never rd: once the answer has begun, nothing reads the buffer.
	copied bool
	once   sync.Once
}

// Forward returns the reader the outbound request starts with and the
// function that makes another for a replay (http.Request.GetBody). The
// reverse proxy hands the transport a body whose Close does nothing, so
// this reader is closed by [Held.Free]: without it the buffer never returns
// to the pool and every request allocates anew.
func (h *Held) Forward() (io.ReadCloser, func() (io.ReadCloser, error)) {
	h.rd = h.reader()
	return h.rd, func() (io.ReadCloser, error) { return h.reader(), nil }
}

// Out returns the body to send upstream: an in-memory reader of a small
// one's own buffer, or of a private copy of a small pooled one (the pool
// reuses its buffer once the handler returns), after which the held body is
// no longer read by the transport; a new reader of the held buffer otherwise.
func (h *Held) Out() io.ReadCloser {
	if !h.InMemory() {
		return h.reader()
	}
	h.copied = true
	buf := h.buf
	if h.pool != nil {
		buf = bytes.Clone(buf)
	}
	return io.NopCloser(bytes.NewReader(buf))
}

// Free releases the body, the transport's reader and the reservation once.
func (h *Held) Free() {
	h.once.Do(func() {
		if h.rd != nil {
			_ = h.rd.Close()
		}
		h.release()
		h.res.Release()
	})
}

// FreeSent frees the body now if the transport has read it to the end, or
// else as soon as it does: an upstream may answer before the transport's
// last read, and a read must never find the body closed (that fails the
// request's write and closes its connection).
func (h *Held) FreeSent() {
	if h.copied {
		h.Free()
		return
	}
	if h.rd == nil {
		return
	}
	if h.rd.onEOF(h.Free) {
		h.Free()
	}
}

// Charge makes the body's reservation at least n bytes, for work on it that
// holds more than the body (a translation, a token count); the caller checks
// [Budget.Fits] first. Its errors are [ErrBudget] and the request context's.
func (h *Held) Charge(n int64) error { return h.res.grow(n) }
