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
	pool *sync.Pool
}

// tapBuf is a tap's pooled memory, so that a tap allocates nothing per
// answer but itself.
type tapBuf struct {
	head [HeadSize]byte
	n    int    // bytes of head used
	tail []byte // window: up to 2*TailSize, compacted to TailSize
}

// Buffers pools the memory of taps; share one among all taps.
type Buffers struct{ p sync.Pool }

// NewBuffers returns an empty pool.
func NewBuffers() *Buffers {
	return &Buffers{p: sync.Pool{New: func() any { return &tapBuf{tail: make([]byte, 0, 2*TailSize)} }}}
}

// NewTap returns a Tap over rc whose end is reported to done.
func (bp *Buffers) NewTap(rc io.ReadCloser, done func(u Usage, ok bool)) *Tap {
	b := bp.p.Get().(*tapBuf)
	b.n, b.tail = 0, b.tail[:0]
	return &Tap{rc: rc, done: done, b: b, pool: &bp.p}
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
	if len(p) >= TailSize {
		b.tail = append(b.tail[:0], p[len(p)-TailSize:]...)
		return
	}
	if len(b.tail)+len(p) > cap(b.tail) {
		// Keep the newest TailSize-len(p) bytes, then append: the window
		// never grows past its capacity.
		keep := TailSize - len(p)
		b.tail = b.tail[:copy(b.tail, b.tail[len(b.tail)-keep:])]
	}
	b.tail = append(b.tail, p...)
}

func (t *Tap) finish() {
	t.once.Do(func() {
		b := t.b
		u, ok := Parse(b.head[:b.n], b.tail[max(0, len(b.tail)-TailSize):])
		t.b = nil
		t.pool.Put(b)
		t.done(u, ok)
	})
}
