package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Fetcher sends GET /models for account with the account's current token
// and the Copilot headers, and returns the upstream's answer. The store
// reads (a bounded part of) the body and closes it.
type Fetcher func(ctx context.Context, account string) (*http.Response, error)

// Gen identifies the token a caller holds: when it is newer than the one a
// catalog was fetched under, the catalog is refreshed.
type Gen struct {
	Generation uint64
	Epoch      string
}

// StoreConfig configures a [Store]. Zero durations get the defaults shown.
type StoreConfig struct {
	// Fetch gets /models. Required.
	Fetch Fetcher
	// Refresh is the most a catalog may age before it is refreshed.
	// Default 10 min.
	Refresh time.Duration
	// RetryAfter is the pause after a failed fetch before the next one.
	// Default 30 s.
	RetryAfter time.Duration
	// FirstWait bounds how long [Store.Get] waits for an account's first
	// catalog. Default 3 s.
	FirstWait time.Duration
	// FetchTimeout bounds one fetch (wall-clock time: it is a network
	// call). Default 30 s.
	FetchTimeout time.Duration
	// Metrics receives the store's series; nil: none.
	Metrics *Metrics
	// Clock ages catalogs. Default real.
	Clock clock.Clock
	// Logger receives refresh failures. Default: discard.
	Logger *slog.Logger
}

// Store keeps one catalog per account. Get never waits for a refresh once
// an account has a catalog: a stale one is served while one fetch runs in
// the background. It is safe for concurrent use.
type Store struct {
	cfg      StoreConfig
	clk      clock.Clock
	log      *slog.Logger
	ctx      context.Context // ends at Close; background fetches use it
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	accounts sync.Map // string → *account
}

type account struct {
	name string
	cur  atomic.Pointer[held]
	mu   sync.Mutex
	// flight is the fetch running, nil when none; nextTry is the earliest
	// next fetch after a failure and lastErr that failure.
	flight  *flight
	nextTry time.Time
	lastErr error
}

type held struct {
	cat *Catalog
	gen Gen
}

type flight struct {
	done chan struct{}
	cat  *Catalog
	err  error
}

// ErrNoCatalog is wrapped by Get when an account has no catalog yet.
var ErrNoCatalog = errors.New("no model catalog")

// NewStore returns a store; Close stops its background fetches.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Fetch == nil {
		return nil, errors.New("catalog: a fetcher is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Refresh, 10*time.Minute)
	def(&cfg.RetryAfter, 30*time.Second)
	def(&cfg.FirstWait, 3*time.Second)
	def(&cfg.FetchTimeout, 30*time.Second)
	s := &Store{cfg: cfg, clk: clock.OrReal(cfg.Clock), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Metrics.addStore(s)
	return s, nil
}

// Close stops background fetches and waits for them.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
	s.cfg.Metrics.removeStore(s)
}

// Peek returns the account's catalog without fetching, or nil.
func (s *Store) Peek(name string) *Catalog {
	if v, ok := s.accounts.Load(name); ok {
		if h := v.(*account).cur.Load(); h != nil {
			return h.cat
		}
	}
	return nil
}

// Get returns the account's catalog. A catalog older than Refresh, or
// fetched under an older token than gen, is still returned while a
// background fetch replaces it. With no catalog yet, Get starts a fetch (or
// joins the one running) and waits for it up to FirstWait or ctx's end; it
// returns an error wrapping [ErrNoCatalog] when none comes, at once while a
// recent failure's pause lasts.
func (s *Store) Get(ctx context.Context, name string, gen Gen) (*Catalog, error) {
	a := s.account(name)
	now := s.clk.Now()
	if h := a.cur.Load(); h != nil {
		if newer(gen, h.gen) || now.Sub(h.cat.FetchedAt) >= s.cfg.Refresh {
			a.start(s, gen, now)
		}
		return h.cat, nil
	}
	f, err := a.start(s, gen, now)
	if f == nil {
		return nil, err
	}
	t := s.clk.NewTimer(s.cfg.FirstWait)
	defer t.Stop()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, fmt.Errorf("%w for account %q: %w", ErrNoCatalog, name, f.err)
		}
		return f.cat, nil
	case <-t.C():
		return nil, fmt.Errorf("%w for account %q yet: /models did not answer within %s", ErrNoCatalog, name, s.cfg.FirstWait)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w for account %q: %w", ErrNoCatalog, name, ctx.Err())
	}
}

// newer reports whether the token g is newer than the one of a catalog.
func newer(g, of Gen) bool {
	return g.Epoch != of.Epoch || g.Generation > of.Generation
}

func (s *Store) account(name string) *account {
	if v, ok := s.accounts.Load(name); ok {
		return v.(*account)
	}
	v, _ := s.accounts.LoadOrStore(name, &account{name: name})
	return v.(*account)
}

// start returns the running fetch or starts one; with neither (a failure's
// pause, or the store closed) it returns nil and why.
func (a *account) start(s *Store, gen Gen, now time.Time) (*flight, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flight != nil {
		return a.flight, nil
	}
	if now.Before(a.nextTry) {
		return nil, fmt.Errorf("%w for account %q: the last fetch failed (%w); next try in %s", ErrNoCatalog, a.name, a.lastErr, a.nextTry.Sub(now).Round(time.Second))
	}
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("%w for account %q: the store is closed", ErrNoCatalog, a.name)
	}
	f := &flight{done: make(chan struct{})}
	a.flight = f
	s.wg.Go(func() { s.refresh(a, f, gen) })
	return f, nil
}

func (s *Store) refresh(a *account, f *flight, gen Gen) {
	start := s.clk.Now()
	cat, err := s.fetch(a.name)
	if err == nil {
		if prev := a.cur.Load(); prev != nil {
			for _, m := range cat.Models {
				if old := prev.cat.Lookup(m.ID); old != nil {
					m.FirstSeen = old.FirstSeen
				}
			}
		}
		a.cur.Store(&held{cat: cat, gen: gen})
	}
	a.mu.Lock()
	a.flight = nil
	if err != nil {
		a.lastErr, a.nextTry = err, s.clk.Now().Add(s.cfg.RetryAfter)
	} else {
		a.lastErr, a.nextTry = nil, time.Time{}
	}
	a.mu.Unlock()
	// The outcome is recorded before the waiters are released, so what a
	// waiter (or a test) reads next includes this fetch.
	if err != nil {
		s.cfg.Metrics.refreshed(a.name, "error")
		level := slog.LevelWarn
		if s.ctx.Err() != nil {
			level = slog.LevelDebug // shutting down
		}
		s.log.Log(s.ctx, level, "model catalog fetch failed; serving the last one held",
			"account", a.name, "held", a.cur.Load() != nil, "retry_in", s.cfg.RetryAfter, "error", err)
	} else {
		s.cfg.Metrics.refreshed(a.name, "ok")
		s.cfg.Metrics.catalogSize(a.name, cat.Len())
		s.log.Debug("model catalog fetched", "account", a.name, "models", cat.Len(),
			"generation", gen.Generation, "took", s.clk.Now().Sub(start))
	}
	f.cat, f.err = cat, err
	close(f.done)
}

// fetch gets and parses /models.
func (s *Store) fetch(account string) (*Catalog, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.FetchTimeout)
	defer cancel()
	resp, err := s.cfg.Fetch(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("GET /models: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET /models: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /models: HTTP %d: %.200s", resp.StatusCode, body)
	}
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("GET /models: answer larger than %d bytes", MaxBodyBytes)
	}
	cat, err := Parse(body, s.clk.Now())
	if err != nil {
		return nil, fmt.Errorf("GET /models: %w", err)
	}
	return cat, nil
}

// accountsHeld calls fn for each account's catalog (metrics).
func (s *Store) accountsHeld(fn func(name string, cat *Catalog)) {
	s.accounts.Range(func(k, v any) bool {
		if h := v.(*account).cur.Load(); h != nil {
			fn(k.(string), h.cat)
		}
		return true
	})
}
