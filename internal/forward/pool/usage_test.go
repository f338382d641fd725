package pool

import (
	"net/http"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// TestUsageReserve: a member with 3 % of its session left gets no new
// conversation while another member is usable, and serves when the other is
// rate limited; a 429 with a used-up limit keeps it out until the reset.
func TestUsageReserve(t *testing.T) {
	clk := clock.NewFake(start)
	tr := New(Config{Clock: clk})
	cands := []Candidate{{"low", "e/1"}, {"other", "e/1"}}
	tr.SetUsage("low", Snapshot{Kind: "session", Entitlement: 100, Remaining: 3, Reset: start.Add(time.Hour)})
	tr.SetUsage("other", Snapshot{Kind: "session", Entitlement: 100, Remaining: 60, Reset: start.Add(time.Hour)})
	for affinity := uint64(0); affinity < 50; affinity++ {
		if i, _ := tr.Pick(cands, affinity, nil); names(cands, i) != "other" {
			t.Fatalf("affinity %d picked %q; want other (low has 3%% left)", affinity, names(cands, i))
		}
	}
	tr.RateLimited("other", time.Minute)
	if i, out := tr.Pick(cands, 7, nil); names(cands, i) != "low" {
		t.Fatalf("with other rate limited: picked %q (%+v); want low", names(cands, i), out)
	}
	if i, _ := tr.Pick(cands, 7, []string{"low"}); i != -1 {
		t.Fatalf("low already tried, other cooling: picked %q", names(cands, i))
	}
	// The session resets: low is an ordinary member again.
	clk.Advance(2 * time.Hour)
	tr.SetUsage("other", Snapshot{Kind: "weekly", Entitlement: 100, Remaining: 4})
	if i, _ := tr.Pick(cands, 7, nil); names(cands, i) != "low" {
		t.Fatalf("after low's reset with other at 4%% weekly: picked %q; want low", names(cands, i))
	}
	until := tr.UsageLimited("low", clk.Now().Add(30*time.Minute), 0)
	if i, out := tr.Pick(cands, 7, []string{"other"}); i != -1 || out.Reasons["usage_limited"] != 1 || !out.Limited {
		t.Fatalf("low usage limited: picked %q, %+v", names(cands, i), out)
	}
	if !until.Equal(clk.Now().Add(30 * time.Minute)) {
		t.Errorf("until = %v", until)
	}
	off := New(Config{Clock: clk, ReservePercent: -1})
	off.SetUsage("low", Snapshot{Kind: "session", Entitlement: 100, Remaining: 1, Reset: clk.Now().Add(time.Hour)})
	if off.lowLocked(off.get("low"), clk.Now()) {
		t.Error("a negative reserve still marks members busy")
	}
}

func TestReadUsage(t *testing.T) {
	var q QuotaReader
	h := http.Header{}
	h.Set(SessionHeader, "ent=100&rem=3&rst=2026-12-07T23%3A00%3A00Z&ov=0&ovPerm=false")
	h.Set(WeeklyHeader, "ent=100&rem=0&rst=2026-12-10T00%3A00%3A00Z&ov=0&ovPerm=false")
	snaps := q.ReadUsage("a", h)
	if len(snaps) != 2 || snaps[0].Kind != "session" || snaps[0].Remaining != 3 || snaps[1].Kind != "weekly" {
		t.Fatalf("ReadUsage = %+v", snaps)
	}
	spent, until := UsageExhausted(snaps)
	if !spent || !until.Equal(time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("UsageExhausted = %v %v", spent, until)
	}
	if len(q.ReadUsage("a", http.Header{})) != 0 {
		t.Error("usage read from an answer without the headers")
	}
}
