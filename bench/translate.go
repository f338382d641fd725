package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
)

// translatedBodyFor is a Messages client asking for a model served on
// /chat/completions only: the proxy translates the request to Chat (where
// metadata.user_id becomes "user", which carries the stream's tag to the
// tap) and the stream back to Messages.
func translatedBodyFor(id string, chunks int, delay time.Duration) []byte {
	return fmt.Appendf(nil, `{"model":"gpt-4.1","max_tokens":512,"stream":true,"metadata":{"user_id":"bench:%s:%d:%d"},"messages":[{"role":"user","content":"Stream a short answer."}]}`,
		id, chunks, delay/time.Millisecond)
}

// xlatePath is one way through the proxy measured by section 7.
type xlatePath struct {
	name, path string
	body       func(id string, chunks int, delay time.Duration) []byte
	// content tells a content event's data line from the others.
	content func(line []byte) bool
}

var (
	passThroughPath = xlatePath{"pass-through (Chat client, Chat model)", "/chat/completions", streamBodyFor,
		func(l []byte) bool { return bytes.Contains(l, []byte(`"content":"`)) }}
	translatedPath = xlatePath{"translated (Messages client, Chat-only model)", "/messages", translatedBodyFor,
		func(l []byte) bool { return bytes.Contains(l, []byte(`"type":"content_block_delta"`)) }}
)

// oneTranslatedStream sends one stream on p and returns the transit of each
// content chunk (left the sandbox -> parsed by the client).
func (b *bench) oneTranslatedStream(ctx context.Context, up *upstream, t *target, p xlatePath) ([]time.Duration, error) {
	id := strconv.FormatInt(streamSeq.Add(1), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+p.path, bytes.NewReader(p.body(id, streamChunks, streamDelay)))
	if err != nil {
		return nil, err
	}
	req.Header = t.header.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: status %d: %s", p.name, resp.StatusCode, b)
	}
	arrivals := make([]time.Time, 0, streamChunks)
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, []byte("data: ")) && p.content(line) {
			arrivals = append(arrivals, time.Now())
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: after %d content events: %w", p.name, len(arrivals), err)
		}
	}
	if len(arrivals) != streamChunks {
		return nil, fmt.Errorf("%s: %d content events; want %d", p.name, len(arrivals), streamChunks)
	}
	stamps := up.waitStream(id, 2*time.Second, time.Millisecond)
	if len(stamps) < streamChunks+1 {
		return nil, fmt.Errorf("%s: upstream stamped %d flushes; want %d", p.name, len(stamps), streamChunks+1)
	}
	transit := make([]time.Duration, streamChunks)
	for i := range streamChunks {
		transit[i] = arrivals[i].Sub(stamps[i+1])
	}
	return transit, nil
}

// xlateSummary is what the goals table takes from section 7.
type xlateSummary struct {
	added99 time.Duration
}

// xlateRun is one run of one path.
type xlateRun struct {
	transit   []time.Duration // sorted
	streams   int
	cpuPerReq time.Duration
}

func (b *bench) measureTranslated(up *upstream, t *target, p xlatePath, workers int, d time.Duration) (xlateRun, error) {
	var run xlateRun
	cpu0, err := t.cpu()
	if err != nil {
		return run, err
	}
	var mu sync.Mutex
	res, err := load.Run(b.ctx, load.Options{Workers: workers, Duration: d, MaxRequests: 10_000},
		func(ctx context.Context, _ int) error {
			tr, err := b.oneTranslatedStream(ctx, up, t, p)
			if err != nil {
				return err
			}
			mu.Lock()
			run.transit = append(run.transit, tr...)
			run.streams++
			mu.Unlock()
			return nil
		})
	if err != nil {
		return run, err
	}
	if res.Errors > 0 {
		return run, fmt.Errorf("%s: %d failed streams: %w", p.name, res.Errors, res.FirstErr)
	}
	cpu1, err := t.cpu()
	if err != nil {
		return run, err
	}
	if run.streams > 0 {
		run.cpuPerReq = (cpu1 - cpu0) / time.Duration(run.streams)
	}
	slices.Sort(run.transit)
	return run, nil
}

// translated is section 7: a translated stream against a passed-through
// one, through the same proxy.
func (b *bench) translated() {
	s := &section{Title: "7. Translated streaming (Messages client, Chat-only model)"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	if st.proxy == nil {
		s.Err = fmt.Errorf("no proxy: %v", st.errs["proxy"])
		return
	}
	pt := st.targetFor("proxy", st.proxy, 32)
	defer pt.close()
	const workers = 8
	d := b.phase(2500 * time.Millisecond)
	s.Intro = fmt.Sprintf("The same proxy, two paths, %d concurrent streams of %d chunks %v apart, %v per path per run, "+
		"paths alternated, %d runs: a Chat client streaming from gpt-4.1 (passed through), and an Anthropic Messages client "+
		"streaming from gpt-4.1, which the sandbox serves on /chat/completions only, so the proxy translates the request to "+
		"Chat and each upstream chunk back into Messages events as it arrives. *Transit* is upstream flush to client parse "+
		"of each content chunk (the sandbox stamps each event as in section 2); *added* is the translated path's percentile "+
		"minus the pass-through's in the same run. *CPU/stream* is the proxy's CPU time over the phase divided by the "+
		"streams it carried.", workers, streamChunks, streamDelay, d, b.opts.runs)
	s.Header = []string{"path", "streams/run", "transit p50", "transit p99", "added/chunk p50", "added/chunk p99", "proxy CPU/stream"}
	paths := []xlatePath{passThroughPath, translatedPath}
	runs := map[string][]xlateRun{}
	for run := range b.opts.runs {
		for i := range paths {
			p := paths[(i+run)%len(paths)]
			r, err := b.measureTranslated(st.up, pt, p, workers, d)
			if err != nil {
				s.Err = err
				return
			}
			runs[p.name] = append(runs[p.name], r)
		}
	}
	base := runs[passThroughPath.name]
	for _, p := range paths {
		var n, t50, t99, a50, a99, cpu []float64
		for i, r := range runs[p.name] {
			q := func(xs []time.Duration, x float64) float64 { return float64(load.Percentile(xs, x)) }
			n = append(n, float64(r.streams))
			t50, t99 = append(t50, q(r.transit, 50)), append(t99, q(r.transit, 99))
			a50, a99 = append(a50, q(r.transit, 50)-q(base[i].transit, 50)), append(a99, q(r.transit, 99)-q(base[i].transit, 99))
			cpu = append(cpu, float64(r.cpuPerReq))
		}
		md := func(xs []float64) time.Duration { return time.Duration(load.Median(xs)) }
		row := []string{p.name, fmt.Sprintf("%.0f", load.Median(n)), ms(md(t50)), ms(md(t99)), "", "", ms(md(cpu))}
		if p.name != passThroughPath.name {
			row[4], row[5] = ms(md(a50)), ms(md(a99))
			b.xlate = &xlateSummary{added99: md(a99)}
		}
		s.row(row...)
	}
}
