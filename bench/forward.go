package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
)

// chatBody is the small non-streaming chat completion of section 1.
var chatBody = []byte(`{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}]}`)

// target is one way to reach the sandbox's Copilot API.
type target struct {
	name   string
	base   string // URL prefix before the API path, e.g. http://127.0.0.1:4141/v1
	header http.Header
	client *http.Client
	// cpu reads the forwarder's CPU time (nil for direct).
	cpu func() (time.Duration, error)
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
		DisableCompression: true, ForceAttemptHTTP2: false,
	}}
}

// targets returns direct, then the proxy and nginx when they run.
func (st *steady) targets(conns int) []*target {
	ts := []*target{{name: "direct", base: st.up.URL, header: directHeader(st.token), client: newClient(conns)}}
	procs := map[string]*proxyProc{"proxy": st.proxy}
	maps.Copy(procs, st.alt)
	for name, p := range procs {
		if p == nil {
			continue
		}
		ts = append(ts, st.targetFor(name, p, conns))
	}
	slices.SortStableFunc(ts[1:], func(a, b *target) int { return strings.Compare(a.name, b.name) })
	if st.floor != nil {
		ts = append(ts, floorTarget("go-floor", st.floor, st.floorURL, conns))
	}
	if st.nginx != nil {
		ts = append(ts, nginxTarget(st.nginx, st.nginxURL, conns))
	}
	return ts
}

// nginxTarget is a client of nginx at url; its CPU counts the workers.
func nginxTarget(n *proc.Process, url string, conns int) *target {
	h := http.Header{}
	h.Set("Authorization", "Bearer client-key-nginx-ignores")
	h.Set("Content-Type", "application/json")
	return &target{name: "nginx", base: url + "/v1", header: h, client: newClient(conns),
		cpu: func() (time.Duration, error) { return n.CPU(true) }}
}

func (t *target) close() { t.client.CloseIdleConnections() }

// chat sends one non-streaming chat completion and reads the whole answer.
func (t *target) chat(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/chat/completions", bytes.NewReader(chatBody))
	if err != nil {
		return err
	}
	req.Header = t.header.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", t.name, resp.StatusCode)
	}
	return nil
}

// fwdRun is one measured run of one target.
type fwdRun struct {
	p50, p99  time.Duration
	rps       float64
	cpuPerReq time.Duration // 0 when unknown
	errs      int64
	firstErr  error
	requests  int
}

func (b *bench) measureForward(t *target, conc int, d time.Duration) (fwdRun, error) {
	if _, err := load.Run(b.ctx, load.Options{Workers: conc, Duration: b.phase(300 * time.Millisecond)},
		func(ctx context.Context, _ int) error { return t.chat(ctx) }); err != nil {
		return fwdRun{}, err
	}
	var cpu0 time.Duration
	if t.cpu != nil {
		c, err := t.cpu()
		if err != nil {
			return fwdRun{}, err
		}
		cpu0 = c
	}
	res, err := load.Run(b.ctx, load.Options{Workers: conc, Duration: d},
		func(ctx context.Context, _ int) error { return t.chat(ctx) })
	if err != nil {
		return fwdRun{}, err
	}
	r := fwdRun{p50: res.Percentile(50), p99: res.Percentile(99), rps: res.Throughput(),
		errs: res.Errors, firstErr: res.FirstErr, requests: len(res.Latencies)}
	if t.cpu != nil {
		c, err := t.cpu()
		if err != nil {
			return fwdRun{}, err
		}
		if r.requests > 0 {
			r.cpuPerReq = (c - cpu0) / time.Duration(r.requests)
		}
	}
	return r, nil
}

// forward is section 1: direct vs proxy vs nginx, concurrency 1 and 32.
func (b *bench) forward() {
	s := &section{Title: "1. Forwarding overhead (non-streaming chat completion)"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	d := b.phase(2 * time.Second)
	s.Intro = fmt.Sprintf("A %d-byte non-streaming `POST /chat/completions` (gpt-4.1), answered by the sandbox with no "+
		"artificial delay, sent by closed-loop clients (keep-alive connections) directly to the sandbox, through the proxy "+
		"(`/v1/chat/completions`, API key checked, token from the broker), through the Go floor and through nginx (static token, same headers). "+
		"Each run: %v warm-up, then %v measured per path, the paths interleaved (order rotated every run); %d runs. "+
		"Latency percentiles are exact over all requests of a run; *added* is the path's figure minus direct's in the same run. "+
		"CPU per request is the forwarding process's utime+stime delta over the measured phase (nginx: master and workers) "+
		"divided by the requests served.",
		len(chatBody), b.phase(300*time.Millisecond), d, b.opts.runs)
	s.Header = fwdHeader
	for name, e := range st.errs {
		s.note("%s not measured: %s", name, oneLine(e.Error()))
	}
	s.note("nginx: worker_processes auto (%d workers here), keepalive 64 to the sandbox, access_log off, "+
		"proxy_buffering off; it checks no client key (the proxy does, and takes its token from the broker).", runtime.NumCPU())
	s.note(floorNote)
	s.note("The sandbox runs in the benchmark process: the client, the sandbox and the forwarder share the 2 cores, " +
		"so throughput through a forwarder is bounded by the CPU all three need; the CPU columns isolate the forwarder.")
	meter := b.meter()
	b.fwdMeasure(s, d, st.targets, b.fwd)
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// fwdMeasure runs the paths targets gives at concurrency 1 and 32,
// interleaved, and writes the medians into s and into out.
func (b *bench) fwdMeasure(s *section, d time.Duration, targets func(conns int) []*target, out map[int]map[string]fwdSummary) {
	for _, conc := range []int{1, 32} {
		ts := targets(conc * 2)
		runs := map[string][]fwdRun{}
		for run := range b.opts.runs {
			for i := range ts {
				t := ts[(i+run)%len(ts)]
				r, err := b.measureForward(t, conc, d)
				if err != nil {
					s.Err = err
					return
				}
				if r.errs > 0 {
					s.note("%s at concurrency %d, run %d: %d failed requests (%v)", t.name, conc, run+1, r.errs, r.firstErr)
				}
				b.logf("%s, concurrency %d, run %d: %.0f req/s, CPU %s per request", t.name, conc, run+1, r.rps, us(r.cpuPerReq))
				runs[t.name] = append(runs[t.name], r)
			}
		}
		for _, t := range ts {
			t.close()
		}
		out[conc] = b.fwdResults(s, conc, ts, runs)
	}
}

// tlsTargets are section 1b's paths: direct to the TLS upstream, the proxy
// and the Go floor each with HTTP/1.1 and with HTTP/2 to it, and nginx with
// proxy_ssl.
func (st *steady) tlsTargets(conns int) []*target {
	tr := &http.Transport{TLSClientConfig: st.up.pki.clientConfig(), MaxIdleConns: conns, MaxIdleConnsPerHost: conns,
		IdleConnTimeout: time.Minute, DisableCompression: true}
	ts := []*target{{name: "direct", base: st.up.TLSURL, header: directHeader(st.token), client: &http.Client{Transport: tr}}}
	if st.proxyTLS != nil {
		ts = append(ts, st.targetFor("proxy", st.proxyTLS, conns))
	}
	if st.proxyTLSH2 != nil {
		ts = append(ts, st.targetFor("proxy-h2", st.proxyTLSH2, conns))
	}
	for _, name := range slices.Sorted(maps.Keys(st.altTLS)) {
		ts = append(ts, st.targetFor(name, st.altTLS[name], conns))
	}
	if st.floorTLS != nil {
		ts = append(ts, floorTarget("go-floor", st.floorTLS, st.floorTLSURL, conns))
	}
	if st.floorTLSH2 != nil {
		ts = append(ts, floorTarget("go-floor-h2", st.floorTLSH2, st.floorTLSH2URL, conns))
	}
	if st.nginxTLS != nil {
		ts = append(ts, nginxTarget(st.nginxTLS, st.nginxTLSURL, conns))
	}
	return ts
}

// forwardTLS is section 1b: section 1 with the upstream reached over TLS, as
// the real Copilot API is.
func (b *bench) forwardTLS() {
	s := &section{Title: "1b. Forwarding overhead with a TLS upstream (HTTP/1.1 and HTTP/2)"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	d := b.phase(2 * time.Second)
	s.Intro = "Section 1's request and method, with the sandbox served over TLS (a test CA made for the run; ALPN offers " +
		"HTTP/2 and HTTP/1.1), as the Copilot API is. *direct*: the client to the TLS listener over HTTP/1.1 keep-alive. " +
		"*proxy*: `--copilot-api-url https://…` with `--upstream-ca-file` and `--upstream-http2=false` " +
		"(net/http's transport, an HTTP/1.1 keep-alive pool); *proxy-h2*: " +
		"the default `--upstream-http2` (net/http's transport, one multiplexed HTTP/2 connection). " +
		"*go-floor*: section 1's floor over TLS (HTTP/1.1 pool of 64); *go-floor-h2*: the same floor speaking HTTP/2 to " +
		"the upstream (one multiplexed connection, the proxy's HTTP/2 receive window per stream). " +
		"*nginx*: `proxy_pass https://` with `proxy_ssl_verify on`, `proxy_ssl_session_reuse on` and its keep-alive pool " +
		"of 64 (nginx speaks only HTTP/1.1 to upstreams). " +
		"Clients reach the proxies, the floors and nginx over plain HTTP/1.1. " +
		"*CPU vs floor* compares each proxy with the floor speaking its upstream protocol: proxy with go-floor, " +
		"proxy-h2 with go-floor-h2."
	s.Header = fwdHeader
	for _, name := range []string{"proxy-tls", "proxy-tls-h2", "go-floor-tls", "go-floor-tls-h2", "nginx-tls"} {
		if e := st.errs[name]; e != nil {
			s.note("%s not measured: %s", name, oneLine(e.Error()))
		}
	}
	meter := b.meter()
	b.fwdMeasure(s, d, st.tlsTargets, b.fwdTLS)
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// floorNote explains the go-floor rows of sections 1 and 1b.
const floorNote = "go-floor: the least a forwarder built on Go's net/http does (floor.go, `bench __floor`): " +
	"`httputil.ReverseProxy` with a static token and the Copilot headers, no key check, an HTTP/1.1 pool of 64 to the " +
	"upstream, `--gc-percent` 200 like the proxy. The proxy's distance to it is the cost of its own work; the floor's " +
	"distance to nginx is what net/http's server, reverse proxy and client cost here."

// fwdHeader is the table header of sections 1 and 1b.
var fwdHeader = []string{"conc.", "path", "p50", "p99", "added p50", "added p99", "req/s", "vs direct", "CPU/req", "CPU vs nginx", "CPU vs floor"}

// fwdSummary holds the medians of one path at one concurrency.
type fwdSummary struct {
	p50, p99, add50, add99 time.Duration
	rps, ratio             float64
	cpu                    time.Duration
}

func (b *bench) fwdResults(s *section, conc int, ts []*target, runs map[string][]fwdRun) map[string]fwdSummary {
	direct := runs["direct"]
	sum := map[string]fwdSummary{}
	for _, t := range ts {
		rs := runs[t.name]
		var p50, p99, a50, a99, rps, ratio, cpu []float64
		for i, r := range rs {
			p50 = append(p50, float64(r.p50))
			p99 = append(p99, float64(r.p99))
			a50 = append(a50, float64(r.p50-direct[i].p50))
			a99 = append(a99, float64(r.p99-direct[i].p99))
			rps = append(rps, r.rps)
			ratio = append(ratio, r.rps/direct[i].rps)
			cpu = append(cpu, float64(r.cpuPerReq))
		}
		sum[t.name] = fwdSummary{
			p50: time.Duration(load.Median(p50)), p99: time.Duration(load.Median(p99)),
			add50: time.Duration(load.Median(a50)), add99: time.Duration(load.Median(a99)),
			rps: load.Median(rps), ratio: load.Median(ratio), cpu: time.Duration(load.Median(cpu)),
		}
	}
	cpuVs := func(m fwdSummary, ref string) string {
		if r, ok := sum[ref]; ok && r.cpu > 0 && m.cpu > 0 {
			return fmt.Sprintf("%.2fx", float64(m.cpu)/float64(r.cpu))
		}
		return ""
	}
	for _, t := range ts {
		m := sum[t.name]
		add50, add99, ratio, cpu, vsNginx, vsFloor := "", "", "1.00", "", "", ""
		if t.name != "direct" {
			add50, add99, ratio = ms(m.add50), ms(m.add99), fmt.Sprintf("%.2f", m.ratio)
			cpu, vsNginx = us(m.cpu), cpuVs(m, "nginx")
			if f := floorOf(t.name, sum); f != "" {
				vsFloor = cpuVs(m, f)
			}
		}
		s.row(fmt.Sprint(conc), t.name, ms(m.p50), ms(m.p99), add50, add99, fmt.Sprintf("%.0f", m.rps), ratio, cpu, vsNginx, vsFloor)
	}
	return sum
}

// floorOf is the Go floor a proxy path is compared with: the one speaking
// the same protocol to the upstream (go-floor-h2 for proxy-h2 and
// proxy-h2-NAME, when measured), "" for paths that are not proxies.
func floorOf(path string, sum map[string]fwdSummary) string {
	if !strings.HasPrefix(path, "proxy") {
		return ""
	}
	if _, ok := sum["go-floor-h2"]; ok && strings.HasPrefix(path, "proxy-h2") {
		return "go-floor-h2"
	}
	return "go-floor"
}
