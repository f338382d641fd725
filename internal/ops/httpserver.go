package ops

import (
	"errors"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Defaults of [HTTPServerConfig], shared by every HTTP listener of both
// binaries (proxy client port, broker REST, both admin ports).
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyReadTimeout   = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
)

// HTTPServerConfig is what [NewHTTPServer] needs. Zero durations and sizes
// take the defaults above.
type HTTPServerConfig struct {
	Handler http.Handler
	// ReadHeaderTimeout closes a connection whose request headers do not
	// arrive in time.
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds reading a request body, from the moment the
	// handler starts until the body's end: a client announcing a body it
	// never sends holds its connection no longer than this.
	BodyReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle between requests.
	IdleTimeout time.Duration
	// WriteTimeout, when set, bounds writing the response (leave 0 on
	// listeners that stream).
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds the request header block.
	MaxHeaderBytes int
	// ErrorLog receives net/http's own errors.
	ErrorLog *log.Logger
}

// NewHTTPServer returns an http.Server with every read bounded: header
// read, body read (see [GuardBody]) and idle keep-alive time.
func NewHTTPServer(c HTTPServerConfig) *http.Server {
	dur := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Handler:           GuardBody(c.Handler, dur(c.BodyReadTimeout, DefaultBodyReadTimeout)),
		ReadHeaderTimeout: dur(c.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       dur(c.IdleTimeout, DefaultIdleTimeout),
		WriteTimeout:      c.WriteTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          c.ErrorLog,
	}
}

// GuardBody bounds what a request body can hold:
//
//   - reading the body has a deadline of timeout from the handler's start,
//     lifted once the body has been read to its end (so a long answer, an
//     SSE stream, is not cut);
//   - an answer sent before the body was read to its end closes the
//     connection (HTTP/1: "Connection: close"), so net/http does not first
//     wait, with no deadline, for the rest of a body that may never come;
//   - when the handler returns with the body unread after such an early
//     answer over HTTP/1, the answer is flushed and the rest of the body
//     read and dropped for at most [EarlyAnswerLinger] and
//     [EarlyAnswerDrainBytes]: closing a socket with unread bytes resets
//     the connection, and a client still writing its body would get that
//     reset instead of the answer (a 413, 401 or 503 in its dialect);
//   - then the read deadline is set to now, so net/http's own drain after
//     the handler returns at once instead of holding the connection.
//
// A request without a body passes through untouched.
func GuardBody(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// Not every ResponseWriter supports deadlines (tests' recorders);
		// then only the close on an early answer applies.
		deadlines := rc.SetReadDeadline(time.Now().Add(timeout)) == nil
		b := &guardedBody{ReadCloser: r.Body, rc: rc, deadlines: deadlines}
		r.Body = b
		gw := &guardedWriter{ResponseWriter: w, body: b, h1: r.ProtoMajor == 1}
		next.ServeHTTP(gw, r)
		if gw.early && !gw.passed {
			_ = gw.pass(true) // whatever the body's fate, the answer goes
		}
		if b.eof.Load() || !deadlines {
			return
		}
		if gw.early {
			lingerAfterEarlyAnswer(rc, b.ReadCloser)
		}
		_ = rc.SetReadDeadline(time.Now())
	})
}

// EarlyAnswerLinger and EarlyAnswerDrainBytes bound how long and how much
// of an unread body is read and dropped after an early answer, so that the
// client can read the answer before the connection closes. net/http's own
// guard against the same reset waits 500 ms after a half-close.
const (
	EarlyAnswerLinger     = time.Second
	EarlyAnswerDrainBytes = 1 << 20
)

// lingerAfterEarlyAnswer sends the answer and reads what the client still
// sends of its body, within the bounds above.
func lingerAfterEarlyAnswer(rc *http.ResponseController, body io.Reader) {
	if rc.Flush() != nil {
		return // the client is gone: nothing to protect
	}
	if rc.SetReadDeadline(time.Now().Add(EarlyAnswerLinger)) != nil {
		return
	}
	_, _ = io.CopyN(io.Discard, body, EarlyAnswerDrainBytes)
}

// guardedBody notes when the body was read to its end and then lifts the
// read deadline.
type guardedBody struct {
	io.ReadCloser
	rc        *http.ResponseController
	deadlines bool
	eof       atomic.Bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.eof.Swap(true) && b.deadlines {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// guardedWriter closes the connection after an answer that starts before
// the body was read to its end. Over HTTP/1 it holds such an early answer
// (up to [EarlyAnswerMaxBytes]) until the handler returns, so that the
// answer leaves whole, with its length, before the linger.
type guardedWriter struct {
	http.ResponseWriter
	body        *guardedBody
	h1          bool
	wroteHeader bool
	early       bool // answered over HTTP/1 before the body's end
	code        int  // an early answer's status, not yet passed on
	held        []byte
	passed      bool // the early answer has gone to the ResponseWriter
}

// EarlyAnswerMaxBytes bounds the early answer a guardedWriter holds; a
// longer one is passed on as it comes.
const EarlyAnswerMaxBytes = 64 << 10

func (w *guardedWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	if w.h1 && !w.body.eof.Load() {
		w.early, w.code = true, code
		w.Header().Set("Connection", "close")
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *guardedWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.early && !w.passed {
		if len(w.held)+len(p) <= EarlyAnswerMaxBytes {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		if err := w.pass(false); err != nil {
			return 0, err
		}
	}
	return w.ResponseWriter.Write(p)
}

// pass sends the early answer held so far; whole says the handler has
// returned, so its length is known.
func (w *guardedWriter) pass(whole bool) error {
	w.passed = true
	if whole && w.code != http.StatusNoContent && w.code != http.StatusNotModified {
		w.Header().Set("Content-Length", strconv.Itoa(len(w.held)))
	}
	w.ResponseWriter.WriteHeader(w.code)
	if len(w.held) == 0 {
		return nil
	}
	_, err := w.ResponseWriter.Write(w.held)
	w.held = nil
	return err
}

// Flush lets http.Flusher users (not only ResponseController ones) stream.
func (w *guardedWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.early && !w.passed {
		_ = w.pass(false)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer (deadlines,
// flushing, full duplex).
func (w *guardedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
