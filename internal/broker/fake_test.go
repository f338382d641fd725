package broker

import (
	"context"
	"sync"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a Source driven by the test: set publishes a state to every
// subscriber, latest-wins, as tokens.Manager does.
type fakeSource struct {
	mu     sync.Mutex
	st     tokens.State
	subs   map[chan tokens.State]struct{}
	closed bool

	forced   []uint64 // generations passed to ForceRefresh
	forceRes tokens.State
	forceErr error
}

func newFake(st tokens.State) *fakeSource {
	return &fakeSource{st: st, subs: map[chan tokens.State]struct{}{}}
}

func (f *fakeSource) Snapshot() tokens.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeSource) Subscribe() (<-chan tokens.State, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan tokens.State, 1)
	if f.closed {
		close(ch)
		return ch, func() {}
	}
	ch <- f.st
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

func (f *fakeSource) ForceRefresh(_ context.Context, gen uint64) (tokens.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forced = append(f.forced, gen)
	return f.forceRes, f.forceErr
}

func (f *fakeSource) set(st tokens.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	for ch := range f.subs {
		select {
		case <-ch:
		default:
		}
		ch <- st
	}
}

func (f *fakeSource) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		close(ch)
		delete(f.subs, ch)
	}
}

// subscribers returns the number of subscriptions besides the one the
// service holds for every account (WatchAccounts views).
func (f *fakeSource) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(len(f.subs)-1, 0)
}

func newTestService(t *testing.T, src Source, mutate func(*Config)) *Service {
	t.Helper()
	cfg := Config{Accounts: map[string]Source{"": src}}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
