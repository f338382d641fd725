package e2e

import (
	"net/http"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// TestExchangeOutageShorterThanTokenLife is scenario (c): GitHub's exchange
// fails (500) for longer than a refresh period but for less than the token's
// life. Clients see nothing: zero failed requests. The broker reports the
// token STALE, with the error, while refreshes fail, stays ready and SERVING,
// and is VALID again with the next generation once GitHub is back.
func TestExchangeOutageShorterThanTokenLife(t *testing.T) {
	t.Parallel()
	// The token lives 39 or 40 s (whole seconds, see the fan-out test) and
	// its refresh comes at 16 s ± 10 %. The outage begins as soon as the
	// broker holds its first token and ends 3 s after the planned refresh
	// (the broker publishes refresh_at): the refresh and the first retry, at
	// about +1 s, fail; the next, at about +3 s ± 20 %, or the one after,
	// at about +7 s, succeeds with more than ten seconds of the token's
	// life to spare.
	const (
		lifetime, refreshIn = 40 * time.Second, 20 * time.Second
		pastRefresh         = 3 * time.Second
	)
	sb := startSandbox(t, sandboxOpts{lifetime: lifetime, refreshIn: refreshIn, chunks: 5, chunkDelay: 30 * time.Millisecond})
	brokerStart := time.Now()
	br := startBroker(t, sb)
	first := br.validToken(t)
	sb.failExchanges(t, http.StatusInternalServerError)
	outageStart := time.Now()
	refreshAt := first.GetRefreshAt().AsTime()
	outageEnd := refreshAt.Add(pastRefresh)
	// The refresh period began when the broker received the token: after
	// brokerStart and after the sandbox made it (its expiry less its
	// lifetime, at most a second early). An outage longer than refreshAt
	// less the later of the two is longer than the period. (brokerStart
	// alone failed the test on a loaded machine, where the broker took 4 s
	// to start.)
	received := first.GetExpiresAt().AsTime().Add(-lifetime)
	if received.Before(brokerStart) {
		received = brokerStart
	}
	if period, d := refreshAt.Sub(received), outageEnd.Sub(outageStart); d <= period || d >= lifetime-time.Second {
		t.Fatalf("outage of %s against a refresh period of at most %s and a %s token; want longer than the period and shorter than the token's life (a very slow start?)", d, period, lifetime)
	}
	px := startProxy(t, br, sb)
	l := startLoad(t, 3, px)

	var stale *brokerv1.Token
	var staleAt time.Time
	for time.Now().Before(outageEnd) {
		_, tok, body := br.token(t)
		if tok == nil {
			t.Fatalf("GET /v1/token during the outage: %s; want the still-valid token", body)
		}
		if stale == nil && tok.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_STALE {
			stale, staleAt = tok, time.Now()
			if h := br.health(t, apiService); h != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("grpc health of %s while STALE = %v; want SERVING (a token is still handed out)", apiService, h)
			}
			if err := pollHTTP(br.proc, br.adminURL+"/readyz", time.Second); err != nil {
				t.Errorf("broker /readyz while STALE: %v; want ready", err)
			}
			if err := pollHTTP(px.proc, px.adminURL+"/readyz", time.Second); err != nil {
				t.Errorf("proxy /readyz while the broker is STALE: %v; want ready", err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	sb.clearFaults(t)
	if stale == nil {
		t.Fatalf("broker never reported STALE during a %s exchange outage (refresh planned at +%s)",
			outageEnd.Sub(outageStart).Round(time.Millisecond), refreshAt.Sub(outageStart).Round(time.Millisecond))
	}
	t.Logf("outage of %s; STALE from +%s: generation %d, last_error %q", outageEnd.Sub(outageStart).Round(time.Millisecond),
		staleAt.Sub(outageStart).Round(time.Millisecond), stale.GetGeneration(), stale.GetLastError())
	if stale.GetGeneration() != first.GetGeneration() || stale.GetValue() != first.GetValue() || stale.GetLastError() == "" {
		t.Errorf("STALE state: generation %d, same value %v, last_error %q; want the first token (generation %d) still served, with the error",
			stale.GetGeneration(), stale.GetValue() == first.GetValue(), stale.GetLastError(), first.GetGeneration())
	}

	// Back to VALID, with a new token, before the first one expires.
	var back *brokerv1.Token
	waitFor(t, time.Until(first.GetExpiresAt().AsTime()), "VALID again after the outage", func() bool {
		_, back, _ = br.token(t)
		return back.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_VALID && back.GetGeneration() > first.GetGeneration()
	})
	t.Logf("VALID again at +%s, generation %d, %s before the first token's expiry",
		time.Since(outageStart).Round(time.Millisecond), back.GetGeneration(), time.Until(first.GetExpiresAt().AsTime()).Round(time.Millisecond))
	time.Sleep(time.Second) // a little load on the new token
	l.requireNoFailures(t, 30)
	if st := sb.stats(t); st.exchanges(http.StatusInternalServerError) == 0 {
		t.Errorf("sandbox exchanges %v; want failed ones during the outage", st.Exchanges)
	}
}
