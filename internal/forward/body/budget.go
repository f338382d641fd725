package body

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// Defaults of the in-flight body budget ([Config.MaxInflight]).
const (
	DefaultMaxInflightBodyBytes = 256 << 20
	DefaultInflightBodyWait     = 2 * time.Second
)

// ErrBudget is returned when a request body cannot be admitted within the
// in-flight body budget before its wait runs out.
var ErrBudget = errors.New("too many request bytes in flight")

// Budget bounds the bytes of request bodies held in memory at once,
// across every request: without it, 200 clients each sending a 32 MiB body
// would make the proxy hold 6.4 GiB. A body reserves its Content-Length
// before it is read (a chunked one reserves as it grows), and gives the
// reservation back when its request ends. Reservations are served first come,
// first served; one that cannot be had within the wait is refused, so a
// client sees a quick 503 with Retry-After instead of a stalled upload.
type Budget struct {
	sem   *semaphore.Weighted // nil: no budget
	limit int64
	wait  time.Duration
	gauge prometheus.Gauge // bytes admitted now
}

func NewBudget(limit int64, wait time.Duration, gauge prometheus.Gauge) *Budget {
	b := &Budget{limit: limit, wait: wait, gauge: gauge}
	if limit > 0 {
		b.sem = semaphore.NewWeighted(limit)
	}
	return b
}

// Reservation is one request's share of the budget.
type Reservation struct {
	b *Budget
	// held is written only by the request's goroutine while it reads the
	// body; release may come from the transport's (see heldBody), so it
	// takes the amount atomically.
	held     atomic.Int64
	deadline time.Time // the whole body's admission shares one wait
	ctx      context.Context
}

// Reserve starts a reservation for a request; grow admits bytes.
func (b *Budget) Reserve(ctx context.Context) *Reservation {
	return &Reservation{b: b, ctx: ctx, deadline: time.Now().Add(b.wait)}
}

// grow makes the reservation at least n bytes, waiting up to the budget's
// wait (counted from the reservation's start) for others to release theirs.
// A request larger than the whole budget is admitted only up to it: the
// body limit, checked elsewhere, bounds it.
func (r *Reservation) grow(n int64) error {
	if r == nil || r.b.sem == nil {
		return nil
	}
	n = min(n, r.b.limit)
	held := r.held.Load()
	if n <= held {
		return nil
	}
	need := n - held
	if r.b.sem.TryAcquire(need) {
		r.admit(n, need)
		return nil
	}
	// Socket deadlines and this wait are wall-clock time: a fake clock
	// would make every wait end at once, or never.
	ctx, cancel := context.WithDeadline(r.ctx, r.deadline)
	defer cancel()
	if err := r.b.sem.Acquire(ctx, need); err != nil {
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		return ErrBudget
	}
	r.admit(n, need)
	return nil
}

func (r *Reservation) admit(n, added int64) {
	r.held.Store(n)
	r.b.gauge.Add(float64(added))
}

// budgeted says whether reads must stay within the reservation.
func (r *Reservation) budgeted() bool { return r != nil && r.b.sem != nil }

// Release gives the reservation back; it is safe to call more than once.
func (r *Reservation) Release() {
	if r == nil {
		return
	}
	if n := r.held.Swap(0); n > 0 {
		r.b.sem.Release(n)
		r.b.gauge.Sub(float64(n))
	}
}
