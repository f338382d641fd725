package usage

import "bytes"

// MaxObject bounds one usage object the [Tap] keeps while it reads it: a
// "usage" key whose object runs longer is let go (and counted, see
// [Buffers.Oversized]). Real usage objects are a few hundred bytes.
const MaxObject = 4 << 10

// maxOpen bounds the usage objects being read at once (a "usage" key inside
// an object still open); only crafted input nests them, and past the bound
// the oldest is let go.
const maxOpen = 32

// HeadSize is how far into an answer the first usage object must end to
// count as the first (an Anthropic message_start's): the byte window the
// tap used to keep, so figures stay what they were.
const HeadSize = 4 << 10

var usageKey = []byte(`"usage"`)

// finder reads an answer's bytes as they pass and keeps only the usage
// objects it will report: the first one that ends within the first
// [HeadSize] bytes and the last one (by where its key starts). A usage
// object is the JSON object after a "usage" key: `"usage"` not preceded by
// a backslash (inside a JSON string it is escaped), then optional
// whitespace, a colon, optional whitespace and an object whose brackets
// balance (strings and escapes respected, nesting at most matchDepth). This
// holds for every dialect's answer, event stream or JSON (see the package
// comment), so the finder needs no framing: an SSE event's line, a
// response.completed's whole response, a JSON body all read the same.
type finder struct {
	pos  int64 // bytes read so far
	prev byte  // the byte at pos-1
	k    int   // bytes of usageKey matched so far
	// The opening quote of the key being matched: where, and the byte before.
	quoteAt   int64
	quotePrev byte
	open      []candidate // keys whose object is not yet whole, oldest first
	capture   *[]byte     // bytes from captureAt on, while an object is open; pooled
	captureAt int64
	first     []byte
	firstKey  int64
	last      []byte
	lastKey   int64
	bufs      *Buffers
	oversized bool // an object was let go for its length (or the nesting bound)
}

// matchDepth bounds the nesting of a usage object.
const matchDepth = 8

type candidate struct {
	key   int64 // offset of the key's opening quote
	start int64 // offset of the object's '{' (phase inObject)
	phase uint8
	depth uint8
	inStr bool
	esc   bool
}

const (
	wantColon uint8 = iota
	wantBrace
	inObject
)

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// write reads p.
func (f *finder) write(p []byte) {
	for len(p) > 0 {
		if f.k == 0 && len(f.open) == 0 {
			// Nothing pending: skip to the next key, or to the last bytes
			// that could begin one that p cuts.
			i := bytes.Index(p, usageKey)
			if i < 0 {
				f.skip(p)
				return
			}
			if i > 0 {
				f.prev = p[i-1]
				f.pos += int64(i)
				p = p[i:]
			}
		}
		f.byte1(p[0])
		p = p[1:]
	}
}

// skip reads p, which holds no whole key: it only sets the match state
// for a key p's end may begin.
func (f *finder) skip(p []byte) {
	for j := min(len(p), len(usageKey)-1); j > 0; j-- {
		if bytes.Equal(p[len(p)-j:], usageKey[:j]) {
			f.k, f.quoteAt, f.quotePrev = j, f.pos+int64(len(p)-j), f.prev
			if j < len(p) {
				f.quotePrev = p[len(p)-j-1]
			}
			break
		}
	}
	f.prev = p[len(p)-1]
	f.pos += int64(len(p))
}

// byte1 reads one byte.
func (f *finder) byte1(c byte) {
	if len(f.open) > 0 {
		f.step(c)
	}
	switch {
	case c == usageKey[f.k]:
		if f.k == 0 {
			f.quoteAt, f.quotePrev = f.pos, f.prev
		}
		if f.k++; f.k == len(usageKey) {
			f.k = 0
			if f.quoteAt == 0 || f.quotePrev != '\\' {
				f.add(candidate{key: f.quoteAt, phase: wantColon})
			}
		}
	case c == '"':
		f.k = 1
		f.quoteAt, f.quotePrev = f.pos, f.prev
	default:
		f.k = 0
	}
	f.prev = c
	f.pos++
}

func (f *finder) add(c candidate) {
	if len(f.open) == maxOpen {
		f.oversized = true
		f.open = append(f.open[:0], f.open[1:]...)
		f.trimCapture()
	}
	if f.open == nil {
		f.open = make([]candidate, 0, 2)
	}
	f.open = append(f.open, c)
}

// step moves every open candidate past c.
func (f *finder) step(c byte) {
	if f.capture != nil {
		*f.capture = append(*f.capture, c)
	}
	kept := f.open[:0]
	for _, cd := range f.open {
		switch cd.phase {
		case wantColon:
			if c == ':' {
				cd.phase = wantBrace
			} else if !isSpace(c) {
				continue
			}
		case wantBrace:
			if c != '{' {
				if isSpace(c) {
					break
				}
				continue
			}
			cd.phase, cd.start, cd.depth = inObject, f.pos, 1
			if f.capture == nil {
				f.capture = f.bufs.getCapture()
				f.captureAt = f.pos
				*f.capture = append(*f.capture, c)
			}
		case inObject:
			if !f.match(&cd, c) {
				continue
			}
			if cd.depth == 0 {
				f.found(cd)
				continue
			}
			if f.pos-cd.start+1 >= MaxObject {
				f.oversized = true
				continue
			}
		}
		kept = append(kept, cd)
	}
	f.open = kept
	f.trimCapture()
}

// match moves an object candidate past c; false when it is not one.
func (f *finder) match(cd *candidate, c byte) bool {
	if cd.inStr {
		switch {
		case cd.esc:
			cd.esc = false
		case c == '\\':
			cd.esc = true
		case c == '"':
			cd.inStr = false
		}
		return true
	}
	switch c {
	case '"':
		cd.inStr = true
	case '{', '[':
		if cd.depth++; cd.depth > matchDepth {
			return false
		}
	case '}', ']':
		cd.depth--
	}
	return true
}

// found keeps a whole object (it ends at f.pos) as the first or the last.
func (f *finder) found(cd candidate) {
	obj := (*f.capture)[cd.start-f.captureAt : f.pos-f.captureAt+1]
	if f.pos < HeadSize && (f.first == nil || cd.key < f.firstKey) {
		f.first, f.firstKey = append(f.first[:0], obj...), cd.key
	}
	if f.last == nil || cd.key > f.lastKey {
		f.last, f.lastKey = append(f.last[:0], obj...), cd.key
	}
}

// trimCapture gives the capture buffer back when no object is open, and
// drops its bytes before the oldest open object's.
func (f *finder) trimCapture() {
	if f.capture == nil {
		return
	}
	from := int64(-1)
	for _, cd := range f.open {
		if cd.phase == inObject && (from < 0 || cd.start < from) {
			from = cd.start
		}
	}
	switch {
	case from < 0:
		f.bufs.putCapture(f.capture)
		f.capture = nil
	case from > f.captureAt:
		b := *f.capture
		n := copy(b, b[from-f.captureAt:])
		*f.capture = b[:n]
		f.captureAt = from
	}
}

// release gives back what the finder holds from the pool.
func (f *finder) release() {
	if f.capture != nil {
		f.bufs.putCapture(f.capture)
		f.capture = nil
	}
	f.open = nil
}

// result is the usage of the answer read so far: the first object's
// figures overlaid with the last one's.
func (f *finder) result() (Usage, bool) {
	return parsePair(f.first, f.last)
}
