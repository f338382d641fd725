package forward

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/keys"
)

// BenchmarkOverhead measures, at concurrency 32 over loopback, the CPU a
// forwarded chat completion costs through the Handler beside a bare
// httputil.ReverseProxy that only sets the upstream URL and token (the floor
// any Go forwarder built on net/http pays), with the upstream over plain
// HTTP, TLS with HTTP/1.1 and TLS with HTTP/2. Client, upstream and
// forwarder share this process, so cpu-µs/op is the whole process's CPU per
// request: the difference between the two forwarders is the Handler's own
// cost. Concurrency 1 is one request after another; 32 is 32 parallel
// workers. Run with -benchtime 20000x; compare "bare" and "handler" of one
// upstream kind and concurrency.
func BenchmarkOverhead(b *testing.B) {
	answer := `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
	body := `{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}`
	upHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answer)
	})
	for _, kind := range []string{"plain", "tls-h1", "tls-h2"} {
		up := httptest.NewUnstartedServer(upHandler)
		switch kind {
		case "plain":
			up.Start()
		case "tls-h1":
			up.StartTLS()
		case "tls-h2":
			up.EnableHTTP2 = true
			up.StartTLS()
		}
		u, _ := url.Parse(up.URL)
		tcfg := TransportConfig{HTTP1Only: kind != "tls-h2"}
		if up.TLS != nil {
			tcfg.RootCAs = up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		}
		ks, _ := keys.Parse(strings.NewReader("alice:" + testKey + "\n"))
		tok := tokenGen(1, time.Now().Add(time.Hour))

		bareTr := NewTransport(tcfg)
		bare := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(u)
				pr.Out.Header.Set("Authorization", "Bearer "+tok.Value.Reveal())
			},
			Transport: bareTr,
		}
		tr := NewTransport(tcfg) // the proxy's default: HTTP/1.1 unless tls-h2
		closeIdle := tr.CloseIdleConnections
		h, err := New(Config{Source: &fakeSource{tok: tok}, Keys: ks, APIURL: u, Transport: tr})
		if err != nil {
			b.Fatal(err)
		}
		for _, fw := range []struct {
			name string
			h    http.Handler
		}{{"bare", bare}, {"handler", h}} {
			for _, conc := range []int{1, 32} {
				b.Run(fmt.Sprintf("%s/c%d/%s", kind, conc, fw.name), func(b *testing.B) {
					p := httptest.NewServer(fw.h)
					defer p.Close()
					client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
					defer client.CloseIdleConnections()
					target := p.URL + "/v1/chat/completions"
					if fw.name == "bare" {
						target = p.URL + "/chat/completions"
					}
					once := func() {
						req, _ := http.NewRequest("POST", target, strings.NewReader(body))
						req.Header.Set("Authorization", "Bearer "+testKey)
						req.Header.Set("Content-Type", "application/json")
						resp, err := client.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							b.Errorf("status %d", resp.StatusCode)
						}
					}
					for range 100 {
						once()
					}
					before := cpuTime()
					b.ResetTimer()
					if conc == 1 {
						for b.Loop() {
							once()
						}
					} else {
						b.SetParallelism(conc / runtime.GOMAXPROCS(0))
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								once()
							}
						})
					}
					b.StopTimer()
					b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-µs/op")
				})
			}
		}
		bareTr.CloseIdleConnections()
		closeIdle()
		up.Close()
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
