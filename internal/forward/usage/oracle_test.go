package usage

// The tap's algorithm before the stream-aware finder, kept as the oracle
// the finder is fuzzed against (tap_fuzz_test.go): a 4 KiB head and a
// 16 KiB tail ring of the answer's bytes, searched for the first and the
// last whole usage object once the answer ends.

import (
	"bytes"
	"io"
	"sync"
)

const (
	refHeadSize = HeadSize
	refTailSize = 16 << 10
)

// refTap wraps an answer's body: every Read passes through untouched, and the
// first [refHeadSize] bytes and the last [refTailSize] are kept aside. When the
// body ends (EOF or Close, whichever comes first) done receives the usage
// found, once; ok is false when none was (a Chat stream without
// include_usage, an error, a client that left early).
type refTap struct {
	rc   io.ReadCloser
	done func(u Usage, ok bool)
	once sync.Once
	b    *refTapBuf // nil once finished
	bufs *refBuffers
}

// refTapBuf is a tap's pooled memory, so that a tap allocates nothing per
// answer but itself. The tail is a ring of refTailSize bytes: a stream that
// lasts minutes holds 20 KiB here, not a window twice the tail's size.
type refTapBuf struct {
	head [refHeadSize]byte
	n    int // bytes of head used
	ring [refTailSize]byte
	end  int64 // bytes written to the ring in all; the newest is at (end-1)%refTailSize
}

// refBuffers pools the memory of taps; share one among all taps.
type refBuffers struct {
	p       sync.Pool // *refTapBuf
	scratch sync.Pool // *[refTailSize]byte: a tail laid out in order, only while it is parsed
}

// newRefBuffers returns an empty pool.
func newRefBuffers() *refBuffers {
	return &refBuffers{
		p:       sync.Pool{New: func() any { return new(refTapBuf) }},
		scratch: sync.Pool{New: func() any { return new([refTailSize]byte) }},
	}
}

// newTap returns a refTap over rc whose end is reported to done.
func (bp *refBuffers) newTap(rc io.ReadCloser, done func(u Usage, ok bool)) *refTap {
	b := bp.p.Get().(*refTapBuf)
	b.n, b.end = 0, 0
	return &refTap{rc: rc, done: done, b: b, bufs: bp}
}

// Read implements [io.Reader].
func (t *refTap) Read(p []byte) (int, error) {
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
func (t *refTap) Close() error {
	t.finish()
	return t.rc.Close()
}

func (t *refTap) keep(p []byte) {
	b := t.b
	if b == nil {
		return
	}
	if b.n < refHeadSize {
		b.n += copy(b.head[b.n:], p)
	}
	if len(p) > refTailSize {
		b.end += int64(len(p) - refTailSize)
		p = p[len(p)-refTailSize:]
	}
	at := int(b.end % refTailSize)
	n := copy(b.ring[at:], p)
	copy(b.ring[:], p[n:])
	b.end += int64(len(p))
}

// tail lays the ring's bytes out in order in scratch and returns them.
func (b *refTapBuf) tail(scratch *[refTailSize]byte) []byte {
	if b.end <= refTailSize {
		return b.ring[:b.end]
	}
	at := int(b.end % refTailSize)
	n := copy(scratch[:], b.ring[at:])
	copy(scratch[n:], b.ring[:at])
	return scratch[:]
}

func (t *refTap) finish() {
	t.once.Do(func() {
		b := t.b
		scratch := t.bufs.scratch.Get().(*[refTailSize]byte)
		u, ok := refParse(b.head[:b.n], b.tail(scratch))
		t.bufs.scratch.Put(scratch)
		t.b = nil
		t.bufs.p.Put(b)
		t.done(u, ok)
	})
}

// refParse reads the usage of an answer from its head and tail (which may
// overlap, or be the same bytes for a short answer). It takes the first
// "usage" object of the head and overlays the last one of the tail, which
// covers every dialect above. ok is false when no usage object was found.
func refParse(head, tail []byte) (u Usage, ok bool) {
	var r raw
	first := refFindUsage(head, false)
	if first != nil {
		ok = decode(first, &r)
	}
	if obj := refFindUsage(tail, true); obj != nil && !bytes.Equal(obj, first) {
		// (A short answer's head and tail hold the same object: merging
		// it onto itself would change nothing, so it is read once.)
		var last raw
		if decode(obj, &last) {
			r.merge(last)
			ok = true
		}
	}
	if !ok {
		return Usage{}, false
	}
	return r.usage(), true
}

// refFindUsage returns the object value of a "usage" key in b, the first or the
// last one that is whole. A "usage" inside a JSON string is escaped there
// (\"usage\"), so a bare one is a key or a string value; a string value is
// not followed by a colon.
func refFindUsage(b []byte, last bool) []byte {
	var found []byte
	for rest, off := b, 0; ; {
		i := bytes.Index(rest, usageKey)
		if i < 0 {
			return found
		}
		at := off + i
		if at == 0 || b[at-1] != '\\' {
			if obj := refObjectAfterColon(b[at+len(usageKey):]); obj != nil {
				if !last {
					return obj
				}
				found = obj
			}
		}
		off = at + len(usageKey)
		rest = b[off:]
	}
}

// refObjectAfterColon returns the JSON object after ws ':' ws at the start of
// b, or nil when none is there whole.
func refObjectAfterColon(b []byte) []byte {
	i := refSkipSpace(b, 0)
	if i >= len(b) || b[i] != ':' {
		return nil
	}
	i = refSkipSpace(b, i+1)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	end := refMatchObject(b[i:])
	if end < 0 {
		return nil
	}
	return b[i : i+end]
}

func refSkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// refMatchObject returns the length of the object starting at b[0] == '{',
// or -1 when it does not end within b. Usage objects are small and shallow;
// deeper nesting than maxDepth is refused.
func refMatchObject(b []byte) int {
	const maxDepth = 8
	depth, inStr := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > maxDepth {
				return -1
			}
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
