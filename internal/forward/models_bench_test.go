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
)

// BenchmarkServeHTTPCatalog measures the handler's own CPU per request (no
// network: an in-memory upstream) with the catalog off and on, interleaved
// request by request so that a busy machine slows both alike. It reports
// the median time per request of each (medians: a preempted request does
// not move them) and their ratio.
func BenchmarkServeHTTPCatalog(b *testing.B) {
	answer := `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}`
	upstream := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		body := answer
		if r.URL.Path == "/models" {
			body = upstreamModels
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
	})
	u, _ := url.Parse("http://upstream.test")
	src := &fakeSource{tok: tokenGen(1, time.Now().Add(time.Hour))}
	off, err := New(Config{Source: src, APIURL: u, Transport: upstream})
	if err != nil {
		b.Fatal(err)
	}
	on, err := New(Config{Source: src, APIURL: u, Transport: upstream, Models: &ModelsConfig{}})
	if err != nil {
		b.Fatal(err)
	}
	defer on.Close()
	for _, tt := range []struct{ name, model string }{{"exact", "gpt-4.1"}, {"rewritten", "gpt-4.1-2025-04-14"}} {
		b.Run(tt.name, func(b *testing.B) {
			body := `{"model":"` + tt.model + `","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}`
			serve := func(h *Handler) time.Duration {
				req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(w, req)
				d := time.Since(start)
				if w.Code != 200 {
					b.Fatalf("status %d %s", w.Code, w.Body)
				}
				return d
			}
			for range 100 {
				serve(off)
				serve(on)
			}
			var tOff, tOn []time.Duration
			for b.Loop() {
				tOff = append(tOff, serve(off))
				tOn = append(tOn, serve(on))
			}
			mOff, mOn := median(tOff), median(tOn)
			b.ReportMetric(float64(mOff.Nanoseconds()), "off-p50-ns")
			b.ReportMetric(float64(mOn.Nanoseconds()), "on-p50-ns")
			b.ReportMetric(float64(mOn)/float64(mOff), "on/off")
		})
	}
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}
