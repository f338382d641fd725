package body

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chunkReader hands out its data a few bytes at a time, like a chunked body,
// and counts what was read.
type chunkReader struct {
	left, read int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.left, 1000)
	c.left -= n
	c.read += n
	return n, nil
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		hint      int64
		limit     int64
		wantErr   error
		wantReadN int // at most this much read from the client
	}{
		{"small, length known", 100, 100, 1000, nil, 100},
		{"exactly the limit, length known", 1000, 1000, 1000, nil, 1000},
		{"exactly the limit, chunked", 1000, -1, 1000, nil, 1000},
		{"too large by length", 5000, 5000, 1000, ErrTooLarge, 0},
		{"too large, chunked", 1 << 20, -1, 1000, ErrTooLarge, 1001},
		{"large, chunked", 100 << 10, -1, 1 << 20, nil, 100 << 10},
	}
	pool := NewPool()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &chunkReader{left: tt.size}
			b, err := read(pool, src, tt.hint, tt.limit, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("read(%d bytes, hint %d, limit %d) error = %v; want %v", tt.size, tt.hint, tt.limit, err, tt.wantErr)
			}
			if src.read > tt.wantReadN {
				t.Errorf("readBody read %d bytes from the client; want at most %d", src.read, tt.wantReadN)
			}
			if err != nil {
				return
			}
			defer b.release()
			if len(b.buf) != tt.size {
				t.Errorf("readBody kept %d bytes; want %d", len(b.buf), tt.size)
			}
		})
	}
}

// TestBodyReaderAfterClose: a transport still writing a body after the
// handler returned must not read a buffer recycled for another request.
func TestBodyReaderAfterClose(t *testing.T) {
	pool := NewPool()
	b, err := read(pool, strings.NewReader("first request's body"), -1, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := b.reader()
	p := make([]byte, 5)
	if n, err := r.Read(p); n != 5 || err != nil || string(p) != "first" {
		t.Fatalf("Read = %d %q %v; want 5 \"first\" nil", n, p[:n], err)
	}
	r.Close()
	r.Close() // idempotent: one reference dropped, not two
	if got := b.refs.Load(); got != 1 {
		t.Fatalf("references after closing the reader twice = %d; want 1 (the handler's)", got)
	}
	b.release()
	if n, err := r.Read(p); n != 0 || !errors.Is(err, errClosed) {
		t.Errorf("Read after Close = %d, %v; want 0, errClosed", n, err)
	}
}

// TestBodyReaderCloseWhileReading runs Read and Close concurrently under
// -race: the buffer is released only when no Read is using it.
func TestBodyReaderCloseWhileReading(t *testing.T) {
	pool := NewPool()
	for range 100 {
		b, err := read(pool, strings.NewReader(strings.Repeat("x", 4096)), -1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := b.reader()
		b.release()
		var wg sync.WaitGroup
		wg.Go(func() {
			p := make([]byte, 16)
			for {
				if _, err := r.Read(p); err != nil {
					return
				}
			}
		})
		r.Close()
		// Reuse the buffer at once, as another request would.
		b2, err := read(pool, strings.NewReader(strings.Repeat("y", 4096)), -1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		b2.release()
	}
}

func newTestBudget(limit int64, wait time.Duration) (*Budget, prometheus.Gauge, *clock.Fake) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return NewBudget(BudgetConfig{Limit: limit, Wait: wait, Clock: clk, Inflight: g}), g, clk
}

// growAfterWait grows r to n and, if it waits for room, lets the whole
// wait pass on the fake clock: its result is what a request that found no
// room in time gets. Nothing else may wait on clk meanwhile.
func growAfterWait(t *testing.T, clk *clock.Fake, r *Reservation, n int64) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.grow(n) }()
	waiting := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		if clk.WaitForTimers(ctx, 1) == nil {
			close(waiting)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-waiting:
		clk.Advance(r.b.wait)
		return <-done
	}
}

func TestReservation(t *testing.T) {
	b, g, clk := newTestBudget(100, 50*time.Millisecond)
	r1 := b.Reserve(t.Context(), "k")
	if err := r1.grow(60); err != nil {
		t.Fatalf("grow(60) within an empty budget of 100: %v", err)
	}
	if err := r1.grow(40); err != nil || r1.held.Load() != 60 {
		t.Fatalf("grow(40) after 60: err %v, held %d; want nil, 60 (never shrinks)", err, r1.held.Load())
	}
	if got := testutil.ToFloat64(g); got != 60 {
		t.Errorf("gauge = %v; want 60", got)
	}
	r2 := b.Reserve(t.Context(), "k")
	if err := growAfterWait(t, clk, r2, 50); !errors.Is(err, ErrBudget) {
		t.Fatalf("grow(50) with 40 left after the wait: %v; want ErrBudget", err)
	}
	if r2.held.Load() != 0 {
		t.Errorf("a refused reservation holds %d; want 0", r2.held.Load())
	}

	// A waiter is admitted as soon as the holder lets go (the fake clock
	// never ends its wait).
	r3 := b.Reserve(t.Context(), "k")
	done := make(chan error, 1)
	go func() { done <- r3.grow(80) }()
	if err := clk.WaitForTimers(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	r1.Release()
	r1.Release() // twice is harmless
	if err := <-done; err != nil {
		t.Fatalf("grow(80) after the holder released: %v", err)
	}
	if got := testutil.ToFloat64(g); got != 80 {
		t.Errorf("gauge = %v; want 80", got)
	}

	// A waiter whose request ends gets the request's error.
	ctx, cancel := context.WithCancel(t.Context())
	r4 := b.Reserve(ctx, "k")
	go func() { done <- r4.grow(50) }()
	if err := clk.WaitForTimers(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("grow after the request ended: %v; want context.Canceled", err)
	}
	r3.Release()
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("gauge after every release = %v; want 0", got)
	}
	// No budget: everything is admitted and nothing counted.
	var none *Reservation
	if err := none.grow(1 << 40); err != nil {
		t.Errorf("nil reservation: %v", err)
	}
	unlimited, _, _ := newTestBudget(-1, 0)
	if err := unlimited.Reserve(t.Context(), "k").grow(1 << 40); err != nil {
		t.Errorf("no budget: %v", err)
	}
}

// limitedReader fails the test if a read asks for bytes the reservation has
// not admitted.
type limitedReader struct {
	t    *testing.T
	res  *Reservation
	left int
	read int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, io.EOF
	}
	if int64(l.read+len(p)) > l.res.held.Load() {
		l.t.Errorf("read of %d bytes after %d with %d admitted", len(p), l.read, l.res.held.Load())
	}
	n := min(len(p), l.left, 3000)
	l.left -= n
	l.read += n
	return n, nil
}

func TestReadBodyWithinBudget(t *testing.T) {
	pool := NewPool()
	for _, tt := range []struct {
		name string
		size int
		hint int64
	}{
		{"known length", 300 << 10, 300 << 10},
		{"chunked", 300 << 10, -1},
		{"empty chunked", 0, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, g, _ := newTestBudget(8<<20, time.Second)
			res := b.Reserve(t.Context(), "k")
			body, err := read(pool, &limitedReader{t: t, res: res, left: tt.size}, tt.hint, 4<<20, res)
			if err != nil {
				t.Fatal(err)
			}
			if len(body.buf) != tt.size {
				t.Errorf("read %d bytes; want %d", len(body.buf), tt.size)
			}
			if max := int64(2*tt.size + 64<<10 + 1); res.held.Load() > max {
				t.Errorf("held %d for a %d-byte body; want at most %d", res.held.Load(), tt.size, max)
			}
			body.release()
			res.Release()
			if got := testutil.ToFloat64(g); got != 0 {
				t.Errorf("gauge after release = %v", got)
			}
		})
	}
}

// TestBudgetPerKey: one key holds at most its share; another key still
// gets room at once (issue 22: eight connections of one key announcing
// 32 MiB each and trickling their bodies made every other key's POST get
// 503).
func TestBudgetPerKey(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := NewBudget(BudgetConfig{Limit: 100, PerKey: 60, Wait: 50 * time.Millisecond, Clock: clk, Inflight: g})
	a1, a2, other := b.Reserve(t.Context(), "a"), b.Reserve(t.Context(), "a"), b.Reserve(t.Context(), "b")
	if err := a1.grow(50); err != nil {
		t.Fatal(err)
	}
	if err := growAfterWait(t, clk, a2, 20); !errors.Is(err, ErrBudget) {
		t.Errorf("key a past its share of 60: %v; want ErrBudget", err)
	}
	if err := other.grow(50); err != nil {
		t.Errorf("key b with room left: %v", err)
	}
	if !b.Fits(60) || b.Fits(61) || b.PerKey() != 60 {
		t.Errorf("Fits(60), Fits(61), PerKey() = %v, %v, %d; want true, false, 60", b.Fits(60), b.Fits(61), b.PerKey())
	}
	for _, r := range []*Reservation{a1, a2, other} {
		r.Release()
	}
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("gauge after release = %v", got)
	}
}

// TestBudgetOrder: room goes to the oldest waiter first; a waiter takes
// room only from younger waiters (never from a request still reading, nor
// from an older one), the key's own first; a waiter short of its key's
// share holds back only that key.
func TestBudgetOrder(t *testing.T) {
	type step struct {
		r    int   // index into the reservations, made in order (oldest first)
		grow int64 // grow to this (0: Release)
		wait bool  // it waits: run it on its own goroutine, collect later
	}
	tests := []struct {
		name      string
		limit     int64
		perKey    int64
		keys      []string // one reservation per entry, oldest first
		steps     []step
		want      []error // each waiting step's result, in step order
		preempted float64
		held      []int64 // each reservation's size at the end
	}{
		{
			name: "two of one key hold half each and need more: the younger gives way",
			// (waiting on each other, both would be refused when the wait ended)
			limit: 100, keys: []string{"a", "a"},
			steps:     []step{{0, 50, false}, {1, 50, false}, {0, 80, true}, {1, 80, true}},
			want:      []error{nil, ErrPreempted},
			preempted: 1, held: []int64{80, 0},
		},
		{
			name:  "two keys, the younger waits first",
			limit: 100, keys: []string{"a", "b"},
			steps:     []step{{0, 50, false}, {1, 50, false}, {1, 70, true}, {0, 70, true}},
			want:      []error{ErrPreempted, nil},
			preempted: 1, held: []int64{70, 0},
		},
		{
			name: "a waiter takes only as much as it lacks, youngest first",
			// 1, 2 and 3 wait for more than the younger ones hold together.
			limit: 100, keys: []string{"a", "a", "a", "a"},
			steps: []step{{0, 10, false}, {1, 30, false}, {2, 30, false}, {3, 30, false},
				{1, 100, true}, {2, 100, true}, {3, 100, true}, {0, 40, true}},
			want:      []error{ErrBudget, ErrBudget, ErrPreempted, nil},
			preempted: 1, held: []int64{40, 30, 30, 0}, // a refused request releases its own
		},
		{
			name:  "no room taken from a request that is not waiting",
			limit: 100, keys: []string{"a", "a"},
			steps: []step{{1, 60, false}, {0, 60, true}},
			want:  []error{ErrBudget},
			held:  []int64{0, 60},
		},
		{
			name:  "an older waiter holds back a younger one of its room",
			limit: 100, keys: []string{"a", "b", "c"},
			steps: []step{{2, 60, false}, {0, 50, true}, {1, 10, true}, {2, 0, false}},
			want:  []error{nil, nil},
			held:  []int64{50, 10, 0},
		},
		{
			name:  "a waiter short of its key's share holds back only its key",
			limit: 100, perKey: 50, keys: []string{"a", "a", "b"},
			steps: []step{{0, 40, false}, {1, 20, true}, {2, 50, false}},
			want:  []error{ErrBudget},
			held:  []int64{40, 0, 50},
		},
		{
			name:  "another key's waiter is no help with a key's share",
			limit: 100, perKey: 60, keys: []string{"a", "a", "b"},
			steps: []step{{1, 50, false}, {2, 40, false}, {2, 60, true}, {0, 20, true}},
			want:  []error{ErrBudget, ErrBudget},
			held:  []int64{0, 50, 40},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
			pre := prometheus.NewCounter(prometheus.CounterOpts{Name: "p"})
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			b := NewBudget(BudgetConfig{Limit: tt.limit, PerKey: tt.perKey, Wait: time.Second, Clock: clk, Inflight: g, Preempted: pre})
			var rs []*Reservation
			for _, k := range tt.keys {
				rs = append(rs, b.Reserve(t.Context(), k))
			}
			waits := make(chan struct{}, len(tt.steps))
			b.waiting = func() { waits <- struct{}{} }
			var results []chan error
			for _, s := range tt.steps {
				r := rs[s.r]
				switch {
				case s.grow == 0:
					r.Release()
				case !s.wait:
					if err := r.grow(s.grow); err != nil {
						t.Fatalf("reservation %d: grow(%d) = %v; want room at once", s.r, s.grow, err)
					}
				default:
					done := make(chan error, 1)
					results = append(results, done)
					go func() { done <- r.grow(s.grow) }()
					// It has its answer, or waits.
					select {
					case err := <-done:
						done <- err
					case <-waits:
					}
				}
			}
			// Whoever still waits gets ErrBudget when the wait ends.
			clk.Advance(time.Second)
			for i, done := range results {
				if err := <-done; !errors.Is(err, tt.want[i]) || (tt.want[i] == ErrBudget && errors.Is(err, ErrPreempted)) {
					t.Errorf("waiting step %d: %v; want %v", i, err, tt.want[i])
				}
			}
			for i, r := range rs {
				if got := r.held.Load(); got != tt.held[i] {
					t.Errorf("reservation %d holds %d; want %d", i, got, tt.held[i])
				}
			}
			if got := testutil.ToFloat64(pre); got != tt.preempted {
				t.Errorf("preempted = %v; want %v", got, tt.preempted)
			}
			for _, r := range rs {
				r.Release()
			}
			if got := testutil.ToFloat64(g); got != 0 {
				t.Errorf("gauge after every release = %v", got)
			}
		})
	}
}

// TestReadGrowsAsBytesArrive: a body's reservation follows the bytes it has
// sent, never its announced length (issue 22: a client announcing 32 MiB and
// trickling a byte at a time held 32 MiB of the budget), whatever its length
// says; one that ends before its announced length is refused.
func TestReadGrowsAsBytesArrive(t *testing.T) {
	const limit = 32 << 20
	tests := []struct {
		name    string
		hint    int64
		sends   []int // written one after the other; the reservation is checked after each
		wantErr error
	}{
		{"announced 32 MiB, trickled", limit, []int{1, 1, 1, 100, 64 << 10, 1 << 20}, io.ErrUnexpectedEOF},
		{"chunked, trickled", -1, []int{1, 1, 100, 64 << 10, 1 << 20}, nil},
		{"announced, sent whole", 3 << 20, []int{1 << 20, 1 << 20, 1 << 20}, nil},
		{"announced, shorter", 100 << 10, []int{10 << 10}, io.ErrUnexpectedEOF},
		{"small, announced", 100, []int{100}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := NewPool() // its own: a recycled buffer may be larger than a grant
			b, g, _ := newTestBudget(64<<20, time.Second)
			res := b.Reserve(t.Context(), "k")
			pr, pw := io.Pipe()
			type result struct {
				b   *Buf
				err error
			}
			done := make(chan result, 1)
			go func() {
				body, err := read(pool, pr, tt.hint, limit, res)
				done <- result{body, err}
			}()
			sent := 0
			for _, n := range tt.sends {
				if _, err := pw.Write(make([]byte, n)); err != nil {
					t.Fatal(err)
				}
				sent += n
				// Written means read; the next read may have grown it.
				most := int64(sent) + max(Chunk, int64(sent)/2)
				if tt.hint >= 0 {
					most = min(most, tt.hint+1)
				}
				if held := res.held.Load(); held > most {
					t.Errorf("after %d bytes of %d announced: %d reserved; want at most %d", sent, tt.hint, held, most)
				}
			}
			pw.Close()
			got := <-done
			if !errors.Is(got.err, tt.wantErr) {
				t.Fatalf("read = %v; want %v", got.err, tt.wantErr)
			}
			if got.err == nil {
				if len(got.b.Bytes()) != sent {
					t.Errorf("read %d bytes; want %d", len(got.b.Bytes()), sent)
				}
				if int64(cap(got.b.Bytes())) > max(res.held.Load(), 16<<10) {
					t.Errorf("buffer of %d bytes for a reservation of %d", cap(got.b.Bytes()), res.held.Load())
				}
				got.b.release()
			}
			res.Release()
			if v := testutil.ToFloat64(g); v != 0 {
				t.Errorf("gauge after release = %v", v)
			}
		})
	}
}

// TestReadRefusedMidway: a body whose growth finds no room gives back what
// it read and holds, with ErrBudget.
func TestReadRefusedMidway(t *testing.T) {
	b, g, clk := newTestBudget(1<<20, time.Second)
	hog := b.Reserve(t.Context(), "k")
	if err := hog.grow(1<<20 - 100<<10); err != nil {
		t.Fatal(err)
	}
	res := b.Reserve(t.Context(), "k")
	waits := make(chan struct{}, 1)
	b.waiting = func() { waits <- struct{}{} }
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := read(NewPool(), pr, 512<<10, 512<<10, res)
		done <- err
	}()
	go func() { _, _ = pw.Write(make([]byte, 512<<10)) }()
	<-waits // it read what it could and waits for more
	if held := res.held.Load(); held == 0 || held > 100<<10 {
		t.Errorf("reserved %d while waiting; want 1 to 100 KiB", held)
	}
	clk.Advance(time.Second)
	if err := <-done; !errors.Is(err, ErrBudget) {
		t.Fatalf("read = %v; want ErrBudget", err)
	}
	pw.CloseWithError(errors.New("done"))
	res.Release()
	hog.Release()
	if v := testutil.ToFloat64(g); v != 0 {
		t.Errorf("gauge after release = %v", v)
	}
}

// TestBudgetManyGrowers: requests of three keys grow in steps and release,
// at once, while the waits end on a fake clock: the budget and each key's
// share are never exceeded, every grow ends (admitted, refused or given
// way), at least one request of each run gets all it asked for, and
// everything is given back.
func TestBudgetManyGrowers(t *testing.T) {
	for _, tt := range []struct {
		name          string
		limit, perKey int64
		requests      int
		steps         []int64
	}{
		{"one share each step", 1000, 1000, 20, []int64{50, 100, 200, 400}},
		{"key shares", 1000, 400, 30, []int64{30, 90, 150, 300}},
		{"tiny steps", 300, 200, 40, []int64{10, 20, 30, 40, 50, 60}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			b := NewBudget(BudgetConfig{Limit: tt.limit, PerKey: tt.perKey, Wait: time.Second, Clock: clk, Inflight: g})
			check := func() {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.used > b.limit {
					t.Errorf("%d admitted of a budget of %d", b.used, b.limit)
				}
				for k, n := range b.keys {
					if n > b.perKey {
						t.Errorf("key %s holds %d of a share of %d", k, n, b.perKey)
					}
				}
			}
			ctx, stop := context.WithCancel(t.Context())
			driven := make(chan struct{})
			go func() { // ends the waits: the fake clock moves only when someone waits
				defer close(driven)
				for clk.WaitForTimers(ctx, 1) == nil {
					clk.Advance(time.Second)
				}
			}()
			var wg sync.WaitGroup
			var mu sync.Mutex
			whole := 0
			for i := range tt.requests {
				r := b.Reserve(t.Context(), string(rune('a'+i%3)))
				wg.Go(func() {
					defer r.Release()
					for _, n := range tt.steps {
						err := r.grow(n)
						check()
						if err != nil {
							if !errors.Is(err, ErrBudget) {
								t.Errorf("grow: %v; want nil or ErrBudget", err)
							}
							return
						}
					}
					mu.Lock()
					whole++
					mu.Unlock()
				})
			}
			wg.Wait()
			stop()
			<-driven
			if whole == 0 {
				t.Error("no request got all it asked for")
			}
			if v := testutil.ToFloat64(g); v != 0 {
				t.Errorf("gauge after every release = %v", v)
			}
			if len(b.queue) != 0 || len(b.keys) != 0 || b.used != 0 {
				t.Errorf("after every release: queue %d, keys %v, used %d; want none", len(b.queue), b.keys, b.used)
			}
		})
	}
}
