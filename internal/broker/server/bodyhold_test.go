package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// Connections that announce a body and never send it are answered or closed
// at once on the REST and admin listeners, and a keyed REST client is served
// meanwhile.
func TestBodiesThatNeverComeHoldNoConnection(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{Keys: testKeys(t)})
	client := httpClient(t)
	const n = 1000
	for _, l := range []struct{ name, addr, head string }{
		{"REST, no key", e.srv.Addrs().HTTP, "POST /v1/token:refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"},
		{"admin", e.srv.Addrs().Admin, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"},
	} {
		t.Run(l.name, func(t *testing.T) {
			got := testutil.HoldBodies(t, l.addr, l.head, n, 30*time.Second)
			if got.Freed != n {
				t.Errorf("%d of %d connections with unsent bodies answered or closed; want all", got.Freed, n)
			}
			req, _ := http.NewRequest("GET", "http://"+e.srv.Addrs().HTTP+"/v1/token", nil)
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("keyed GET /v1/token after the flood = %d; want 200", resp.StatusCode)
			}
			t.Logf("%d connections freed, the last after %s", got.Freed, got.Slowest.Round(time.Millisecond))
		})
	}
}
