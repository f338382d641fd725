package pool

import (
	"fmt"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

var start = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func three() []Candidate {
	return []Candidate{{"alice", "e/1"}, {"bob", "e/1"}, {"carol", "e/1"}}
}

func names(cands []Candidate, idx int) string {
	if idx < 0 {
		return ""
	}
	return cands[idx].Name
}

func TestPickSkipsUnusable(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*Tracker)
		cands     []Candidate
		tried     []string
		want      []string // acceptable picks; empty: none usable
		limited   bool
		retryWant time.Duration
	}{
		{name: "all usable", cands: three(), want: []string{"alice", "bob", "carol"}},
		{name: "no token", cands: []Candidate{{"alice", ""}, {"bob", "e/1"}}, want: []string{"bob"}},
		{name: "tried skipped", cands: three(), tried: []string{"alice", "carol"}, want: []string{"bob"}},
		{name: "rate limited", cands: three(), setup: func(tr *Tracker) {
			tr.RateLimited("alice", 10*time.Second)
			tr.RateLimited("bob", 20*time.Second)
		}, want: []string{"carol"}},
		{name: "quota spent", cands: three(), setup: func(tr *Tracker) {
			tr.QuotaSpent("alice", start.Add(time.Hour))
			tr.QuotaSpent("carol", time.Time{})
		}, want: []string{"bob"}},
		{name: "refused token", cands: three(), setup: func(tr *Tracker) {
			tr.Refused("alice", "e/1")
			tr.Refused("bob", "e/1")
		}, want: []string{"carol"}},
		{name: "refused an older token", cands: three(), setup: func(tr *Tracker) {
			tr.Refused("alice", "e/0")
			tr.Refused("bob", "e/1")
			tr.Refused("carol", "e/1")
		}, want: []string{"alice"}},
		{name: "exhausted snapshot", cands: three(), setup: func(tr *Tracker) {
			tr.SetQuota("alice", start, Snapshot{Kind: "chat", Entitlement: 50, Remaining: 0, Reset: start.Add(time.Hour)})
			tr.SetQuota("bob", start, Snapshot{Kind: "chat", Entitlement: 50, Remaining: 0, OveragePermitted: true, Reset: start.Add(time.Hour)})
			tr.SetQuota("carol", start, Snapshot{Kind: "chat", Unlimited: true})
		}, want: []string{"bob", "carol"}},
		{name: "all cooling: 429 after the soonest", cands: three(), setup: func(tr *Tracker) {
			tr.RateLimited("alice", 40*time.Second)
			tr.RateLimited("bob", 7*time.Second)
			tr.QuotaSpent("carol", start.Add(time.Hour))
		}, limited: true, retryWant: 7 * time.Second},
		{name: "cooling and tokenless: 429", cands: []Candidate{{"alice", ""}, {"bob", "e/1"}}, setup: func(tr *Tracker) {
			tr.RateLimited("bob", 3*time.Second)
		}, limited: true, retryWant: 3 * time.Second},
		{name: "no tokens: 503", cands: []Candidate{{"alice", ""}, {"bob", ""}}, retryWant: DefaultTokenWait},
		{name: "all tried: 503", cands: three(), tried: []string{"alice", "bob", "carol"}, retryWant: DefaultTokenWait},
		{name: "sub-second floor", cands: []Candidate{{"alice", "e/1"}}, setup: func(tr *Tracker) {
			tr.RateLimited("alice", 10*time.Millisecond)
		}, limited: true, retryWant: time.Second},
		{name: "empty pool", retryWant: DefaultTokenWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := New(Config{Clock: clock.NewFake(start)})
			if tt.setup != nil {
				tt.setup(tr)
			}
			for aff := range uint64(20) {
				idx, out := tr.Pick(tt.cands, aff, tt.tried)
				got := names(tt.cands, idx)
				if len(tt.want) == 0 {
					if idx >= 0 || out.Limited != tt.limited || out.RetryAfter != tt.retryWant {
						t.Fatalf("Pick(affinity %d) = %q, %+v; want none, limited %v, retry after %v", aff, got, out, tt.limited, tt.retryWant)
					}
					continue
				}
				if !contains(tt.want, got) {
					t.Fatalf("Pick(affinity %d) = %q (%+v); want one of %v", aff, got, out, tt.want)
				}
			}
		})
	}
}

func TestCoolingEnds(t *testing.T) {
	clk := clock.NewFake(start)
	tr := New(Config{Clock: clk})
	cands := []Candidate{{"alice", "e/1"}}
	tr.RateLimited("alice", 0) // default cool-down
	if idx, out := tr.Pick(cands, 0, nil); idx >= 0 || out.RetryAfter != DefaultRateLimitCool || !out.Limited {
		t.Fatalf("after a 429 without Retry-After: Pick = %d, %+v; want none for %v", idx, out, DefaultRateLimitCool)
	}
	clk.Advance(DefaultRateLimitCool - time.Second)
	if idx, _ := tr.Pick(cands, 0, nil); idx >= 0 {
		t.Fatal("usable a second before the cool-down ends")
	}
	clk.Advance(time.Second)
	if idx, _ := tr.Pick(cands, 0, nil); idx != 0 {
		t.Fatal("not usable once the cool-down ended")
	}

	// A 402 with no known reset lasts QuotaCool.
	tr.QuotaSpent("alice", time.Time{})
	clk.Advance(DefaultQuotaCool - time.Second)
	if idx, _ := tr.Pick(cands, 0, nil); idx >= 0 {
		t.Fatal("usable before the quota cool-down ends")
	}
	clk.Advance(time.Second)
	if idx, _ := tr.Pick(cands, 0, nil); idx != 0 {
		t.Fatal("not usable once the quota cool-down ended")
	}
}

func TestQuotaLiftedByLaterReading(t *testing.T) {
	clk := clock.NewFake(start)
	tr := New(Config{Clock: clk})
	cands := []Candidate{{"alice", "e/1"}}
	tr.QuotaSpent("alice", start.Add(24*time.Hour))
	// A reading from before the 402 does not lift it.
	tr.SetQuota("alice", start.Add(-time.Minute), Snapshot{Kind: "chat", Entitlement: 50, Remaining: 10})
	if idx, _ := tr.Pick(cands, 0, nil); idx >= 0 {
		t.Fatal("an older reading lifted the 402")
	}
	// A later reading that still shows it exhausted does not either.
	clk.Advance(time.Minute)
	tr.SetQuota("alice", clk.Now(), Snapshot{Kind: "chat", Entitlement: 50, Remaining: 0, Reset: start.Add(24 * time.Hour)})
	if idx, out := tr.Pick(cands, 0, nil); idx >= 0 || out.RetryAfter != 24*time.Hour-time.Minute {
		t.Fatalf("exhausted reading: Pick = %d, %+v; want none until the reset", idx, out)
	}
	// The quota was reset: the next reading lifts it.
	clk.Advance(time.Minute)
	tr.SetQuota("alice", clk.Now(), Snapshot{Kind: "chat", Entitlement: 50, Remaining: 50, Reset: start.Add(30 * 24 * time.Hour)})
	if idx, _ := tr.Pick(cands, 0, nil); idx != 0 {
		t.Fatal("a reading with quota left did not lift the 402")
	}
}

func TestRefusedUntilNewToken(t *testing.T) {
	tr := New(Config{Clock: clock.NewFake(start)})
	tr.Refused("alice", "e/4")
	if idx, out := tr.Pick([]Candidate{{"alice", "e/4"}}, 0, nil); idx >= 0 || out.Limited {
		t.Fatalf("refused token: Pick = %d, %+v; want none, 503", idx, out)
	}
	if idx, _ := tr.Pick([]Candidate{{"alice", "e/5"}}, 0, nil); idx != 0 {
		t.Fatal("a new token did not bring the account back")
	}
	// And the old token id no longer matters.
	if idx, _ := tr.Pick([]Candidate{{"alice", "e/4"}}, 0, nil); idx != 0 {
		t.Fatal("the refusal outlived the token change")
	}
}

func TestAffinityIsStable(t *testing.T) {
	tr := New(Config{Clock: clock.NewFake(start)})
	cands := three()
	counts := map[string]int{}
	for aff := uint64(1); aff <= 300; aff++ {
		first, _ := tr.Pick(cands, aff, nil)
		for range 3 {
			if again, _ := tr.Pick(cands, aff, nil); again != first {
				t.Fatalf("affinity %d picked %d then %d", aff, first, again)
			}
		}
		// Removing another member keeps the choice (rendezvous hashing).
		var fewer []Candidate
		for i, c := range cands {
			if i == first || len(fewer) == 0 {
				fewer = append(fewer, c)
			}
		}
		if got, _ := tr.Pick(fewer, aff, nil); fewer[got].Name != cands[first].Name {
			t.Fatalf("affinity %d moved from %s to %s when another member left", aff, cands[first].Name, fewer[got].Name)
		}
		counts[cands[first].Name]++
	}
	for _, c := range cands {
		if counts[c.Name] < 50 {
			t.Errorf("affinity spread %v: %s got fewer than 50 of 300 conversations", counts, c.Name)
		}
	}
}

func TestLeastLoaded(t *testing.T) {
	tr := New(Config{Clock: clock.NewFake(start)})
	cands := three()
	var releases []func()
	for range 3 {
		releases = append(releases, tr.Acquire("alice"))
	}
	releases = append(releases, tr.Acquire("bob"))
	if idx, _ := tr.Pick(cands, 0, nil); names(cands, idx) != "carol" {
		t.Fatalf("no affinity: Pick = %q; want the least loaded, carol", names(cands, idx))
	}
	// With affinity the same member is kept under moderate load...
	aff := affinityFor(t, tr, cands, "alice")
	if idx, _ := tr.Pick(cands, aff, nil); names(cands, idx) != "alice" {
		t.Fatalf("affinity to alice at load 3: Pick = %q; want alice", names(cands, idx))
	}
	// ...but not when far busier than the least loaded.
	for range 6 {
		releases = append(releases, tr.Acquire("alice"))
	}
	if idx, _ := tr.Pick(cands, aff, nil); names(cands, idx) != "carol" {
		t.Fatalf("affinity to alice at load 9: Pick = %q; want carol", names(cands, idx))
	}
	for _, r := range releases {
		r()
		r() // a second call is harmless
	}
	for _, st := range tr.Statuses() {
		if st.InFlight != 0 {
			t.Errorf("%s in flight %d after every release; want 0", st.Name, st.InFlight)
		}
	}
}

func affinityFor(t *testing.T, tr *Tracker, cands []Candidate, want string) uint64 {
	t.Helper()
	for aff := uint64(1); aff < 1000; aff++ {
		// Pick on an unloaded copy: score alone decides.
		best, bestScore := "", uint64(0)
		for _, c := range cands {
			if s := score(aff, c.Name); best == "" || s > bestScore {
				best, bestScore = c.Name, s
			}
		}
		if best == want {
			return aff
		}
	}
	t.Fatalf("no affinity maps to %s", want)
	return 0
}

// TestFailoverTriesEachMemberOnce plays the proxy's loop: every member
// answers 429, and the request goes to each one once, then stops.
func TestFailoverTriesEachMemberOnce(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tr := New(Config{Clock: clock.NewFake(start)})
			var cands []Candidate
			for i := range n {
				cands = append(cands, Candidate{fmt.Sprintf("m%d", i), "e/1"})
			}
			var tried []string
			for {
				idx, out := tr.Pick(cands, 42, tried)
				if idx < 0 {
					if !out.Limited || out.RetryAfter != 10*time.Second {
						t.Fatalf("after all members were rate limited: %+v; want 429 after 10s", out)
					}
					break
				}
				tried = append(tried, cands[idx].Name)
				tr.RateLimited(cands[idx].Name, 10*time.Second)
				if len(tried) > n {
					t.Fatalf("tried %v: more attempts than members", tried)
				}
			}
			if len(tried) != n {
				t.Fatalf("tried %v; want every one of %d members once", tried, n)
			}
		})
	}
}
