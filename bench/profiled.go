package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	rtpprof "runtime/pprof"
	"slices"
	"strings"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	broker "github.com/copilot-broker/copilot-broker/internal/broker/server"
	proxy "github.com/copilot-broker/copilot-broker/internal/forward/server"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
)

// serveProfiled is the hidden `bench __profiled proxy|broker` mode: the same
// server packages cmd/proxy and cmd/broker wrap, started in this process
// with net/http/pprof on BENCH_PPROF_ADDR, so that `-profile DIR` can take
// CPU profiles of exactly the code under test. Settings come from the
// environment the parent sets.
func serveProfiled(ctx context.Context, what string, getenv func(string) string) error {
	if err := servePprof(getenv("BENCH_PPROF_ADDR")); err != nil {
		return err
	}
	ks, err := keys.Load(getenv("BENCH_KEYS_FILE"))
	if err != nil {
		return err
	}
	switch what {
	case "proxy":
		p, err := proxy.Start(ctx, proxy.Config{
			Addr: getenv("BENCH_ADDR"), AdminAddr: getenv("BENCH_ADMIN_ADDR"), BrokerAddr: getenv("BENCH_BROKER_ADDR"),
			BrokerKey: secret.New(getenv("PROXY_BROKER_KEY")), Keys: ks, CopilotAPIURL: getenv("BENCH_API_URL"),
			// Section 6's profile reaches the TLS upstream, over HTTP/1.1 when asked.
			UpstreamCAFile: getenv("BENCH_UPSTREAM_CA"), UpstreamHTTP1: getenv("BENCH_UPSTREAM_HTTP2") == "false",
			// Section 6's profile holds up to 10,000 streams.
			MaxConnections: -1, MaxStreams: -1,
		})
		if err != nil {
			return err
		}
		<-ctx.Done()
		return p.Close()
	case "broker":
		br, err := broker.Start(ctx, broker.Config{
			GRPCAddr: getenv("BENCH_GRPC_ADDR"), HTTPAddr: getenv("BENCH_HTTP_ADDR"), AdminAddr: getenv("BENCH_ADMIN_ADDR"),
			GitHubAPIURL: getenv("BENCH_API_URL"), GitHubToken: secret.New(getenv("GITHUB_TOKEN")), Keys: ks,
		})
		if err != nil {
			return err
		}
		<-ctx.Done()
		return br.Close()
	}
	return fmt.Errorf("__profiled: unknown server %q", what)
}

// servePprof serves net/http/pprof on addr for the life of the process.
func servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}

// profile takes CPU profiles of the proxy (section 1's workload at
// concurrency 32) and of the broker (gRPC GetToken over one connection and
// REST GET /v1/token, each at concurrency 32), each served by a profiled
// child, into dir; each CPU profile has an allocation profile of the same
// 5 s beside it. When section 6 runs, first the heap and goroutine profiles
// of [bench.profileMany].
func (b *bench) profile(dir string) error {
	if slices.Contains(b.opts.only, "many-streams") {
		if err := b.profileMany(dir); err != nil {
			b.logf("many-streams profile: %v", err)
		}
	}
	if slices.Contains(b.opts.only, "forward-tls") {
		if err := b.profileTLS(dir); err != nil {
			b.logf("forward-tls profile: %v", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	st, err := b.steadyStack()
	if err != nil {
		return err
	}
	if st.broker == nil {
		return st.errs["broker"]
	}
	pdir := b.dir("profiled")
	addrs, err := freeAddrs(6)
	if err != nil {
		return err
	}
	key := randomKey()
	keysFile, err := writeKeys(pdir, "bench", key)
	if err != nil {
		return err
	}
	// The profiled proxy, against the steady broker.
	px, t, err := b.startProfiledProxy(st, "profiled-proxy", addrs[:3], keysFile, key, "BENCH_API_URL="+st.up.URL)
	if err != nil {
		return err
	}
	defer b.stop(px)
	defer t.close()
	for _, conc := range []int{1, 32} {
		if err := b.profileUnder(addrs[0], filepath.Join(dir, fmt.Sprintf("proxy-c%d.cpu.pprof", conc)), conc,
			func(ctx context.Context, _ int) error { return t.chat(ctx) }); err != nil {
			return err
		}
	}

	b.stop(px) // frees its ports and CPU

	// The profiled broker, against the same sandbox.
	bx, err := proc.Start(proc.Spec{Name: "profiled-broker", Path: self, Args: []string{"__profiled", "broker"},
		Env: []string{"BENCH_PPROF_ADDR=" + addrs[5], "BENCH_GRPC_ADDR=" + addrs[1], "BENCH_HTTP_ADDR=" + addrs[3],
			"BENCH_ADMIN_ADDR=" + addrs[4], "BENCH_API_URL=" + st.up.URL, "GITHUB_TOKEN=" + st.up.GitHubToken().Reveal(),
			"BENCH_KEYS_FILE=" + keysFile},
		LogPath: filepath.Join(pdir, "broker.log")})
	if err != nil {
		return err
	}
	b.procs = append(b.procs, bx)
	defer b.stop(bx)
	if err := proc.WaitHTTP(b.ctx, bx, "http://"+addrs[4]+"/readyz", 20*time.Second); err != nil {
		return err
	}
	conn, client, err := dialBroker(&brokerProc{GRPCAddr: addrs[1], Key: key})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := b.profileUnder(addrs[5], filepath.Join(dir, "broker-grpc.cpu.pprof"), 32, func(ctx context.Context, _ int) error {
		_, err := client.GetToken(ctx, &brokerv1.GetTokenRequest{})
		return err
	}); err != nil {
		return err
	}
	rest := newClient(64)
	defer rest.CloseIdleConnections()
	url := "http://" + addrs[3] + "/v1/token"
	return b.profileUnder(addrs[5], filepath.Join(dir, "broker-rest.cpu.pprof"), 32, func(ctx context.Context, _ int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := rest.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// startProfiledProxy starts a `bench __profiled proxy` child against the
// steady broker, its pprof, client and admin listeners on addrs, with the
// upstream settings env gives, and returns it with a client of it.
func (b *bench) startProfiledProxy(st *steady, name string, addrs []string, keysFile, key string, env ...string) (*proc.Process, *target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	px, err := proc.Start(proc.Spec{Name: name, Path: self, Args: []string{"__profiled", "proxy"},
		Env: append([]string{"BENCH_PPROF_ADDR=" + addrs[0], "BENCH_ADDR=" + addrs[1], "BENCH_ADMIN_ADDR=" + addrs[2],
			"BENCH_BROKER_ADDR=" + st.broker.GRPCAddr, "PROXY_BROKER_KEY=" + st.broker.Key, "BENCH_KEYS_FILE=" + keysFile}, env...),
		LogPath: filepath.Join(b.dir("profiled"), name+".log")})
	if err != nil {
		return nil, nil, err
	}
	b.procs = append(b.procs, px)
	if err := proc.WaitHTTP(b.ctx, px, "http://"+addrs[2]+"/readyz", 20*time.Second); err != nil {
		b.stop(px)
		return nil, nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key)
	h.Set("Content-Type", "application/json")
	return px, &target{name: name, base: "http://" + addrs[1] + "/v1", header: h, client: newClient(64)}, nil
}

// profileTLS takes CPU and allocation profiles of section 1b's forwarders
// that are built from this module, at concurrency 1 and 32: the proxy and
// the Go floor, each speaking HTTP/1.1 and HTTP/2 to the TLS upstream, into
// dir as proxy-tls-{h1,h2}-cN and floor-tls-{h1,h2}-cN.
func (b *bench) profileTLS(dir string) error {
	st, err := b.steadyStack()
	if err != nil {
		return err
	}
	if st.broker == nil || st.up.pki == nil {
		return errors.New("no broker or no TLS upstream")
	}
	pdir := b.dir("profiled")
	key := randomKey()
	keysFile, err := writeKeys(pdir, "bench-tls", key)
	if err != nil {
		return err
	}
	for _, proto := range []string{"h1", "h2"} {
		addrs, err := freeAddrs(4)
		if err != nil {
			return err
		}
		px, pt, err := b.startProfiledProxy(st, "profiled-proxy-tls-"+proto, addrs[:3], keysFile, key,
			"BENCH_API_URL="+st.up.TLSURL, "BENCH_UPSTREAM_CA="+st.up.pki.CAPath, fmt.Sprintf("BENCH_UPSTREAM_HTTP2=%t", proto == "h2"))
		if err != nil {
			return err
		}
		fp, furl, err := b.startFloor("profiled-floor-tls-"+proto, st.up.TLSURL, st.token, st.up.pki.CAPath, proto == "h2",
			"BENCH_PPROF_ADDR="+addrs[3])
		if err != nil {
			b.stop(px)
			return err
		}
		ft := floorTarget("profiled-floor", fp, furl, 64)
		for _, conc := range []int{1, 32} {
			for _, w := range []struct {
				name, pprof string
				t           *target
			}{{"proxy", addrs[0], pt}, {"floor", addrs[3], ft}} {
				path := filepath.Join(dir, fmt.Sprintf("%s-tls-%s-c%d.cpu.pprof", w.name, proto, conc))
				if err = b.profileUnder(w.pprof, path, conc, func(ctx context.Context, _ int) error { return w.t.chat(ctx) }); err != nil {
					break
				}
			}
		}
		pt.close()
		ft.close()
		b.stop(px)
		b.stop(fp)
		if err != nil {
			return err
		}
	}
	return nil
}

// profileUnder runs fn at concurrency conc while fetching a 5 s CPU profile
// from pprofAddr into path.
func (b *bench) profileUnder(pprofAddr, path string, conc int, fn load.Func) error {
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		res, err := load.Run(ctx, load.Options{Workers: conc, Duration: 7 * time.Second, Warmup: 300 * time.Millisecond}, fn)
		b.logf("%s: %.0f requests/s", filepath.Base(path), res.Throughput())
		if err == nil && res.Errors > 0 {
			err = fmt.Errorf("%d failed requests: %w", res.Errors, res.FirstErr)
		}
		done <- err
	}()
	time.Sleep(time.Second)
	// Allocations of this load alone: a delta profile over the same 5 s as
	// the CPU profile.
	allocs := make(chan error, 1)
	go func() {
		allocs <- fetchTo(ctx, "http://"+pprofAddr+"/debug/pprof/allocs?seconds=5", strings.TrimSuffix(path, ".cpu.pprof")+".allocs.pprof")
	}()
	// And this process, the clients, which share the cores with the server.
	stopClient := b.profileSelf(strings.TrimSuffix(path, ".cpu.pprof") + ".client.cpu.pprof")
	err := fetchTo(ctx, "http://"+pprofAddr+"/debug/pprof/profile?seconds=5", path)
	err = errors.Join(err, stopClient(), <-allocs)
	cancel()
	if lerr := <-done; lerr != nil && ctx.Err() == nil {
		err = errors.Join(err, lerr)
	}
	b.logf("wrote %s", path)
	return err
}

// profileSelf starts a CPU profile of this process into path; the function
// it returns stops it. When one cannot start, it notes why and the stop
// does nothing.
func (b *bench) profileSelf(path string) func() error {
	f, err := os.Create(path)
	if err != nil {
		b.logf("client profile: %v", err)
		return func() error { return nil }
	}
	if err := rtpprof.StartCPUProfile(f); err != nil {
		b.logf("client profile: %v", err)
		return f.Close
	}
	return func() error {
		rtpprof.StopCPUProfile()
		return f.Close()
	}
}
