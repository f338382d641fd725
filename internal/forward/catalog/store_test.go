package catalog

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeUpstream answers /models: with body and status, after gate is
// closed (when set).
type fakeUpstream struct {
	mu       sync.Mutex
	status   int
	body     string
	err      error
	gate     chan struct{}
	calls    atomic.Int32
	accounts []string
}

func (u *fakeUpstream) set(status int, body string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status, u.body, u.err = status, body, err
}

func (u *fakeUpstream) fetch(ctx context.Context, account string) (*http.Response, error) {
	u.calls.Add(1)
	u.mu.Lock()
	gate, status, body, err := u.gate, u.status, u.body, u.err
	u.accounts = append(u.accounts, account)
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body))}, nil
}

func models(ids ...string) string {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":"` + id + `"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func newTestStore(t *testing.T, up *fakeUpstream, clk clock.Clock, m *Metrics) *Store {
	t.Helper()
	s, err := NewStore(StoreConfig{Fetch: up.fetch, Clock: clk, Metrics: m, RetryAfter: 30 * time.Second, Refresh: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// settle waits until no fetch is running for account.
func settle(t *testing.T, s *Store, account string) {
	t.Helper()
	a := s.account(account)
	for {
		a.mu.Lock()
		f := a.flight
		a.mu.Unlock()
		if f == nil {
			return
		}
		<-f.done
	}
}

func ids(c *Catalog) string {
	var out []string
	for _, m := range c.Models {
		out = append(out, m.ID)
	}
	return strings.Join(out, ",")
}

func TestStoreRefreshesOnGenerationAndAge(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a")}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := newTestStore(t, up, clk, m)
	ctx := context.Background()
	g1 := Gen{Generation: 1, Epoch: "e"}

	c, err := s.Get(ctx, "acct", g1)
	if err != nil || ids(c) != "a" || up.calls.Load() != 1 {
		t.Fatalf("first Get = %v, %v after %d fetches; want [a] after 1", c, err, up.calls.Load())
	}
	up.set(200, models("a", "b"), nil)
	// Same token, younger than Refresh: no fetch.
	clk.Advance(9 * time.Minute)
	if c, _ := s.Get(ctx, "acct", g1); ids(c) != "a" || up.calls.Load() != 1 {
		t.Errorf("fresh Get = %s after %d fetches; want a after 1", ids(c), up.calls.Load())
	}
	// A new token generation: the held catalog is served and replaced.
	if c, _ := s.Get(ctx, "acct", Gen{Generation: 2, Epoch: "e"}); ids(c) != "a" {
		t.Errorf("Get with a new generation = %s; want the held one while it refreshes", ids(c))
	}
	settle(t, s, "acct")
	if up.calls.Load() != 2 || ids(s.Peek("acct")) != "a,b" {
		t.Errorf("after a new generation: %d fetches, catalog %s; want 2, a,b", up.calls.Load(), ids(s.Peek("acct")))
	}
	// An older generation (a request still holding it) does not refetch.
	s.Get(ctx, "acct", g1)
	settle(t, s, "acct")
	if up.calls.Load() != 2 {
		t.Errorf("older generation: %d fetches; want 2", up.calls.Load())
	}
	// A new epoch (the broker restarted) does.
	s.Get(ctx, "acct", Gen{Generation: 1, Epoch: "f"})
	settle(t, s, "acct")
	if up.calls.Load() != 3 {
		t.Errorf("new epoch: %d fetches; want 3", up.calls.Load())
	}
	// Age: refreshed once Refresh has passed.
	up.set(200, models("c"), nil)
	clk.Advance(10 * time.Minute)
	s.Get(ctx, "acct", Gen{Generation: 1, Epoch: "f"})
	settle(t, s, "acct")
	if up.calls.Load() != 4 || ids(s.Peek("acct")) != "c" {
		t.Errorf("after 10 min: %d fetches, catalog %s; want 4, c", up.calls.Load(), ids(s.Peek("acct")))
	}
	if g := promtest.ToFloat64(m.refreshes.WithLabelValues("acct", "ok")); g != 4 {
		t.Errorf("refreshes ok = %v; want 4", g)
	}
	if g := promtest.ToFloat64(m.models.WithLabelValues("acct")); g != 1 {
		t.Errorf("catalog models = %v; want 1", g)
	}
	clk.Advance(90 * time.Second)
	if err := promtest.GatherAndCompare(reg, strings.NewReader(`
# HELP copilot_proxy_model_catalog_age_seconds Age of the model catalog held, by account.
# TYPE copilot_proxy_model_catalog_age_seconds gauge
copilot_proxy_model_catalog_age_seconds{account="acct"} 90
`), "copilot_proxy_model_catalog_age_seconds"); err != nil {
		t.Error(err)
	}
}

func TestStoreKeepsTheLastGoodCatalog(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a")}
	m := NewMetrics(nil)
	s := newTestStore(t, up, clk, m)
	ctx := context.Background()
	g := Gen{Generation: 1}
	if _, err := s.Get(ctx, "", g); err != nil {
		t.Fatal(err)
	}
	for _, fail := range []struct {
		name   string
		status int
		body   string
		err    error
	}{
		{"HTTP 500", 500, "oops", nil},
		{"malformed", 200, `{"data":`, nil},
		{"transport", 0, "", errors.New("connection refused")},
		{"too large", 200, `{"data":[]}` + strings.Repeat(" ", MaxBodyBytes), nil},
	} {
		up.set(fail.status, fail.body, fail.err)
		clk.Advance(11 * time.Minute)
		before := up.calls.Load()
		c, err := s.Get(ctx, "", g)
		settle(t, s, "")
		if err != nil || ids(c) != "a" || ids(s.Peek("")) != "a" || up.calls.Load() != before+1 {
			t.Errorf("%s: Get = %v, %v; held %s after %d fetches; want a kept, one fetch", fail.name, c, err, ids(s.Peek("")), up.calls.Load()-before)
		}
		// Within RetryAfter of the failure: no new fetch per request.
		clk.Advance(10 * time.Second)
		s.Get(ctx, "", g)
		settle(t, s, "")
		if up.calls.Load() != before+1 {
			t.Errorf("%s: a fetch %d s after the failure; want a pause of 30 s", fail.name, 10)
		}
	}
	if got := promtest.ToFloat64(m.refreshes.WithLabelValues("", "error")); got != 4 {
		t.Errorf("refresh errors = %v; want 4", got)
	}
	up.set(200, models("b"), nil)
	clk.Advance(30 * time.Second)
	s.Get(ctx, "", g)
	settle(t, s, "")
	if ids(s.Peek("")) != "b" {
		t.Errorf("after recovery: %s; want b", ids(s.Peek("")))
	}
}

func TestStoreSingleFlight(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a"), gate: make(chan struct{})}
	s := newTestStore(t, up, clk, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 100
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			if c, err := s.Get(ctx, "acct", Gen{Generation: 1}); err == nil && c.Lookup("a") != nil {
				ok.Add(1)
			}
		})
	}
	// Every caller waits for the first catalog on its own timer.
	if err := clk.WaitForTimers(ctx, n); err != nil {
		t.Fatal(err)
	}
	close(up.gate)
	wg.Wait()
	if up.calls.Load() != 1 || ok.Load() != n {
		t.Errorf("%d concurrent first Gets: %d fetches, %d got the catalog; want 1 fetch, all %d", n, up.calls.Load(), ok.Load(), n)
	}
	// Also once stale: 100 Gets at once start one fetch.
	up.mu.Lock()
	up.gate = make(chan struct{})
	up.mu.Unlock()
	clk.Advance(11 * time.Minute)
	for range n {
		wg.Go(func() { s.Get(ctx, "acct", Gen{Generation: 2}) })
	}
	wg.Wait()
	close(up.gate)
	settle(t, s, "acct")
	if up.calls.Load() != 2 {
		t.Errorf("%d stale Gets: %d fetches in all; want 2", n, up.calls.Load())
	}
}

func TestStoreFirstWaitBound(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a"), gate: make(chan struct{})}
	s := newTestStore(t, up, clk, nil)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { _, err := s.Get(ctx, "acct", Gen{}); errc <- err }()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Second)
	if err := <-errc; !errors.Is(err, ErrNoCatalog) {
		t.Errorf("Get after FirstWait = %v; want ErrNoCatalog", err)
	}
	// The fetch goes on; once it answers, the catalog is there.
	close(up.gate)
	settle(t, s, "acct")
	if c, err := s.Get(ctx, "acct", Gen{}); err != nil || c.Lookup("a") == nil || up.calls.Load() != 1 {
		t.Errorf("Get after the late answer = %v, %v after %d fetches; want [a] after 1", c, err, up.calls.Load())
	}
}

func TestStoreFirstFailureAnswersAtOnceDuringThePause(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 503, body: "down"}
	s := newTestStore(t, up, clk, nil)
	ctx := context.Background()
	if _, err := s.Get(ctx, "", Gen{}); !errors.Is(err, ErrNoCatalog) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("Get = %v; want ErrNoCatalog naming HTTP 503", err)
	}
	if _, err := s.Get(ctx, "", Gen{}); !errors.Is(err, ErrNoCatalog) || up.calls.Load() != 1 {
		t.Errorf("second Get = %v after %d fetches; want ErrNoCatalog with no new fetch", err, up.calls.Load())
	}
	up.set(200, models("a"), nil)
	clk.Advance(30 * time.Second)
	if c, err := s.Get(ctx, "", Gen{}); err != nil || c.Lookup("a") == nil {
		t.Errorf("Get after the pause = %v, %v; want [a]", c, err)
	}
}

func TestStoreAccountsAreSeparate(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a")}
	s := newTestStore(t, up, clk, nil)
	ctx := context.Background()
	s.Get(ctx, "one", Gen{Generation: 1})
	up.set(200, models("b"), nil)
	s.Get(ctx, "two", Gen{Generation: 7})
	if ids(s.Peek("one")) != "a" || ids(s.Peek("two")) != "b" || s.Peek("three") != nil {
		t.Errorf("catalogs one=%s two=%s; want a, b", ids(s.Peek("one")), ids(s.Peek("two")))
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if strings.Join(up.accounts, ",") != "one,two" {
		t.Errorf("fetched for %v; want one, two", up.accounts)
	}
}

func TestStoreFirstSeenKept(t *testing.T) {
	clk := clock.NewFake(t0)
	up := &fakeUpstream{status: 200, body: models("a")}
	s := newTestStore(t, up, clk, nil)
	s.Get(context.Background(), "", Gen{Generation: 1})
	up.set(200, models("a", "b"), nil)
	clk.Advance(time.Hour)
	s.Get(context.Background(), "", Gen{Generation: 1})
	settle(t, s, "")
	c := s.Peek("")
	if !c.Lookup("a").FirstSeen.Equal(t0) || !c.Lookup("b").FirstSeen.Equal(t0.Add(time.Hour)) {
		t.Errorf("first seen a=%v b=%v; want %v and an hour later", c.Lookup("a").FirstSeen, c.Lookup("b").FirstSeen, t0)
	}
}

func TestStoreCloseStopsFetches(t *testing.T) {
	up := &fakeUpstream{status: 200, body: models("a"), gate: make(chan struct{})}
	clk := clock.NewFake(t0)
	s, err := NewStore(StoreConfig{Fetch: up.fetch, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := s.Get(context.Background(), "", Gen{}); errc <- err }()
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	s.Close() // the gated fetch ends with its context
	if err := <-errc; !errors.Is(err, ErrNoCatalog) {
		t.Errorf("Get across Close = %v; want ErrNoCatalog", err)
	}
	if _, err := s.Get(context.Background(), "", Gen{}); !errors.Is(err, ErrNoCatalog) {
		t.Errorf("Get after Close = %v; want ErrNoCatalog", err)
	}
}
