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
	head []byte
	buf  *[]byte // tail window: up to 2*TailSize, compacted to TailSize
	pool *sync.Pool
}

// Buffers pools the tails of taps; share one among all taps.
type Buffers struct{ p sync.Pool }

// NewBuffers returns an empty pool.
func NewBuffers() *Buffers {
	return &Buffers{p: sync.Pool{New: func() any { b := make([]byte, 0, 2*TailSize); return &b }}}
}

// NewTap returns a Tap over rc whose end is reported to done.
func (bp *Buffers) NewTap(rc io.ReadCloser, done func(u Usage, ok bool)) *Tap {
	b := bp.p.Get().(*[]byte)
	*b = (*b)[:0]
	return &Tap{rc: rc, done: done, buf: b, pool: &bp.p}
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
	if t.buf == nil {
		return
	}
	if len(t.head) < HeadSize {
		if t.head == nil {
			t.head = make([]byte, 0, HeadSize)
		}
		t.head = append(t.head, p[:min(len(p), HeadSize-len(t.head))]...)
	}
	if len(p) >= TailSize {
		*t.buf = append((*t.buf)[:0], p[len(p)-TailSize:]...)
		return
	}
	b := *t.buf
	if len(b)+len(p) > cap(b) {
		// Keep the newest TailSize-len(p) bytes, then append: the window
		// never grows past its capacity.
		keep := TailSize - len(p)
		b = b[:copy(b, b[len(b)-keep:])]
	}
	*t.buf = append(b, p...)
}

func (t *Tap) finish() {
	t.once.Do(func() {
		b := *t.buf
		tail := b[max(0, len(b)-TailSize):]
		u, ok := Parse(t.head, tail)
		*t.buf = b[:0]
		t.pool.Put(t.buf)
		t.buf = nil
		t.head = nil
		t.done(u, ok)
	})
}
