package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// reads is section 4: GetToken and REST GET /v1/token throughput.
func (b *bench) reads() {
	s := &section{Title: "4. Broker reads at concurrency 32"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	if st.broker == nil {
		s.Err = st.errs["broker"]
		return
	}
	brokers := []namedBroker{{"", st.broker}}
	alt, err := b.altBrokers(st)
	if err != nil {
		s.Err = err
		return
	}
	brokers = append(brokers, alt...)
	const conc = 32
	d := b.phase(2 * time.Second)
	s.Intro = fmt.Sprintf("32 closed-loop workers in this process call the broker process (broker key checked on every "+
		"call), %v per variant per run after a %v warm-up, variants interleaved, %d runs; the figure is the median "+
		"run. gRPC: unary `GetToken` over one shared connection (as one client process would) and over 4. REST: "+
		"`GET /v1/token` through the grpc-gateway with 32 keep-alive HTTP/1.1 connections. Client and broker share "+
		"the 2 cores; CPU per call is the broker process's and this process's (the clients') CPU time over the calls made.", d, b.phase(300*time.Millisecond), b.opts.runs)
	s.Header = []string{"call", "calls/s", "p50", "p99", "broker CPU/call", "client CPU/call"}
	type variant struct {
		name  string
		br    *brokerProc
		fn    load.Func
		close func()
	}
	var vs []variant
	for _, nb := range brokers {
		br := nb.br
		suffix := ""
		if nb.name != "" {
			suffix = " [" + nb.name + "]"
		}
		for _, nconns := range []int{1, 4} {
			clients := make([]brokerv1.TokenBrokerServiceClient, nconns)
			var closers []func()
			for i := range clients {
				conn, c, err := dialBroker(br)
				if err != nil {
					s.Err = err
					return
				}
				clients[i] = c
				closers = append(closers, func() { _ = conn.Close() })
			}
			vs = append(vs, variant{
				name: fmt.Sprintf("gRPC GetToken, %d conn", nconns) + suffix,
				br:   br,
				fn: func(ctx context.Context, w int) error {
					res, err := clients[w%nconns].GetToken(ctx, &brokerv1.GetTokenRequest{})
					if err == nil && res.GetToken().GetValue() == "" {
						err = fmt.Errorf("GetToken: empty token")
					}
					return err
				},
				close: func() {
					for _, c := range closers {
						c()
					}
				},
			})
		}
		rest := newClient(conc)
		url := "http://" + br.HTTPAddr + "/v1/token"
		vs = append(vs, variant{
			name: "REST GET /v1/token" + suffix,
			br:   br,
			fn: func(ctx context.Context, _ int) error {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Header.Set("Authorization", "Bearer "+br.Key)
				resp, err := rest.Do(req)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET /v1/token: status %d", resp.StatusCode)
				}
				return err
			},
			close: rest.CloseIdleConnections,
		})
	}
	defer func() {
		for _, v := range vs {
			v.close()
		}
	}()
	meter := b.meter()
	type agg struct{ rps, p50, p99, cpu, client []float64 }
	res := make([]agg, len(vs))
	for run := range b.opts.runs {
		for i := range vs {
			k := (i + run) % len(vs)
			v := vs[k]
			if _, err := load.Run(b.ctx, load.Options{Workers: conc, Duration: b.phase(300 * time.Millisecond)}, v.fn); err != nil {
				s.Err = err
				return
			}
			c0, _ := v.br.CPU(false)
			self0 := selfCPU()
			r, err := load.Run(b.ctx, load.Options{Workers: conc, Duration: d}, v.fn)
			if err != nil {
				s.Err = err
				return
			}
			c1, _ := v.br.CPU(false)
			self1 := selfCPU()
			if r.Errors > 0 {
				s.note("%s, run %d: %d failed calls (%v)", v.name, run+1, r.Errors, r.FirstErr)
			}
			res[k].rps = append(res[k].rps, r.Throughput())
			res[k].p50 = append(res[k].p50, float64(r.Percentile(50)))
			res[k].p99 = append(res[k].p99, float64(r.Percentile(99)))
			if n := len(r.Latencies); n > 0 {
				res[k].cpu = append(res[k].cpu, float64((c1-c0)/time.Duration(n)))
				res[k].client = append(res[k].client, float64((self1-self0)/time.Duration(n)))
			}
		}
	}
	for i, v := range vs {
		a := res[i]
		rps := load.Median(a.rps)
		s.row(v.name, fmt.Sprintf("%.0f", rps), ms(time.Duration(load.Median(a.p50))), ms(time.Duration(load.Median(a.p99))),
			us(time.Duration(load.Median(a.cpu))), us(time.Duration(load.Median(a.client))))
		b.readRPS[v.name] = rps
	}
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// namedBroker is a broker measured in section 4; name is empty for the
// built one.
type namedBroker struct {
	name string
	br   *brokerProc
}

// altBrokers starts the broker binaries of -compare-broker, each against
// the steady stack's upstream, to be measured beside the built one.
func (b *bench) altBrokers(st *steady) ([]namedBroker, error) {
	var out []namedBroker
	for _, kv := range strings.Split(b.opts.altBroker, ",") {
		name, path, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		br, err := b.startBrokerBin(path, st.up, "broker-"+name)
		if err != nil {
			return nil, fmt.Errorf("-compare-broker %s: %w", name, err)
		}
		out = append(out, namedBroker{name, br})
	}
	return out, nil
}

// selfCPU is the CPU time this process (the benchmark's clients) has used.
func selfCPU() time.Duration {
	var r syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return rusageCPU(r)
}
