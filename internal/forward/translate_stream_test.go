package forward

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/translate"
)

// readSome reads what one Read of the body returns.
func readSome(t *testing.T, r io.Reader) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := r.Read(buf)
	if err != nil && err != io.EOF {
		t.Fatalf("Read = %v", err)
	}
	return string(buf[:n])
}

// TestTranslatedStreamEventByEvent checks that each upstream event is
// readable, translated, before the next one arrives, that a silence gets a
// keep-alive in the client's dialect, and that a stream cut short ends with
// an error event.
func TestTranslatedStreamEventByEvent(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC))
	pr, pw := io.Pipe()
	body, err := newXlateBody(pr, translate.Chat, translate.Messages, translate.StreamOptions{Now: fc.Now()}, fc, DefaultKeepAlive)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	go func() {
		_, _ = io.WriteString(pw, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}`+"\n\n")
	}()
	first := readSome(t, body)
	if !strings.Contains(first, "event: message_start") || !strings.Contains(first, `"text":"Hel"`) {
		t.Fatalf("first read = %q; want message_start and the first text delta", first)
	}
	// Silence: the keep-alive timer fires and the client gets a ping.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fc.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fc.Advance(DefaultKeepAlive)
	if ping := readSome(t, body); !strings.Contains(ping, "event: ping") {
		t.Fatalf("after %v of silence: %q; want a ping", DefaultKeepAlive, ping)
	}
	// The upstream connection breaks: the client gets an error event.
	pw.CloseWithError(errors.New("connection reset"))
	rest, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rest), "event: error") || strings.Contains(string(rest), "message_stop") {
		t.Errorf("after the upstream broke: %q; want an error event and no message_stop", rest)
	}
}

// TestTranslatedStreamCloseStopsReading checks that closing the body (the
// client went away) stops the goroutine reading the upstream.
func TestTranslatedStreamCloseStopsReading(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	body, err := newXlateBody(pr, translate.Responses, translate.Chat, translate.StreamOptions{}, clock.Real{}, DefaultKeepAlive)
	if err != nil {
		t.Fatal(err)
	}
	if err := body.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	// goleak (TestMain) fails the package if the reader goroutine is left.
}

func TestPickTarget(t *testing.T) {
	m, c, r := translate.Messages, translate.Chat, translate.Responses
	tests := []struct {
		client    translate.Dialect
		endpoints []string
		want      translate.Dialect
		ok        bool
	}{
		{m, []string{"/chat/completions", "/responses"}, c, true},
		{m, []string{"/responses"}, r, true},
		{m, []string{"/v1/messages", "/chat/completions"}, m, true},
		{c, []string{"/v1/messages", "/responses"}, r, true},
		{c, []string{"/v1/messages"}, m, true},
		{r, []string{"/v1/messages", "/chat/completions"}, c, true},
		{r, []string{"/v1/messages"}, m, true},
		{c, []string{"/embeddings"}, 0, false},
		{c, nil, 0, false},
	}
	for _, tt := range tests {
		got, ok := pickTarget(tt.client, tt.endpoints)
		if got != tt.want || ok != tt.ok {
			t.Errorf("pickTarget(%v, %v) = %v, %v; want %v, %v", tt.client, tt.endpoints, got, ok, tt.want, tt.ok)
		}
	}
}
