package streamcheck

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// Tap is an [http.RoundTripper] that keeps a copy of the last event stream
// read through it, so that a test driving an SDK can check the exact wire
// events too. Requests through one Tap must not overlap.
type Tap struct {
	Base http.RoundTripper // nil: http.DefaultTransport

	mu   sync.Mutex
	last *bytes.Buffer
}

type teeBody struct {
	io.Reader
	io.Closer
}

// RoundTrip sends r and, when the answer is an event stream, copies its
// body as it is read.
func (t *Tap) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		buf := &bytes.Buffer{}
		t.mu.Lock()
		t.last = buf
		t.mu.Unlock()
		resp.Body = teeBody{io.TeeReader(resp.Body, buf), resp.Body}
	}
	return resp, err
}

// Events returns the events of the last stream read.
func (t *Tap) Events() ([]Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		return nil, errors.New("no event stream was read")
	}
	return Read(bytes.NewReader(t.last.Bytes()))
}
