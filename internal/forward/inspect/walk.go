package inspect

import (
	"bytes"
	"errors"
)

// errMalformed is what the walker reports for a body that is not JSON.
var errMalformed = errors.New("malformed JSON")

// errStopped is what the walker reports once its done channel is closed
// (the client went away).
var errStopped = errors.New("inspection stopped")

// stopCheckEvery is how many steps the walker takes between looks at its
// done channel.
const stopCheckEvery = 1024

// maxJSONDepth bounds nesting, as encoding/json does, so that a body of
// brackets cannot exhaust the stack.
const maxJSONDepth = 10000

// jsonWalker steps through a JSON document in place, without allocating,
// so that inspect can skip the bulk of a long conversation and decode only
// the few values it needs. It checks the structure (brackets, commas,
// colons, literals); it does not check escapes or control characters inside
// strings, nor the digits of numbers: the values it hands out are decoded by
// encoding/json, which does, and the upstream rejects anything else.
//
// While it skips, it notes any object member "type" whose value may name an
// image (see [isImageType]), so that inspect decodes only the turns that
// may carry one.
type jsonWalker struct {
	data  []byte
	pos   int
	depth int
	// sawImage is set when a skipped object had a "type" member naming an
	// image type; the caller clears it.
	sawImage bool
	// steps counts the values visited (and bytes unescaped): the work done,
	// which must stay linear in the body's size.
	steps int
	// done, when closed, stops the walk with errStopped.
	done <-chan struct{}
}

// step counts one value visited and reports errStopped once done is
// closed (looked at every stopCheckEvery steps).
func (w *jsonWalker) step() error {
	w.steps++
	if w.done != nil && w.steps%stopCheckEvery == 0 {
		select {
		case <-w.done:
			return errStopped
		default:
		}
	}
	return nil
}

// next skips whitespace and returns the byte there, or 0 at the end.
func (w *jsonWalker) next() byte {
	for ; w.pos < len(w.data); w.pos++ {
		switch c := w.data[w.pos]; c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	return 0
}

// end reports an error unless only whitespace is left.
func (w *jsonWalker) end() error {
	if w.next() != 0 || w.pos != len(w.data) {
		return errMalformed
	}
	return nil
}

// enter consumes the opening bracket of an object or array.
func (w *jsonWalker) enter(open byte) error {
	if w.next() != open {
		return errMalformed
	}
	w.depth++
	if w.depth > maxJSONDepth {
		return errMalformed
	}
	w.pos++
	return nil
}

// more reports whether another member or element follows inside the
// container entered last, consuming the separating comma, or else the
// closing bracket. first is true before the first member.
func (w *jsonWalker) more(closing byte, first bool) (bool, error) {
	c := w.next()
	if c == closing {
		w.pos++
		w.depth--
		return false, nil
	}
	if c == 0 {
		return false, errMalformed // unclosed
	}
	if first {
		return true, nil
	}
	if c != ',' {
		return false, errMalformed
	}
	w.pos++
	if c := w.next(); c == closing || c == 0 {
		return false, errMalformed // a trailing comma
	}
	return true, nil
}

// key consumes an object member's name and its colon and returns the name
// as it stands in the document, escapes included, without the quotes.
func (w *jsonWalker) key() ([]byte, error) {
	if w.next() != '"' {
		return nil, errMalformed
	}
	start := w.pos + 1
	if err := w.skipString(); err != nil {
		return nil, err
	}
	k := w.data[start : w.pos-1]
	if w.next() != ':' {
		return nil, errMalformed
	}
	w.pos++
	return k, nil
}

// value skips the value that starts at the next non-space byte and returns
// it as it stands in the document.
func (w *jsonWalker) value() ([]byte, error) {
	w.next()
	start := w.pos
	err := w.skipValue()
	return w.data[start:w.pos], err
}

// stringValue skips the value at the next non-space byte and, when it is a
// string, returns where its content (without the quotes) starts and ends;
// end is 0 for any other value.
func (w *jsonWalker) stringValue() (start, end int, err error) {
	if w.next() != '"' {
		return 0, 0, w.skipValue()
	}
	start = w.pos + 1
	if err := w.skipString(); err != nil {
		return 0, 0, err
	}
	return start, w.pos - 1, nil
}

func (w *jsonWalker) skipValue() error {
	if err := w.step(); err != nil {
		return err
	}
	switch c := w.next(); c {
	case '"':
		return w.skipString()
	case '{', '[':
		return w.skipContainer(c)
	case 't':
		return w.literal("true")
	case 'f':
		return w.literal("false")
	case 'n':
		return w.literal("null")
	}
	return w.skipNumber()
}

// skipString skips the string whose opening quote is at w.pos. It looks
// only for quotes, which bytes.IndexByte finds quickly in the long strings
// (file contents, tool output) that make up most of an agent's history.
func (w *jsonWalker) skipString() error {
	i := w.pos + 1
	for {
		j := bytes.IndexByte(w.data[i:], '"')
		if j < 0 {
			return errMalformed
		}
		i += j
		// The quote is escaped when an odd number of backslashes precede
		// it. The opening quote stops the count.
		n := 0
		for k := i - 1; w.data[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			w.pos = i
			return nil
		}
	}
}

func (w *jsonWalker) skipContainer(open byte) error {
	closing := byte(']')
	if open == '{' {
		closing = '}'
	}
	if err := w.enter(open); err != nil {
		return err
	}
	for first := true; ; first = false {
		ok, err := w.more(closing, first)
		if err != nil || !ok {
			return err
		}
		if open == '{' {
			k, err := w.key()
			if err != nil {
				return err
			}
			if w.next() == '"' && (isTypeKey(k) || bytes.IndexByte(k, '\\') >= 0 && keyIs(k, "type")) {
				start := w.pos
				if err := w.skipString(); err != nil {
					return err
				}
				w.sawImage = w.sawImage || isImageType(w.data[start+1:w.pos-1])
				continue
			}
		}
		if err := w.skipValue(); err != nil {
			return err
		}
	}
}

func (w *jsonWalker) literal(lit string) error {
	if !bytes.HasPrefix(w.data[w.pos:], []byte(lit)) {
		return errMalformed
	}
	w.pos += len(lit)
	return nil
}

// skipNumber skips the characters a number is made of; encoding/json checks
// their order when it matters.
func (w *jsonWalker) skipNumber() error {
	start := w.pos
	for ; w.pos < len(w.data); w.pos++ {
		switch c := w.data[w.pos]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
		default:
			if w.pos == start {
				return errMalformed
			}
			return nil
		}
	}
	if w.pos == start {
		return errMalformed
	}
	return nil
}

// isTypeKey reports whether the unescaped key k is "type" in any case, as
// encoding/json matches it. (No letter of "type" has a non-ASCII case
// fold, so comparing ASCII bytes is exact.)
func isTypeKey(k []byte) bool {
	return len(k) == 4 && k[0]|0x20 == 't' && k[1]|0x20 == 'y' && k[2]|0x20 == 'p' && k[3]|0x20 == 'e'
}
