package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
	fwdupstream "github.com/copilot-broker/copilot-broker/internal/forward/upstream"
	"github.com/copilot-broker/copilot-broker/internal/ops"
)

// The Go floor: the least a forwarder built on net/http does for section 1's
// request, started as `bench __floor` in its own process. It is measured
// beside the proxy and nginx so that the report separates what the proxy's
// own work costs (keys, inspection, catalog, pools, usage, metrics) from
// what net/http's server, httputil.ReverseProxy and http.Transport cost on
// this machine. It checks no key, takes a static token, sets the Copilot
// headers and keeps an HTTP/1.1 pool of 64 to the upstream, like nginx, with
// the proxy's collector setting (--gc-percent 200). With BENCH_FLOOR_HTTP2
// it speaks HTTP/2 to a TLS upstream instead, with the proxy's HTTP/2
// receive window: the floor the proxy's --upstream-http2 is measured
// against.

// floorGCPercent matches the proxy's default --gc-percent.
const floorGCPercent = 200

// serveFloor is the hidden `bench __floor` mode; settings come from the
// environment its parent sets.
func serveFloor(ctx context.Context, getenv func(string) string) error {
	debug.SetGCPercent(floorGCPercent)
	up, err := url.Parse(getenv("BENCH_FLOOR_UPSTREAM"))
	if err != nil {
		return err
	}
	tr := &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute,
		DisableCompression: true, Protocols: new(http.Protocols)}
	if getenv("BENCH_FLOOR_HTTP2") == "true" {
		tr.Protocols.SetHTTP2(true)
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: fwdupstream.MaxReceiveBufferPerStream}
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	if ca := getenv("BENCH_FLOOR_CA"); ca != "" {
		pool, err := ops.LoadCertPool(ca)
		if err != nil {
			return err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	auth := "Bearer " + getenv("BENCH_FLOOR_TOKEN")
	headers := copilotHeaders()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = up.Scheme, up.Host, ""
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, "/v1")
			for _, kv := range headers {
				pr.Out.Header.Set(kv[0], kv[1])
			}
			pr.Out.Header.Set("Authorization", auth)
		},
		Transport: tr,
	}
	ln, err := net.Listen("tcp", getenv("BENCH_FLOOR_ADDR"))
	if err != nil {
		return err
	}
	if addr := getenv("BENCH_PPROF_ADDR"); addr != "" { // `-profile`: the floor profiled beside the proxy
		if err := servePprof(addr); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startFloor runs the Go floor in front of upstream (a base URL), trusting
// caPath when it is set, over HTTP/2 when http2.
func (b *bench) startFloor(name, upstream, token, caPath string, http2 bool, env ...string) (*proc.Process, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addr, err := proc.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := proc.Start(proc.Spec{Name: name, Path: self, Args: []string{"__floor"},
		Env: append([]string{"BENCH_FLOOR_ADDR=" + addr, "BENCH_FLOOR_UPSTREAM=" + upstream, "BENCH_FLOOR_TOKEN=" + token,
			"BENCH_FLOOR_CA=" + caPath, fmt.Sprintf("BENCH_FLOOR_HTTP2=%t", http2)}, env...),
		LogPath: filepath.Join(b.dir(name), "floor.log")})
	if err != nil {
		return nil, "", err
	}
	b.procs = append(b.procs, p)
	// Any 200 through it will do: the sandbox's model list.
	if err := proc.WaitHTTP(b.ctx, p, "http://"+addr+"/v1/models", 20*time.Second); err != nil {
		b.stop(p)
		return nil, "", err
	}
	return p, "http://" + addr, nil
}

// floorTarget is a client of the Go floor at url, shown as name.
func floorTarget(name string, p *proc.Process, url string, conns int) *target {
	h := http.Header{}
	h.Set("Authorization", "Bearer client-key-the-floor-ignores")
	h.Set("Content-Type", "application/json")
	return &target{name: name, base: url + "/v1", header: h, client: newClient(conns),
		cpu: func() (time.Duration, error) { return p.CPU(false) }}
}
