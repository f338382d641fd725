package forward

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/keys"
)

// BenchmarkAddedLatency measures, at concurrency 1, the latency the proxy
// adds to a small chat completion: the same request straight to the upstream
// and through the proxy, each timed, and the difference of their
// percentiles reported.
func BenchmarkAddedLatency(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}`)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	ks, _ := keys.Parse(strings.NewReader("alice:" + testKey + "\n"))
	tr := NewTransport(TransportConfig{})
	defer tr.CloseIdleConnections()
	h, err := New(Config{Source: &fakeSource{tok: tokenGen(1, time.Now().Add(time.Hour))}, Keys: ks, APIURL: u, Transport: tr})
	if err != nil {
		b.Fatal(err)
	}
	p := httptest.NewServer(h)
	defer p.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	body := `{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}`
	once := func(base string) time.Duration {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 200 { // warm both connection pools
		once(up.URL)
		once(p.URL)
	}
	var direct, proxied []time.Duration
	b.ResetTimer()
	for b.Loop() {
		direct = append(direct, once(up.URL))
		proxied = append(proxied, once(p.URL))
	}
	b.StopTimer()
	pct := func(d []time.Duration, q float64) float64 {
		slices.Sort(d)
		return float64(d[int(q*float64(len(d)-1))].Microseconds())
	}
	b.ReportMetric(pct(direct, .5), "direct-p50-µs")
	b.ReportMetric(pct(proxied, .5), "proxied-p50-µs")
	b.ReportMetric(pct(proxied, .5)-pct(direct, .5), "added-p50-µs")
	b.ReportMetric(pct(proxied, .99)-pct(direct, .99), "added-p99-µs")
}
