package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// benchEngines opens a fresh store per engine for a benchmark.
func benchEngines(b *testing.B, f func(b *testing.B, s Store)) {
	for _, e := range []string{"sqlite", "postgres"} {
		b.Run(e, func(b *testing.B) {
			cfg := Config{StateDir: b.TempDir()}
			if e == "postgres" {
				cfg = Config{DatabaseURL: pg.NewDatabase(b)}
			}
			s, err := Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			f(b, s)
		})
	}
}

func benchEvents(n, from int, start time.Time, spread time.Duration) []UsageEvent {
	evs := make([]UsageEvent, n)
	for i := range evs {
		j := from + i
		evs[i] = UsageEvent{
			ID: "bench-" + strconv.Itoa(j), Time: start.Add(time.Duration(j) * spread), RequestID: strconv.Itoa(j),
			Key: fmt.Sprint("key-", j%50), Account: fmt.Sprint("acct-", j%5), Model: fmt.Sprint("model-", j%10),
			Dialect: "openai-chat", Endpoint: "/chat/completions", Status: 200, Input: 120, Output: 80, Cached: 10,
			Premium: j%3 == 0, PremiumUnits: 1, Latency: 900 * time.Millisecond, TTFB: 200 * time.Millisecond, ProxyID: "p1",
		}
	}
	return evs
}

// BenchmarkUsageIntake stores batches of 500 events, as proxies send them,
// and reports events/s.
func BenchmarkUsageIntake(b *testing.B) {
	benchEngines(b, func(b *testing.B, s Store) {
		const batch = 500
		start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		b.ResetTimer()
		for i := range b.N {
			if _, err := s.AddUsage(context.Background(), benchEvents(batch, i*batch, start, time.Second)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkUsageQueryMonth queries a month of USAGE_BENCH_EVENTS events
// (default 1,000,000; 50 keys, 10 models) grouped by key and model: from
// the daily sums (a range of whole days) and from the events (a range with
// times).
func BenchmarkUsageQueryMonth(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("USAGE_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	benchEngines(b, func(b *testing.B, s Store) {
		start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		spread := 30 * 24 * time.Hour / time.Duration(n)
		for i := 0; i < n; i += 1000 {
			if _, err := s.AddUsage(context.Background(), benchEvents(min(1000, n-i), i, start, spread)); err != nil {
				b.Fatal(err)
			}
		}
		for _, q := range []struct {
			name     string
			from, to time.Time
		}{
			{"daily", start, start.AddDate(0, 0, 30)},
			{"events", start.Add(time.Second), start.AddDate(0, 0, 30)},
		} {
			b.Run(q.name, func(b *testing.B) {
				for range b.N {
					rows, err := s.QueryUsage(context.Background(), UsageQuery{From: q.from, To: q.to, GroupBy: []string{GroupKey, GroupModel}})
					if err != nil || len(rows) == 0 {
						b.Fatal(rows, err)
					}
				}
			})
		}
	})
}
