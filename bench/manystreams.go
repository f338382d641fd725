package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
)

// Section 6 holds many slow streams open at once through one proxy. A stream
// lasts manyChunks*manyDelay, which must exceed the time opening all of them
// takes (up to about 12 s for 5,000 on a loaded machine), so that all are open
// when the proxy's memory is sampled; manyOnce counts those that were not.
const (
	manyChunks = 20
	manyDelay  = time.Second
)

// defaultManyCounts are the concurrent stream counts compared (-streams).
var defaultManyCounts = []int{1000, 5000, 10000}

// manyChunksFor is how many chunks each of n streams gets: opening 10,000
// streams takes longer than 5,000, and every stream must still be open
// when the last one has its first event.
// -many-chunks overrides it (a loaded machine may take minutes to open
// 10,000 streams).
func (b *bench) manyChunksFor(n int) int {
	if b.opts.manyChunks > 0 {
		return b.opts.manyChunks
	}
	return manyChunks + n/1000
}

// manyGoalN is the count issue 28's goals are read at.
const manyGoalN = 10000

// manyRun is one count through one path.
type manyRun struct {
	transit        []time.Duration // the chunks written once every stream was open, sorted
	transitAll     []time.Duration // every chunk of every stream, the opening burst's too, sorted
	failed         int
	firstErr       error
	rssPer         float64 // bytes per stream (proxy only)
	goroutinesPer  float64 // proxy only
	rssBefore, rss int64
	open           time.Duration // until every stream had its first event
	endedEarly     int           // streams that had ended when the proxy was sampled
	cpu            time.Duration // the proxy's CPU time over the whole run (opening, streaming, closing)
	heapPer        float64       // go_memstats_heap_inuse_bytes growth per stream (proxy only)
	upConns        int           // the proxy's sockets beyond one per client stream: its upstream connections (proxy only)
	load           string        // the machine's load average when every stream was open
}

// manyPath is one proxy section 6 measures: a binary, the upstream
// protocol it is started with, and how the clients reach it.
type manyPath struct {
	name  string
	bin   string
	http2 bool // --upstream-http2
	h2c   bool // the clients multiplex over HTTP/2 (prior knowledge) to the proxy
}

// manyProtocols are the proxy's upstream over HTTP/1.1
// (--upstream-http2=false) and over HTTP/2 (its default).
var manyProtocols = []struct {
	name  string
	http2 bool
}{{"proxy", false}, {"proxy-h2", true}}

// manyClientKinds are the clients' ways to the proxy: HTTP/1.1, a
// connection per stream, and HTTP/2 without TLS, manyStreamsPerConn
// streams a connection (shown with the suffix).
var manyClientKinds = []struct {
	suffix string
	h2c    bool
}{{"", false}, {" (h2c)", true}}

// manyStreamsPerConn is how many streams an h2c client puts on one
// connection to the proxy: within any server's default (100 or more).
const manyStreamsPerConn = 100

// manyPaths are the proxies section 6 compares: the built proxy with each
// upstream protocol and client kind, each followed by the -compare-proxy
// binaries with the same protocol (shown as proxy-NAME and proxy-h2-NAME;
// HTTP/1.1 clients only), side by side.
func (b *bench) manyPaths() []manyPath {
	bins := []struct{ suffix, bin string }{{"", b.bins["proxy"]}}
	for _, kv := range strings.Split(b.opts.altProxy, ",") {
		if name, path, ok := strings.Cut(kv, "="); ok {
			bins = append(bins, struct{ suffix, bin string }{"-" + name, path})
		}
	}
	var out []manyPath
	for _, pr := range manyProtocols {
		for _, ck := range manyClientKinds {
			for _, bn := range bins {
				if ck.h2c && bn.suffix != "" {
					continue // older builds may not take h2c or --max-streams
				}
				out = append(out, manyPath{pr.name + bn.suffix + ck.suffix, bn.bin, pr.http2, ck.h2c})
			}
		}
	}
	return out
}

// manyStack is section 6's upstream (a child process), the broker
// exchanging at it, and a Copilot token of it for direct.
type manyStack struct {
	up     *remoteUpstream
	broker *brokerProc
	token  string
}

// manyStackStart starts section 6's stack once per run.
func (b *bench) manyStackStart() (*manyStack, error) {
	if b.manyCache != nil {
		return b.manyCache, nil
	}
	up, err := b.startRemoteUpstream("many-upstream")
	if err != nil {
		return nil, fmt.Errorf("the upstream did not start: %w", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	ms := &manyStack{up: up}
	if ms.token, err = up.copilotToken(ctx); err != nil {
		return nil, err
	}
	if ms.broker, err = b.startBroker(up, "many-broker"); err != nil {
		return nil, fmt.Errorf("the broker did not start: %w", err)
	}
	b.manyCache = ms
	return ms, nil
}

// startManyProxy starts the proxy of path mp against ms, with no cap on
// client connections or streams.
func (b *bench) startManyProxy(ms *manyStack, mp manyPath, name string) (*proxyProc, error) {
	args := []string{"--copilot-api-url", ms.up.TLSURL, "--upstream-ca-file", ms.up.CAPath,
		fmt.Sprintf("--upstream-http2=%t", mp.http2), "--max-connections", "-1"}
	p, err := b.startProxyArgs(mp.bin, ms.broker, name, append(args, "--max-streams", "-1")...)
	if err != nil && strings.Contains(err.Error(), "flag provided but not defined: -max-streams") {
		// A -compare-proxy build from before --max-streams: no cap to lift.
		return b.startProxyArgs(mp.bin, ms.broker, name+"-nocap", args...)
	}
	return p, err
}

// manyStreams is section 6: memory, goroutines and per-chunk delay with
// thousands of concurrent long-lived SSE streams through one proxy.
func (b *bench) manyStreams() {
	s := &section{Title: "6. Many concurrent streams (slow chunks, TLS upstream)"}
	b.rep.Sections = append(b.rep.Sections, s)
	stk, err := b.manyStackStart()
	if err != nil {
		s.Err = err
		return
	}
	s.Intro = fmt.Sprintf("N streaming chat completions opened at once and held: each gets %d chunks %v apart (plus 1 s per 1,000 streams) from "+
		"the sandbox's TLS listener (HTTP/2 and HTTP/1.1 offered), which runs in its own process (`bench __upstream`) so that "+
		"this process's clients do not starve its handshakes. *proxy* reaches the upstream over HTTP/1.1 (`--upstream-http2=false`: a "+
		"connection per stream), *proxy-h2* over HTTP/2 (the default). Clients reach the proxy over HTTP/1.1, a "+
		"connection per stream, or, in the rows marked *(h2c)*, over HTTP/2 without TLS (prior knowledge), %d streams a "+
		"connection. Each row is a proxy started for that row, so no earlier row's heap hides its growth. "+
		"*direct* is the baseline: HTTP/1.1 clients, a connection per stream, straight to the same sandbox process's "+
		"plain listener, at the same N, just before the proxies; so the added delay also holds the upstream leg's TLS at "+
		"both ends and the sandbox's HTTP/2 server (one goroutine per connection serves up to 250 streams' writes), and "+
		"the bench's clients (all in one process: writing, reading and parsing N streams on the shared cores) are in "+
		"every path's transit. "+
		"*Transit*: the sandbox's stamp (wall clock) just before it writes an event to the arrival of that event's line at "+
		"the client, for the chunks written once every stream was open (held streams, the goal's case); the last column is "+
		"the added p99 over every chunk, the opening burst's too. "+
		"*Added per chunk* is the path's transit percentile minus direct's at the same N. Memory and goroutines are the "+
		"proxy's VmRSS and `go_goroutines` once every stream has received its first event, minus before any was opened, "+
		"divided by N (an h2c client connection's two goroutines and buffers are shared by its %d streams and counted in "+
		"the per-stream figure). *Proxy CPU/stream* is the proxy's CPU time over the whole run (opening, chunks, closing) "+
		"divided by N.",
		manyChunks, manyDelay, manyStreamsPerConn, manyStreamsPerConn)
	s.Header = []string{"streams", "path", "all open after", "transit p50", "transit p99", "added/chunk p50", "added/chunk p99",
		"proxy RSS before → during", "RSS/stream", "heap/stream", "goroutines/stream", "upstream conns", "proxy CPU/stream", "failed", "added p99, all chunks", "load avg"}
	lim, err := raiseOpenFiles(manyFilesNeeded(b.opts.streams))
	if err != nil {
		s.note("open-file limit: %s", oneLine(err.Error()))
	} else {
		s.note("open-file limit (RLIMIT_NOFILE) of the bench and the processes it starts: %d", lim)
	}
	meter := b.meter()
	paths := b.manyPaths()
	var dr manyRun // the last baseline measured
	drN := 0
	for _, n := range b.opts.streams {
		pc := func(r manyRun, q float64) time.Duration { return load.Percentile(r.transit, q) }
		all99 := func(r manyRun) time.Duration { return load.Percentile(r.transitAll, 99) }
		if fitsFiles(lim, n, n) {
			direct := &manyTarget{name: "direct", base: stk.up.URL, header: directHeader(stk.token), clients: []*http.Client{newClient(n)}}
			r, err := b.manyOnce(stk.up, direct, nil, n, nil)
			direct.close()
			if err != nil {
				s.note("%d streams direct: %s", n, oneLine(err.Error()))
				continue
			}
			dr, drN = r, n
			s.row(fmt.Sprint(n), "direct", ms(dr.open), ms(pc(dr, 50)), ms(pc(dr, 99)), "", "", "", "", "", "", "", "", fmt.Sprint(dr.failed), "", dr.load)
		} else if drN == 0 {
			s.note("%d streams: direct needs %d descriptors in the bench and in the sandbox, over the limit of %d, and no smaller count was measured: "+
				"no added delays at %d", n, n, lim, n)
		} else {
			s.note("%d streams: direct needs %d descriptors in the bench and in the sandbox, over the limit of %d: "+
				"the added delays at %d are against direct at %d", n, n, lim, n, drN)
		}
		for _, mp := range paths {
			if bench, proxy := manyPathFiles(mp, n); !fitsFiles(lim, bench, proxy) {
				s.note("%d streams through %s: skipped, %d descriptors needed in the bench and %d in the proxy, over the limit of %d", n, mp.name, bench, proxy, lim)
				continue
			}
			// A proxy of its own for each count: no heap left by a
			// smaller count hides the growth.
			p, err := b.startManyProxy(stk, mp, fmt.Sprintf("many-%d-%s", n, strings.NewReplacer(" ", "", "(", "-", ")", "").Replace(mp.name)))
			if err != nil {
				s.note("%d streams through %s: the proxy did not start: %s", n, mp.name, oneLine(err.Error()))
				continue
			}
			through := manyTargetFor(mp, p, n)
			pr, err := b.manyOnce(stk.up, through, p, n, nil)
			through.close()
			b.stop(p.Process)
			if err != nil {
				s.note("%d streams through %s: %s", n, mp.name, oneLine(err.Error()))
				continue
			}
			added := func(q float64) string {
				if drN == 0 {
					return ""
				}
				return ms(pc(pr, q) - pc(dr, q))
			}
			s.row(fmt.Sprint(n), mp.name, ms(pr.open), ms(pc(pr, 50)), ms(pc(pr, 99)), added(50), added(99),
				fmt.Sprintf("%.1f → %.1f MiB", float64(pr.rssBefore)/(1<<20), float64(pr.rss)/(1<<20)),
				fmt.Sprintf("%.1f KiB", pr.rssPer/1024), fmt.Sprintf("%.1f KiB", pr.heapPer/1024), fmt.Sprintf("%.2f", pr.goroutinesPer), fmt.Sprint(pr.upConns),
				ms(pr.cpu/time.Duration(n)), fmt.Sprint(pr.failed), addedAll(pr, dr, drN, all99), pr.load)
			if pr.firstErr != nil {
				s.note("%d streams through %s: first failure: %s", n, mp.name, oneLine(pr.firstErr.Error()))
			}
			if pr.endedEarly > 0 {
				s.note("%d streams through %s: %d had already ended (or failed) when the memory and goroutines were sampled; "+
					"the per-stream figures understate", n, mp.name, pr.endedEarly)
			}
			b.many[manyKey{n, mp.name}] = manySummary{add99: pc(pr, 99) - pc(dr, 99), baseline: drN, rssPer: pr.rssPer,
				goroutinesPer: pr.goroutinesPer, failed: pr.failed + dr.failed, endedEarly: pr.endedEarly}
		}
	}
	s.note("One run per count: a run holds every stream for %d s plus 1 s per 1,000 streams, and each chunk of each stream is a sample. "+
		"*Heap/stream* is the growth of the proxy's `go_memstats_heap_inuse_bytes` (live heap and garbage not yet swept) per stream; "+
		"*Upstream conns* is the growth of the proxy's open sockets less its client connections: its connections to the sandbox "+
		"(HTTP/2 multiplexes streams on each up to the server's MaxConcurrentStreams); "+
		"*load avg* is the machine's 1-minute load average when every stream was open (2 cores, shared with other work).", manyChunks)
	s.note("The added delay is a difference of percentiles (proxy's p99 minus direct's p99), not a percentile of per-chunk " +
		"differences; a negative figure means the path was within the noise of the baseline.")
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// manyKey names one count through one path of section 6.
type manyKey struct {
	n    int
	path string
}

// manySummary is what the goals need of one count through one path.
type manySummary struct {
	add99                 time.Duration
	baseline              int // the direct count add99 is against; 0: none
	rssPer, goroutinesPer float64
	failed                int
	endedEarly            int // the memory and goroutine figures understate when > 0
}

// targetFor is a client of proxy p with a connection per stream.
func (st *steady) targetFor(name string, p *proxyProc, conns int) *target {
	return &target{name: name, base: "http://" + p.Addr + "/v1", header: proxyHeader(p), client: newClient(conns),
		cpu: func() (time.Duration, error) { return p.CPU(false) }}
}

// proxyHeader is what a client of proxy p sends with each request.
func proxyHeader(p *proxyProc) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+p.Key)
	h.Set("Content-Type", "application/json")
	return h
}

// manyTarget is where section 6's clients send their streams: stream i
// goes on clients[i%len(clients)].
type manyTarget struct {
	name    string
	base    string // URL prefix before the API path
	header  http.Header
	clients []*http.Client
	h2c     bool // clients multiplex over HTTP/2
	// cpu reads the proxy's CPU time (nil for direct).
	cpu func() (time.Duration, error)
}

func (t *manyTarget) close() {
	for _, c := range t.clients {
		c.CloseIdleConnections()
	}
}

// manyTargetFor is a client of proxy p for n streams: HTTP/1.1 with a
// connection per stream, or with mp.h2c HTTP/2 by prior knowledge,
// manyStreamsPerConn streams on each connection (a transport each, which
// dials its one connection once and puts its streams on it).
func manyTargetFor(mp manyPath, p *proxyProc, n int) *manyTarget {
	t := &manyTarget{name: mp.name, base: "http://" + p.Addr + "/v1", header: proxyHeader(p), h2c: mp.h2c,
		cpu: func() (time.Duration, error) { return p.CPU(false) }}
	if !mp.h2c {
		t.clients = []*http.Client{newClient(n)}
		return t
	}
	for range (n + manyStreamsPerConn - 1) / manyStreamsPerConn {
		tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1, DisableCompression: true, IdleConnTimeout: time.Minute}
		tr.Protocols.SetUnencryptedHTTP2(true)
		t.clients = append(t.clients, &http.Client{Transport: tr})
	}
	return t
}

// manyOnce opens n streams on t at once, waits until each has its first
// event, samples the proxy's memory and goroutines, calls hold (when set)
// while every stream is open, reads every stream to its end, and then
// takes the sandbox's stamps of every stream.
func (b *bench) manyOnce(up *remoteUpstream, t *manyTarget, p *proxyProc, n int, hold func()) (manyRun, error) {
	r := manyRun{}
	var goroutines0, heap0 float64
	if p != nil {
		var err error
		if r.rssBefore, err = p.RSS(); err != nil {
			return r, err
		}
		if goroutines0, err = metric(b.ctx, "http://"+p.AdminAddr+"/metrics", "go_goroutines"); err != nil {
			return r, err
		}
		heap0, _ = metric(b.ctx, "http://"+p.AdminAddr+"/metrics", "go_memstats_heap_inuse_bytes")
	}
	sockets0 := 0
	if p != nil {
		sockets0 = countSockets(p.PID())
	}
	var cpu0 time.Duration
	if t.cpu != nil {
		cpu0, _ = t.cpu()
	}
	chunks := b.manyChunksFor(n)
	ctx, cancel := context.WithTimeout(b.ctx, time.Duration(chunks)*manyDelay+3*time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		opened   sync.WaitGroup
		done     sync.WaitGroup
		ended    atomic.Int64
		arrivals = map[string][]time.Time{}
	)
	start := time.Now()
	opened.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			defer ended.Add(1)
			first := sync.OnceFunc(opened.Done)
			defer first()
			id := fmt.Sprintf("many-%d-%d-%d", n, i, streamSeq.Add(1))
			got, err := slowStream(ctx, t, t.clients[i%len(t.clients)], id, chunks, first)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.failed++
				if r.firstErr == nil {
					r.firstErr = err
				}
				return
			}
			arrivals[id] = got
		}()
	}
	opened.Wait()
	allOpen := time.Now()
	r.open = allOpen.Sub(start)
	r.endedEarly = int(ended.Load())
	if p != nil {
		rss, err := p.RSS()
		if err == nil {
			r.rss = rss
			r.rssPer = float64(rss-r.rssBefore) / float64(n)
		}
		if g, err := metric(ctx, "http://"+p.AdminAddr+"/metrics", "go_goroutines"); err == nil {
			r.goroutinesPer = (g - goroutines0) / float64(n)
		}
		if h, err := metric(ctx, "http://"+p.AdminAddr+"/metrics", "go_memstats_heap_inuse_bytes"); err == nil {
			r.heapPer = (h - heap0) / float64(n)
		}
		r.upConns = countSockets(p.PID()) - sockets0 - t.conns(n)
	}
	r.load = loadavg1()
	if hold != nil {
		hold()
	}
	done.Wait()
	if t.cpu != nil {
		if cpu1, err := t.cpu(); err == nil {
			r.cpu = cpu1 - cpu0
		}
	}
	ids := slices.Collect(maps.Keys(arrivals))
	// Not ctx: streams that hung until it expired are counted as failed,
	// and the others still measured.
	sctx, scancel := context.WithTimeout(b.ctx, time.Minute)
	defer scancel()
	stamps, err := up.stamps(sctx, ids, 5*time.Second)
	if err != nil {
		return r, err
	}
	for _, id := range ids {
		st, got := stamps[id], arrivals[id]
		if len(st) < chunks+1 {
			r.failed++
			if r.firstErr == nil {
				r.firstErr = fmt.Errorf("upstream stamped %d flushes for stream %s; want %d", len(st), id, chunks+1)
			}
			continue
		}
		for i := range chunks {
			d := got[i].Sub(st[i+1]) // wall clock: the stamps come from another process
			r.transitAll = append(r.transitAll, d)
			if !st[i+1].Before(allOpen) {
				r.transit = append(r.transit, d)
			}
		}
	}
	slices.Sort(r.transit)
	slices.Sort(r.transitAll)
	if r.failed == n {
		return r, fmt.Errorf("every stream failed: %w", r.firstErr)
	}
	return r, nil
}

// conns is how many client connections n streams on t hold.
func (t *manyTarget) conns(n int) int {
	if t.h2c {
		return len(t.clients)
	}
	return n
}

// slowStream reads one tagged stream of chunks events on c and returns
// when each event arrived, calling first when the first one does. A
// stream lasts chunks*manyDelay, longer than opening all of them takes, so
// all are open at the barrier.
func slowStream(ctx context.Context, t *manyTarget, c *http.Client, id string, chunks int, first func()) ([]time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/chat/completions",
		bytes.NewReader(streamBodyFor(id, chunks, manyDelay)))
	if err != nil {
		return nil, err
	}
	req.Header = t.header.Clone()
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	arrivals := make([]time.Time, 0, chunks+2)
	br := bufio.NewReaderSize(resp.Body, 4<<10)
	for len(arrivals) < chunks+2 {
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
	return arrivals, nil
}

// profileMany writes, for each of section 6's upstream protocols and
// client kinds, the heap profile (with the runtime's memory statistics in
// the text form), the goroutine profile, a 5 s CPU profile and the RSS of a
// profiled proxy (the same server package, in this binary's __profiled
// mode) holding -profile-streams streams to the TLS upstream, taken once
// every stream has its first event.
func (b *bench) profileMany(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	st, err := b.manyStackStart()
	if err != nil {
		return err
	}
	pdir := b.dir("profiled-many")
	n := b.opts.profileStreams
	lim, _ := raiseOpenFiles(manyFilesNeeded([]int{n}))
	for _, mp := range b.manyPaths() {
		if bench, proxy := manyPathFiles(mp, n); mp.bin != b.bins["proxy"] || !fitsFiles(lim, bench, proxy) {
			continue
		}
		mp.name = strings.NewReplacer(" ", "", "(", "-", ")", "").Replace(mp.name)
		addrs, err := freeAddrs(3)
		if err != nil {
			return err
		}
		key := randomKey()
		keysFile, err := writeKeys(pdir, mp.name, key)
		if err != nil {
			return err
		}
		px, err := proc.Start(proc.Spec{Name: "profiled-" + mp.name, Path: self, Args: []string{"__profiled", "proxy"},
			Env: []string{"BENCH_PPROF_ADDR=" + addrs[0], "BENCH_ADDR=" + addrs[1], "BENCH_ADMIN_ADDR=" + addrs[2],
				"BENCH_BROKER_ADDR=" + st.broker.GRPCAddr, "PROXY_BROKER_KEY=" + st.broker.Key, "BENCH_KEYS_FILE=" + keysFile,
				"BENCH_API_URL=" + st.up.TLSURL, "BENCH_UPSTREAM_CA=" + st.up.CAPath,
				fmt.Sprintf("BENCH_UPSTREAM_HTTP2=%t", mp.http2)},
			LogPath: filepath.Join(pdir, mp.name+".log")})
		if err != nil {
			return err
		}
		b.procs = append(b.procs, px)
		if err := proc.WaitHTTP(b.ctx, px, "http://"+addrs[2]+"/readyz", 20*time.Second); err != nil {
			b.stop(px)
			return err
		}
		p := &proxyProc{Process: px, Addr: addrs[1], AdminAddr: addrs[2], Key: key}
		t := manyTargetFor(mp, p, n)
		prefix := filepath.Join(dir, fmt.Sprintf("%s-many%d", mp.name, n))
		var ferr error
		r, err := b.manyOnce(st.up, t, p, n, func() {
			for _, f := range [][2]string{
				{".heap.pprof", "heap?gc=1"}, {".heap.txt", "heap?debug=1"}, {".goroutine.txt", "goroutine?debug=1"},
				{".cpu.pprof", "profile?seconds=5"},
			} {
				suffix, path := f[0], f[1]
				ferr = errors.Join(ferr, fetchTo(b.ctx, "http://"+addrs[0]+"/debug/pprof/"+path, prefix+suffix))
			}
		})
		t.close()
		b.stop(px)
		if err = errors.Join(err, ferr); err != nil {
			return err
		}
		b.logf("wrote %s.*: %d streams through %s: all open after %v; RSS %.1f → %.1f MiB, %.1f KiB and %.2f goroutines per stream; %d failed, %d ended before the sample",
			prefix, n, mp.name, r.open.Round(time.Millisecond), float64(r.rssBefore)/(1<<20), float64(r.rss)/(1<<20),
			r.rssPer/1024, r.goroutinesPer, r.failed, r.endedEarly)
	}
	return nil
}

// fetchTo writes the body of a GET of url to path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

// manyFilesNeeded is the open-file limit section 6 needs at the largest of
// counts: a stream holds the client's connection in the bench process, its
// end of it and of the upstream connection in the proxy (a connection per
// stream each way over HTTP/1.1), and the upstream's end in the sandbox
// process, with room for listeners, logs and connections still closing.
func manyFilesNeeded(counts []int) uint64 {
	n := 0
	for _, c := range counts {
		n = max(n, c)
	}
	return uint64(2*n + 4096)
}

// addedAll is the added p99 over every chunk, or "" without a baseline.
func addedAll(pr, dr manyRun, drN int, all99 func(manyRun) time.Duration) string {
	if drN == 0 {
		return ""
	}
	return ms(all99(pr) - all99(dr))
}

// manyFDSlack is what a process needs besides the streams' sockets.
const manyFDSlack = 512

// fitsFiles says whether bench and proxy descriptors fit under lim.
func fitsFiles(lim uint64, bench, proxy int) bool {
	return uint64(bench+manyFDSlack) <= lim && uint64(proxy+manyFDSlack) <= lim
}

// manyPathFiles is what n streams through a proxy hold in the bench
// process (the clients' ends: a connection per stream over HTTP/1.1,
// manyStreamsPerConn streams a connection over h2c) and in the proxy (the
// clients' connections and the upstream ones: a connection per stream over
// HTTP/1.1, a few hundred streams a connection over HTTP/2); the sandbox
// process holds the upstream ones, never more than the proxy.
func manyPathFiles(mp manyPath, n int) (bench, proxy int) {
	bench = n
	if mp.h2c {
		bench = (n + manyStreamsPerConn - 1) / manyStreamsPerConn
	}
	up := n
	if mp.http2 {
		up = n / 50
	}
	return bench, bench + up
}

// raiseOpenFiles raises this process's RLIMIT_NOFILE (which the proxies it
// starts inherit) to at least need, raising the hard limit too when allowed
// (root, or CAP_SYS_RESOURCE); it returns the soft limit in force.
func raiseOpenFiles(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= need {
		return lim.Cur, nil
	}
	want := lim
	want.Cur = need
	want.Max = max(lim.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Not allowed past the hard limit: take what it allows.
		want.Cur, want.Max = lim.Max, lim.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err2 != nil {
			return lim.Cur, fmt.Errorf("raising to %d: %w; to the hard limit %d: %w", need, err, lim.Max, err2)
		}
		return lim.Max, fmt.Errorf("%d needed, the hard limit %d allows no more (%w): the largest counts may fail", need, lim.Max, err)
	}
	return need, nil
}

// loadavg1 is the machine's 1-minute load average.
func loadavg1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f, _, _ := strings.Cut(string(b), " ")
	return f
}

// countSockets is how many sockets process pid has open (0 when unreadable).
func countSockets(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
