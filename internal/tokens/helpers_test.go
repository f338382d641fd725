package tokens

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// t0 is the fake clock's start in every manager test.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// waitLimit bounds every real-time wait in tests; generous because the
// machine is small and shared.
const waitLimit = 20 * time.Second

// fakeUpstream is an ExchangeFunc that counts calls and answers through a
// replaceable function.
type fakeUpstream struct {
	clk *clock.Fake

	mu      sync.Mutex
	calls   []time.Time
	creds   []string
	issued  []string
	answer  func(n int, cred secret.Secret) (*CopilotToken, error) // n counts from 1
	started chan int                                               // optional: told each call's number
}

func newFakeUpstream(clk *clock.Fake) *fakeUpstream {
	u := &fakeUpstream{clk: clk}
	u.answer = u.ok(1500*time.Second, 1800*time.Second)
	return u
}

// ok returns an answer function issuing fresh tokens with the given
// refresh_in and lifetime, dated by the fake clock.
func (u *fakeUpstream) ok(refreshIn, lifetime time.Duration) func(int, secret.Secret) (*CopilotToken, error) {
	return func(n int, _ secret.Secret) (*CopilotToken, error) {
		now := u.clk.Now()
		return &CopilotToken{
			Token:      secret.New(fmt.Sprintf("tid=test%d;exp=%d;sku=monthly_subscriber:%x", n, now.Add(lifetime).Unix(), n*7919)),
			ExpiresAt:  now.Add(lifetime),
			RefreshIn:  refreshIn,
			ServerDate: now,
			APIBaseURL: "https://api.githubcopilot.com",
			SKU:        "monthly_subscriber",
		}, nil
	}
}

func (u *fakeUpstream) setAnswer(f func(int, secret.Secret) (*CopilotToken, error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answer = f
}

func (u *fakeUpstream) exchange(ctx context.Context, cred secret.Secret) (*CopilotToken, error) {
	u.mu.Lock()
	u.calls = append(u.calls, u.clk.Now())
	u.creds = append(u.creds, cred.Reveal())
	n, answer, started := len(u.calls), u.answer, u.started
	u.mu.Unlock()
	if started != nil {
		started <- n
	}
	tok, err := answer(n, cred)
	if tok != nil {
		u.mu.Lock()
		u.issued = append(u.issued, tok.Token.Reveal())
		u.mu.Unlock()
	}
	return tok, err
}

func (u *fakeUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

func (u *fakeUpstream) callTimes() []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]time.Time(nil), u.calls...)
}

// newTestManager starts a manager on a fake clock at t0 with jitter pinned to
// the middle (Rand 0.5) unless cfg says otherwise, and closes it at cleanup.
func newTestManager(t *testing.T, clk *clock.Fake, up *fakeUpstream, edit func(*ManagerConfig)) *Manager {
	t.Helper()
	cfg := ManagerConfig{
		Account:     "team",
		GitHubToken: secret.New("ghu_testCredentialOne0123456789abcdef"),
		Exchange:    up.exchange,
		Clock:       clk,
		Epoch:       "epoch-1",
		Rand:        func() float64 { return 0.5 },
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatalf("NewManager() error = %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// waitState reads updates until pred holds, failing after waitLimit.
func waitState(t *testing.T, updates <-chan State, what string, pred func(State) bool) State {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	var last State
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				t.Fatalf("waiting for %s: subscription closed; last state %+v", what, last)
			}
			last = st
			if pred(st) {
				return st
			}
		case <-deadline.C:
			t.Fatalf("waiting for %s: timed out; last state %+v", what, last)
		}
	}
}

func isGen(g uint64, s Status) func(State) bool {
	return func(st State) bool { return st.Generation == g && st.Status == s }
}

func hasStatus(s Status) func(State) bool {
	return func(st State) bool { return st.Status == s }
}

// waitTimer blocks until the refresh goroutine waits on the fake clock.
func waitTimer(t *testing.T, clk *clock.Fake) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatalf("WaitForTimers(1) = %v; the refresh goroutine never armed its timer", err)
	}
}
