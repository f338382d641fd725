package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
)

const (
	rotationTarget = 20
	rotationConc   = 32
)

// rotation is section 5: requests through two proxies across token rotations.
func (b *bench) rotation() {
	s := &section{Title: "5. Rotation under load (two proxies)"}
	b.rep.Sections = append(b.rep.Sections, s)
	const lifetime, refreshIn = 3 * time.Second, 2 * time.Second
	limit := time.Minute
	s.Intro = fmt.Sprintf("A sandbox issuing Copilot tokens that live %v (`refresh_in` %v, so the broker refreshes about "+
		"every 1.6 s and the sandbox refuses a token 0.4-1.4 s after its successor appears), one broker, two proxy processes. "+
		"%d closed-loop workers (half on each proxy) send the non-streaming chat completion of section 1 as fast as the "+
		"machine allows (the highest sustainable rate on these 2 cores) until a separate watcher has seen %d rotations "+
		"(bounded by %v). Any transport error or non-200 answer counts as failed. The proxies refresh and retry once "+
		"on an upstream 401, so the sandbox's 401 count shows how often a proxy used a token the sandbox had already "+
		"expired.", lifetime, refreshIn, rotationConc, rotationTarget, limit)
	s.Header = []string{"rotations", "requests", "failed", "req/s", "p50", "p99", "max", "upstream 401s (retried)"}
	if err := b.need("broker", "proxy"); err != nil {
		s.Err = err
		return
	}
	meter := b.meter()
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: lifetime, RefreshIn: refreshIn})
	if err != nil {
		s.Err = err
		return
	}
	defer up.close()
	br, err := b.startBroker(up, "broker-rotation")
	if err != nil {
		s.Err = err
		return
	}
	defer b.stop(br.Process)
	var ts []*target
	for i := range 2 {
		p, err := b.startProxy(up, br, fmt.Sprintf("proxy-rotation-%d", i+1))
		if err != nil {
			s.Err = err
			return
		}
		defer b.stop(p.Process)
		h := http.Header{}
		h.Set("Authorization", "Bearer "+p.Key)
		h.Set("Content-Type", "application/json")
		t := &target{name: p.Name, base: "http://" + p.Addr + "/v1", header: h, client: newClient(rotationConc)}
		defer t.close()
		ts = append(ts, t)
	}

	// A watcher counts rotations and ends the load after enough of them.
	conn, client, err := dialBroker(br)
	if err != nil {
		s.Err = err
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	stream, err := client.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
	if err != nil {
		s.Err = err
		return
	}
	first, err := stream.Recv()
	if err != nil {
		s.Err = err
		return
	}
	startGen := first.GetToken().GetGeneration()
	var rotations atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		defer cancel() // ends the load once enough rotations are seen, or the stream fails
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			rotations.Store(int64(msg.GetToken().GetGeneration() - startGen))
			if rotations.Load() >= rotationTarget {
				return
			}
		}
	}()
	up.ResetStats()
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	res, _ := load.Run(ctx, load.Options{Workers: rotationConc, Duration: limit, MaxRequests: 10_000_000},
		func(ctx context.Context, w int) error {
			err := ts[w%2].chat(ctx)
			if err != nil && ctx.Err() == nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
			}
			return err
		})
	cancel()
	<-watchDone
	n := rotations.Load()
	unauth := up.Stats().API["/chat/completions"][http.StatusUnauthorized]
	s.row(fmt.Sprint(n), fmt.Sprint(len(res.Latencies)+int(failed.Load())), fmt.Sprint(failed.Load()),
		fmt.Sprintf("%.0f", res.Throughput()), ms(res.Percentile(50)), ms(res.Percentile(99)), ms(res.Percentile(100)),
		fmt.Sprint(unauth))
	if p := firstErr.Load(); p != nil {
		s.note("first failure: %s", oneLine((*p).Error()))
	}
	b.rot = &rotationResult{rotations: n, failed: failed.Load(), requests: int64(len(res.Latencies)) + failed.Load()}
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

type rotationResult struct{ rotations, failed, requests int64 }
