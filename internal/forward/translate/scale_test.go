package translate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The translator's cost must grow linearly with what a client or an
// upstream sends: a body with n elements of one kind (unknown keys, tool
// results, text blocks, deltas...) is translated in every direction it can
// go, and doubling n may at most multiply the time, and the bytes allocated,
// by 2.5. Each site below is one loop of a reader or a writer that once was
// quadratic, or could become so.

// scaleSite builds an input of n elements and returns the work to time.
type scaleSite struct {
	name string
	make func(n int) func() error
}

// seq writes n comma-separated items made by item(i).
func seq(b *bytes.Buffer, n int, item func(b *bytes.Buffer, i int)) {
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		item(b, i)
	}
}

func body(parts ...any) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b.WriteString(p)
		case func(*bytes.Buffer):
			p(&b)
		}
	}
	return b.Bytes()
}

func each(n int, item func(b *bytes.Buffer, i int)) func(*bytes.Buffer) {
	return func(b *bytes.Buffer) { seq(b, n, item) }
}

// Request bodies of n elements of one kind, per client dialect.
var scaleRequests = []scaleInput{
	{"unknown-keys", Chat, func(n int) []byte {
		return body(`{"model":"m","messages":[{"role":"user","content":"hi"}],`,
			each(n, func(b *bytes.Buffer, i int) { fmt.Fprintf(b, `"k%d":1`, i) }), `}`)
	}},
	{"unknown-keys", Messages, func(n int) []byte {
		return body(`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],`,
			each(n, func(b *bytes.Buffer, i int) { fmt.Fprintf(b, `"k%d":1`, i) }), `}`)
	}},
	{"unknown-keys", Responses, func(n int) []byte {
		return body(`{"model":"m","input":"hi",`,
			each(n, func(b *bytes.Buffer, i int) { fmt.Fprintf(b, `"k%d":1`, i) }), `}`)
	}},
	{"tool-messages", Chat, func(n int) []byte {
		return body(`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[`,
			each(n, func(b *bytes.Buffer, i int) {
				fmt.Fprintf(b, `{"id":"c%d","type":"function","function":{"name":"f","arguments":"{}"}}`, i)
			}), `]},`,
			each(n, func(b *bytes.Buffer, i int) { fmt.Fprintf(b, `{"role":"tool","tool_call_id":"c%d","content":"ok"}`, i) }),
			`]}`)
	}},
	{"tool-outputs", Responses, func(n int) []byte {
		return body(`{"model":"m","input":[{"role":"user","content":"hi"},`,
			each(n, func(b *bytes.Buffer, i int) {
				fmt.Fprintf(b, `{"type":"function_call","call_id":"c%d","name":"f","arguments":"{}"}`, i)
			}), `,`,
			each(n, func(b *bytes.Buffer, i int) {
				fmt.Fprintf(b, `{"type":"function_call_output","call_id":"c%d","output":"ok"}`, i)
			}), `]}`)
	}},
	{"messages", Chat, func(n int) []byte {
		return body(`{"model":"m","messages":[`,
			each(n, func(b *bytes.Buffer, i int) {
				b.WriteString([]string{`{"role":"user","content":"hi"}`, `{"role":"assistant","content":"yes"}`}[i%2])
			}), `]}`)
	}},
	{"system-blocks", Messages, func(n int) []byte {
		return body(`{"model":"m","max_tokens":10,"system":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"text","text":"be brief"}`) }),
			`],"messages":[{"role":"user","content":"hi"}]}`)
	}},
	{"assistant-text-blocks", Messages, func(n int) []byte {
		return body(`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"text","text":"some words"}`) }),
			`]},{"role":"user","content":"go on"}]}`)
	}},
	{"tool-result-blocks", Messages, func(n int) []byte {
		return body(`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"},`+
			`{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},`+
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"text","text":"line"}`) }),
			`]}]}]}`)
	}},
	{"system-messages", Chat, func(n int) []byte {
		return body(`{"model":"m","messages":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"role":"system","content":"be brief"}`) }),
			`,{"role":"user","content":"hi"}]}`)
	}},
	{"reasoning-summaries", Responses, func(n int) []byte {
		return body(`{"model":"m","input":[{"role":"user","content":"hi"},{"type":"reasoning","id":"rs_1","encrypted_content":"e","summary":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"summary_text","text":"thought"}`) }),
			`]},{"type":"message","role":"assistant","content":"yes"},{"role":"user","content":"more"}]}`)
	}},
}

// Answer bodies of n elements, per upstream dialect.
var scaleAnswers = []scaleInput{
	{"text-blocks", Messages, func(n int) []byte {
		return body(`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"text","text":"some words"}`) }),
			`],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}`)
	}},
	{"tool-calls", Messages, func(n int) []byte {
		return body(`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[`,
			each(n, func(b *bytes.Buffer, i int) {
				fmt.Fprintf(b, `{"type":"tool_use","id":"t%d","name":"f","input":{"a":1}}`, i)
			}),
			`],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}`)
	}},
	{"choices", Chat, func(n int) []byte {
		return body(`{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[`,
			each(n, func(b *bytes.Buffer, i int) {
				fmt.Fprintf(b, `{"index":%d,"message":{"role":"assistant","content":"words"},"finish_reason":"stop"}`, i)
			}), `]}`)
	}},
	{"output-items", Responses, func(n int) []byte {
		return body(`{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","output":[`,
			each(n, func(b *bytes.Buffer, i int) {
				b.WriteString(`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"words"}]}`)
			}), `]}`)
	}},
	{"summaries", Responses, func(n int) []byte {
		return body(`{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","output":[{"type":"reasoning","id":"rs","summary":[`,
			each(n, func(b *bytes.Buffer, i int) { b.WriteString(`{"type":"summary_text","text":"thought"}`) }),
			`]}]}`)
	}},
}

func sse(b *bytes.Buffer, event, data string) {
	if event != "" {
		b.WriteString("event: " + event + "\n")
	}
	b.WriteString("data: " + data + "\n\n")
}

// Upstream streams of n events, per upstream dialect.
var scaleStreams = []scaleInput{
	{"text-deltas", Messages, func(n int) []byte {
		var b bytes.Buffer
		sse(&b, "message_start", `{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":1}}}`)
		sse(&b, "content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		for range n {
			sse(&b, "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word "}}`)
		}
		sse(&b, "content_block_stop", `{"type":"content_block_stop","index":0}`)
		sse(&b, "message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}`)
		sse(&b, "message_stop", `{"type":"message_stop"}`)
		return b.Bytes()
	}},
	{"signature-deltas", Messages, func(n int) []byte {
		var b bytes.Buffer
		sse(&b, "message_start", `{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":1}}}`)
		sse(&b, "content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`)
		for range n {
			sse(&b, "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"c2lnbmF0dXJl"}}`)
		}
		sse(&b, "content_block_stop", `{"type":"content_block_stop","index":0}`)
		sse(&b, "message_stop", `{"type":"message_stop"}`)
		return b.Bytes()
	}},
	{"blocks", Messages, func(n int) []byte {
		var b bytes.Buffer
		sse(&b, "message_start", `{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":1}}}`)
		for i := range n {
			sse(&b, "content_block_start", `{"type":"content_block_start","index":`+strconv.Itoa(i)+`,"content_block":{"type":"tool_use","id":"t`+strconv.Itoa(i)+`","name":"f"}}`)
			sse(&b, "content_block_delta", `{"type":"content_block_delta","index":`+strconv.Itoa(i)+`,"delta":{"type":"input_json_delta","partial_json":"{}"}}`)
			sse(&b, "content_block_stop", `{"type":"content_block_stop","index":`+strconv.Itoa(i)+`}`)
		}
		sse(&b, "message_stop", `{"type":"message_stop"}`)
		return b.Bytes()
	}},
	{"text-deltas", Chat, func(n int) []byte {
		var b bytes.Buffer
		for range n {
			sse(&b, "", `{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"word "}}]}`)
		}
		sse(&b, "", `{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		sse(&b, "", `[DONE]`)
		return b.Bytes()
	}},
	{"tool-calls", Chat, func(n int) []byte {
		var b bytes.Buffer
		for i := range n {
			sse(&b, "", `{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":`+strconv.Itoa(i)+`,"id":"t`+strconv.Itoa(i)+`","function":{"name":"f","arguments":"{}"}}]}}]}`)
		}
		sse(&b, "", `{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`)
		sse(&b, "", `[DONE]`)
		return b.Bytes()
	}},
	{"text-deltas", Responses, func(n int) []byte {
		var b bytes.Buffer
		sse(&b, "response.created", `{"type":"response.created","response":{"id":"resp_1","object":"response","model":"m","output":[]}}`)
		sse(&b, "response.output_item.added", `{"type":"response.output_item.added","output_index":0,"item":{"type":"message","id":"m1"}}`)
		sse(&b, "response.content_part.added", `{"type":"response.content_part.added","output_index":0,"part":{"type":"output_text","text":""}}`)
		for range n {
			sse(&b, "response.output_text.delta", `{"type":"response.output_text.delta","output_index":0,"delta":"word "}`)
		}
		sse(&b, "response.content_part.done", `{"type":"response.content_part.done","output_index":0}`)
		sse(&b, "response.completed", `{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":"m","output":[]}}`)
		return b.Bytes()
	}},
	{"items", Responses, func(n int) []byte {
		var b bytes.Buffer
		sse(&b, "response.created", `{"type":"response.created","response":{"id":"resp_1","object":"response","model":"m","output":[]}}`)
		for i := range n {
			idx := strconv.Itoa(i)
			sse(&b, "response.output_item.added", `{"type":"response.output_item.added","output_index":`+idx+`,"item":{"type":"reasoning","id":"rs`+idx+`"}}`)
			sse(&b, "response.reasoning_summary_part.added", `{"type":"response.reasoning_summary_part.added","output_index":`+idx+`}`)
			sse(&b, "response.reasoning_summary_text.delta", `{"type":"response.reasoning_summary_text.delta","output_index":`+idx+`,"delta":"hm"}`)
			sse(&b, "response.output_item.done", `{"type":"response.output_item.done","output_index":`+idx+`,"item":{"type":"reasoning","id":"rs`+idx+`","encrypted_content":"ZW5j"}}`)
		}
		sse(&b, "response.completed", `{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":"m","output":[]}}`)
		return b.Bytes()
	}},
}

// scaleInput is an input of n elements of one kind in one dialect.
type scaleInput struct {
	name string
	from Dialect
	body func(n int) []byte
}

// scaleSites is every site in every direction.
func scaleSites() []scaleSite {
	var sites []scaleSite
	// each adds every direction of inputs, translated by run.
	each := func(kind string, inputs []scaleInput, run func(from, to Dialect, in []byte) error) {
		for _, x := range inputs {
			for _, to := range dialects {
				if to == x.from {
					continue
				}
				sites = append(sites, scaleSite{kind + "/" + x.from.String() + "_to_" + to.String() + "/" + x.name, func(n int) func() error {
					in := x.body(n)
					return func() error { return run(x.from, to, in) }
				}})
			}
		}
	}
	each("request", scaleRequests, func(from, to Dialect, in []byte) error {
		_, _, err := Request(context.Background(), from, to, in, Options{})
		return err
	})
	each("answer", scaleAnswers, func(from, to Dialect, in []byte) error {
		_, err := Response(context.Background(), from, to, in, testNow)
		return err
	})
	each("stream", scaleStreams, func(from, to Dialect, in []byte) error {
		s, err := NewStream(from, to, io.Discard, StreamOptions{Now: testNow, IncludeUsage: true})
		if err != nil {
			return err
		}
		// Upstreams send in chunks; 4 KiB is a typical read.
		for i := 0; i < len(in); i += 4096 {
			if _, err := s.Write(in[i:min(i+4096, len(in))]); err != nil {
				return err
			}
		}
		if err := s.Close(); err != nil {
			return err
		}
		if !s.Done() {
			return fmt.Errorf("stream not done")
		}
		return nil
	})
	return sites
}

// cpuTime is the CPU time the process has used: unlike the wall clock, it
// does not count the time other processes on a busy machine take.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cost runs work and returns its CPU time and the bytes it allocated, the
// minimum over runs: noise (other work, the GC of earlier garbage) only
// ever adds. The collector is off while work runs: its cost depends on
// what else the heap holds, not on the site.
func cost(tb testing.TB, work func() error, runs int) (time.Duration, uint64) {
	tb.Helper()
	best, bestAlloc := time.Duration(1<<62), uint64(1<<62)
	var ms runtime.MemStats
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for range runs {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		start := cpuTime(tb)
		if err := work(); err != nil {
			tb.Fatal(err)
		}
		d := cpuTime(tb) - start
		runtime.ReadMemStats(&ms)
		best, bestAlloc = min(best, d), min(bestAlloc, ms.TotalAlloc-before)
	}
	return best, bestAlloc
}

// maxGrowth is the most time and allocation may grow when the input
// doubles.
const maxGrowth = 2.5

// scaleFactor is how much larger the large input is: three doublings, so
// that a linear site (x8, give or take the rounding of growing buffers)
// and a quadratic one (x64) are far apart on either side of maxGrowth³.
const scaleFactor = 8

// TestTranslationScalesLinearly checks every site at n and 8n elements: the
// cost of 8n may be at most maxGrowth³ (15.6) times that of n. n starts at
// TRANSLATE_SCALE_N (default 1000) and doubles until the small input takes
// a few milliseconds, so that the timer's resolution does not decide. The
// time is measured again, up to three times, before the test gives up: a
// 2-core machine shared with other work is noisy, and a quadratic site
// fails every attempt.
func TestTranslationScalesLinearly(t *testing.T) {
	n0 := 1000
	if s := os.Getenv("TRANSLATE_SCALE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		n0 = v
	}
	limit := maxGrowth * maxGrowth * maxGrowth
	for _, site := range scaleSites() {
		t.Run(site.name, func(t *testing.T) {
			if raceEnabled {
				// Allocation only, on small inputs: the race detector's
				// slowdown makes timings meaningless, and large inputs slow.
				n := n0 / 4
				_, as := cost(t, site.make(n), 1)
				_, al := cost(t, site.make(scaleFactor*n), 1)
				if ar := float64(al) / float64(max(as, 1)); ar > limit {
					t.Fatalf("allocation grew %.1fx from %d to %d elements; want at most %.1fx", ar, n, scaleFactor*n, limit)
				}
				return
			}
			n := n0
			small := site.make(n)
			for ts, _ := cost(t, small, 1); ts < 5*time.Millisecond && n < 64*n0 && !testing.Short(); ts, _ = cost(t, small, 1) {
				n *= 2
				small = site.make(n)
			}
			large := site.make(scaleFactor * n)
			var ratios []float64
			for range 3 {
				ts, as := cost(t, small, 5)
				tl, al := cost(t, large, 3)
				// Allocation is deterministic enough to judge once.
				if ar := float64(al) / float64(max(as, 1)); ar > limit {
					t.Fatalf("allocation grew %.1fx from %d to %d elements (%d → %d bytes); want at most %.1fx", ar, n, scaleFactor*n, as, al, limit)
				}
				r := float64(tl) / float64(max(ts, time.Microsecond))
				ratios = append(ratios, r)
				if r <= limit {
					t.Logf("%d elements: %v, %d: %v (%.1fx)", n, ts, scaleFactor*n, tl, r)
					return
				}
			}
			t.Fatalf("time grew %.1f from %d to %d elements in each of 3 measurements; want at most %.1fx", ratios, n, scaleFactor*n, limit)
		})
	}
}

// BenchmarkScaling times every site at 10,000, 100,000 and 1,000,000
// elements, in wall and CPU time (cpu-ns/op, collector included):
// go test -run '^$' -bench Scaling -benchtime 1x.
func BenchmarkScaling(b *testing.B) {
	for _, site := range scaleSites() {
		for _, n := range []int{10_000, 100_000, 1_000_000} {
			b.Run(site.name+"/n="+strconv.Itoa(n), func(b *testing.B) {
				work := site.make(n)
				runtime.GC()
				b.ResetTimer()
				start := cpuTime(b)
				for range b.N {
					if err := work(); err != nil {
						b.Fatal(err)
					}
				}
				// The process's CPU time: on a shared machine the wall
				// clock mostly measures the other processes.
				b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
