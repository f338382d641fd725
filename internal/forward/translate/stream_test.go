package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// translateStream feeds in to a Stream in chunks of size n (0: whole) and
// returns what the client got.
func translateStream(t testing.TB, from, to Dialect, in []byte, n int) []byte {
	t.Helper()
	var out bytes.Buffer
	s, err := NewStream(from, to, &out, StreamOptions{IncludeUsage: true, Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		n = len(in) + 1
	}
	for i := 0; i < len(in); i += n {
		if _, err := s.Write(in[i:min(i+n, len(in))]); err != nil {
			break
		}
	}
	_ = s.Close()
	return out.Bytes()
}

func TestStreamGolden(t *testing.T) {
	for _, in := range inputs(t, "streams", "sse") {
		base, from := splitName(t, in)
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range dialects {
			if to == from {
				continue
			}
			name := filepath.Base(base) + "." + from.String() + "_to_" + to.String()
			t.Run(name, func(t *testing.T) {
				whole := translateStream(t, from, to, body, 0)
				for _, n := range []int{1, 7, 64} {
					if got := translateStream(t, from, to, body, n); !bytes.Equal(got, whole) {
						t.Fatalf("fed in chunks of %d bytes:\n%s\nwhole:\n%s", n, got, whole)
					}
				}
				checkGolden(t, base+"."+from.String()+"_to_"+to.String()+".golden", whole)
			})
		}
	}
}

// checkClientSSE parses a translated stream: every event's data is JSON
// (or Chat's [DONE]).
func checkClientSSE(t *testing.T, out []byte) {
	t.Helper()
	p := newSSEParser(0)
	err := p.feed(out, func(_, data []byte) error {
		if string(data) != "[DONE]" && !json.Valid(data) {
			t.Fatalf("event data is not JSON: %q", data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func FuzzStream(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "streams", "*.sse"))
	for _, in := range files {
		b, _ := os.ReadFile(in)
		f.Add(uint8(dialectIndex(strings.Split(filepath.Base(in), ".")[1])), b, uint8(7))
	}
	for _, st := range scaleStreams {
		f.Add(uint8(dialectIndex(st.from.String())), st.body(largeSeeds), uint8(255))
	}
	f.Fuzz(func(t *testing.T, from uint8, body []byte, chunk uint8) {
		up := dialects[int(from)%3]
		for _, to := range dialects {
			if to == up {
				continue
			}
			var out bytes.Buffer
			s, err := NewStream(up, to, &out, StreamOptions{Now: testNow, MaxEventSize: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			n := int(chunk) + 1
			for i := 0; i < len(body); i += n {
				if _, err := s.Write(body[i:min(i+n, len(body))]); err != nil {
					break
				}
			}
			_ = s.Close()
			if !s.Done() {
				t.Fatalf("%s→%s: stream not ended after Close", up, to)
			}
			checkClientSSE(t, out.Bytes())
		}
	})
}

type flushRecorder struct {
	bytes.Buffer
	flushes int
}

func (f *flushRecorder) Flush() { f.flushes++ }

func TestStreamFlushesPerChunk(t *testing.T) {
	in := readFixture(t, "tools.messages.sse")
	var out flushRecorder
	s, err := NewStream(Messages, Chat, &out, StreamOptions{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	// The first event alone: the client has it at once, before the rest.
	first := bytes.Index(in, []byte("\n\n")) + 2
	if _, err := s.Write(in[:first]); err != nil {
		t.Fatal(err)
	}
	if out.flushes != 1 || !bytes.Contains(out.Bytes(), []byte(`"role":"assistant"`)) {
		t.Fatalf("after message_start: %d flushes, %q", out.flushes, out.String())
	}
	if _, err := s.Write(in[first:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("data: [DONE]\n\n")) {
		t.Errorf("stream does not end in [DONE]: %q", out.String())
	}
}

func TestStreamKeepAliveAndFail(t *testing.T) {
	tests := []struct {
		client    Dialect
		keepAlive string
		failed    string
	}{
		{Messages, "event: ping\ndata: {\"type\":\"ping\"}\n\n", "event: error\n"},
		{Chat, ": keep-alive\n\n", `data: {"error":{"message":"read: connection reset"`},
		{Responses, ": keep-alive\n\n", "event: error\n"},
	}
	for _, tt := range tests {
		t.Run(tt.client.String(), func(t *testing.T) {
			up := Chat
			if tt.client == Chat {
				up = Messages
			}
			var out bytes.Buffer
			s, _ := NewStream(up, tt.client, &out, StreamOptions{Now: testNow})
			if err := s.KeepAlive(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.keepAlive {
				t.Errorf("KeepAlive wrote %q; want %q", out.String(), tt.keepAlive)
			}
			out.Reset()
			if err := s.Fail("read: connection reset"); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tt.failed) || !strings.Contains(out.String(), "connection reset") {
				t.Errorf("Fail wrote %q; want %q", out.String(), tt.failed)
			}
			out.Reset()
			_ = s.Close()
			_ = s.KeepAlive()
			if out.Len() != 0 {
				t.Errorf("wrote %q after the stream ended", out.String())
			}
		})
	}
}

func TestStreamUnreadableUpstream(t *testing.T) {
	var out bytes.Buffer
	s, _ := NewStream(Chat, Messages, &out, StreamOptions{Now: testNow, MaxEventSize: 32})
	_, err := s.Write([]byte("data: " + strings.Repeat("x", 64)))
	if !errors.Is(err, ErrUpstream) {
		t.Fatalf("Write(oversized event) = %v; want ErrUpstream", err)
	}
	if !strings.Contains(out.String(), "event: error") {
		t.Errorf("client got no error event: %q", out.String())
	}
	out.Reset()
	s, _ = NewStream(Responses, Chat, &out, StreamOptions{Now: testNow})
	if _, err := s.Write([]byte("event: response.created\ndata: {not json\n\n")); !errors.Is(err, ErrUpstream) {
		t.Fatalf("Write(bad JSON) = %v; want ErrUpstream", err)
	}
	if !strings.Contains(out.String(), `"error"`) {
		t.Errorf("client got no error: %q", out.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("client gone") }

func TestStreamClientGone(t *testing.T) {
	s, _ := NewStream(Messages, Chat, failWriter{}, StreamOptions{Now: testNow})
	if _, err := s.Write(readFixture(t, "tools.messages.sse")); err == nil || !strings.Contains(err.Error(), "client gone") {
		t.Fatalf("Write = %v; want the client's error", err)
	}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "streams", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
