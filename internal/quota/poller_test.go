package quota

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted is a FetchFunc answering from a queue; it records the time of
// each call.
type scripted struct {
	mu    sync.Mutex
	clk   clock.Clock
	next  []func() (Reading, error)
	calls []time.Time
	done  chan struct{} // signalled after each call
}

func (s *scripted) fetch(_ context.Context, tok secret.Secret) (Reading, error) {
	s.mu.Lock()
	s.calls = append(s.calls, s.clk.Now())
	var f func() (Reading, error)
	if len(s.next) > 0 {
		f, s.next = s.next[0], s.next[1:]
	}
	s.mu.Unlock()
	defer func() { s.done <- struct{}{} }()
	if tok.Reveal() != "gho_x" {
		return Reading{}, errors.New("wrong token")
	}
	if f == nil {
		return reading(1), nil
	}
	return f()
}

func reading(remaining float64) Reading {
	return Reading{Snapshots: []Snapshot{{Kind: "chat", Entitlement: 50, Remaining: remaining}}}
}

func startPoller(t *testing.T, s *scripted, clk *clock.Fake) (*Poller, func()) {
	t.Helper()
	p, err := NewPoller(PollerConfig{
		Fetch: s.fetch, Token: func() secret.Secret { return secret.New("gho_x") },
		Clock: clk, Rand: func() float64 { return 0.5 }, // no jitter
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	return p, func() { cancel(); wg.Wait() }
}

func TestPollerSchedule(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	fail := func() (Reading, error) { return Reading{}, &StatusError{Status: 502} }
	s := &scripted{clk: clk, done: make(chan struct{}, 16), next: []func() (Reading, error){
		func() (Reading, error) { return reading(10), nil }, fail, fail, fail,
		func() (Reading, error) { return reading(5), nil },
	}}
	p, stop := startPoller(t, s, clk)
	defer stop()
	updates, cancel := p.Subscribe()
	defer cancel()
	<-s.done // the first reading, at once
	ctx := context.Background()
	got := <-updates
	for got.FetchedAt.IsZero() {
		got = <-updates
	}
	if got.Snapshots[0].Remaining != 10 || !got.FetchedAt.Equal(t0) {
		t.Fatalf("first reading = %+v", got)
	}
	// Then every Interval; failures back off 15 s, 30 s, 60 s, keeping the
	// last figures with the error; a success goes back to the interval.
	wantGaps := []time.Duration{DefaultInterval, 15 * time.Second, 30 * time.Second, 60 * time.Second}
	for i, gap := range wantGaps {
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(gap - time.Nanosecond)
		select {
		case <-s.done:
			t.Fatalf("reading %d came before %v", i+2, gap)
		default:
		}
		clk.Advance(time.Nanosecond)
		<-s.done
	}
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	cur := p.Current()
	if cur.Snapshots[0].Remaining != 5 || cur.LastError != "" {
		t.Errorf("after recovery Current() = %+v", cur)
	}
}

func TestPollerKeepsFiguresOnError(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	s := &scripted{clk: clk, done: make(chan struct{}, 16), next: []func() (Reading, error){
		nil, func() (Reading, error) { return Reading{}, &StatusError{Status: 401} },
	}}
	s.next[0] = func() (Reading, error) { return reading(7), nil }
	p, stop := startPoller(t, s, clk)
	defer stop()
	<-s.done
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultInterval)
	<-s.done
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cur := p.Current()
	if cur.Snapshots[0].Remaining != 7 || cur.LastError != "quota: HTTP 401" || cur.FetchedAt.IsZero() {
		t.Errorf("Current() = %+v; want the last figures with the error", cur)
	}
}

func TestPollerPoke(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	s := &scripted{clk: clk, done: make(chan struct{}, 16)}
	p, stop := startPoller(t, s, clk)
	defer stop()
	<-s.done
	ctx := context.Background()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// A poke right after a reading waits for the floor, then reads.
	p.Poke()
	p.Poke() // coalesced
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultMinPokeInterval)
	<-s.done
	// A poke long after a reading reads at once.
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	p.Poke()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	want := []time.Time{t0, t0.Add(DefaultMinPokeInterval), t0.Add(DefaultMinPokeInterval + time.Minute)}
	if len(s.calls) != len(want) {
		t.Fatalf("calls at %v; want %v", s.calls, want)
	}
	for i := range want {
		if !s.calls[i].Equal(want[i]) {
			t.Errorf("call %d at %v; want %v", i, s.calls[i], want[i])
		}
	}
}

func TestPollerSubscribeEndsWithRun(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	s := &scripted{clk: clk, done: make(chan struct{}, 16)}
	p, stop := startPoller(t, s, clk)
	updates, cancel := p.Subscribe()
	defer cancel()
	<-s.done
	stop()
	for range updates {
	}
	if _, err := NewPoller(PollerConfig{}); err == nil {
		t.Error("NewPoller(empty) = nil error")
	}
}
