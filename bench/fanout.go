package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc"
)

const fanoutConns = 100

// receipt is one watcher's receipt of one generation.
type receipt struct {
	gen uint64
	at  time.Time
}

// watchers are n WatchToken streams spread over conns gRPC connections.
type watchers struct {
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	latest []atomic.Uint64 // newest generation seen by each watcher
	recv   [][]receipt     // written by watcher i only; read after latest[i] says so
	errs   atomic.Int64
	err    atomic.Pointer[error]
}

func (b *bench) openWatchers(br *brokerProc, n, conns int) (*watchers, error) {
	return b.openAccountWatchers(br, n, conns, func(int) string { return "" })
}

// openAccountWatchers is openWatchers with watcher i on account accountOf(i).
func (b *bench) openAccountWatchers(br *brokerProc, n, conns int, accountOf func(int) string) (*watchers, error) {
	ctx, cancel := context.WithCancel(b.ctx)
	w := &watchers{cancel: cancel, latest: make([]atomic.Uint64, n), recv: make([][]receipt, n)}
	clients := make([]brokerv1.TokenBrokerServiceClient, conns)
	for i := range conns {
		conn, c, err := dialBroker(br)
		if err != nil {
			w.close()
			return nil, err
		}
		w.conns = append(w.conns, conn)
		clients[i] = c
	}
	for i := range n {
		w.wg.Go(func() {
			stream, err := clients[i%conns].WatchToken(ctx, &brokerv1.WatchTokenRequest{Account: accountOf(i)})
			if err != nil {
				w.fail(ctx, err)
				return
			}
			own := make([]receipt, 0, 16)
			for len(own) < 1000 { // bounded: far more rotations than a run makes
				msg, err := stream.Recv()
				if err != nil {
					w.fail(ctx, err)
					return
				}
				own = append(own, receipt{gen: msg.GetToken().GetGeneration(), at: time.Now()})
				w.recv[i] = own
				w.latest[i].Store(own[len(own)-1].gen)
			}
		})
	}
	return w, nil
}

func (w *watchers) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // closing
	}
	w.errs.Add(1)
	w.err.CompareAndSwap(nil, &err)
}

func (w *watchers) close() {
	w.cancel()
	w.wg.Wait()
	for _, c := range w.conns {
		_ = c.Close()
	}
}

// waitAll waits until every watcher has seen generation gen (or newer).
func (w *watchers) waitAll(ctx context.Context, gen uint64, timeout time.Duration) error {
	return w.waitRange(ctx, 0, len(w.latest), gen, timeout)
}

// waitRange waits until watchers lo..hi-1 have seen generation gen (or
// newer).
func (w *watchers) waitRange(ctx context.Context, lo, hi int, gen uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for i := lo; i < hi; i++ {
			if w.latest[i].Load() < gen {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if n := w.errs.Load(); n > 0 {
			return fmt.Errorf("%d watch streams failed: %w", n, *w.err.Load())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d watchers had not seen generation %d after %v", missing, hi-lo, gen, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// propagation returns, sorted, each watcher's delay from t0 to its receipt
// of gen.
func (w *watchers) propagation(gen uint64, t0 time.Time) []time.Duration {
	return w.propagationRange(0, len(w.recv), gen, t0)
}

// propagationRange is propagation over watchers lo..hi-1.
func (w *watchers) propagationRange(lo, hi int, gen uint64, t0 time.Time) []time.Duration {
	out := make([]time.Duration, 0, hi-lo)
	for i := lo; i < hi; i++ {
		_ = w.latest[i].Load() // orders the read of recv[i] after the watcher's write
		for _, r := range w.recv[i] {
			if r.gen == gen {
				out = append(out, r.at.Sub(t0))
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

func medianOf(xs []float64) float64 { return load.Median(xs) }

// fanoutRun is what one watcher count measured.
type fanoutRun struct {
	n                     int
	p50, p99, max, spread []float64 // per rotation, ns
	rssPer, heapPer       float64   // bytes per watcher
	rssBefore, rssAfter   int64
	subscribe             time.Duration // opening every stream until each has its first message
}

// fanout is section 3: rotation propagation to 1,000 and 10,000 watchers.
func (b *bench) fanout() {
	s := &section{Title: "3. Fan-out: WatchToken subscribers"}
	b.rep.Sections = append(b.rep.Sections, s)
	rotations := max(b.opts.runs, 3)
	s.Intro = fmt.Sprintf("N WatchToken streams from this process over %d gRPC connections (streams multiplexed, "+
		"N/%d per connection) to a broker process started fresh for each N. Rotations are forced with RefreshToken "+
		"naming the current generation (broker started with `--min-force-interval 100ms`), %d per N, the next one "+
		"only after every watcher has the previous. *Propagation* is from the moment the sandbox finished answering "+
		"the broker's exchange (stamped in the sandbox's handler) to a watcher's Recv returning the new generation; "+
		"percentiles over the N watchers of one rotation, then the median over rotations. Memory is the broker's "+
		"VmRSS and Go heap in use (`go_memstats_heap_inuse_bytes`) after every stream has its first message, minus "+
		"before any was opened, divided by N.", fanoutConns, fanoutConns, rotations)
	s.Header = []string{"watchers", "propagation p50", "p99", "max", "first→last receipt", "RSS/watcher", "Go heap/watcher", "broker RSS before → after", "subscribe all"}
	if err := b.need("broker"); err != nil {
		s.Err = err
		return
	}
	s.note("The watchers run in the benchmark process on the same 2 cores as the broker: per rotation it decodes N " +
		"messages while the broker encodes and sends them, so propagation includes the client's share of the CPU.")
	meter := b.meter()
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute})
	if err != nil {
		s.Err = err
		return
	}
	defer up.close()
	for _, n := range []int{1000, 10000} {
		r, err := b.fanoutOnce(up, n, rotations)
		if err != nil {
			s.note("%d watchers: %s", n, oneLine(err.Error()))
			continue
		}
		md := func(xs []float64) time.Duration { return time.Duration(load.Median(xs)) }
		s.row(fmt.Sprint(n), ms(md(r.p50)), ms(md(r.p99)), ms(md(r.max)), ms(md(r.spread)),
			fmt.Sprintf("%.1f KiB", r.rssPer/1024), fmt.Sprintf("%.1f KiB", r.heapPer/1024),
			fmt.Sprintf("%.1f → %.1f MiB", float64(r.rssBefore)/(1<<20), float64(r.rssAfter)/(1<<20)),
			ms(r.subscribe))
		b.fan[n] = r
	}
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

func (b *bench) fanoutOnce(up *upstream, n, rotations int) (fanoutRun, error) {
	r := fanoutRun{n: n}
	br, err := b.startBrokerArgs(up, fmt.Sprintf("broker-fanout-%d", n), "--min-force-interval", "100ms")
	if err != nil {
		return r, err
	}
	defer b.stop(br.Process)
	conn, client, err := dialBroker(br)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	cur, err := client.GetToken(ctx, &brokerv1.GetTokenRequest{})
	if err != nil {
		return r, fmt.Errorf("GetToken: %w", err)
	}
	gen := cur.GetToken().GetGeneration()
	metricsURL := "http://" + br.AdminAddr + "/metrics"
	time.Sleep(200 * time.Millisecond) // let the fresh process settle
	heap0, herr := metric(ctx, metricsURL, "go_memstats_heap_inuse_bytes")
	if r.rssBefore, err = br.RSS(); err != nil {
		return r, err
	}
	start := time.Now()
	w, err := b.openWatchers(br, n, fanoutConns)
	if err != nil {
		return r, err
	}
	defer w.close()
	if err := w.waitAll(ctx, gen, time.Minute); err != nil {
		return r, fmt.Errorf("subscribing: %w", err)
	}
	r.subscribe = time.Since(start)
	time.Sleep(200 * time.Millisecond)
	if r.rssAfter, err = br.RSS(); err != nil {
		return r, err
	}
	r.rssPer = float64(r.rssAfter-r.rssBefore) / float64(n)
	if heap1, err := metric(ctx, metricsURL, "go_memstats_heap_inuse_bytes"); err == nil && herr == nil {
		r.heapPer = (heap1 - heap0) / float64(n)
	}
	for range rotations {
		t := time.Now()
		res, err := client.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
		if err != nil {
			return r, fmt.Errorf("RefreshToken: %w", err)
		}
		next := res.GetToken().GetGeneration()
		if next <= gen {
			return r, fmt.Errorf("RefreshToken(%d) answered generation %d; want a newer one", gen, next)
		}
		gen = next
		if err := w.waitAll(ctx, gen, 30*time.Second); err != nil {
			return r, err
		}
		ex := up.exchangesSince(t)
		if len(ex) == 0 {
			return r, errors.New("no exchange stamped for the rotation")
		}
		prop := w.propagation(gen, ex[len(ex)-1])
		if len(prop) != n {
			return r, fmt.Errorf("%d of %d watchers recorded generation %d", len(prop), n, gen)
		}
		r.p50 = append(r.p50, float64(load.Percentile(prop, 50)))
		r.p99 = append(r.p99, float64(load.Percentile(prop, 99)))
		r.max = append(r.max, float64(prop[len(prop)-1]))
		r.spread = append(r.spread, float64(prop[len(prop)-1]-prop[0]))
		time.Sleep(100 * time.Millisecond) // past the force floor
	}
	return r, nil
}
