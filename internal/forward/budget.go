package forward

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// Defaults of the in-flight body budget ([Config.MaxInflightBodyBytes]).
const (
	DefaultMaxInflightBodyBytes = 256 << 20
	DefaultInflightBodyWait     = 2 * time.Second
)

// errBudget is returned when a request body cannot be admitted within the
// in-flight body budget before its wait runs out.
var errBudget = errors.New("too many request bytes in flight")

// bodyBudget bounds the bytes of request bodies held in memory at once,
// across every request: without it, 200 clients each sending a 32 MiB body
// would make the proxy hold 6.4 GiB. A body reserves its Content-Length
// before it is read (a chunked one reserves as it grows), a translation or a
// token count what it will hold ([Handler.chargeMemory]), and the
// reservation is given back when its request ends. Reserving an announced
// length at once, not as its bytes arrive, is deliberate: bodies that each
// held part of the budget while waiting for the rest would wait on each
// other until all were refused (TestInflightBodyBudget: 0 of 100 served).
// What bounds a client announcing large bodies and trickling them is the
// key's share: one key holds at most perKey, so its slow bodies cannot
// starve the other keys, and the body read timeout ends them. Reservations are served
// first come, first served; one that cannot be had within the wait is
// refused, so a client sees a quick 503 with Retry-After instead of a
// stalled upload.
type bodyBudget struct {
	sem    *semaphore.Weighted // nil: no budget
	limit  int64
	perKey int64
	wait   time.Duration
	gauge  prometheus.Gauge // bytes admitted now

	mu   sync.Mutex
	keys map[string]*semaphore.Weighted // per key, made on first use (keys are a configured set)
}

func newBodyBudget(limit, perKey int64, wait time.Duration, gauge prometheus.Gauge) *bodyBudget {
	b := &bodyBudget{limit: limit, perKey: perKey, wait: wait, gauge: gauge, keys: map[string]*semaphore.Weighted{}}
	if limit > 0 {
		b.sem = semaphore.NewWeighted(limit)
	}
	if perKey <= 0 || perKey > limit {
		b.perKey = limit
	}
	return b
}

// keySem is key's share of the budget.
func (b *bodyBudget) keySem(key string) *semaphore.Weighted {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.keys[key]
	if !ok {
		s = semaphore.NewWeighted(b.perKey)
		b.keys[key] = s
	}
	return s
}

// reservation is one request's share of the budget.
type reservation struct {
	b   *bodyBudget
	key *semaphore.Weighted // the key's share
	// held is written only by the request's goroutine while it reads the
	// body; release may come from the transport's (see heldBody), so it
	// takes the amount atomically.
	held     atomic.Int64
	deadline time.Time // the whole body's admission shares one wait
	ctx      context.Context
}

// reserve starts a reservation for a request of the client key; grow
// admits bytes.
func (b *bodyBudget) reserve(ctx context.Context, key string) *reservation {
	r := &reservation{b: b, ctx: ctx, deadline: time.Now().Add(b.wait)}
	if b.sem != nil {
		r.key = b.keySem(key)
	}
	return r
}

// grow makes the reservation at least n bytes, waiting up to the budget's
// wait (counted from the reservation's start) for others, of its key first,
// to release theirs. A request larger than its key's share is admitted only
// up to it: the body limit, checked elsewhere, bounds it (and a translation
// checks [bodyBudget.fits] first).
func (r *reservation) grow(n int64) error {
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

// refused is grow's error when the wait ended: the client's leaving, or
// errBudget.
func (r *reservation) refused() error {
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	return errBudget
}

// chargeMemory grows res to factor times a body of n bytes, for work that
// holds that much (a translation, a token count) before it starts. When it
// cannot, it returns the answer: 413 when no budget could ever hold it (the
// message says the largest body that fits), 503 with Retry-After when the
// budget is full now.
func (h *Handler) chargeMemory(w http.ResponseWriter, res *reservation, n int, factor int64, what string) (apiError, bool) {
	need := int64(n) * factor
	if !h.budget.fits(need) {
		return errTooLarge(fmt.Sprintf("request body of %d bytes too large %s: at most %d bytes", n, what, h.budget.perKey/factor)), false
	}
	if err := res.grow(need); err != nil {
		e := errOverloaded("the proxy holds too many request bytes in flight; retry shortly")
		if errors.Is(err, errBudget) {
			h.metrics.budgetRefused.Inc()
			w.Header().Set("Retry-After", "1")
		} else {
			e.status = 499 // the client left
		}
		return e, false
	}
	return apiError{}, true
}

// fits says whether n bytes could ever be admitted for one request.
func (b *bodyBudget) fits(n int64) bool { return b.sem == nil || n <= b.perKey }

func (r *reservation) admit(n, added int64) {
	r.held.Store(n)
	r.b.gauge.Add(float64(added))
}

// budgeted says whether reads must stay within the reservation.
func (r *reservation) budgeted() bool { return r != nil && r.b.sem != nil }

// release gives the reservation back; it is safe to call more than once.
func (r *reservation) release() {
	if r == nil {
		return
	}
	if n := r.held.Swap(0); n > 0 {
		r.key.Release(n)
		r.b.sem.Release(n)
		r.b.gauge.Sub(float64(n))
	}
}
