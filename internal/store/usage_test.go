package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func usageEvent(i int, key, model string, at time.Time) UsageEvent {
	return UsageEvent{
		ID: fmt.Sprintf("ev-%s-%d", key, i), Time: at, RequestID: fmt.Sprintf("req-%d", i), Key: key, Account: "a",
		Model: model, Dialect: "openai-chat", Endpoint: "/chat/completions", Status: 200,
		Input: 11, Output: 7, Cached: 2, Premium: i%2 == 0, PremiumUnits: map[bool]float64{true: 1}[i%2 == 0],
		Latency: 30 * time.Millisecond, TTFB: 5 * time.Millisecond, ProxyID: "p1",
	}
}

func TestUsageIdempotentAndGrouped(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, _ Config) {
		ctx := context.Background()
		day := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
		var evs []UsageEvent
		for i := range 10 {
			evs = append(evs, usageEvent(i, "u1", "gpt-4o", day.Add(time.Duration(i)*time.Hour)))
			evs = append(evs, usageEvent(i, "u2", "claude-sonnet-4", day.Add(24*time.Hour+time.Duration(i)*time.Minute)))
		}
		n, err := s.AddUsage(ctx, evs[:12])
		if err != nil || n != 12 {
			t.Fatalf("AddUsage = %d, %v; want 12", n, err)
		}
		// A resend overlapping the first batch, with an ID twice in it,
		// stores only the new ones, and the rollups count them once.
		again := append(append([]UsageEvent{}, evs[6:]...), evs[15])
		n, err = s.AddUsage(ctx, again)
		if err != nil || n != 8 {
			t.Fatalf("AddUsage (resend) = %d, %v; want 8", n, err)
		}
		want := []UsageRow{
			{Key: "u1", Model: "gpt-4o", Requests: 10, PremiumRequests: 5, PremiumUnits: 5, Input: 110, Output: 70, Cached: 20},
			{Key: "u2", Model: "claude-sonnet-4", Requests: 10, PremiumRequests: 5, PremiumUnits: 5, Input: 110, Output: 70, Cached: 20},
		}
		for _, r := range []struct {
			name     string
			from, to time.Time
		}{
			{"events", day.Add(time.Minute), day.Add(72 * time.Hour)}, // not on days: the events
			{"rollups", day, day.Add(72 * time.Hour)},
		} {
			got, err := s.QueryUsage(ctx, UsageQuery{From: r.from, To: r.to, GroupBy: []string{GroupKey, GroupModel}})
			if err != nil {
				t.Fatal(err)
			}
			w := want
			if r.name == "events" { // the first u1 event is before from
				w = append([]UsageRow{}, want...)
				w[0] = UsageRow{Key: "u1", Model: "gpt-4o", Requests: 9, PremiumRequests: 4, PremiumUnits: 4, Input: 99, Output: 63, Cached: 18}
			}
			if d := cmp.Diff(w, got); d != "" {
				t.Errorf("%s: rows (-want +got):\n%s", r.name, d)
			}
		}
		got, err := s.QueryUsage(ctx, UsageQuery{From: day, To: day.Add(72 * time.Hour), GroupBy: []string{GroupDay}, Key: "u2"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !got[0].Day.Equal(day.Add(24*time.Hour)) || got[0].Requests != 10 {
			t.Errorf("by day for u2 = %+v", got)
		}
		got, err = s.QueryUsage(ctx, UsageQuery{From: day.Add(-48 * time.Hour), To: day})
		if err != nil || len(got) != 0 {
			t.Errorf("empty range = %+v, %v; want no rows", got, err)
		}
		if _, err := s.QueryUsage(ctx, UsageQuery{From: day, To: day, GroupBy: []string{"colour"}}); !errors.Is(err, ErrBadQuery) {
			t.Errorf("bad group: %v, want ErrBadQuery", err)
		}
		ne, nr, err := s.PruneUsage(ctx, day.Add(24*time.Hour), day.Add(24*time.Hour))
		if err != nil || ne != 10 || nr != 1 {
			t.Errorf("PruneUsage = %d, %d, %v; want 10 events, 1 rollup", ne, nr, err)
		}
	})
}

func TestUsageLargeBatch(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, _ Config) {
		at := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
		evs := make([]UsageEvent, 1200) // more than one INSERT
		for i := range evs {
			evs[i] = usageEvent(i, "k", "m", at)
		}
		n, err := s.AddUsage(context.Background(), evs)
		if err != nil || n != len(evs) {
			t.Fatalf("AddUsage = %d, %v", n, err)
		}
		got, err := s.QueryUsage(context.Background(), UsageQuery{From: at.Truncate(24 * time.Hour), To: at.Add(24 * time.Hour).Truncate(24 * time.Hour)})
		if err != nil || len(got) != 1 || got[0].Requests != 1200 || got[0].Input != 1200*11 {
			t.Fatalf("totals = %+v, %v", got, err)
		}
	})
}
