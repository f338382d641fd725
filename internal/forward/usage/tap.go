package usage

import (
	"io"
	"sync"
)

// Tap wraps an answer's body: every Read passes through untouched, and the
// first [HeadSize] bytes and the last [TailSize] are kept aside. When the
// body ends (EOF or Close, whichever comes first) done receives the usage
// found, once; ok is false when none was (a Chat stream without
// include_usage, an error, a client that left early).
type Tap struct {
	rc   io.ReadCloser
	done func(u Usage, ok bool)
	once sync.Once
	b    *tapBuf // nil once finished
	bufs *Buffers
}

// tapBuf is a tap's pooled memory, so that a tap allocates nothing per
// answer but itself. The tail is a ring of TailSize bytes: a stream that
// lasts minutes holds 20 KiB here, not a window twice the tail's size.
type tapBuf struct {
	head [HeadSize]byte
	n    int // bytes of head used
	ring [TailSize]byte
	end  int64 // bytes written to the ring in all; the newest is at (end-1)%TailSize
}

// Buffers pools the memory of taps; share one among all taps.
type Buffers struct {
	p       sync.Pool // *tapBuf
	scratch sync.Pool // *[TailSize]byte: a tail laid out in order, only while it is parsed
}

// NewBuffers returns an empty pool.
func NewBuffers() *Buffers {
	return &Buffers{
		p:       sync.Pool{New: func() any { return new(tapBuf) }},
		scratch: sync.Pool{New: func() any { return new([TailSize]byte) }},
	}
}

// NewTap returns a Tap over rc whose end is reported to done.
func (bp *Buffers) NewTap(rc io.ReadCloser, done func(u Usage, ok bool)) *Tap {
	b := bp.p.Get().(*tapBuf)
	b.n, b.end = 0, 0
	return &Tap{rc: rc, done: done, b: b, bufs: bp}
}

// Read implements [io.Reader].
func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 {
		t.keep(p[:n])
	}
	if err == io.EOF {
		t.finish()
	}
	return n, err
}

// Close reports the usage (if the end was not read) and closes the body.
func (t *Tap) Close() error {
	t.finish()
	return t.rc.Close()
}

func (t *Tap) keep(p []byte) {
	b := t.b
	if b == nil {
		return
	}
	if b.n < HeadSize {
		b.n += copy(b.head[b.n:], p)
	}
	if len(p) > TailSize {
		b.end += int64(len(p) - TailSize)
		p = p[len(p)-TailSize:]
	}
	at := int(b.end % TailSize)
	n := copy(b.ring[at:], p)
	copy(b.ring[:], p[n:])
	b.end += int64(len(p))
}

// tail lays the ring's bytes out in order in scratch and returns them.
func (b *tapBuf) tail(scratch *[TailSize]byte) []byte {
	if b.end <= TailSize {
		return b.ring[:b.end]
	}
	at := int(b.end % TailSize)
	n := copy(scratch[:], b.ring[at:])
	copy(scratch[n:], b.ring[:at])
	return scratch[:]
}

func (t *Tap) finish() {
	t.once.Do(func() {
		b := t.b
		scratch := t.bufs.scratch.Get().(*[TailSize]byte)
		u, ok := Parse(b.head[:b.n], b.tail(scratch))
		t.bufs.scratch.Put(scratch)
		t.b = nil
		t.bufs.p.Put(b)
		t.done(u, ok)
	})
}
