package quota

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Defaults of [PollerConfig].
const (
	DefaultInterval        = 5 * time.Minute
	DefaultJitter          = 0.1
	DefaultBackoffInitial  = 15 * time.Second
	DefaultMinPokeInterval = 10 * time.Second
	DefaultTimeout         = 30 * time.Second
)

// FetchFunc makes one reading; [*Fetcher.Fetch] is one.
type FetchFunc func(ctx context.Context, githubToken secret.Secret) (Reading, error)

// PollerConfig configures a [Poller]. Zero values take the defaults.
type PollerConfig struct {
	// Fetch makes one reading. Required.
	Fetch FetchFunc
	// Token returns the account's current GitHub token. Required.
	Token func() secret.Secret
	// Interval is the mean time between readings (default
	// [DefaultInterval]), jittered by ± Jitter of itself (default
	// [DefaultJitter]; negative means none).
	Interval time.Duration
	Jitter   float64
	// BackoffInitial is the first delay after a failed reading, doubling up
	// to Interval (default [DefaultBackoffInitial]).
	BackoffInitial time.Duration
	// MinPokeInterval is the floor between a reading and one asked for by
	// [Poller.Poke] (default [DefaultMinPokeInterval]).
	MinPokeInterval time.Duration
	// Timeout bounds one reading (default [DefaultTimeout]).
	Timeout time.Duration
	// Clock times the readings (nil: the real clock); Rand returns uniform
	// numbers in [0, 1) (nil: math/rand/v2).
	Clock clock.Clock
	Rand  func() float64
	// Logger receives failed readings (nil discards).
	Logger *slog.Logger
}

// Poller keeps one account's quota reading current. Start it with
// [Poller.Run]; read it with [Poller.Current] or [Poller.Subscribe]. It is
// safe for concurrent use.
type Poller struct {
	cfg  PollerConfig
	poke chan struct{}

	mu     sync.Mutex
	cur    Reading
	subs   map[chan Reading]struct{}
	closed bool
}

// NewPoller returns a Poller for cfg; it reads nothing until Run.
func NewPoller(cfg PollerConfig) (*Poller, error) {
	if cfg.Fetch == nil || cfg.Token == nil {
		return nil, errors.New("quota: PollerConfig needs Fetch and Token")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = DefaultJitter
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	}
	if cfg.BackoffInitial <= 0 {
		cfg.BackoffInitial = DefaultBackoffInitial
	}
	if cfg.MinPokeInterval <= 0 {
		cfg.MinPokeInterval = DefaultMinPokeInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Poller{cfg: cfg, poke: make(chan struct{}, 1), subs: map[chan Reading]struct{}{}}, nil
}

// Current returns the latest reading (zero before the first attempt).
func (p *Poller) Current() Reading {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Subscribe delivers the current reading at once and then every change of
// its figures or error (a new FetchedAt alone is not a change), latest-wins, through a one-slot channel closed by cancel or when Run
// returns.
func (p *Poller) Subscribe() (updates <-chan Reading, cancel func()) {
	ch := make(chan Reading, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		close(ch)
		return ch, func() {}
	}
	ch <- p.cur
	p.subs[ch] = struct{}{}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if _, ok := p.subs[ch]; ok {
				delete(p.subs, ch)
				close(ch)
			}
		})
	}
}

// Poke asks for a reading now (after an upstream 402), no sooner than
// MinPokeInterval after the last one. It never blocks; pokes coalesce.
func (p *Poller) Poke() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

func (p *Poller) publish(r Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	same := r.SameFigures(p.cur)
	p.cur = r
	if same {
		return
	}
	for ch := range p.subs {
		select {
		case <-ch:
		default:
		}
		ch <- r
	}
}

// Run reads at once, then every Interval (jittered), after failures with
// backoff doubling from BackoffInitial up to Interval, and on Poke, until ctx
// ends; then it closes the subscriptions.
func (p *Poller) Run(ctx context.Context) {
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closed = true
		for ch := range p.subs {
			close(ch)
			delete(p.subs, ch)
		}
	}()
	c := p.cfg
	failures := 0
	timer := c.Clock.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-p.poke:
			if wait := last.Add(c.MinPokeInterval).Sub(c.Clock.Now()); wait > 0 {
				timer.Reset(wait)
				continue
			}
		}
		last = c.Clock.Now()
		if err := p.readOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			timer.Reset(p.backoff(failures))
			continue
		}
		failures = 0
		timer.Reset(p.jittered(c.Interval))
	}
}

func (p *Poller) readOnce(ctx context.Context) error {
	c := p.cfg
	fctx, cancel := context.WithTimeout(ctx, c.Timeout)
	r, err := c.Fetch(fctx, c.Token())
	cancel()
	if err != nil {
		prev := p.Current()
		prev.LastError = err.Error()
		if ctx.Err() == nil {
			p.publish(prev)
			c.Logger.Warn("quota reading failed", "error", err)
		}
		return err
	}
	r.FetchedAt = c.Clock.Now()
	p.publish(r)
	return nil
}

func (p *Poller) jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + p.cfg.Jitter*(2*p.cfg.Rand()-1)))
}

func (p *Poller) backoff(failures int) time.Duration {
	d := p.cfg.BackoffInitial
	for i := 1; i < failures && d < p.cfg.Interval; i++ {
		d *= 2
	}
	return p.jittered(min(d, p.cfg.Interval))
}
