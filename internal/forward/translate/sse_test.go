package translate

import (
	"errors"
	"strings"
	"testing"
)

type sseEv struct{ event, data string }

func parseAll(t testing.TB, p *sseParser, chunks ...string) ([]sseEv, error) {
	var got []sseEv
	emit := func(e, d []byte) error {
		got = append(got, sseEv{string(e), string(d)})
		return nil
	}
	for _, c := range chunks {
		if err := p.feed([]byte(c), emit); err != nil {
			return got, err
		}
	}
	return got, nil
}

func TestSSEParser(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []sseEv
	}{
		{"lf", "event: a\ndata: 1\n\ndata: 2\n\n", []sseEv{{"a", "1"}, {"", "2"}}},
		{"crlf", "event: a\r\ndata: 1\r\n\r\n", []sseEv{{"a", "1"}}},
		{"cr", "event: a\rdata: 1\r\r", []sseEv{{"a", "1"}}},
		{"multi data", "data: a\ndata: b\n\n", []sseEv{{"", "a\nb"}}},
		{"comment and unknown", ": ping\nid: 3\nretry: 5\ndata:x\n\n", []sseEv{{"", "x"}}},
		{"event without data", "event: a\n\ndata: 1\n\n", []sseEv{{"", "1"}}},
		{"unterminated dropped", "data: 1\n\ndata: 2\n", []sseEv{{"", "1"}}},
		{"no space", "event:e\ndata:{}\n\n", []sseEv{{"e", "{}"}}},
		{"empty data", "data\n\n", []sseEv{{"", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			whole, err := parseAll(t, newSSEParser(0), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			// Byte by byte must give the same events.
			var chunks []string
			for i := range len(tt.in) {
				chunks = append(chunks, tt.in[i:i+1])
			}
			bytewise, err := parseAll(t, newSSEParser(0), chunks...)
			if err != nil {
				t.Fatal(err)
			}
			if !equalEvents(whole, tt.want) || !equalEvents(bytewise, tt.want) {
				t.Errorf("parse(%q) = %v, byte by byte %v; want %v", tt.in, whole, bytewise, tt.want)
			}
		})
	}
}

func equalEvents(a, b []sseEv) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSSEParserBound(t *testing.T) {
	p := newSSEParser(64)
	_, err := parseAll(t, p, "data: "+strings.Repeat("x", 100))
	if !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("long line: err = %v; want ErrEventTooLarge", err)
	}
	p = newSSEParser(64)
	_, err = parseAll(t, p, strings.Repeat("data: xxxxxxxxxx\n", 10))
	if !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("many data lines: err = %v; want ErrEventTooLarge", err)
	}
}

func FuzzSSEParser(f *testing.F) {
	f.Add("event: a\ndata: 1\n\n", 3)
	f.Add("event: a\r\ndata: 1\r\n\r\ndata: [DONE]\r\n\r\n", 1)
	f.Add(": c\rdata:x\r\r", 2)
	f.Fuzz(func(t *testing.T, in string, split int) {
		if split <= 0 {
			split = 1
		}
		whole, err1 := parseAll(t, newSSEParser(1<<16), in)
		var chunks []string
		for i := 0; i < len(in); i += split {
			chunks = append(chunks, in[i:min(i+split, len(in))])
		}
		split2, err2 := parseAll(t, newSSEParser(1<<16), chunks...)
		if (err1 == nil) != (err2 == nil) {
			// The bound is checked on different partial states; only
			// compare when neither hit it.
			return
		}
		if err1 == nil && !equalEvents(whole, split2) {
			t.Errorf("whole %v != split %v", whole, split2)
		}
	})
}
