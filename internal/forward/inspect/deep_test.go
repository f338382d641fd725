package inspect

import (
	"bytes"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deepBody is a chat body whose last (user) turn nests tool_result content
// depth levels deep around one text part of about size bytes; image puts an
// image part at the bottom instead of the text.
func deepBody(depth, size int, image bool) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"gpt-4.1","messages":[{"role":"user","content":`)
	for range depth {
		b.WriteString(`[{"type":"tool_result","tool_use_id":"t","content":`)
	}
	if image {
		b.WriteString(`[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"`)
	} else {
		b.WriteString(`[{"type":"text","text":"`)
	}
	b.WriteString(strings.Repeat("x", size))
	if image {
		b.WriteString(`"}}]`)
	} else {
		b.WriteString(`"}]`)
	}
	for range depth {
		b.WriteString(`}]`)
	}
	b.WriteString(`}]}`)
	return b.Bytes()
}

// jsonValues counts the values (and member names) in a JSON document.
func jsonValues(t testing.TB, body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	n := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			continue
		}
		n++
	}
}

// The Result's work is linear in the body: each value is visited a
// bounded number of times whatever the nesting (a full decode with
// encoding/json re-scanned every nested level: 1 MB nested 3,000 levels
// deep cost seconds).
func TestInspectWorkLinearAtAnyDepth(t *testing.T) {
	for _, depth := range []int{0, 1, 100, 3000, maxJSONDepth/2 - 10} {
		for _, image := range []bool{false, true} {
			body := deepBody(depth, 1<<20, image)
			in, steps := inspectUntil(nil, Messages, body)
			// Only tool results: agent; a bare part is typed by a user.
			wantAgent := depth > 0
			if in.Agent != wantAgent || in.Vision != image {
				t.Errorf("depth %d, image %v: inspect = %+v; want agent %v, vision %v", depth, image, in, wantAgent, image)
			}
			if values := jsonValues(t, body); steps > 3*values {
				t.Errorf("depth %d: %d steps for %d values (%d bytes); want at most 3 a value", depth, steps, values, len(body))
			}
		}
	}
}

// A client that leaves stops its Result.
func TestInspectStopsWhenDone(t *testing.T) {
	body := deepBody(3000, 1<<10, true)
	done := make(chan struct{})
	close(done)
	in, steps := inspectUntil(done, Messages, body)
	if !in.Agent || in.Vision || steps > stopCheckEvery {
		t.Errorf("inspectUntil(closed) = %+v after %d steps; want the agent default within %d steps", in, steps, stopCheckEvery)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInspectDeep is the goal of issue 16: 1 MB nested 3,000 levels
// deep costs well under 50 ms.
func BenchmarkInspectDeep(b *testing.B) {
	for _, depth := range []int{1, 3000} {
		body := deepBody(depth, 1<<20, false)
		b.Run(map[int]string{1: "depth1", 3000: "depth3000"}[depth], func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			before := cpuTime()
			for b.Loop() {
				inspect(Messages, body)
			}
			// CPU, not wall-clock, time: on a busy machine they differ.
			b.ReportMetric(float64((cpuTime()-before).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}
