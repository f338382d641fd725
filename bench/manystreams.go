package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
)

// Section 6 holds many slow streams open at once through one proxy.
const (
	manyChunks = 10
	manyDelay  = time.Second
)

// manyCounts are the concurrent stream counts compared.
var manyCounts = []int{100, 5000}

// manyRun is one count through one path.
type manyRun struct {
	n              int
	transit        []time.Duration // every chunk of every stream, sorted
	failed         int
	firstErr       error
	rssPer         float64 // bytes per stream (proxy only)
	goroutinesPer  float64 // proxy only
	rssBefore, rss int64
	open           time.Duration // until every stream had its first event
}

// manyStreams is section 6: memory, goroutines and per-chunk delay with
// thousands of concurrent long-lived SSE streams through one proxy.
func (b *bench) manyStreams() {
	s := &section{Title: "6. Many concurrent streams (slow chunks, TLS upstream)"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	p := st.proxyTLS
	if p == nil {
		s.Err = fmt.Errorf("the proxy to the TLS upstream did not start: %v", st.errs["proxy-tls"])
		return
	}
	s.Intro = fmt.Sprintf("N streaming chat completions opened at once and held: each gets %d chunks %v apart from the "+
		"sandbox's TLS listener (HTTP/2 offered). Clients connect over HTTP/1.1, one connection per stream. *Direct* "+
		"streams go to the TLS upstream from this process (HTTP/2); *proxy* streams go through the proxy of section 1b. "+
		"Memory and goroutines are the proxy's VmRSS and `go_goroutines` once every stream has received its first event, "+
		"minus before any was opened, divided by N. *Added per chunk* is the proxy's transit percentile minus direct's "+
		"at the same N (transit: the tap's stamp before the sandbox writes an event to the client's arrival parse).",
		manyChunks, manyDelay)
	s.Header = []string{"streams", "path", "all open after", "transit p50", "transit p99", "added/chunk p50", "added/chunk p99",
		"proxy RSS before → during", "RSS/stream", "goroutines/stream", "failed"}
	meter := b.meter()
	direct := &target{name: "direct", base: st.up.TLSURL, header: directHeader(st.token),
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: st.up.pki.clientConfig(), ForceAttemptHTTP2: true,
			MaxIdleConnsPerHost: 64, DisableCompression: true}}}
	defer direct.close()
	for _, n := range manyCounts {
		through := st.targetFor("proxy", p, n)
		dr, err := b.manyOnce(st, direct, nil, n)
		if err != nil {
			s.note("%d streams direct: %s", n, oneLine(err.Error()))
			through.close()
			continue
		}
		pr, err := b.manyOnce(st, through, p, n)
		through.close()
		if err != nil {
			s.note("%d streams through the proxy: %s", n, oneLine(err.Error()))
			continue
		}
		pc := func(r manyRun, q float64) time.Duration { return load.Percentile(r.transit, q) }
		s.row(fmt.Sprint(n), "direct", ms(dr.open), ms(pc(dr, 50)), ms(pc(dr, 99)), "", "", "", "", "", fmt.Sprint(dr.failed))
		s.row(fmt.Sprint(n), "proxy", ms(pr.open), ms(pc(pr, 50)), ms(pc(pr, 99)),
			ms(pc(pr, 50)-pc(dr, 50)), ms(pc(pr, 99)-pc(dr, 99)),
			fmt.Sprintf("%.1f → %.1f MiB", float64(pr.rssBefore)/(1<<20), float64(pr.rss)/(1<<20)),
			fmt.Sprintf("%.1f KiB", pr.rssPer/1024), fmt.Sprintf("%.2f", pr.goroutinesPer), fmt.Sprint(pr.failed))
		if pr.firstErr != nil {
			s.note("%d streams through the proxy: first failure: %s", n, oneLine(pr.firstErr.Error()))
		}
		b.many[n] = manySummary{add99: pc(pr, 99) - pc(dr, 99), rssPer: pr.rssPer, goroutinesPer: pr.goroutinesPer,
			failed: pr.failed + dr.failed}
	}
	s.note("One run per count: a run holds every stream for about %v, and each chunk of each stream is a sample.",
		time.Duration(manyChunks)*manyDelay)
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// manySummary is what the goals need of one count.
type manySummary struct {
	add99                 time.Duration
	rssPer, goroutinesPer float64
	failed                int
}

// targetFor is a client of proxy p with a connection per stream.
func (st *steady) targetFor(name string, p *proxyProc, conns int) *target {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+p.Key)
	h.Set("Content-Type", "application/json")
	return &target{name: name, base: "http://" + p.Addr + "/v1", header: h, client: newClient(conns),
		cpu: func() (time.Duration, error) { return p.CPU(false) }}
}

// manyOnce opens n streams on t at once, waits until each has its first
// event, samples the proxy's memory and goroutines, and reads every stream to
// its end.
func (b *bench) manyOnce(st *steady, t *target, p *proxyProc, n int) (manyRun, error) {
	r := manyRun{n: n}
	var goroutines0 float64
	if p != nil {
		var err error
		if r.rssBefore, err = p.RSS(); err != nil {
			return r, err
		}
		if goroutines0, err = metric(b.ctx, "http://"+p.AdminAddr+"/metrics", "go_goroutines"); err != nil {
			return r, err
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	var (
		mu     sync.Mutex
		opened sync.WaitGroup
		done   sync.WaitGroup
	)
	start := time.Now()
	opened.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			first := sync.OnceFunc(opened.Done)
			defer first()
			transit, err := b.slowStream(ctx, st.up, t, fmt.Sprintf("many-%d-%d-%d", n, i, streamSeq.Add(1)), first)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.failed++
				if r.firstErr == nil {
					r.firstErr = err
				}
				return
			}
			r.transit = append(r.transit, transit...)
		}()
	}
	opened.Wait()
	r.open = time.Since(start)
	if p != nil {
		rss, err := p.RSS()
		if err == nil {
			r.rss = rss
			r.rssPer = float64(rss-r.rssBefore) / float64(n)
		}
		if g, err := metric(ctx, "http://"+p.AdminAddr+"/metrics", "go_goroutines"); err == nil {
			r.goroutinesPer = (g - goroutines0) / float64(n)
		}
	}
	done.Wait()
	slices.Sort(r.transit)
	if r.failed == n {
		return r, fmt.Errorf("every stream failed: %w", r.firstErr)
	}
	return r, nil
}

// slowStream reads one tagged stream of manyChunks chunks, calling first
// when the first event arrives. A stream lasts manyChunks*manyDelay, much
// longer than opening all of them takes, so all are open at the barrier.
func (b *bench) slowStream(ctx context.Context, up *upstream, t *target, id string, first func()) ([]time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/chat/completions",
		bytes.NewReader(streamBodyFor(id, manyChunks, manyDelay)))
	if err != nil {
		return nil, err
	}
	req.Header = t.header.Clone()
	req.Header.Set("Accept", "text/event-stream")
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	arrivals := make([]time.Time, 0, manyChunks+2)
	br := bufio.NewReaderSize(resp.Body, 4<<10)
	for len(arrivals) < manyChunks+2 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("stream ended after %d events: %w", len(arrivals), err)
		}
		if bytes.HasPrefix(line, []byte("data: ")) {
			arrivals = append(arrivals, time.Now())
			if len(arrivals) == 1 {
				first()
			}
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	var stamps []time.Time
	for deadline := time.Now().Add(5 * time.Second); ; {
		if stamps = up.takeStream(id); stamps != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(stamps) < manyChunks+1 {
		return nil, fmt.Errorf("upstream stamped %d flushes for stream %s; want %d", len(stamps), id, manyChunks+1)
	}
	out := make([]time.Duration, manyChunks)
	for i := range manyChunks {
		out[i] = arrivals[i].Sub(stamps[i+1])
	}
	return out, nil
}
