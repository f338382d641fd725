package main

import (
	"fmt"
	"strconv"
	"time"
)

// goals fills the report's goal table from what the sections measured.
func (b *bench) goals() {
	r := b.rep
	const (
		addP50 = 300 * time.Microsecond
		addP99 = 2 * time.Millisecond
	)
	if p, ok := b.fwd[1]["proxy"]; ok {
		r.goal("Proxy added latency p50, concurrency 1", "< 0.3 ms", ms(p.add50), p.add50 < addP50)
		r.goal("Proxy added latency p99, concurrency 1", "< 2 ms", ms(p.add99), p.add99 < addP99)
	} else {
		r.unmeasured("Proxy added latency, concurrency 1", "p50 < 0.3 ms, p99 < 2 ms", "proxy not measured")
	}
	for _, conc := range []int{1, 32} {
		p, okp := b.fwd[conc]["proxy"]
		n, okn := b.fwd[conc]["nginx"]
		name := fmt.Sprintf("Proxy CPU per request vs nginx, concurrency %d", conc)
		if okp && okn && n.cpu > 0 {
			x := float64(p.cpu) / float64(n.cpu)
			r.goal(name, "≤ 2x", fmt.Sprintf("%.2fx (%s vs %s)", x, us(p.cpu), us(n.cpu)), x <= 2)
		} else {
			r.unmeasured(name, "≤ 2x", "proxy or nginx not measured")
		}
	}
	b.tlsGoals()
	b.floorGoals()
	b.manyGoals()
	b.keysGoals()
	b.usageGoals()
	b.propGoals()
	if d, ok := b.sse["proxy"]; ok {
		r.goal("SSE added delay per chunk p99 (proxy)", "< 2 ms", ms(d[1]), d[1] < addP99)
	} else {
		r.unmeasured("SSE added delay per chunk p99 (proxy)", "< 2 ms", "not measured")
	}
	if x := b.xlate; x != nil {
		r.goal("Translated SSE added delay per chunk p99 (over pass-through)", "< 2 ms", ms(x.added99), x.added99 < addP99)
	} else {
		r.unmeasured("Translated SSE added delay per chunk p99", "< 2 ms", "not measured")
	}
	if w := b.ws; w != nil {
		r.goal("Responses over WebSocket: added p50 per turn over HTTP", "< 0.3 ms", ms(w.addedP50), w.addedP50 < addP50)
		if w.idleConn > 0 {
			r.goal(fmt.Sprintf("Responses WebSocket: proxy memory per idle connection (%d open, RSS)", w.idleConn), "< 32 KiB",
				fmt.Sprintf("%.1f KiB", w.perIdle/1024), w.perIdle < 32*1024)
		}
	} else {
		r.unmeasured("Responses over WebSocket", "added p50 < 0.3 ms, < 32 KiB per idle connection", "not measured")
	}
	if f, ok := b.fan[10000]; ok {
		p99 := time.Duration(medianOf(f.p99))
		r.goal("10,000 watchers: propagation p99", "< 250 ms", ms(p99), p99 < 250*time.Millisecond)
		r.goal("10,000 watchers: broker memory per watcher (RSS)", "< 32 KiB", fmt.Sprintf("%.1f KiB", f.rssPer/1024), f.rssPer < 32*1024)
	} else {
		r.unmeasured("10,000 watchers", "p99 < 250 ms, < 32 KiB each", "not measured")
	}
	if v, ok := b.readRPS["gRPC GetToken, 1 conn"]; ok {
		r.goal("GetToken per second (32 workers, 1 connection)", "≥ 20,000", fmt.Sprintf("%.0f", v), v >= 20000)
	} else {
		r.unmeasured("GetToken per second", "≥ 20,000", "not measured")
	}
	if v, ok := b.readRPS["REST GET /v1/token"]; ok {
		r.goal("REST GET /v1/token per second (32 workers)", "≥ 10,000", fmt.Sprintf("%.0f", v), v >= 10000)
	} else {
		r.unmeasured("REST GET /v1/token per second", "≥ 10,000", "not measured")
	}
	if b.rot != nil {
		r.goal("Failed requests across rotations", "0 (≥ 20 rotations)",
			fmt.Sprintf("%d of %d over %d rotations", b.rot.failed, b.rot.requests, b.rot.rotations),
			b.rot.failed == 0 && b.rot.rotations >= rotationTarget)
	} else {
		r.unmeasured("Failed requests across rotations", "0", "not measured")
	}
}

// tlsGoals are issue 17's goals for the TLS upstream (section 1b).
func (b *bench) tlsGoals() {
	r := b.rep
	p32, okp := b.fwdTLS[32]["proxy"]
	n32, okn := b.fwdTLS[32]["nginx"]
	if okp && okn && n32.cpu > 0 && n32.rps > 0 {
		x := float64(p32.cpu) / float64(n32.cpu)
		r.goal("TLS upstream: proxy CPU per request vs nginx, concurrency 32", "≤ 2x",
			fmt.Sprintf("%.2fx (%s vs %s)", x, us(p32.cpu), us(n32.cpu)), x <= 2)
		t := p32.rps / n32.rps
		r.goal("TLS upstream: proxy throughput vs nginx, concurrency 32", "≥ 0.8x",
			fmt.Sprintf("%.2fx (%.0f vs %.0f req/s)", t, p32.rps, n32.rps), t >= 0.8)
	} else {
		r.unmeasured("TLS upstream: proxy CPU and throughput vs nginx, concurrency 32", "≤ 2x CPU, ≥ 0.8x req/s", "proxy or nginx not measured")
	}
	p1, okp := b.fwdTLS[1]["proxy"]
	n1, okn := b.fwdTLS[1]["nginx"]
	if okp && okn && n1.add50 > 0 {
		x := float64(p1.add50) / float64(n1.add50)
		r.goal("TLS upstream: proxy added p50 vs nginx's, concurrency 1", "≤ 1.5x",
			fmt.Sprintf("%.2fx (%s vs %s)", x, ms(p1.add50), ms(n1.add50)), x <= 1.5)
	} else {
		r.unmeasured("TLS upstream: proxy added p50 vs nginx's, concurrency 1", "≤ 1.5x", "proxy or nginx not measured")
	}
}

// floorGoals are issue 21's goals for section 1b: the proxy's CPU per
// request within 1.15x of the Go floor speaking the same upstream protocol.
func (b *bench) floorGoals() {
	for _, pair := range [][3]string{{"HTTP/1.1", "proxy", "go-floor"}, {"HTTP/2", "proxy-h2", "go-floor-h2"}} {
		for _, conc := range []int{1, 32} {
			what := fmt.Sprintf("TLS upstream over %s: proxy CPU per request vs the Go floor, concurrency %d", pair[0], conc)
			p, okp := b.fwdTLS[conc][pair[1]]
			f, okf := b.fwdTLS[conc][pair[2]]
			if !okp || !okf || f.cpu <= 0 {
				b.rep.unmeasured(what, "≤ 1.15x", pair[1]+" or "+pair[2]+" not measured")
				continue
			}
			x := float64(p.cpu) / float64(f.cpu)
			b.rep.goal(what, "≤ 1.15x", fmt.Sprintf("%.2fx (%s vs %s)", x, us(p.cpu), us(f.cpu)), x <= 1.15)
		}
	}
}

// manyGoals are issue 28's goals for 10,000 concurrent streams (section 6),
// for the proxy with each upstream protocol and client kind.
func (b *bench) manyGoals() {
	r := b.rep
	for _, mp := range b.manyPaths() {
		if mp.bin != b.bins["proxy"] {
			continue
		}
		up := "HTTP/2 upstream"
		if !mp.http2 {
			up = "HTTP/1.1 upstream"
		}
		clients := "HTTP/1.1 clients"
		if mp.h2c {
			clients = "h2c clients"
		}
		what := fmt.Sprintf("%s concurrent streams, %s, %s", thousands(manyGoalN), up, clients)
		m, ok := b.many[manyKey{manyGoalN, mp.name}]
		if !ok {
			r.unmeasured(what, "< 64 KiB and ≤ 2 goroutines per stream, added/chunk p99 < 5 ms", "not measured")
			continue
		}
		// Streams that ended before the sample make the per-stream figures
		// too low: such a figure cannot meet its goal.
		early := ""
		if m.endedEarly > 0 {
			early = fmt.Sprintf(" (%d streams had ended at the sample)", m.endedEarly)
		}
		r.goal(what+": proxy memory per stream (RSS)", "< 64 KiB", fmt.Sprintf("%.1f KiB%s", m.rssPer/1024, early),
			m.rssPer < 64*1024 && early == "")
		r.goal(what+": proxy goroutines per stream", "≤ 2", fmt.Sprintf("%.2f%s", m.goroutinesPer, early),
			m.goroutinesPer <= 2.01 && early == "")
		switch {
		case m.baseline == 0:
			r.unmeasured(what+": added delay per chunk p99, all open (vs direct)", "< 5 ms", "no direct baseline (open-file limit)")
		case m.baseline != manyGoalN:
			r.goal(what+": added delay per chunk p99, all open (vs direct)", "< 5 ms",
				fmt.Sprintf("%s (against direct at %s)", ms(m.add99), thousands(m.baseline)), m.add99 < 5*time.Millisecond)
		default:
			r.goal(what+": added delay per chunk p99, all open (vs direct)", "< 5 ms", ms(m.add99), m.add99 < 5*time.Millisecond)
		}
		r.goal(what+": failed streams", "0", fmt.Sprint(m.failed), m.failed == 0)
	}
}

// thousands writes n with comma separators.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// keysGoals are issue 23's targets.
func (b *bench) keysGoals() {
	r, k := b.rep, b.keys
	if k == nil || k.authOne == 0 {
		r.unmeasured("Authentication with 10,000 managed keys vs one", "within 5 %", "not measured")
		r.unmeasured("Key change reaching 20 proxies with 10,000 keys each, p99", "< 1 s", "not measured")
		return
	}
	x := float64(k.authMany)/float64(k.authOne) - 1
	r.goal("Authentication with 10,000 managed keys vs one", "within 5 %",
		fmt.Sprintf("%+.1f %% (%d ns vs %d ns)", 100*x, k.authMany.Nanoseconds(), k.authOne.Nanoseconds()), x <= 0.05)
	if k.measured {
		r.goal("Key change reaching 20 proxies with 10,000 keys each, p99", "< 1 s", ms(k.p99), k.p99 < time.Second)
	} else {
		r.unmeasured("Key change reaching 20 proxies with 10,000 keys each, p99", "< 1 s", "not measured")
	}
}
