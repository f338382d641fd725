package forward

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// patternReader produces n bytes of a JSON body without holding them.
type patternReader struct{ n, off int }

var (
	patternHead = []byte(`{"model":"m","messages":[{"role":"user","content":"`)
	patternTail = []byte(`"}]}`)
	patternFill = []byte(strings.Repeat("x", 32<<10))
)

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	var src []byte
	switch tailAt := p.n - len(patternTail); {
	case p.off < len(patternHead):
		src = patternHead[p.off:]
	case p.off < tailAt:
		src = patternFill[:min(len(patternFill), tailAt-p.off)]
	default:
		src = patternTail[p.off-tailAt:]
	}
	n := copy(b, src)
	p.off += n
	return n, nil
}

func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestInflightBodyBudget sends 100 large bodies at once to a proxy whose
// budget holds four of them: the heap stays under the budget plus a fixed
// overhead, every request either reaches the upstream or gets a 503 with
// Retry-After in its dialect, and the proxy then serves as usual.
func TestInflightBodyBudget(t *testing.T) {
	const (
		clients  = 100
		bodySize = 2 << 20
		budget   = 8 << 20
		overhead = 32 << 20 // buffers of 200 connections, goroutines, the test's own
	)
	// The collector must not let garbage pile up past what is live, or the
	// peak would measure GC pacing instead of what the proxy holds.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(budget + overhead/2))
	defer debug.SetGCPercent(debug.SetGCPercent(25))

	var received atomic.Int64
	u, tr := okUpstream(t, func(r *http.Request) {
		if n, _ := io.Copy(io.Discard, r.Body); n == bodySize {
			received.Add(1)
		}
	})
	h, err := New(Config{Source: &fakeSource{tok: tokenGen(1, time.Now().Add(time.Hour))}, APIURL: u, Transport: tr,
		MaxBodyBytes: bodySize, MaxInflightBodyBytes: budget, InflightBodyWait: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(h)
	t.Cleanup(proxy.Close)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: clients, MaxIdleConnsPerHost: clients}}
	t.Cleanup(client.CloseIdleConnections)

	runtime.GC()
	base := heapInUse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := heapInUse(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var (
		wg          sync.WaitGroup
		ok, refused atomic.Int64
		mu          sync.Mutex
		unexpected  []string
	)
	for i := range clients {
		path, anthropic := "/v1/chat/completions", i%2 == 1
		if anthropic {
			path = "/v1/messages"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, proxy.URL+path, &patternReader{n: bodySize})
			req.ContentLength = bodySize
			resp, err := client.Do(req)
			if err != nil {
				mu.Lock()
				unexpected = append(unexpected, fmt.Sprintf("client %d: %v", i, err))
				mu.Unlock()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				ok.Add(1)
			case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "1" &&
				dialectOK(string(b), anthropic):
				refused.Add(1)
			default:
				mu.Lock()
				unexpected = append(unexpected, fmt.Sprintf("client %d: %d %s %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), b))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled

	for _, u := range unexpected {
		t.Error(u)
	}
	if got := ok.Load() + refused.Load(); got != clients {
		t.Errorf("%d answered 200 or a clear 503 of %d", got, clients)
	}
	if ok.Load() == 0 || received.Load() != ok.Load() {
		t.Errorf("%d answered 200, the upstream received %d whole bodies; want the same, more than 0", ok.Load(), received.Load())
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("200: %d, 503: %d; heap grew by at most %.1f MiB (budget %d MiB)", ok.Load(), refused.Load(), float64(grew)/(1<<20), budget>>20)
	if grew > budget+overhead {
		t.Errorf("heap grew by %.1f MiB; want at most the budget plus overhead, %d MiB", float64(grew)/(1<<20), (budget+overhead)>>20)
	}
	if got := testutil.ToFloat64(h.metrics.budgetRefused); got != float64(refused.Load()) {
		t.Errorf("copilot_proxy_body_budget_refusals_total = %v; want %d", got, refused.Load())
	}
	if got := testutil.ToFloat64(h.metrics.inflightBody); got != 0 {
		t.Errorf("copilot_proxy_inflight_body_bytes after the run = %v; want 0", got)
	}

	// Served as usual afterwards.
	resp, err := client.Post(proxy.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a small request after the run: %d; want 200", resp.StatusCode)
	}
}

// okUpstream starts an upstream that runs first on each request and then
// answers {"ok":true}, and a transport to it.
func okUpstream(t *testing.T, first func(*http.Request)) (*url.URL, *http.Transport) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first(r)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	return u, tr
}

// dialectOK says whether an error body is in the expected dialect.
func dialectOK(body string, anthropic bool) bool {
	if anthropic {
		return strings.Contains(body, `"type":"error"`) && strings.Contains(body, `"overloaded_error"`)
	}
	return strings.Contains(body, `"error":{`) && strings.Contains(body, `"code":"overloaded"`)
}

// TestStreamFreesItsBody checks that a streamed answer gives its request
// body and budget share back as soon as it begins, not when it ends.
func TestStreamFreesItsBody(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	h, err := New(Config{Source: &fakeSource{tok: tokenGen(1, time.Now().Add(time.Hour))}, APIURL: u, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(h)
	t.Cleanup(proxy.Close)
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("x", 100<<10) + `"}]}`
	resp, err := proxy.Client().Post(proxy.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("data: {\"n\":1}\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	// The body is freed once the answer has begun and the transport has
	// read the body to its end (on the transport's goroutine, so possibly
	// just after the first event): the upstream holds the stream open
	// until release, so reaching 0 here proves it happened mid-stream.
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(h.metrics.inflightBody) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("copilot_proxy_inflight_body_bytes while the stream is open = %v; want 0", testutil.ToFloat64(h.metrics.inflightBody))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(rest), "[DONE]") {
		t.Errorf("stream rest = %q; want [DONE]", rest)
	}
}

// TestBodyWaitFollowsTheClock checks that the wait for room in the body
// budget is timed by the handler's clock: with the budget held by a
// request the upstream has not answered, a second one is refused with 503
// and Retry-After in its dialect as soon as the clock passes the wait.
func TestBodyWaitFollowsTheClock(t *testing.T) {
	const (
		bodySize = 600 << 10
		wait     = time.Hour // on the real clock the test would hit its deadline
	)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	u, tr := okUpstream(t, func(r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release
	})
	clk := clock.NewFake(time.Now())
	h, err := New(Config{Source: &fakeSource{tok: tokenGen(1, clk.Now().Add(24*time.Hour))}, APIURL: u, Transport: tr, Clock: clk,
		MaxBodyBytes: 1 << 20, MaxInflightBodyBytes: 1 << 20, InflightBodyWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(h)
	t.Cleanup(proxy.Close)
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the servers close, which wait for their handlers
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	// post sends a body of bodySize. The second request's answer comes
	// before its body was read to the end; net/http reads the rest (less
	// than its 256 KiB drain) before answering, so the client is never
	// cut off while writing.
	post := func(path string) (int, string, string, error) {
		req, _ := http.NewRequest(http.MethodPost, proxy.URL+path, &patternReader{n: bodySize})
		req.ContentLength = bodySize
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b), err
	}
	first := make(chan error, 1)
	go func() {
		code, _, b, err := post("/v1/chat/completions")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, b)
		}
		first <- err
	}()
	select {
	case <-arrived:
	case err := <-first:
		t.Fatalf("the first request ended before reaching the upstream: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first request did not reach the upstream in 30 s")
	}

	for _, tc := range []struct {
		path      string
		anthropic bool
	}{{"/v1/chat/completions", false}, {"/v1/messages", true}} {
		pending := clk.Pending()
		type answer struct {
			code       int
			retry, msg string
			err        error
		}
		second := make(chan answer, 1)
		go func() {
			code, retry, b, err := post(tc.path)
			second <- answer{code, retry, b, err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := clk.WaitForTimers(ctx, pending+1)
		cancel()
		if err != nil {
			t.Fatalf("%s: no wait for room started on the handler's clock: %v", tc.path, err)
		}
		clk.Advance(wait)
		a := <-second
		if a.err != nil || a.code != http.StatusServiceUnavailable || a.retry != "1" || !dialectOK(a.msg, tc.anthropic) {
			t.Errorf("%s after the wait: %d Retry-After %q %q (%v); want 503, 1, in its dialect", tc.path, a.code, a.retry, a.msg, a.err)
		}
	}
	free()
	if err := <-first; err != nil {
		t.Errorf("the first request: %v", err)
	}
}
