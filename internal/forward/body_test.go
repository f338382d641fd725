package forward

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/body"
)

// TestBodyBuffersReturnToPool: once a request is done its body buffer goes
// back to the pool, so that the next request reuses it instead of allocating
// (the reverse proxy never closes the outbound body itself: the handler must).
func TestBodyBuffersReturnToPool(t *testing.T) {
	e := newEnv(t, nil, nil)
	pool := e.handler.bodies.Pool()
	// A small body of known length has a buffer of its own, never pooled.
	for i := range 5 {
		resp, body := e.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("small request %d = %d %s; want 200", i, resp.StatusCode, body)
		}
	}
	if made, _ := pool.Stats(); made != 0 {
		t.Errorf("%d pooled buffers made for small bodies; want none", made)
	}
	const requests = 20
	large := `{"model":"gpt-4.1","messages":[{"role":"user","content":"` + strings.Repeat("x", 2*body.Small) + `"}]}`
	for i := range requests {
		resp, body := e.do(t, "POST", "/v1/chat/completions", large, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d = %d %s; want 200", i, resp.StatusCode, body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, held := pool.Stats()
		if held == 0 {
			// Without release every request would allocate (n ==
			// requests). Under the race detector sync.Pool drops a
			// quarter of its puts at random, and a garbage collection
			// empties it: with 20 requests, more than 10 misses came once
			// in a few hundred runs on a loaded machine; 15 or more is
			// about one in 10^5.
			if n >= requests*3/4 {
				t.Errorf("%d buffers allocated for %d sequential requests; want reuse", n, requests)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d body buffers still referenced after every request finished; want all released", held, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
