package forward

import (
	"context"
	"errors"
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestBudget(limit int64, wait time.Duration) (*bodyBudget, prometheus.Gauge) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	return newBodyBudget(limit, 0, wait, g), g
}

func TestReservation(t *testing.T) {
	b, g := newTestBudget(100, 50*time.Millisecond)
	r1 := b.reserve(t.Context(), "k")
	if err := r1.grow(60); err != nil {
		t.Fatalf("grow(60) within an empty budget of 100: %v", err)
	}
	if err := r1.grow(40); err != nil || r1.held.Load() != 60 {
		t.Fatalf("grow(40) after 60: err %v, held %d; want nil, 60 (never shrinks)", err, r1.held.Load())
	}
	if got := testutil.ToFloat64(g); got != 60 {
		t.Errorf("gauge = %v; want 60", got)
	}
	r2 := b.reserve(t.Context(), "k")
	if err := r2.grow(50); !errors.Is(err, errBudget) {
		t.Fatalf("grow(50) with 40 left after the wait: %v; want errBudget", err)
	}
	if r2.held.Load() != 0 {
		t.Errorf("a refused reservation holds %d; want 0", r2.held.Load())
	}

	// A waiter is admitted as soon as the holder lets go.
	r3 := b.reserve(t.Context(), "k")
	r3.deadline = time.Now().Add(time.Hour)
	done := make(chan error, 1)
	go func() { done <- r3.grow(80) }()
	r1.release()
	r1.release() // twice is harmless
	if err := <-done; err != nil {
		t.Fatalf("grow(80) after the holder released: %v", err)
	}
	if got := testutil.ToFloat64(g); got != 80 {
		t.Errorf("gauge = %v; want 80", got)
	}

	// A waiter whose request ends gets the request's error.
	ctx, cancel := context.WithCancel(t.Context())
	r4 := b.reserve(ctx, "k")
	r4.deadline = time.Now().Add(time.Hour)
	go func() { done <- r4.grow(50) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("grow after the request ended: %v; want context.Canceled", err)
	}
	r3.release()
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("gauge after every release = %v; want 0", got)
	}
	// No budget: everything is admitted and nothing counted.
	var none *reservation
	if err := none.grow(1 << 40); err != nil {
		t.Errorf("nil reservation: %v", err)
	}
	unlimited, _ := newTestBudget(-1, 0)
	if err := unlimited.reserve(t.Context(), "k").grow(1 << 40); err != nil {
		t.Errorf("no budget: %v", err)
	}
}

// limitedReader fails the test if a read asks for bytes the reservation has
// not admitted.
type limitedReader struct {
	t    *testing.T
	res  *reservation
	left int
	read int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, io.EOF
	}
	if int64(l.read+len(p)) > l.res.held.Load() {
		l.t.Errorf("read of %d bytes after %d with %d admitted", len(p), l.read, l.res.held.Load())
	}
	n := min(len(p), l.left, 3000)
	l.left -= n
	l.read += n
	return n, nil
}

func TestReadBodyWithinBudget(t *testing.T) {
	pool := newBodyPool()
	for _, tt := range []struct {
		name string
		size int
		hint int64
	}{
		{"known length", 300 << 10, 300 << 10},
		{"chunked", 300 << 10, -1},
		{"empty chunked", 0, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, g := newTestBudget(8<<20, time.Second)
			res := b.reserve(t.Context(), "k")
			body, err := readBody(pool, &limitedReader{t: t, res: res, left: tt.size}, tt.hint, 4<<20, res)
			if err != nil {
				t.Fatal(err)
			}
			if len(body.buf) != tt.size {
				t.Errorf("read %d bytes; want %d", len(body.buf), tt.size)
			}
			if max := int64(2*tt.size + 64<<10 + 1); res.held.Load() > max {
				t.Errorf("held %d for a %d-byte body; want at most %d", res.held.Load(), tt.size, max)
			}
			body.release()
			res.release()
			if got := testutil.ToFloat64(g); got != 0 {
				t.Errorf("gauge after release = %v", got)
			}
		})
	}
}

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
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if n == bodySize {
			received.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
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
		wg             sync.WaitGroup
		ok, refused    atomic.Int64
		mu             sync.Mutex
		unexpected     []string
		anthropicPaths = map[int]bool{}
	)
	for i := range clients {
		path := "/v1/chat/completions"
		if i%2 == 1 {
			path = "/v1/messages"
			anthropicPaths[i] = true
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
				dialectOK(string(b), anthropicPaths[i]):
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

// TestBudgetPerKey: one key holds at most its share; another key still
// gets room at once (issue 22: eight connections of one key announcing
// 32 MiB each and trickling their bodies made every other key's POST get
// 503).
func TestBudgetPerKey(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	b := newBodyBudget(100, 60, 50*time.Millisecond, g)
	a1, a2, other := b.reserve(t.Context(), "a"), b.reserve(t.Context(), "a"), b.reserve(t.Context(), "b")
	if err := a1.grow(50); err != nil {
		t.Fatal(err)
	}
	if err := a2.grow(20); !errors.Is(err, errBudget) {
		t.Errorf("key a past its share of 60: %v; want errBudget", err)
	}
	if err := other.grow(50); err != nil {
		t.Errorf("key b with room left: %v", err)
	}
	if !b.fits(60) || b.fits(61) {
		t.Errorf("fits(60), fits(61) = %v, %v; want true, false", b.fits(60), b.fits(61))
	}
	for _, r := range []*reservation{a1, a2, other} {
		r.release()
	}
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("gauge after release = %v", got)
	}
}
