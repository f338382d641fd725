package body

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Defaults of [Config].
const (
	DefaultMaxBytes    = 32 << 20
	DefaultReadTimeout = 60 * time.Second
)

// Config bounds the bodies an [Intake] reads. Zero fields get the defaults.
type Config struct {
	// MaxBytes bounds one body. Default [DefaultMaxBytes].
	MaxBytes int64
	// ReadTimeout bounds reading one body, against clients that trickle
	// it. Default [DefaultReadTimeout].
	ReadTimeout time.Duration
	// MaxInflight bounds the body bytes held by all requests together,
	// raised to MaxBytes+1 if smaller. Default
	// [DefaultMaxInflightBodyBytes]; negative: no bound.
	MaxInflight int64
	// MaxInflightPerKey is the most of MaxInflight one client key's
	// requests hold together, raised to MaxBytes+1 if smaller; 0: all of it.
	MaxInflightPerKey int64
	// InflightWait is how long a body waits for room in the budget.
	// Default [DefaultInflightBodyWait].
	InflightWait time.Duration
	// Inflight is set to the bytes admitted now. Required.
	Inflight prometheus.Gauge
	// Preempted counts bodies that gave their room to an older one (see
	// [Budget]); may be nil.
	Preempted prometheus.Counter
	// Clock times the waits for room; nil: the real clock. (The read
	// deadline is a socket's, always wall-clock time.)
	Clock clock.Clock
}

// Intake reads request bodies into held memory within the bounds of its
// [Config]. It is safe for concurrent use.
type Intake struct {
	pool    *Pool
	budget  *Budget
	max     int64
	timeout time.Duration
}

// NewIntake returns an Intake bounded by cfg.
func NewIntake(cfg Config) *Intake {
	in := &Intake{pool: NewPool(), max: cfg.MaxBytes, timeout: cfg.ReadTimeout}
	if in.max <= 0 {
		in.max = DefaultMaxBytes
	}
	if in.timeout <= 0 {
		in.timeout = DefaultReadTimeout
	}
	inflight, wait := cfg.MaxInflight, cfg.InflightWait
	if inflight == 0 {
		inflight = DefaultMaxInflightBodyBytes
	}
	if inflight > 0 {
		inflight = max(inflight, in.max+1)
	}
	if wait <= 0 {
		wait = DefaultInflightBodyWait
	}
	perKey := cfg.MaxInflightPerKey
	if perKey > 0 {
		perKey = max(perKey, in.max+1)
	}
	in.budget = NewBudget(BudgetConfig{Limit: inflight, PerKey: perKey, Wait: wait, Clock: cfg.Clock,
		Inflight: cfg.Inflight, Preempted: cfg.Preempted})
	return in
}

// MaxBytes is the bound on one body.
func (in *Intake) MaxBytes() int64 { return in.max }

// Budget is the in-flight body budget.
func (in *Intake) Budget() *Budget { return in.budget }

// Pool is the intake's buffer pool (its Stats show reuse).
func (in *Intake) Pool() *Pool { return in.pool }

// Read reads the request body within the budget, its reservation growing
// as the bytes arrive (see [Budget]). A body refused for memory
// ([ErrBudget]: no room within the wait, or it gave way to an older body),
// not for what it is, before its first byte or part-way through, gives back
// at once the bytes it read and the room it held, and is read on into
// nothing (no memory held, bounded by the body limit and read deadline) so
// that the client reads a clean 503 instead of a reset connection
// mid-upload; if even that fails, the connection is closed after the
// answer.
func (in *Intake) Read(w http.ResponseWriter, r *http.Request, key string) (*Held, error) {
	res := in.budget.Reserve(r.Context(), key)
	b, err := in.readWithin(w, r, res)
	if err != nil {
		res.Release()
		if errors.Is(err, ErrBudget) && in.Discard(w, r) != nil {
			w.Header().Set("Connection", "close")
		}
		return nil, err
	}
	return &Held{Buf: b, res: res}, nil
}

func (in *Intake) readWithin(w http.ResponseWriter, r *http.Request, res *Reservation) (*Buf, error) {
	defer in.deadline(w)()
	return read(in.pool, r.Body, r.ContentLength, in.max, res)
}

// Discard reads and drops a body the upstream will not get.
func (in *Intake) Discard(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > in.max {
		return ErrTooLarge
	}
	defer in.deadline(w)()
	n, err := io.CopyN(io.Discard, r.Body, in.max+1)
	switch {
	case n > in.max:
		return ErrTooLarge
	case err == io.EOF:
		return nil
	}
	return err
}

// deadline bounds reading the request body and returns the function that
// lifts the bound. Not every ResponseWriter supports deadlines (tests'
// recorders do not); then the read is bounded only by size. A socket
// deadline is wall-clock time, never the injected clock's (a fake one would
// set it in the past).
func (in *Intake) deadline(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(in.timeout)) != nil {
		return func() {}
	}
	return func() { _ = rc.SetReadDeadline(time.Time{}) }
}
