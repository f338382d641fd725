package load

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 of 1..100", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of four", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p1 of four", ms(1, 2, 3, 4), 1, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v; want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := Median(tt.in); got != tt.want {
			t.Errorf("Median(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestRunBoundedByCount(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(context.Background(), Options{Workers: 4, Duration: time.Minute, MaxRequests: 100},
		func(context.Context, int) error { calls.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 100 {
		t.Errorf("calls = %d; want 100", got)
	}
	if got := len(res.Latencies); got != 100 {
		t.Errorf("len(Latencies) = %d; want 100", got)
	}
}

func TestRunBoundedByTimeAndCountsErrors(t *testing.T) {
	boom := errors.New("boom")
	var n atomic.Int64
	res, err := Run(context.Background(), Options{Workers: 2, Duration: 50 * time.Millisecond},
		func(context.Context, int) error {
			time.Sleep(time.Millisecond)
			if n.Add(1)%2 == 0 {
				return boom
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Elapsed > 5*time.Second {
		t.Errorf("Elapsed = %v; want about 50ms", res.Elapsed)
	}
	if res.Errors == 0 || !errors.Is(res.FirstErr, boom) {
		t.Errorf("Errors, FirstErr = %d, %v; want > 0, boom", res.Errors, res.FirstErr)
	}
	if int64(len(res.Latencies))+res.Errors != n.Load() {
		t.Errorf("samples + errors = %d; want %d calls", int64(len(res.Latencies))+res.Errors, n.Load())
	}
}

func TestRunRejectsUnbounded(t *testing.T) {
	if _, err := Run(context.Background(), Options{Workers: 1}, nil); err == nil {
		t.Error("Run with no Duration: err = nil; want an error")
	}
}
