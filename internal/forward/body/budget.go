package body

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Defaults of the in-flight body budget ([Config.MaxInflight]).
const (
	DefaultMaxInflightBodyBytes = 256 << 20
	DefaultInflightBodyWait     = 2 * time.Second
)

// Chunk is the step in which a body's reservation grows as its bytes
// arrive, and the first grant of a body (of at most its announced length):
// a body holds at most the bytes it has sent plus one step (half of what it
// has sent, past 128 KiB, so that a large body is not copied once per step).
const Chunk = 64 << 10

// ErrBudget is returned when a request body cannot be admitted within the
// in-flight body budget before its wait runs out, or gave way to an older
// one ([ErrPreempted]).
var ErrBudget = errors.New("too many request bytes in flight")

// ErrPreempted is the [ErrBudget] of a reservation that gave its bytes to
// an older one waiting for room (see [Budget]).
var ErrPreempted = preempted{}

type preempted struct{}

func (preempted) Error() string {
	return "too many request bytes in flight: gave way to an older request"
}
func (preempted) Is(target error) bool { return target == ErrBudget }

// Budget bounds the bytes of request bodies held in memory at once,
// across every request: without it, 200 clients each sending a 32 MiB body
// would make the proxy hold 6.4 GiB.
//
// A body's reservation starts at one [Chunk] (or its announced length, if
// smaller) and grows as its bytes are read, never from the announced
// Content-Length alone: a client announcing 32 MiB and trickling a byte at
// a time holds what it sent plus a step. Work that holds more than the body
// (a translation, a token count) charges what it will hold once the body is
// read whole ([Held.Charge]), and the reservation is given back when its
// request ends. One client key holds at most perKey, so one key's slow or
// large bodies cannot starve the others.
//
// Growing as bytes arrive is hold and wait: bodies that each hold part of
// the budget and wait for more could wait on each other until every one is
// refused (the first attempt at growth, for issue 22: 0 of 100 bodies of
// TestInflightBodyBudget served). Two rules make that impossible:
//
//   - Room is given in the order the reservations began (the oldest
//     first): a waiter that cannot be given room holds back the younger
//     ones that need the same room (the whole budget, or its key's share),
//     so a large charge is not overtaken without end by small steps.
//   - A waiter that could be given room by taking it from younger waiters
//     (requests that hold bytes but are themselves stuck waiting for more)
//     takes it: the youngest give way first, each failing with
//     [ErrPreempted] and its bytes released at once. A waiter never takes
//     from a request that is not waiting (one still reading from the
//     network, or one whose body is read), nor from an older one.
//
// So the oldest waiter is only ever waiting for requests that are making
// progress, and every wait ends after at most the budget's wait: growth
// that cannot be granted by then fails with [ErrBudget], and its request
// gets 503 with Retry-After.
type Budget struct {
	limit     int64 // <= 0: no budget
	perKey    int64
	wait      time.Duration
	clock     clock.Clock
	gauge     prometheus.Gauge   // bytes admitted now
	preempted prometheus.Counter // reservations that gave way; may be nil

	mu    sync.Mutex
	used  int64
	keys  map[string]int64 // bytes held per key; no entry at 0
	queue []*Reservation   // waiting for room, oldest first
	seq   atomic.Uint64
	// Scratch for schedule: the keys held back, and what the waiters
	// younger than the one at hand hold, by key and in all.
	blocked   map[string]bool
	behind    map[string]int64
	behindAll int64
	waiting   func() // tests: called when a grow starts to wait
}

// BudgetConfig configures a [Budget].
type BudgetConfig struct {
	// Limit is the budget in bytes; <= 0: none.
	Limit int64
	// PerKey is the most one key's requests hold together; <= 0 or over
	// Limit: Limit.
	PerKey int64
	// Wait bounds one wait for room.
	Wait time.Duration
	// Clock times the waits; nil: the real clock.
	Clock clock.Clock
	// Inflight is set to the bytes admitted now. Required.
	Inflight prometheus.Gauge
	// Preempted counts reservations that gave way to an older one; may be
	// nil.
	Preempted prometheus.Counter
}

// NewBudget returns the budget cfg describes.
func NewBudget(cfg BudgetConfig) *Budget {
	b := &Budget{limit: cfg.Limit, perKey: cfg.PerKey, wait: cfg.Wait, clock: clock.OrReal(cfg.Clock),
		gauge: cfg.Inflight, preempted: cfg.Preempted, keys: map[string]int64{}, blocked: map[string]bool{}, behind: map[string]int64{}}
	if b.perKey <= 0 || b.perKey > b.limit {
		b.perKey = b.limit
	}
	return b
}

// Fits says whether n bytes could ever be admitted for one request.
func (b *Budget) Fits(n int64) bool { return b.limit <= 0 || n <= b.perKey }

// PerKey is the most one key's requests hold together (0: no budget).
func (b *Budget) PerKey() int64 {
	if b.limit <= 0 {
		return 0
	}
	return b.perKey
}

// Reservation is one request's share of the budget.
type Reservation struct {
	b   *Budget
	key string
	seq uint64 // its age: lower is older
	ctx context.Context
	// held is written under b.mu; the request's goroutine reads it without
	// the lock while it reads the body.
	held atomic.Int64

	// Under b.mu:
	want  int64      // the size asked for while waiting
	ready chan error // set while waiting: nil (room given) or ErrPreempted
	done  bool       // released or preempted: it holds nothing again
}

// Reserve starts a reservation for a request of the client key; grow
// admits bytes.
func (b *Budget) Reserve(ctx context.Context, key string) *Reservation {
	return &Reservation{b: b, ctx: ctx, key: key, seq: b.seq.Add(1)}
}

// grow makes the reservation at least n bytes, waiting up to the budget's
// wait for room (see [Budget] for the order and for giving way). A request
// larger than its key's share is admitted only up to it: the body limit,
// checked elsewhere, bounds it (and a charge checks [Budget.Fits] first).
// Its errors are [ErrBudget] (or [ErrPreempted]) and the request context's.
func (r *Reservation) grow(n int64) error {
	if r == nil || r.b.limit <= 0 {
		return nil
	}
	b := r.b
	n = min(n, b.perKey)
	b.mu.Lock()
	if r.done {
		b.mu.Unlock()
		return ErrBudget
	}
	if n <= r.held.Load() {
		b.mu.Unlock()
		return nil
	}
	r.want = n
	if len(b.queue) == 0 && b.fits(r) {
		b.admit(r)
		b.mu.Unlock()
		return nil
	}
	ready := make(chan error, 1)
	r.ready = ready
	i, _ := slices.BinarySearchFunc(b.queue, r.seq, func(q *Reservation, s uint64) int { return cmpSeq(q.seq, s) })
	b.queue = slices.Insert(b.queue, i, r)
	b.schedule()
	b.mu.Unlock()

	select {
	case err := <-ready:
		return err
	default:
	}
	t := b.clock.NewTimer(b.wait)
	defer t.Stop()
	if b.waiting != nil {
		b.waiting()
	}
	var err error
	select {
	case err := <-ready:
		return err
	case <-t.C():
		err = ErrBudget
	case <-r.ctx.Done():
		err = r.ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case granted := <-ready: // room came, or it gave way, as the wait ended
		return granted
	default:
	}
	b.dequeue(r)
	b.schedule() // it held back younger waiters
	return err
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fits says whether r's want can be admitted from the free room now.
func (b *Budget) fits(r *Reservation) bool {
	need := r.want - r.held.Load()
	return b.keys[r.key]+need <= b.perKey && b.used+need <= b.limit
}

// admit raises r to its want.
func (b *Budget) admit(r *Reservation) {
	need := r.want - r.held.Load()
	b.used += need
	b.keys[r.key] += need
	r.held.Store(r.want)
	b.gauge.Add(float64(need))
}

// free gives back what r holds and marks it done.
func (b *Budget) free(r *Reservation) {
	r.done = true
	n := r.held.Swap(0)
	if n == 0 {
		return
	}
	b.used -= n
	if b.keys[r.key] -= n; b.keys[r.key] == 0 {
		delete(b.keys, r.key)
	}
	b.gauge.Sub(float64(n))
}

func (b *Budget) dequeue(r *Reservation) {
	if i := slices.Index(b.queue, r); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
	}
	r.ready = nil
}

// schedule gives room to the waiters, oldest first. A waiter that fits is
// admitted unless an older one holds back the room it needs; one that does
// not fit takes the room from younger waiters if they hold enough,
// youngest first, and otherwise holds back the younger waiters of the room
// it lacks: its key's share when that is short (other keys go on), else
// the whole budget.
func (b *Budget) schedule() {
	all := false
	clear(b.blocked)
	clear(b.behind)
	b.behindAll = 0
	for _, y := range b.queue {
		h := y.held.Load()
		b.behind[y.key] += h
		b.behindAll += h
	}
	for i := 0; i < len(b.queue); {
		r := b.queue[i]
		h := r.held.Load()
		b.behind[r.key] -= h
		b.behindAll -= h
		if all || b.blocked[r.key] {
			i++
			continue
		}
		if b.fits(r) || b.preemptFor(i) {
			b.admit(r)
			b.queue = slices.Delete(b.queue, i, i+1)
			r.ready <- nil
			r.ready = nil
			continue
		}
		if b.keys[r.key]+r.want-r.held.Load() > b.perKey {
			b.blocked[r.key] = true
		} else {
			all = true
		}
		i++
	}
}

// preemptFor takes the room queue[i] lacks from the younger waiters behind
// it, youngest first, if they hold enough; it says whether it did. A
// waiter of another key helps only with the whole budget, not the key's
// share.
func (b *Budget) preemptFor(i int) bool {
	r := b.queue[i]
	need := r.want - r.held.Load()
	keyShort := b.keys[r.key] + need - b.perKey
	allShort := b.used + need - b.limit
	if b.behind[r.key] < keyShort || b.behindAll < allShort {
		return false
	}
	// The key's own younger waiters first (they help with both), then any.
	for _, own := range []bool{true, false} {
		for j := len(b.queue) - 1; j > i && (keyShort > 0 || allShort > 0); j-- {
			y := b.queue[j]
			h := y.held.Load()
			if h == 0 || (y.key == r.key) != own || (!own && allShort <= 0) {
				continue
			}
			if own {
				keyShort -= h
			}
			allShort -= h
			b.behind[y.key] -= h
			b.behindAll -= h
			b.free(y)
			b.queue = slices.Delete(b.queue, j, j+1)
			y.ready <- ErrPreempted
			y.ready = nil
			if b.preempted != nil {
				b.preempted.Inc()
			}
		}
	}
	return true
}

// budgeted says whether reads must stay within the reservation.
func (r *Reservation) budgeted() bool { return r != nil && r.b.limit > 0 }

// Release gives the reservation back; it is safe to call more than once.
func (r *Reservation) Release() {
	if !r.budgeted() {
		return
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	had := r.held.Load()
	if r.ready != nil { // released while it waits (its request ended): it waits no more
		r.ready <- ErrBudget
		b.dequeue(r)
	}
	b.free(r)
	if had > 0 && len(b.queue) > 0 {
		b.schedule()
	}
}
