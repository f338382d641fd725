package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bserver "github.com/copilot-broker/copilot-broker/internal/broker/server"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	aliceKey  = "alice-api-key-0123456789"
	brokerKey = "proxy-broker-key-0123456789"
)

// stack is a sandbox upstream, a broker in-process against it, and a proxy
// watching that broker.
type stack struct {
	t       *testing.T
	sb      *sandbox.Server
	sbURL   string
	flushes *flushLog
	clk     clock.Clock
	broker  *bserver.Server
	grpc    string // the broker's gRPC address, kept across restarts
	proxy   *Server
	base    string // http://proxy
	client  *http.Client
	// brokerOpts adjusts the broker's configuration (kept across restarts).
	brokerOpts func(*bserver.Config)
}

type stackOpts struct {
	clk    clock.Clock
	proxy  func(*Config)
	broker func(*bserver.Config)
}

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.clk == nil {
		o.clk = clock.Real{}
	}
	st := &stack{t: t, clk: o.clk, flushes: &flushLog{}, brokerOpts: o.broker}
	st.sb = sandbox.New(sandbox.Config{Clock: o.clk})
	up := httptest.NewServer(st.flushes.wrap(st.sb))
	t.Cleanup(up.Close)
	st.sbURL = up.URL
	st.startBroker("127.0.0.1:0")
	t.Cleanup(func() { st.broker.Close() })

	cfg := Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		BrokerAddr: st.grpc, BrokerKey: secret.New(brokerKey),
		Keys:          mustKeys(t, "alice:"+aliceKey+"\nbob:bob-api-key-0123456789\n"),
		CopilotAPIURL: up.URL, Clock: o.clk,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		ShutdownGrace: 5 * time.Second,
		// The tests shape the sandbox's streams through the proxy.
		ForwardHeaders: []string{"X-Sandbox-Chunks", "X-Sandbox-Chunk-Delay-Ms", "X-Test-Trace"},
	}
	if o.proxy != nil {
		o.proxy(&cfg)
	}
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("proxy Close() = %v", err)
		}
	})
	st.proxy = p
	st.base = "http://" + p.Addrs().HTTP
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	st.client = &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func (st *stack) startBroker(addr string) {
	st.t.Helper()
	cfg := bserver.Config{
		GRPCAddr: addr, HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		GitHubAPIURL: st.sbURL, GitHubToken: st.sb.GitHubToken(),
		Keys:             mustKeys(st.t, "proxy:"+brokerKey+"\n"),
		MinForceInterval: time.Millisecond,
		Clock:            st.clk,
	}
	if st.brokerOpts != nil {
		st.brokerOpts(&cfg)
	}
	b, err := bserver.Start(context.Background(), cfg)
	if err != nil {
		st.t.Fatal(err)
	}
	st.broker = b
	st.grpc = b.Addrs().GRPC
}

func mustKeys(t *testing.T, s string) *keys.Set {
	t.Helper()
	k, err := keys.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// do sends a request to the proxy as alice (unless hdr overrides the
// credential) and returns the response with its body read.
func (st *stack) do(method, path, body string, hdr map[string]string) (*http.Response, string) {
	st.t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, st.base+path, rb)
	if err != nil {
		st.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := st.client.Do(req)
	if err != nil {
		st.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// flushLog wraps the sandbox and records when each streamed event left it:
// the instant its Flush returned after a Write.
type flushLog struct {
	mu    sync.Mutex
	times map[string][]time.Time // by X-Test-Trace request header
}

func (f *flushLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trace := r.Header.Get("X-Test-Trace")
		if trace == "" {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&flushRecorder{ResponseWriter: w, log: f, trace: trace}, r)
	})
}

func (f *flushLog) get(trace string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times[trace]...)
}

type flushRecorder struct {
	http.ResponseWriter
	log   *flushLog
	trace string
	wrote bool
}

func (r *flushRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *flushRecorder) Flush() {
	r.ResponseWriter.(http.Flusher).Flush()
	if !r.wrote {
		return
	}
	r.wrote = false
	now := time.Now()
	r.log.mu.Lock()
	if r.log.times == nil {
		r.log.times = map[string][]time.Time{}
	}
	r.log.times[r.trace] = append(r.log.times[r.trace], now)
	r.log.mu.Unlock()
}

func (r *flushRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
