package e2e

import (
	"syscall"
	"testing"
	"time"
)

// TestBrokerKilledAndRestartedUnderLoad is scenario (b): the broker process
// is killed (SIGKILL, no goodbye to its watchers) while clients stream
// through two proxies, stays down a while, and comes back on the same
// addresses. No request fails: the proxies serve their cached token while the
// broker is away, then take the new broker's token (a new epoch) before the
// old one expires. The load runs past the old token's expiry to prove it.
func TestBrokerKilledAndRestartedUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		lifetime, refreshIn = 20 * time.Second, 10 * time.Second
		downtime            = 3 * time.Second
	)
	sb := startSandbox(t, sandboxOpts{lifetime: lifetime, refreshIn: refreshIn, chunks: 5, chunkDelay: 30 * time.Millisecond})
	br := startBroker(t, sb)
	first := br.validToken(t)
	p1, p2 := startProxy(t, br, sb), startProxy(t, br, sb)
	l := startLoad(t, 4, p1, p2)

	time.Sleep(time.Second) // streams in flight when the broker dies
	br.signal(t, syscall.SIGKILL)
	if err := br.wait(t, 10*time.Second); err == nil {
		t.Fatal("broker exited cleanly after SIGKILL; want it killed")
	}
	killedAt := time.Now()
	// While it is down the proxies stay ready on their cached token.
	for _, px := range []*proxyProc{p1, p2} {
		if err := pollHTTP(px.proc, px.adminURL+"/readyz", time.Second); err != nil {
			t.Errorf("proxy /readyz with the broker down: %v; want ready on the cached token", err)
		}
	}
	time.Sleep(downtime - time.Since(killedAt))
	br.restart(t)
	br.waitReady(t)
	second := br.validToken(t)
	if second.GetEpoch() == first.GetEpoch() {
		t.Errorf("restarted broker has epoch %q, the same as before; want a new one", second.GetEpoch())
	}
	t.Logf("broker back after %s with epoch %s generation %d", time.Since(killedAt).Round(time.Millisecond), second.GetEpoch(), second.GetGeneration())

	// Serve until well past the first broker's token's expiry: only the new
	// broker's token can carry the load now.
	oldExpiry := first.GetExpiresAt().AsTime()
	time.Sleep(time.Until(oldExpiry) + 2*time.Second)
	l.requireNoFailures(t, 20)
	if p1.exited() || p2.exited() {
		t.Error("a proxy exited; want both running throughout")
	}
}
