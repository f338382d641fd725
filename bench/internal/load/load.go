// Package load is a closed-loop load generator: a fixed number of workers
// each send one request, wait for its answer, and send the next, until a
// duration or a request count is reached. Latencies are kept as raw samples so
// percentiles are exact (nearest rank over the sorted samples), not
// approximated by histogram buckets.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options bound one closed-loop run. Both bounds apply; whichever comes first
// ends the run.
type Options struct {
	// Workers is the number of concurrent request loops (the concurrency).
	Workers int
	// Duration ends the run; it must be > 0 so no loop is unbounded in time.
	Duration time.Duration
	// MaxRequests ends the run after this many requests (default 10,000,000)
	// so no loop is unbounded in count.
	MaxRequests int64
	// Warmup runs before the measured part; its requests are not recorded.
	Warmup time.Duration
}

// Func sends one request as worker w and reports its failure.
type Func func(ctx context.Context, w int) error

// Result is the outcome of one run.
type Result struct {
	// Latencies holds the latency of every successful request, sorted.
	Latencies []time.Duration
	// Errors counts failed requests; FirstErr is one of them.
	Errors   int64
	FirstErr error
	// Elapsed is the measured wall time (without warmup).
	Elapsed time.Duration
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Percentile returns the p-th percentile (0 < p <= 100) of the latencies.
func (r Result) Percentile(p float64) time.Duration { return Percentile(r.Latencies, p) }

// Run drives fn with opts.Workers concurrent loops. ctx cancels the run early.
func Run(ctx context.Context, opts Options, fn Func) (Result, error) {
	if opts.Workers <= 0 || opts.Duration <= 0 {
		return Result{}, errors.New("load: Workers and Duration must be > 0")
	}
	if opts.MaxRequests <= 0 {
		opts.MaxRequests = 10_000_000
	}
	if opts.Warmup > 0 {
		if _, err := run(ctx, opts.Workers, opts.Warmup, opts.MaxRequests, fn); err != nil {
			return Result{}, err
		}
	}
	return run(ctx, opts.Workers, opts.Duration, opts.MaxRequests, fn)
}

func run(ctx context.Context, workers int, d time.Duration, maxReq int64, fn Func) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		issued   atomic.Int64
		errCount atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	samples := make([][]time.Duration, workers)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			own := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil && issued.Add(1) <= maxReq {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				err := fn(ctx, w)
				lat := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				own = append(own, lat)
			}
			samples[w] = own
		})
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start), Errors: errCount.Load()}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	for _, s := range samples {
		res.Latencies = append(res.Latencies, s...)
	}
	slices.Sort(res.Latencies)
	if err := ctx.Err(); err != nil && res.Elapsed < d {
		return res, fmt.Errorf("load: cancelled: %w", err)
	}
	return res, nil
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 when it is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// Median returns the median of xs (the mean of the middle two for an even
// count), or 0 when xs is empty. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
