package sandbox

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

type sseEventAt struct {
	name, data string
	at         time.Time
}

// openStream posts body and returns the open response; the caller reads it.
func (e *env) openStream(ctx context.Context, path string, h http.Header, body string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", e.sb.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header = h
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("POST %s: %d %s %s; want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return resp
}

// readEvents reads SSE events until EOF, noting when each arrived.
func readEvents(t *testing.T, r io.Reader) []sseEventAt {
	t.Helper()
	var out []sseEventAt
	var cur sseEventAt
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data == "" {
				t.Fatalf("event %+v without data", cur)
			}
			cur.at = time.Now()
			out = append(out, cur)
			cur = sseEventAt{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading stream: %v", err)
	}
	if cur != (sseEventAt{}) {
		t.Fatalf("stream ended inside an event %+v", cur)
	}
	return out
}

func TestChatStream(t *testing.T) {
	e := newEnv(t, Config{Chunks: 4})
	tok := e.exchange().Token
	tests := []struct {
		name       string
		header     map[string]string
		wantChunks int
	}{
		{"config default", nil, 4},
		{"header override", map[string]string{"X-Sandbox-Chunks": "50", "X-Sandbox-Chunk-Delay-Ms": "0"}, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := apiHeader(tok)
			for k, v := range tt.header {
				h.Set(k, v)
			}
			resp := e.openStream(context.Background(), "/chat/completions", h,
				`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}`)
			events := readEvents(t, resp.Body)
			if len(events) != tt.wantChunks+2 || events[len(events)-1].data != "[DONE]" {
				t.Fatalf("got %d events, last %q; want %d chunks, a finish chunk and [DONE]", len(events), events[len(events)-1].data, tt.wantChunks)
			}
			var text strings.Builder
			for i, ev := range events[:len(events)-1] {
				var c chatChunk
				mustUnmarshal(t, []byte(ev.data), &c)
				if c.Object != "chat.completion.chunk" || len(c.Choices) != 1 || ev.name != "" {
					t.Fatalf("chunk %d = %s; want one chat.completion.chunk choice and no event name", i, ev.data)
				}
				if d := c.Choices[0].Delta.Content; d != nil {
					text.WriteString(*d)
				}
				last := i == len(events)-2
				if last != (c.Choices[0].FinishReason != nil) || last != (c.Usage != nil) {
					t.Errorf("chunk %d: finish_reason/usage set = %v; want only on the last", i, !last)
				}
				if i < tt.wantChunks && (c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content == "") {
					t.Errorf("content chunk %d is empty", i)
				}
			}
			if !strings.HasPrefix(text.String(), "Sandbox reply to: tell me a story") {
				t.Errorf("streamed text = %q; want the echo", text.String())
			}
		})
	}
	t.Run("bad header", func(t *testing.T) {
		h := apiHeader(tok)
		h.Set("X-Sandbox-Chunks", "0")
		resp, body := e.do("POST", "/chat/completions", h, `{"model":"gpt-4.1","stream":true,"messages":[]}`)
		if resp.StatusCode != 400 || errorCode(t, body) != "invalid_sandbox_header" {
			t.Errorf("X-Sandbox-Chunks: 0 = %d %s; want 400 invalid_sandbox_header", resp.StatusCode, body)
		}
	})
	if st := e.sb.Stats(); st.StreamsCompleted != 2 || st.StreamsCancelled != 0 {
		t.Errorf("streams completed, cancelled = %d, %d; want 2, 0", st.StreamsCompleted, st.StreamsCancelled)
	}
}

// TestStreamPacing checks that chunks leave one by one, spaced by the delay,
// rather than buffered and sent together.
func TestStreamPacing(t *testing.T) {
	const delay = 100 * time.Millisecond
	e := newEnv(t, Config{ChunkDelay: delay, Chunks: 5})
	tok := e.exchange().Token
	resp := e.openStream(context.Background(), "/chat/completions", apiHeader(tok),
		`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	start := time.Now() // after the headers: connection setup under load does not count
	events := readEvents(t, resp.Body)
	if len(events) != 7 {
		t.Fatalf("got %d events; want 7", len(events))
	}
	// Content chunks 0..4: each gap about 100 ms. Generous lower bounds only;
	// a slow machine lengthens gaps but cannot shorten them.
	for i := 1; i < 5; i++ {
		if gap := events[i].at.Sub(events[i-1].at); gap < delay/2 {
			t.Errorf("gap before chunk %d = %v; want about %v (events arrive spread out)", i, gap, delay)
		}
	}
	if total := events[4].at.Sub(events[0].at); total < 4*delay*9/10 {
		t.Errorf("first to last chunk = %v; want at least %v", total, 4*delay*9/10)
	}
	if first := events[0].at.Sub(start); first > 4*delay {
		t.Errorf("first chunk after %v; want it at once, before the delays", first)
	}
}

func TestAnthropicStream(t *testing.T) {
	e := newEnv(t, Config{Chunks: 3})
	resp := e.openStream(context.Background(), "/v1/messages", apiHeader(e.exchange().Token),
		`{"model":"claude-sonnet-4","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hello"}]}`)
	events := readEvents(t, resp.Body)
	var names []string
	var text strings.Builder
	for _, ev := range events {
		names = append(names, ev.name)
		var m struct {
			Type  string `json:"type"`
			Delta struct {
				Text string `json:"text"`
			} `json:"delta"`
		}
		mustUnmarshal(t, []byte(ev.data), &m)
		if m.Type != ev.name {
			t.Errorf("event %q carries type %q; want equal", ev.name, m.Type)
		}
		if ev.name == "content_block_delta" {
			text.WriteString(m.Delta.Text)
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("events = %s; want %s", got, want)
	}
	if text.String() != "Sandbox reply to: hello" {
		t.Errorf("text = %q; want the echo", text.String())
	}
}

func TestResponsesStream(t *testing.T) {
	e := newEnv(t, Config{Chunks: 2})
	resp := e.openStream(context.Background(), "/responses", apiHeader(e.exchange().Token),
		`{"model":"gpt-5-codex","stream":true,"input":"hello"}`)
	events := readEvents(t, resp.Body)
	var names []string
	for i, ev := range events {
		names = append(names, ev.name)
		var m struct {
			Type string `json:"type"`
			Seq  int    `json:"sequence_number"`
		}
		mustUnmarshal(t, []byte(ev.data), &m)
		if m.Type != ev.name || m.Seq != i {
			t.Errorf("event %d %q: type %q sequence %d; want equal name and %d", i, ev.name, m.Type, m.Seq, i)
		}
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("events = %s; want %s", got, want)
	}
	var done struct {
		Response responseObject `json:"response"`
	}
	mustUnmarshal(t, []byte(events[len(events)-1].data), &done)
	if done.Response.Status != "completed" || (*done.Response.Output[0].Content)[0].Text != "Sandbox reply to: hello" {
		t.Errorf("response.completed = %s; want the completed echo", events[len(events)-1].data)
	}
}

// TestStreamCancelledByClient checks that a client going away stops the
// stream at once and that the sandbox records it.
func TestStreamCancelledByClient(t *testing.T) {
	paths := map[string]string{
		"/chat/completions": `{"model":"gpt-4.1","stream":true,"messages":[]}`,
		"/v1/messages":      `{"model":"claude-sonnet-4","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"x"}]}`,
		"/responses":        `{"model":"gpt-5-codex","stream":true,"input":"x"}`,
	}
	for path, body := range paths {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, Config{})
			h := apiHeader(e.exchange().Token)
			h.Set("X-Sandbox-Chunks", "100")
			h.Set("X-Sandbox-Chunk-Delay-Ms", strconv.Itoa(1000)) // 99 s if never cancelled
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			resp := e.openStream(ctx, path, h, body)
			if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
				t.Fatalf("reading the first event: %v", err)
			}
			start := time.Now()
			cancel()
			err := e.sb.Wait(waitCtx(t), func(s Stats) bool { return s.StreamsCancelled == 1 })
			if err != nil {
				t.Fatalf("waiting for the sandbox to see the cancellation: %v", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("stream stopped %v after the client left; want promptly", took)
			}
			reqs := e.sb.Requests()
			if last := reqs[len(reqs)-1]; last.Path != path || !last.Streamed || !last.Cancelled {
				t.Errorf("last request = %+v; want %s streamed and cancelled", last, path)
			}
			if st := e.sb.Stats(); st.StreamsCompleted != 0 {
				t.Errorf("StreamsCompleted = %d; want 0", st.StreamsCompleted)
			}
		})
	}
}
