package translate

import (
	"bytes"
	"errors"
)

// MaxEventSize bounds one SSE event (its data lines and pending partial
// line) an upstream may send; Responses' final event carries the whole
// answer, so the bound is generous.
const MaxEventSize = 8 << 20

// ErrEventTooLarge is returned when an SSE event exceeds its bound.
var ErrEventTooLarge = errors.New("sse: event too large")

// sseParser splits a byte stream, fed in chunks with arbitrary boundaries,
// into server-sent events (WHATWG HTML §9.2): lines end in LF, CRLF or CR;
// "event" and "data" fields are kept, comments and other fields ignored; an
// empty line dispatches the event. An unterminated event at the end of the
// stream is discarded, as the standard says.
type sseParser struct {
	max     int
	line    []byte // partial line carried between feeds
	event   []byte
	data    []byte
	hasData bool
	skipLF  bool // the previous feed ended in CR
}

func newSSEParser(max int) *sseParser {
	if max <= 0 {
		max = MaxEventSize
	}
	return &sseParser{max: max}
}

// feed parses b and calls emit for each complete event. The slices passed to
// emit are valid only during the call.
func (p *sseParser) feed(b []byte, emit func(event, data []byte) error) error {
	if p.skipLF && len(b) > 0 {
		if b[0] == '\n' {
			b = b[1:]
		}
		p.skipLF = false
	}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			if len(p.line)+len(b)+len(p.data) > p.max {
				return ErrEventTooLarge
			}
			p.line = append(p.line, b...)
			return nil
		}
		line := b[:i]
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line = p.line
		}
		if b[i] == '\r' {
			if i+1 < len(b) {
				if b[i+1] == '\n' {
					i++
				}
			} else {
				p.skipLF = true
			}
		}
		b = b[i+1:]
		if err := p.handleLine(line, emit); err != nil {
			return err
		}
		p.line = p.line[:0]
	}
	return nil
}

func (p *sseParser) handleLine(line []byte, emit func(event, data []byte) error) error {
	if len(line) == 0 {
		if !p.hasData {
			p.event = p.event[:0]
			return nil
		}
		err := emit(p.event, p.data)
		p.event, p.data, p.hasData = p.event[:0], p.data[:0], false
		return err
	}
	if line[0] == ':' {
		return nil
	}
	field, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		field, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "event":
		p.event = append(p.event[:0], value...)
	case "data":
		if len(p.data)+len(value)+1 > p.max {
			return ErrEventTooLarge
		}
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	}
	return nil
}
