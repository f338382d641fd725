package tokens

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

func TestManagerFirstTokenAndSchedule(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	m := newTestManager(t, clk, up, nil)
	st, err := m.WaitReady(context.Background())
	if err != nil {
		t.Fatalf("WaitReady() error = %v", err)
	}
	want := State{
		Account: "team", Generation: 1, Epoch: "epoch-1", Status: StatusValid,
		ExpiresAt: t0.Add(1560 * time.Second), RefreshAt: t0.Add(1200 * time.Second),
		APIBaseURL: "https://api.githubcopilot.com", SKU: "monthly_subscriber",
	}
	got := st
	got.Token = secret.Secret{}
	if got != want {
		t.Errorf("WaitReady() = %+v; want %+v", got, want)
	}
	if st.Token.IsZero() {
		t.Error("WaitReady() token is zero")
	}
	// The early refresh replaces the token with the next generation.
	updates, cancel := m.Subscribe()
	defer cancel()
	waitTimer(t, clk)
	if d, _ := clk.AdvanceToNext(); d != 1200*time.Second {
		t.Errorf("first refresh after %v; want 20m0s", d)
	}
	st2 := waitState(t, updates, "generation 2", isGen(2, StatusValid))
	if st2.Token.Equal(st.Token) {
		t.Error("generation 2 carries generation 1's token")
	}
	if n := up.count(); n != 2 {
		t.Errorf("exchange calls = %d; want 2", n)
	}
}

func TestSnapshotExpiresWithoutTheLoop(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 1 {
			return up.ok(1500*time.Second, 1800*time.Second)(n, cred)
		}
		return nil, &TransientError{Status: 500}
	})
	m := newTestManager(t, clk, up, nil)
	updates, cancel := m.Subscribe()
	defer cancel()
	waitState(t, updates, "first token", isGen(1, StatusValid))
	waitTimer(t, clk)
	// Jump past the local expiry in one step: Snapshot must not hand out the
	// token whether or not the goroutine has woken yet.
	clk.Set(t0.Add(1560 * time.Second))
	if st := m.Snapshot(); st.Status != StatusExpired || !st.Token.IsZero() {
		t.Errorf("Snapshot() at local expiry = %v with token %v; want EXPIRED without token", st.Status, !st.Token.IsZero())
	}
	// And the goroutine publishes EXPIRED so watchers learn without polling.
	st := waitState(t, updates, "EXPIRED", hasStatus(StatusExpired))
	if !st.Token.IsZero() || st.Generation != 1 || !st.ExpiresAt.IsZero() {
		t.Errorf("published EXPIRED state = %+v; want generation 1, no token, no expiry", st)
	}
}

func TestRejected(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		afterGood bool // reject at the first refresh rather than the first exchange
	}{
		{"401", fmt.Errorf("exchange: HTTP 401: %w", ErrCredentialRejected), false},
		{"403 no access", &NoAccessError{Status: 403, NotificationID: "no_copilot_access", Message: "no access"}, false},
		{"401 at refresh", fmt.Errorf("exchange: HTTP 401: %w", ErrCredentialRejected), true},
		{"403 at refresh", &NoAccessError{Status: 403, NotificationID: "subscription_ended"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			up := newFakeUpstream(clk)
			good := up.ok(1500*time.Second, 1800*time.Second)
			up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
				if cred.Reveal() == "ghu_replacement" {
					return good(n, cred)
				}
				if tt.afterGood && n == 1 {
					return good(n, cred)
				}
				return nil, tt.err
			})
			m := newTestManager(t, clk, up, nil)
			updates, cancel := m.Subscribe()
			defer cancel()
			wantCalls := 1
			if tt.afterGood {
				waitState(t, updates, "first token", isGen(1, StatusValid))
				waitTimer(t, clk)
				clk.AdvanceToNext()
				wantCalls = 2
			}
			st := waitState(t, updates, "REJECTED", hasStatus(StatusRejected))
			if !st.Token.IsZero() || !st.RefreshAt.IsZero() || st.LastError == "" {
				t.Errorf("REJECTED state = %+v; want no token, no RefreshAt, a LastError", st)
			}
			if n := up.count(); n != wantCalls {
				t.Fatalf("exchange calls at rejection = %d; want %d", n, wantCalls)
			}
			for range 24 {
				clk.Advance(time.Hour)
				if _, err := m.ForceRefresh(context.Background(), st.Generation); err != nil {
					t.Fatalf("ForceRefresh() error = %v", err)
				}
			}
			m.SetGitHubToken(secret.New("ghu_testCredentialOne0123456789abcdef")) // same value: ignored
			if n, p := up.count(), clk.Pending(); n != wantCalls || p != 0 {
				t.Fatalf("after a simulated day: exchange calls = %d, timers = %d; want %d and 0", n, p, wantCalls)
			}
			if got := m.Snapshot().Status; got != StatusRejected {
				t.Fatalf("Snapshot().Status after a day = %v; want REJECTED", got)
			}
			m.SetGitHubToken(secret.New("ghu_replacement"))
			got := waitState(t, updates, "recovery", hasStatus(StatusValid))
			if want := st.Generation + 1; got.Generation != want {
				t.Errorf("generation after recovery = %d; want %d", got.Generation, want)
			}
			if n := up.count(); n != wantCalls+1 {
				t.Errorf("exchange calls after recovery = %d; want %d", n, wantCalls+1)
			}
		})
	}
}

func TestRetryRejected(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	good := up.ok(1500*time.Second, 1800*time.Second)
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 1 {
			return nil, &NoAccessError{Status: 403, NotificationID: "no_copilot_access"}
		}
		return good(n, cred) // the operator fixed the subscription
	})
	m := newTestManager(t, clk, up, nil)
	updates, cancel := m.Subscribe()
	defer cancel()
	waitState(t, updates, "REJECTED", hasStatus(StatusRejected))
	got := waitState(t, func() <-chan State { m.RetryRejected(); return updates }(), "recovery", hasStatus(StatusValid))
	if got.Generation != 1 || up.count() != 2 {
		t.Fatalf("after RetryRejected: generation %d, calls %d; want 1, 2", got.Generation, up.count())
	}
	m.RetryRejected() // VALID: nothing to lift, no call
	waitTimer(t, clk)
	if n := up.count(); n != 2 {
		t.Errorf("RetryRejected() while VALID made a call: calls = %d; want 2", n)
	}
}

func TestEmptyCredentialStartsRejected(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	m := newTestManager(t, clk, up, func(c *ManagerConfig) { c.GitHubToken = secret.Secret{} })
	st, err := m.WaitReady(context.Background())
	if err != nil || st.Status != StatusRejected {
		t.Fatalf("WaitReady() = %v, %v; want REJECTED", st.Status, err)
	}
	if n := up.count(); n != 0 {
		t.Errorf("exchange calls = %d; want 0", n)
	}
}

func TestRateLimited(t *testing.T) {
	tests := []struct {
		name       string
		afterGood  bool
		retryAfter time.Duration
		wantWait   time.Duration // from the limited call to the next call
	}{
		{"first exchange, Retry-After 120", false, 120 * time.Second, 120 * time.Second},
		{"no Retry-After uses 60s", false, 0, 60 * time.Second},
		{"refresh, Retry-After 120", true, 120 * time.Second, 120 * time.Second},
		// The token expires 360 s after the refresh; Retry-After still wins.
		{"refresh, Retry-After past expiry", true, 600 * time.Second, 600 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			up := newFakeUpstream(clk)
			good := up.ok(1500*time.Second, 1800*time.Second)
			limited := 1
			if tt.afterGood {
				limited = 2
			}
			up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
				if n == limited {
					return nil, &RateLimitedError{Status: 429, RetryAfter: tt.retryAfter}
				}
				return good(n, cred)
			})
			m := newTestManager(t, clk, up, nil)
			updates, cancel := m.Subscribe()
			defer cancel()
			wantGen := uint64(1)
			if tt.afterGood {
				waitState(t, updates, "first token", isGen(1, StatusValid))
				waitTimer(t, clk)
				clk.AdvanceToNext()
				wantGen = 2
			}
			waitTimer(t, clk)
			// Forced refreshes must not cut the wait short either: this one
			// reaches the idle refresh goroutine and joins the next attempt,
			// which must stay where Retry-After put it (checked below).
			ctx, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
			if _, err := m.ForceRefresh(ctx, wantGen-1); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("ForceRefresh(%d) during Retry-After error = %v; want it to wait (DeadlineExceeded)", wantGen-1, err)
			}
			stop()
			if n := up.count(); n != limited {
				t.Fatalf("exchange calls before the Retry-After ended = %d; want %d", n, limited)
			}
			// Step the clock until the next call; after each step wait for the
			// goroutine to be idle again, so the count read is not racing an
			// attempt (a token expiring first takes one extra step).
			for steps := 0; up.count() == limited; steps++ {
				if steps == 3 {
					t.Fatalf("no exchange after %d timer steps", steps)
				}
				clk.AdvanceToNext()
				waitTimer(t, clk)
			}
			waitState(t, updates, "token after the limit", isGen(wantGen, StatusValid))
			calls := up.callTimes()
			if got := calls[limited].Sub(calls[limited-1]); got != tt.wantWait {
				t.Errorf("next call %v after the rate-limited one; want %v", got, tt.wantWait)
			}
		})
	}
}

func TestForceRefreshSingleFlight(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	good := up.ok(1500*time.Second, 1800*time.Second)
	gate := make(chan struct{})
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 2 {
			<-gate // hold the forced exchange open while callers pile up
		}
		return good(n, cred)
	})
	m := newTestManager(t, clk, up, nil)
	if _, err := m.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second) // past MinForceInterval

	const callers = 100
	var started, wg sync.WaitGroup
	results := make([]State, callers)
	errs := make([]error, callers)
	started.Add(callers)
	wg.Add(callers)
	for i := range callers {
		go func() {
			defer wg.Done()
			started.Done()
			results[i], errs[i] = m.ForceRefresh(context.Background(), 1)
		}()
	}
	started.Wait()
	close(gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || results[i].Generation != 2 || results[i].Status != StatusValid {
			t.Fatalf("caller %d: ForceRefresh(1) = generation %d %v, %v; want generation 2 VALID", i, results[i].Generation, results[i].Status, errs[i])
		}
	}
	if n := up.count(); n != 2 {
		t.Fatalf("exchange calls = %d; want 2 (first token + one forced)", n)
	}

	// Naming an older (or unknown) generation makes no exchange.
	clk.Advance(time.Minute)
	for _, gen := range []uint64{0, 1, 7} {
		st, err := m.ForceRefresh(context.Background(), gen)
		if err != nil || st.Generation != 2 {
			t.Errorf("ForceRefresh(%d) = generation %d, %v; want 2, nil", gen, st.Generation, err)
		}
	}
	if n := up.count(); n != 2 {
		t.Errorf("exchange calls after stale forced refreshes = %d; want 2", n)
	}
}

func TestForceRefreshMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.NewFake(t0)
		up := newFakeUpstream(clk)
		m := newTestManager(t, clk, up, nil)
		if _, err := m.WaitReady(t.Context()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		done := make(chan State, 1)
		go func() {
			st, _ := m.ForceRefresh(t.Context(), 1)
			done <- st
		}()
		synctest.Wait() // the request is in and the goroutine re-armed its timer
		if d, _ := clk.AdvanceToNext(); d != 4*time.Second {
			t.Errorf("forced exchange came %v after the request; want 4s (5s after the previous exchange)", d)
		}
		if st := <-done; st.Generation != 2 {
			t.Errorf("ForceRefresh(1) generation = %d; want 2", st.Generation)
		}
		if calls := up.callTimes(); len(calls) != 2 || calls[1].Sub(calls[0]) != 5*time.Second {
			t.Errorf("exchange calls at %v; want two, 5s apart", calls)
		}
	})
}

func TestForceRefreshContextAndClose(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	m := newTestManager(t, clk, up, nil)
	if _, err := m.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Within MinForceInterval, the call waits for the fake clock; its context
	// ends first.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := m.ForceRefresh(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ForceRefresh() with an ending context error = %v; want DeadlineExceeded", err)
	}
	_ = m.Close()
	if _, err := m.ForceRefresh(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("ForceRefresh() after Close error = %v; want ErrClosed", err)
	}
}

func TestSetGitHubTokenWhileValid(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	m := newTestManager(t, clk, up, nil)
	updates, cancel := m.Subscribe()
	defer cancel()
	waitState(t, updates, "first token", isGen(1, StatusValid))
	m.SetGitHubToken(secret.New("ghu_second"))
	waitState(t, updates, "generation 2", isGen(2, StatusValid))
	up.mu.Lock()
	creds := append([]string(nil), up.creds...)
	up.mu.Unlock()
	if len(creds) != 2 || creds[1] != "ghu_second" {
		t.Errorf("credentials used = %d calls, last %q; want 2 calls, the last with the new credential", len(creds), creds[len(creds)-1])
	}
}

func TestCloseIsIdempotentAndWaits(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	inExchange := make(chan struct{})
	m := newTestManager(t, clk, up, func(c *ManagerConfig) {
		c.Exchange = func(ctx context.Context, _ secret.Secret) (*CopilotToken, error) {
			close(inExchange)
			<-ctx.Done() // a hung GitHub: only Close ends it
			return nil, &TransientError{Err: ctx.Err()}
		}
	})
	updates, cancel := m.Subscribe()
	defer cancel()
	<-inExchange
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
		}()
	}
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	for range updates { // drains the initial state, then must end: closed by Close
	}
	late, lateCancel := m.Subscribe()
	if _, ok := <-late; ok {
		t.Error("Subscribe() after Close delivered a state; want a closed channel")
	}
	lateCancel()
	cancel() // after Close: harmless
	if _, err := m.WaitReady(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitReady() after Close error = %v; want ErrClosed", err)
	}
}

func TestNewManagerNeedsExchange(t *testing.T) {
	if _, err := NewManager(ManagerConfig{}); err == nil || !strings.Contains(err.Error(), "Exchange") {
		t.Errorf("NewManager(no Exchange) error = %v; want one naming Exchange", err)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{
		StatusPending: "PENDING", StatusValid: "VALID", StatusStale: "STALE",
		StatusExpired: "EXPIRED", StatusRejected: "REJECTED", Status(0): "Status(0)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q; want %q", int(s), got, want)
		}
	}
}

// TestCredentialReplacedDuringRefusedExchange: a 401 for the old credential
// that arrives after the new one was set must not leave the account REJECTED.
func TestCredentialReplacedDuringRefusedExchange(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	good := up.ok(1500*time.Second, 1800*time.Second)
	up.started = make(chan int, 4)
	gate := make(chan struct{})
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 1 {
			<-gate
			return nil, ErrCredentialRejected
		}
		return good(n, cred)
	})
	m := newTestManager(t, clk, up, nil)
	<-up.started
	m.SetGitHubToken(secret.New("ghu_new"))
	close(gate)
	st, err := m.WaitReady(context.Background())
	if err != nil || st.Status != StatusValid || st.Generation != 1 {
		t.Fatalf("WaitReady() = %v generation %d, %v; want VALID generation 1", st.Status, st.Generation, err)
	}
	if n := up.count(); n != 2 {
		t.Errorf("exchange calls = %d; want 2 (refused old credential, then the new one)", n)
	}
}

// TestTokenExpiresDuringFailingAttempt: when the token reaches its local
// expiry while a failing attempt is still in flight, the retry must wait its
// backoff rather than come at once.
func TestTokenExpiresDuringFailingAttempt(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	good := up.ok(1500*time.Second, 1800*time.Second)
	up.started = make(chan int, 8)
	gate := make(chan struct{})
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		switch n {
		case 1:
			return good(n, cred)
		case 2:
			<-gate // GitHub hangs past the token's local expiry, then fails
		}
		return nil, &TransientError{Status: 502}
	})
	m := newTestManager(t, clk, up, nil)
	updates, cancel := m.Subscribe()
	defer cancel()
	first := waitState(t, updates, "first token", isGen(1, StatusValid))
	<-up.started
	waitTimer(t, clk)
	clk.AdvanceToNext() // the early refresh: call 2 starts and hangs
	<-up.started
	failedAt := first.ExpiresAt.Add(30 * time.Second)
	clk.Set(failedAt)
	close(gate)
	waitState(t, updates, "EXPIRED", hasStatus(StatusExpired))
	waitTimer(t, clk)
	if n := up.count(); n != 2 {
		t.Fatalf("exchange calls right after the failure = %d; want 2 (no immediate retry)", n)
	}
	d, _ := clk.AdvanceToNext()
	<-up.started
	// Backoff after one failure with Rand 0.5 is exactly BackoffInitial (1 s).
	if calls := up.callTimes(); calls[2].Sub(failedAt) != time.Second || d != time.Second {
		t.Errorf("retry came %v after the failure (timer %v); want 1s", calls[2].Sub(failedAt), d)
	}
}

// TestForceRefreshCallersJoinOneAttempt holds the forced exchange back with
// MinForceInterval until all 100 callers have registered with the refresh
// goroutine (synctest.Wait), so they are truly concurrent: exactly one
// exchange must serve them all.
func TestForceRefreshCallersJoinOneAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.NewFake(t0)
		up := newFakeUpstream(clk)
		m := newTestManager(t, clk, up, nil)
		if _, err := m.WaitReady(t.Context()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second) // the forced exchange may come 5 s after the first

		const callers = 100
		var wg sync.WaitGroup
		results := make([]State, callers)
		errs := make([]error, callers)
		for i := range callers {
			wg.Go(func() { results[i], errs[i] = m.ForceRefresh(t.Context(), 1) })
		}
		synctest.Wait() // every caller waits on the attempt, the goroutine on its timer
		if n := up.count(); n != 1 {
			t.Fatalf("exchange calls before MinForceInterval = %d; want 1", n)
		}
		if d, _ := clk.AdvanceToNext(); d != 4*time.Second {
			t.Errorf("forced exchange %v after the request; want 4s", d)
		}
		wg.Wait()
		for i := range callers {
			if errs[i] != nil || results[i].Generation != 2 || results[i].Status != StatusValid {
				t.Fatalf("caller %d: ForceRefresh(1) = generation %d %v, %v; want generation 2 VALID", i, results[i].Generation, results[i].Status, errs[i])
			}
		}
		synctest.Wait()
		if n := up.count(); n != 2 {
			t.Errorf("exchange calls = %d; want 2 (first token + one forced for 100 callers)", n)
		}
	})
}

// TestLastChanceBeforeExpiry: when the backoff would sleep past local expiry,
// the last attempt comes lastChanceMargin before it, so a GitHub that recovers
// by then replaces the token with no EXPIRED gap for watchers.
func TestLastChanceBeforeExpiry(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	good := up.ok(1500*time.Second, 1800*time.Second)
	var (
		recoverAt time.Time // GitHub fails from the first refresh until then
		m         *Manager
		atRecover Status // what watchers were shown when the recovering call began
	)
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 1 {
			return good(n, cred)
		}
		if !clk.Now().Before(recoverAt) {
			atRecover = m.Snapshot().Status
			return good(n, cred)
		}
		return nil, &TransientError{Status: 503}
	})
	m = newTestManager(t, clk, up, nil)
	updates, cancel := m.Subscribe()
	defer cancel()
	first := waitState(t, updates, "first token", isGen(1, StatusValid))
	recoverAt = first.ExpiresAt.Add(-lastChanceMargin)
	// Each step is read only once the refresh goroutine waits on the clock
	// again: it has then finished the attempt the previous step woke it for.
	// (Reading the generation while that attempt ran let the loop advance
	// once more, past the second token's own refresh.)
	waitTimer(t, clk)
	for step := 0; m.Snapshot().Generation < 2; step++ {
		if step > 1000 {
			t.Fatal("no second token after 1000 clock steps")
		}
		if st := m.Snapshot(); st.Status == StatusExpired {
			t.Fatalf("at %v: EXPIRED; want the last chance to replace the token first", clk.Now().Sub(t0))
		}
		clk.AdvanceToNext()
		waitTimer(t, clk)
	}
	if atRecover != StatusStale {
		t.Errorf("status when the recovering attempt began = %v; want STALE (no EXPIRED gap)", atRecover)
	}
	calls := up.callTimes()
	if last := calls[len(calls)-1]; !last.Equal(recoverAt) {
		t.Errorf("last attempt at %v; want %v (local expiry - %v)", last.Sub(t0), recoverAt.Sub(t0), lastChanceMargin)
	}
	if st := waitState(t, updates, "second token", isGen(2, StatusValid)); st.LastError != "" {
		t.Errorf("LastError after recovery = %q; want empty", st.LastError)
	}
}
