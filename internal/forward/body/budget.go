package body

import (
	"context"
	"errors"
	"sync"
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
// before it is read (a chunked one reserves as it grows), work that holds
// more than the body (a translation, a token count) charges what it will
// hold ([Held.Charge]), and the reservation is given back when its request
// ends. Reservations are served first come, first served; one that cannot
// be had within the wait is refused, so a client sees a quick 503 with
// Retry-After instead of a stalled upload.
//
// One client key holds at most perKey, so one key's slow or large bodies
// cannot starve the others. Reserving an announced length at once, not as
// its bytes arrive, is deliberate: bodies that each held part of the budget
// while waiting for the rest would wait on each other until all were
// refused (tried for issue 22: 0 of 100 bodies of TestInflightBodyBudget
// served). What bounds a client that announces large bodies and trickles
// them is its key's share, and the body read timeout.
type Budget struct {
	sem    *semaphore.Weighted // nil: no budget
	limit  int64
	perKey int64
	wait   time.Duration
	gauge  prometheus.Gauge // bytes admitted now

	mu   sync.Mutex
	keys map[string]*semaphore.Weighted // per key, made on first use (keys are a configured set)
}

// NewBudget returns a budget of limit bytes (<= 0: none), of which one key
// holds at most perKey (<= 0 or over limit: limit).
func NewBudget(limit, perKey int64, wait time.Duration, gauge prometheus.Gauge) *Budget {
	b := &Budget{limit: limit, perKey: perKey, wait: wait, gauge: gauge, keys: map[string]*semaphore.Weighted{}}
	if limit > 0 {
		b.sem = semaphore.NewWeighted(limit)
	}
	if perKey <= 0 || perKey > limit {
		b.perKey = limit
	}
	return b
}

// keySem is key's share of the budget.
func (b *Budget) keySem(key string) *semaphore.Weighted {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.keys[key]
	if !ok {
		s = semaphore.NewWeighted(b.perKey)
		b.keys[key] = s
	}
	return s
}

// Fits says whether n bytes could ever be admitted for one request.
func (b *Budget) Fits(n int64) bool { return b.sem == nil || n <= b.perKey }

// PerKey is the most one key's requests hold together (0: no budget).
func (b *Budget) PerKey() int64 {
	if b.sem == nil {
		return 0
	}
	return b.perKey
}

// Reservation is one request's share of the budget.
type Reservation struct {
	b   *Budget
	key *semaphore.Weighted // the key's share
	// held is written only by the request's goroutine while it reads the
	// body; release may come from the transport's (see heldBody), so it
	// takes the amount atomically.
	held     atomic.Int64
	deadline time.Time // the whole body's admission shares one wait
	ctx      context.Context
}

// Reserve starts a reservation for a request of the client key; grow
// admits bytes.
func (b *Budget) Reserve(ctx context.Context, key string) *Reservation {
	r := &Reservation{b: b, ctx: ctx, deadline: time.Now().Add(b.wait)}
	if b.sem != nil {
		r.key = b.keySem(key)
	}
	return r
}

// grow makes the reservation at least n bytes, waiting up to the budget's
// wait (counted from the reservation's start) for others, of its key first,
// to release theirs. A request larger than its key's share is admitted
// only up to it: the body limit, checked elsewhere, bounds it (and a charge
// checks [Budget.Fits] first).
func (r *Reservation) grow(n int64) error {
	if r == nil || r.b.sem == nil {
		return nil
	}
	n = min(n, r.b.perKey)
	held := r.held.Load()
	if n <= held {
		return nil
	}
	need := n - held
	if r.key.TryAcquire(need) {
		if r.b.sem.TryAcquire(need) {
			r.admit(n, need)
			return nil
		}
		r.key.Release(need)
	}
	// Socket deadlines and this wait are wall-clock time: a fake clock
	// would make every wait end at once, or never.
	ctx, cancel := context.WithDeadline(r.ctx, r.deadline)
	defer cancel()
	if err := r.key.Acquire(ctx, need); err != nil {
		return r.refused()
	}
	if err := r.b.sem.Acquire(ctx, need); err != nil {
		r.key.Release(need)
		return r.refused()
	}
	r.admit(n, need)
	return nil
}

// refused is grow's error once the wait ended: the context's, or ErrBudget.
func (r *Reservation) refused() error {
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	return ErrBudget
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
		r.key.Release(n)
		r.b.sem.Release(n)
		r.b.gauge.Sub(float64(n))
	}
}
