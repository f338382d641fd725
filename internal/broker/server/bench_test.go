package server

import (
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
)

// Benchmarks of the read paths at concurrency 32 (the benchmarks issue's
// setting); report calls/s with -bench . -benchtime 3s.

func benchEnv(b *testing.B) *env {
	sb, err := sandbox.Start(sandbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sb.Close() })
	srv, err := Start(b.Context(), Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		GitHubAPIURL: sb.URL, GitHubToken: sb.GitHubToken(), Keys: benchKeys(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return &env{sb: sb, srv: srv}
}

func BenchmarkGetTokenGRPC(b *testing.B) {
	e := benchEnv(b)
	cc := dialBench(b, e)
	c := brokerv1.NewTokenBrokerServiceClient(cc)
	ctx := withKey(b.Context(), testKey)
	if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32 / runtime.GOMAXPROCS(0))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

func BenchmarkGetTokenREST(b *testing.B) {
	e := benchEnv(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	url := "http://" + e.srv.Addrs().HTTP + "/v1/token"
	b.SetParallelism(32 / runtime.GOMAXPROCS(0))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
