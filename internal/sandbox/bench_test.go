package sandbox

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const benchChat = `{"model":"gpt-4.1","messages":[{"role":"user","content":"hello there, sandbox"}]}`

// BenchmarkChatHandler measures the sandbox's own cost per non-streaming chat
// completion, without the network.
func BenchmarkChatHandler(b *testing.B) {
	s := New(Config{})
	h := apiHeader(s.mintToken(s.clock.Now().Add(3600e9), "127.0.0.1", s.defaultAcct))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/chat/completions", strings.NewReader(benchChat))
		req.Header = h
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkChatHTTP measures round trips over loopback, as the proxy's
// benchmarks see them.
func BenchmarkChatHTTP(b *testing.B) {
	sb, err := Start(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	h := apiHeader(sb.mintToken(sb.clock.Now().Add(3600e9), "127.0.0.1", sb.defaultAcct))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", sb.URL+"/chat/completions", strings.NewReader(benchChat))
			req.Header = h.Clone()
			resp, err := client.Do(req)
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
}
