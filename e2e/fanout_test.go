package e2e

import (
	"net/http"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// TestProxiesShareTheBrokersExchange is scenario (a): proxies on one broker
// cost GitHub exactly one exchange per refresh period, however many there
// are. Two proxies, then four, serve streaming load across several rotations;
// between rotation g and g+k the sandbox counts exactly k exchanges and the
// time taken is k refresh periods.
func TestProxiesShareTheBrokersExchange(t *testing.T) {
	t.Parallel()
	// The broker refreshes at max(0.8 × min(refresh_in, lifetime) ± 10 %,
	// min(10 s, lifetime/2)), where lifetime is expires_at − Date − 2 s
	// (both whole seconds, less the tokens package's dateMargin: 5 or 6 s
	// here): every 2.88 to 3.52 s. The slack covers the exchange itself and
	// polling.
	const (
		lifetime, refreshIn  = 8 * time.Second, 4 * time.Second
		periodMin, periodMax = 2880 * time.Millisecond, 3520 * time.Millisecond
		slack                = 600 * time.Millisecond
		rotations            = 3 // per phase
	)
	sb := startSandbox(t, sandboxOpts{lifetime: lifetime, refreshIn: refreshIn, chunks: 5, chunkDelay: 20 * time.Millisecond})
	br := startBroker(t, sb)
	br.validToken(t)

	phase := func(proxies []*proxyProc) {
		t.Helper()
		l := startLoad(t, 2*len(proxies), proxies...)
		g0, start := br.waitRotation(t, 0, 2*periodMax)
		ex0 := sb.stats(t).exchanges(0)
		g, end := g0, start
		for range rotations {
			g, end = br.waitRotation(t, g, periodMax+slack+time.Second)
		}
		exchanges := sb.stats(t).exchanges(0) - ex0
		elapsed := end.Sub(start)
		t.Logf("%d proxies: generations %d to %d in %s, %d exchanges", len(proxies), g0, g, elapsed.Round(time.Millisecond), exchanges)
		if g != g0+rotations || exchanges != rotations {
			t.Errorf("%d proxies: generation %d → %d with %d exchanges; want %d rotations and exactly one exchange each",
				len(proxies), g0, g, exchanges, rotations)
		}
		if elapsed < rotations*periodMin-slack || elapsed > rotations*(periodMax+slack) {
			t.Errorf("%d proxies: %d rotations took %s; want %d refresh periods of %s to %s",
				len(proxies), rotations, elapsed, rotations, periodMin, periodMax)
		}
		l.requireNoFailures(t, 10)
	}

	proxies := []*proxyProc{startProxy(t, br, sb), startProxy(t, br, sb)}
	phase(proxies)
	proxies = append(proxies, startProxy(t, br, sb), startProxy(t, br, sb))
	phase(proxies)

	st := sb.stats(t)
	_, tok, _ := br.token(t)
	if ok := st.exchanges(http.StatusOK); ok != st.exchanges(0) || uint64(ok) != tok.GetGeneration() {
		t.Errorf("sandbox exchanges %v, broker generation %d; want only successful exchanges, one per generation", st.Exchanges, tok.GetGeneration())
	}
	// A proxy that met an upstream 401 would have forced a refresh of its own.
	if n := st.apiCalls(http.StatusUnauthorized); n != 0 {
		t.Errorf("sandbox answered %d Copilot API calls with 401; want 0", n)
	}
}

// waitRotation waits, up to timeout, for the broker's generation to move past
// after (0: any first observation) and returns the new generation and when it
// was first seen.
func (b *brokerProc) waitRotation(t *testing.T, after uint64, timeout time.Duration) (uint64, time.Time) {
	t.Helper()
	var gen uint64
	var seen time.Time
	waitFor(t, timeout, "a token rotation", func() bool {
		_, tok, _ := b.token(t)
		if tok.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID {
			return false
		}
		if after == 0 {
			after = tok.GetGeneration()
			return false
		}
		gen, seen = tok.GetGeneration(), time.Now()
		return gen > after
	})
	return gen, seen
}
