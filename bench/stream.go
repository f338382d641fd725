package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
)

const (
	streamChunks = 50
	streamDelay  = 10 * time.Millisecond
)

// streamSample is what one stream measured.
type streamSample struct {
	ttfb    time.Duration   // request start to the first event
	headers time.Duration   // request start to the response headers
	transit []time.Duration // per content chunk: left the sandbox -> parsed by the client
}

var streamSeq atomic.Int64

// oneStream sends a streaming chat completion and times each event.
func (b *bench) oneStream(ctx context.Context, up *upstream, t *target) (streamSample, error) {
	id := strconv.FormatInt(streamSeq.Add(1), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/chat/completions",
		bytes.NewReader(streamBodyFor(id, streamChunks, streamDelay)))
	if err != nil {
		return streamSample{}, err
	}
	req.Header = t.header.Clone()
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		return streamSample{}, err
	}
	gotHeaders := time.Since(start)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return streamSample{}, fmt.Errorf("%s: status %d", t.name, resp.StatusCode)
	}
	arrivals := make([]time.Time, 0, streamChunks+2)
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	for len(arrivals) < streamChunks+2 { // content chunks, the finish chunk, [DONE]
		line, err := br.ReadSlice('\n')
		if err != nil {
			return streamSample{}, fmt.Errorf("%s: stream ended after %d events: %w", t.name, len(arrivals), err)
		}
		if bytes.HasPrefix(line, []byte("data: ")) {
			arrivals = append(arrivals, time.Now())
		}
	}
	// Read to the end, so the connection is reused as an SDK's would be
	// (closing a body before EOF closes its connection).
	if _, err := io.Copy(io.Discard, br); err != nil {
		return streamSample{}, fmt.Errorf("%s: after [DONE]: %w", t.name, err)
	}
	// The sandbox stores the stamps when its handler returns, just after the
	// last event: wait for them, briefly.
	stamps := up.waitStream(id, 2*time.Second, time.Millisecond)
	if len(stamps) < streamChunks+1 {
		return streamSample{}, fmt.Errorf("%s: upstream stamped %d flushes for stream %s; want %d (is the body's \"user\" passed through?)",
			t.name, len(stamps), id, streamChunks+1)
	}
	s := streamSample{ttfb: arrivals[0].Sub(start), headers: gotHeaders, transit: make([]time.Duration, streamChunks)}
	for i := range streamChunks {
		s.transit[i] = arrivals[i].Sub(stamps[i+1]) // stamps[0] is the headers' flush
	}
	return s, nil
}

// streamRun is one run of one target: all its streams' figures.
type streamRun struct {
	ttfb, headers, transit []time.Duration // sorted
	streams                int
}

func (b *bench) measureStreams(up *upstream, t *target, workers int, d time.Duration) (streamRun, error) {
	var mu sync.Mutex
	var run streamRun
	res, err := load.Run(b.ctx, load.Options{Workers: workers, Duration: d, MaxRequests: 10_000},
		func(ctx context.Context, _ int) error {
			s, err := b.oneStream(ctx, up, t)
			if err != nil {
				return err
			}
			mu.Lock()
			run.ttfb = append(run.ttfb, s.ttfb)
			run.headers = append(run.headers, s.headers)
			run.transit = append(run.transit, s.transit...)
			run.streams++
			mu.Unlock()
			return nil
		})
	if err != nil {
		return run, err
	}
	if res.Errors > 0 {
		return run, fmt.Errorf("%s: %d failed streams: %w", t.name, res.Errors, res.FirstErr)
	}
	slices.Sort(run.ttfb)
	slices.Sort(run.headers)
	slices.Sort(run.transit)
	return run, nil
}

// stream is section 2: per-chunk delay and time to first byte of SSE.
func (b *bench) stream() {
	s := &section{Title: "2. Streaming (SSE, 50 chunks 10 ms apart)"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	const workers = 8
	d := b.phase(2500 * time.Millisecond)
	s.Intro = fmt.Sprintf("Streaming chat completions (`\"stream\": true`, %d chunks %d ms apart, asked of the sandbox through the body's `user` field), "+
		"%d concurrent streams, closed loop, %v per path per run, paths interleaved, %d runs. The sandbox runs in the "+
		"benchmark process behind a tap that stamps each event just before it is written to the connection; the client "+
		"stamps each `data:` line as it parses it, on the same monotonic clock. *Transit* is that difference for each of "+
		"the 50 content chunks of every stream; *added per chunk* is a path's transit percentile minus direct's in the same "+
		"run. *Headers* is request start to the response headers, *TTFB* to the first event.",
		streamChunks, streamDelay/time.Millisecond, workers, d, b.opts.runs)
	s.Header = []string{"path", "streams/run", "transit p50", "transit p99", "added/chunk p50", "added/chunk p99", "headers p50", "TTFB p50", "TTFB p99", "added TTFB p50"}
	for name, e := range st.errs {
		s.note("%s not measured: %s", name, oneLine(e.Error()))
	}
	s.note("Between chunks every process here sleeps, so each hop of a new stream starts by waking an idle " +
		"process: on this VM a direct non-streaming request sent right after a stream takes about 0.3-0.4 ms, against " +
		"0.06 ms in section 1's busy loop. TTFB pays that once per hop, which is why it grows more than the per-chunk " +
		"delay through a forwarder (the proxy's wake-ups cross more goroutines than nginx's event loop).")
	meter := b.meter()
	ts := st.targets(workers * 2)
	defer func() {
		for _, t := range ts {
			t.close()
		}
	}()
	runs := map[string][]streamRun{}
	for run := range b.opts.runs {
		for i := range ts {
			t := ts[(i+run)%len(ts)]
			r, err := b.measureStreams(st.up, t, workers, d)
			if err != nil {
				if t.name == "direct" {
					s.Err = err
					return
				}
				s.note("%s: %s", t.name, oneLine(err.Error()))
				continue
			}
			runs[t.name] = append(runs[t.name], r)
		}
	}
	direct := runs["direct"]
	for _, t := range ts {
		rs := runs[t.name]
		if len(rs) != len(direct) {
			continue
		}
		var n, t50, t99, a50, a99, h50, f50, f99, af50 []float64
		for i, r := range rs {
			dr := direct[i]
			p := func(xs []time.Duration, q float64) float64 { return float64(load.Percentile(xs, q)) }
			n = append(n, float64(r.streams))
			t50, t99 = append(t50, p(r.transit, 50)), append(t99, p(r.transit, 99))
			a50, a99 = append(a50, p(r.transit, 50)-p(dr.transit, 50)), append(a99, p(r.transit, 99)-p(dr.transit, 99))
			f50, f99 = append(f50, p(r.ttfb, 50)), append(f99, p(r.ttfb, 99))
			h50 = append(h50, p(r.headers, 50))
			af50 = append(af50, p(r.ttfb, 50)-p(dr.ttfb, 50))
		}
		md := func(xs []float64) time.Duration { return time.Duration(load.Median(xs)) }
		row := []string{t.name, fmt.Sprintf("%.0f", load.Median(n)), ms(md(t50)), ms(md(t99)), "", "", ms(md(h50)), ms(md(f50)), ms(md(f99)), ""}
		if t.name != "direct" {
			row[4], row[5], row[9] = ms(md(a50)), ms(md(a99)), ms(md(af50))
			b.sse[t.name] = [2]time.Duration{md(a50), md(a99)}
		}
		s.row(row...)
	}
	if len(direct) == 0 {
		s.Err = errors.New("no direct runs")
	}
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}
