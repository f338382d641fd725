package tokens

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// TestOutageTwoHours takes GitHub down for two simulated hours, starting just
// before the first early refresh, and checks the number of exchange calls
// against the bound that the backoff policy predicts, the STALE then EXPIRED
// states, and recovery with the next generation.
func TestOutageTwoHours(t *testing.T) {
	const outage = 2 * time.Hour
	tests := []struct {
		name string
		rand func() float64
	}{
		{"seeded jitter", rand.New(rand.NewPCG(1, 2)).Float64},
		{"shortest delays (worst case)", func() float64 { return 0 }},
		{"longest delays", func() float64 { return 0.999999 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			up := newFakeUpstream(clk)
			down, up2 := t0.Add(1000*time.Second), t0.Add(1000*time.Second+outage)
			healthy := up.ok(1500*time.Second, 1800*time.Second)
			up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
				if now := clk.Now(); !now.Before(down) && now.Before(up2) {
					return nil, &TransientError{Status: 503}
				}
				return healthy(n, cred)
			})
			m := newTestManager(t, clk, up, func(c *ManagerConfig) { c.Rand = tt.rand })
			updates, cancel := m.Subscribe()
			defer cancel()
			first := waitState(t, updates, "first token", isGen(1, StatusValid))
			expiry1 := first.ExpiresAt
			token1 := first.Token

			var seen []Status // distinct consecutive statuses published
			record := func() {
				for {
					select {
					case st := <-updates:
						if len(seen) == 0 || seen[len(seen)-1] != st.Status {
							seen = append(seen, st.Status)
						}
					default:
						return
					}
				}
			}
			seen = append(seen, StatusValid)
			for {
				waitTimer(t, clk)
				if _, ok := clk.AdvanceToNext(); !ok {
					t.Fatal("AdvanceToNext: no timer pending")
				}
				waitTimer(t, clk)
				record()
				st, now := m.Snapshot(), clk.Now()
				if st.Generation == 2 {
					break
				}
				switch {
				case now.Before(expiry1):
					if st.Status != StatusStale || !st.Token.Equal(token1) {
						t.Fatalf("at %v before local expiry: status %v, same token %v; want STALE with generation 1's token", now.Sub(t0), st.Status, st.Token.Equal(token1))
					}
				default:
					if st.Status != StatusExpired || !st.Token.IsZero() || !st.ExpiresAt.IsZero() {
						t.Fatalf("at %v after local expiry: %+v; want EXPIRED without token", now.Sub(t0), st)
					}
				}
				if now.After(up2.Add(time.Hour)) {
					t.Fatalf("no recovery one hour after the outage ended")
				}
			}

			calls := up.callTimes()
			inOutage := 0
			for _, c := range calls {
				if !c.Before(down) && c.Before(up2) {
					inOutage++
				}
			}
			// Bound: one attempt at the start, then one per backoff delay at its
			// shortest (jitter -20%) while the delays fit in the outage, plus
			// one extra attempt that "never sleep past expiry" may pull in.
			p := defaultPolicy()
			bound, elapsed := 2, time.Duration(0)
			for k := 1; ; k++ {
				elapsed += p.backoff(k, 0)
				if elapsed >= outage {
					break
				}
				bound++
			}
			final := m.Snapshot()
			recovered := calls[len(calls)-1]
			t.Logf("outage %v: %d exchange calls during it (bound %d), recovery call at +%v after the outage began, recovery %v after it ended; local expiry of generation 1 at +%v",
				outage, inOutage, bound, recovered.Sub(down), recovered.Sub(up2), expiry1.Sub(t0))
			if inOutage > bound {
				t.Errorf("exchange calls during the outage = %d; want at most %d", inOutage, bound)
			}
			// Even at the longest delays (+20% of a 2 min cap) the loop keeps
			// trying: at least one attempt per 144 s once the cap is reached.
			if min := int(outage / (144 * time.Second)); inOutage < min {
				t.Errorf("exchange calls during the outage = %d; want at least %d", inOutage, min)
			}
			if gap := recovered.Sub(up2); gap < 0 || gap > 144*time.Second {
				t.Errorf("recovery came %v after the outage ended; want within one capped backoff (144s)", gap)
			}
			if final.Status != StatusValid || final.Generation != 2 || final.Token.IsZero() || final.LastError != "" {
				t.Errorf("after recovery: %+v; want VALID generation 2 with a token and no error", final)
			}
			want := []Status{StatusValid, StatusStale, StatusExpired, StatusValid}
			if len(seen) != len(want) {
				t.Fatalf("published statuses = %v; want %v", seen, want)
			}
			for i := range want {
				if seen[i] != want[i] {
					t.Fatalf("published statuses = %v; want %v", seen, want)
				}
			}
		})
	}
}
