package ssews

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"testing"
)

func events(t testing.TB, chunks [][]byte, max int) ([]string, *Writer) {
	t.Helper()
	var got []string
	w := NewWriter(func(b []byte) error { got = append(got, string(b)); return nil }, max)
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	for _, c := range chunks {
		if _, err := w.Write(c); err != nil {
			return got, w
		}
	}
	_ = w.Close()
	return got, w
}

func TestWriter(t *testing.T) {
	stream := "event: response.created\ndata: {\"type\":\"response.created\"}\n\n: keep-alive\n\n" +
		"data: {\"type\":\"response.output_text.delta\",\r\ndata: \"delta\":\"x\"}\r\n\r\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\ndata: [DONE]\n\n"
	want := []string{`{"type":"response.created"}`, "{\"type\":\"response.output_text.delta\",\n\"delta\":\"x\"}", `{"type":"response.completed"}`}
	for _, size := range []int{1, 2, 7, len(stream)} {
		var chunks [][]byte
		for b := []byte(stream); len(b) > 0; {
			n := min(size, len(b))
			chunks = append(chunks, b[:n])
			b = b[n:]
		}
		got, w := events(t, chunks, 0)
		if !slices.Equal(got, want) || w.Terminal() != "response.completed" || w.Events() != 3 {
			t.Errorf("chunks of %d: %q, terminal %q; want %q", size, got, w.Terminal(), want)
		}
	}
}

func TestWriterNonStream(t *testing.T) {
	w := NewWriter(func([]byte) error { t.Fatal("sent"); return nil }, 0)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"error":{"message":"no","type":"invalid_request_error","code":"invalid_api_key"}}`))
	if w.Stream() || w.Status() != 401 {
		t.Fatalf("stream %v status %d", w.Stream(), w.Status())
	}
	ev := ErrorEventFromBody(w.Status(), w.Body())
	if want := `{"type":"error","status":401,"error":{"message":"no","type":"invalid_request_error","code":"invalid_api_key"}}`; string(ev) != want {
		t.Errorf("error event %s; want %s", ev, want)
	}
	if ev := ErrorEventFromBody(502, []byte("bad gateway")); !bytes.Contains(ev, []byte(`"message":"bad gateway"`)) {
		t.Errorf("plain body: %s", ev)
	}
}

func TestWriterBounds(t *testing.T) {
	_, w := events(t, [][]byte{[]byte("data: " + string(bytes.Repeat([]byte("x"), 100)))}, 50)
	if !errors.Is(w.Err(), ErrEventTooLarge) {
		t.Errorf("an event past the bound: err %v", w.Err())
	}
	sendErr := errors.New("gone")
	w = NewWriter(func([]byte) error { return sendErr }, 0)
	w.Header().Set("Content-Type", "text/event-stream")
	if _, err := w.Write([]byte("data: {}\n\n")); !errors.Is(err, sendErr) {
		t.Errorf("send failure: %v", err)
	}
	if _, err := w.Write([]byte("data: {}\n\n")); !errors.Is(err, sendErr) {
		t.Errorf("after a send failure: %v", err)
	}
}

// FuzzWriter: any bytes in any chunking give the same events as whole, and
// no event passes the bound.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("data: {\"type\":\"error\"}\n\n"), 3)
	f.Add([]byte("event: x\r\ndata: a\r\ndata: b\r\n\r\n: c\n\ndata: [DONE]\n\n"), 1)
	f.Add([]byte("data:\n\ndata"), 2)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		if cut < 0 {
			cut = -cut
		}
		cut %= len(b) + 1
		whole, _ := events(t, [][]byte{b}, 64)
		split, _ := events(t, [][]byte{b[:cut], b[cut:]}, 64)
		if !slices.Equal(whole, split) {
			t.Fatalf("whole %q, split at %d %q", whole, cut, split)
		}
		for _, e := range whole {
			if len(e) > 64 {
				t.Fatalf("event of %d bytes past the bound", len(e))
			}
		}
	})
}
