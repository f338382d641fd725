package usage

import (
	"io"
	"sync"
	"sync/atomic"
)

// Tap wraps an answer's body: every Read passes through untouched while a
// finder reads the bytes for usage objects, keeping only those (see
// [finder]): no window of the answer's bytes, so a stream that lasts
// minutes holds a few hundred bytes here. When the body ends (EOF or Close,
// whichever comes first) done receives the usage found, once; ok is false
// when none was (a Chat stream without include_usage, an error, a client
// that left early).
type Tap struct {
	rc   io.ReadCloser
	done func(u Usage, ok bool)
	once sync.Once
	f    finder
}

// Buffers pools the memory taps need only while they read a usage object;
// share one among all taps. It counts the objects let go for their size.
type Buffers struct {
	capture     sync.Pool // *[]byte
	oversized   atomic.Int64
	onOversized func() // also called per answer with an object let go; may be nil
}

// NewBuffers returns an empty pool.
func NewBuffers() *Buffers {
	return &Buffers{capture: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

func (bp *Buffers) getCapture() *[]byte {
	b := bp.capture.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

func (bp *Buffers) putCapture(b *[]byte) {
	if cap(*b) <= MaxObject+1 {
		bp.capture.Put(b)
	}
}

// Oversized is how many answers' taps let a usage object go because they ran past
// [MaxObject] bytes (or nested past the bound): the answers' usage may
// then be missing or incomplete.
func (bp *Buffers) Oversized() int64 { return bp.oversized.Load() }

// NewTap returns a Tap over rc whose end is reported to done.
func (bp *Buffers) NewTap(rc io.ReadCloser, done func(u Usage, ok bool)) *Tap {
	return &Tap{rc: rc, done: done, f: finder{bufs: bp}}
}

// Read implements [io.Reader].
func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 && t.f.bufs != nil {
		t.f.write(p[:n])
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

func (t *Tap) finish() {
	t.once.Do(func() {
		f := &t.f
		if f.oversized {
			f.bufs.oversized.Add(1)
			if f.bufs.onOversized != nil {
				f.bufs.onOversized()
			}
		}
		f.release()
		u, ok := f.result()
		f.bufs = nil // later Reads pass through unread
		t.done(u, ok)
	})
}
