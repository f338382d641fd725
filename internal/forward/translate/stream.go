package translate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Streams are translated event by event: an upstream SSE event goes through
// the upstream dialect's stream reader, which emits zero or more IR events,
// and each IR event goes through the client dialect's stream writer, which
// appends the client's SSE events. Parts never overlap for a writer: a part
// starts, gets deltas, and stops before the next starts, and writers number
// parts in that order. [Stream.emit] keeps that rule for every reader: it
// closes the open part before the next one starts and before the finish,
// and drops deltas outside a part and stops of no part.

type evKind uint8

const (
	evStart     evKind = iota + 1 // id, model, created, usage (input so far)
	evPartStart                   // part, id, name (tool call), text (redacted data)
	evDelta                       // text: text, arguments or reasoning text
	evSignature                   // text: Anthropic signature or OpenAI encrypted_content
	evPartStop
	evFinish // finish, stopSeq, usage
	evPing
	evError // err
)

type event struct {
	kind     evKind
	part     PartKind
	redacted bool
	id, name string
	model    string
	text     string
	created  int64
	finish   Finish
	stopSeq  string
	usage    Usage
	err      apiErr
}

type streamReader interface {
	// event handles one upstream SSE event; it fails when the event cannot
	// be read.
	event(name, data []byte, emit func(*event)) error
	// end is called when the upstream body ends; it may emit the final
	// events of a dialect whose end is implicit (Chat without [DONE]).
	end(emit func(*event))
}

type streamWriter interface {
	write(b *bytes.Buffer, ev *event)
	keepAlive(b *bytes.Buffer)
}

// StreamOptions tune a [Stream].
type StreamOptions struct {
	// IncludeUsage makes a Chat client's stream end with a usage chunk:
	// pass [Info].IncludeUsage of the translated request.
	IncludeUsage bool
	// Now dates the answer when the upstream does not (Messages).
	Now time.Time
	// MaxEventSize bounds one upstream event; zero means [MaxEventSize].
	MaxEventSize int
}

// Stream translates an upstream SSE stream into the client's dialect. It is
// an io.Writer fed the upstream body in chunks of any size; it writes the
// client's events to the underlying writer as soon as each upstream event
// is complete, and flushes it when it is an [http.Flusher]. Write, Close,
// Fail and KeepAlive may be called from different goroutines.
type Stream struct {
	mu      sync.Mutex
	parser  *sseParser
	r       streamReader
	w       streamWriter
	out     io.Writer
	buf     bytes.Buffer
	started bool
	open    bool // a part is open
	done    bool // the final or an error event was written
	err     error
}

// ErrStreamCut is the message of the error a client sees when the upstream
// stream ended before its final event.
var ErrStreamCut = errors.New("upstream stream ended before the answer was complete")

// NewStream returns a Stream that reads upstream's dialect and writes
// client's to w.
func NewStream(upstream, client Dialect, w io.Writer, opt StreamOptions) (*Stream, error) {
	s := &Stream{parser: newSSEParser(opt.MaxEventSize), out: w}
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	switch upstream {
	case Messages:
		s.r = &msgStreamReader{}
	case Chat:
		s.r = &chatStreamReader{}
	case Responses:
		s.r = &respStreamReader{}
	default:
		return nil, fmt.Errorf("translate: unknown dialect %v", upstream)
	}
	switch client {
	case Messages:
		s.w = &msgStreamWriter{}
	case Chat:
		s.w = &chatStreamWriter{includeUsage: opt.IncludeUsage, created: now.Unix()}
	case Responses:
		s.w = &respStreamWriter{created: now.Unix()}
	default:
		return nil, fmt.Errorf("translate: unknown dialect %v", client)
	}
	return s, nil
}

// emit hands one IR event to the writer, keeping the order every writer
// relies on: the opening event first, one part open at a time, nothing
// after the end.
func (s *Stream) emit(ev *event) {
	if s.done {
		return
	}
	switch ev.kind {
	case evStart:
		if s.started {
			return
		}
		s.started = true
	case evPing:
	case evError:
		s.done = true
	default:
		if !s.started {
			// Every writer needs its opening event first.
			s.w.write(&s.buf, &event{kind: evStart})
			s.started = true
		}
	}
	switch ev.kind {
	case evPartStart, evFinish:
		if s.open {
			s.w.write(&s.buf, &event{kind: evPartStop})
		}
		s.open = ev.kind == evPartStart
		s.done = ev.kind == evFinish
	case evPartStop:
		if !s.open {
			return
		}
		s.open = false
	case evDelta, evSignature:
		if !s.open {
			return
		}
	}
	s.w.write(&s.buf, ev)
}

func (s *Stream) onEvent(name, data []byte) error {
	return s.r.event(name, data, s.emit)
}

// Write feeds upstream bytes. It returns an error when the client's writer
// fails, or when the upstream sent something unreadable (the client then
// got an error event and the proxy should stop reading).
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if s.done {
		return len(p), nil
	}
	if err := s.parser.feed(p, s.onEvent); err != nil {
		s.failLocked(fmt.Sprintf("upstream stream unreadable: %v", err))
		if ferr := s.flushLocked(); ferr != nil {
			return 0, ferr
		}
		s.err = fmt.Errorf("%w: %w", ErrUpstream, err)
		return len(p), s.err
	}
	if err := s.flushLocked(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *Stream) flushLocked() error {
	if s.buf.Len() == 0 {
		return nil
	}
	_, err := s.out.Write(s.buf.Bytes())
	s.buf.Reset()
	if err != nil {
		s.err = err
		return err
	}
	if f, ok := s.out.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// Close tells the Stream the upstream body ended. If the answer was not
// complete, the client gets an error event ([ErrStreamCut]).
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if !s.done {
		s.r.end(s.emit)
	}
	if !s.done {
		s.failLocked(ErrStreamCut.Error())
	}
	return s.flushLocked()
}

// Fail ends the client's stream with an error event carrying msg (e.g. the
// upstream read failed), unless it already ended.
func (s *Stream) Fail(msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(msg)
	return s.flushLocked()
}

func (s *Stream) failLocked(msg string) {
	if s.done {
		return
	}
	e := apiErr{status: http.StatusBadGateway, message: msg, anthropicType: "api_error", openaiType: "server_error", openaiCode: "upstream_error"}
	s.emit(&event{kind: evError, err: e})
}

// KeepAlive writes the client dialect's keep-alive (an Anthropic ping, an
// SSE comment otherwise) so that an idle connection is not dropped.
func (s *Stream) KeepAlive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.err != nil {
		return s.err
	}
	s.w.keepAlive(&s.buf)
	return s.flushLocked()
}

// Done reports whether the client's stream has ended (final or error event
// written).
func (s *Stream) Done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}
