package forward

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	transport "github.com/copilot-broker/copilot-broker/internal/forward/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConnectFailureIsSentAgain: a request whose upstream connection could
// not be set up reached no upstream, so the proxy sends it again, whole, up
// to connectRetries times; a certificate the upstream's name does not
// match, or any other error, is not retried.
func TestConnectFailureIsSentAgain(t *testing.T) {
	setupFailed := &transport.ConnectError{Addr: "api.example:443", Err: errors.New("TLS handshake timeout")}
	badCert := &transport.ConnectError{Addr: "api.example:443", Err: &tls.CertificateVerificationError{Err: errors.New("unknown authority")}}
	for _, tc := range []struct {
		name         string
		fail         int   // attempts that fail before one succeeds
		err          error // their error
		wantAttempts int
		wantStatus   int
	}{
		{"no failure", 0, setupFailed, 1, http.StatusOK},
		{"one setup failure", 1, setupFailed, 2, http.StatusOK},
		{"two setup failures", 2, setupFailed, 3, http.StatusOK},
		{"three: gives up", 3, setupFailed, 3, http.StatusBadGateway},
		{"certificate refused", 1, badCert, 1, http.StatusBadGateway},
		{"other error", 1, errors.New("connection reset by peer"), 1, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const body = `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`
			var mu sync.Mutex
			var bodies []string
			e := newEnv(t, nil, func(c *Config) {
				c.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
					b, _ := io.ReadAll(r.Body)
					mu.Lock()
					defer mu.Unlock()
					bodies = append(bodies, string(b))
					if len(bodies) <= tc.fail {
						return nil, tc.err
					}
					return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
						Body: io.NopCloser(strings.NewReader(`{"choices":[]}`)), Request: r}, nil
				})
			})
			resp, got := e.do(t, "POST", "/v1/chat/completions", body, nil)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, got, tc.wantStatus)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != tc.wantAttempts {
				t.Errorf("%d attempts upstream, want %d", len(bodies), tc.wantAttempts)
			}
			for i, b := range bodies {
				if !strings.Contains(b, `"content":"hi"`) {
					t.Errorf("attempt %d sent body %q, want the client's", i+1, b)
				}
			}
			if got := testutil.ToFloat64(e.handler.metrics.retries.WithLabelValues("connect")); got != float64(tc.wantAttempts-1) {
				t.Errorf(`copilot_proxy_upstream_retries_total{result="connect"} = %v, want %d`, got, tc.wantAttempts-1)
			}
		})
	}
}
