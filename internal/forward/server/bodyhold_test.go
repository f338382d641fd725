package server

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// Connections that announce a body and never send it are answered or closed
// at once on both of the proxy's listeners, while a client with a key is
// served. The body read timeout is an hour: only answering at once frees
// them.
func TestBodiesThatNeverComeHoldNoConnection(t *testing.T) {
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.BodyReadTimeout = time.Hour; c.IdleTimeout = time.Hour }})
	const n = 1000
	for _, l := range []struct{ name, addr, head string }{
		{"client port, no key", st.proxy.Addrs().HTTP, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"},
		{"client port, unknown route", st.proxy.Addrs().HTTP, "POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"},
		{"admin port", st.proxy.Addrs().Admin, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"},
	} {
		t.Run(l.name, func(t *testing.T) {
			stop := make(chan struct{})
			var served, failed atomic.Int64
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if resp, _ := st.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode == 200 {
						served.Add(1)
					} else {
						failed.Add(1)
					}
				}
			})
			got := testutil.HoldBodies(t, l.addr, l.head, n, 30*time.Second)
			close(stop)
			wg.Wait()
			if got.Freed != n {
				t.Errorf("%d of %d connections with unsent bodies answered or closed; want all", got.Freed, n)
			}
			if served.Load() == 0 || failed.Load() != 0 {
				t.Errorf("keyed client during the flood: %d served, %d failed; want served, none failed", served.Load(), failed.Load())
			}
			t.Logf("%d connections freed, the last after %s; keyed client served %d requests meanwhile", got.Freed, got.Slowest.Round(time.Millisecond), served.Load())
		})
	}
}
