// Package filepoll is the timer loop of the file watchers (the GitHub
// token file and the accounts directory of the broker, the upstream
// profile, the proxy's model alias file): each reads its file every
// interval, and at once on a reload (SIGHUP), and decides for itself what
// changed. Polling, rather than file system events, follows Kubernetes'
// symlink swaps and sees a rewrite of the same length within the file
// system's timestamp granularity.
package filepoll

import (
	"context"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

// Poller calls a check function every interval and on each [Poller.Reload].
// Reload may be called from any goroutine; Run from one.
type Poller struct {
	clock    clock.Clock
	interval time.Duration
	reload   chan struct{}
}

// New returns a Poller of the given interval (which must be positive)
// timed by clk (nil: the real clock).
func New(clk clock.Clock, interval time.Duration) *Poller {
	return &Poller{clock: clock.OrReal(clk), interval: interval, reload: make(chan struct{}, 1)}
}

// Reload asks Run to check now, forced. It never blocks: reloads asked
// for while one is pending are one.
func (p *Poller) Reload() {
	select {
	case p.reload <- struct{}{}:
	default:
	}
}

// Run calls check(false) every interval and check(true) on each Reload,
// until ctx ends. The interval starts again after each timed check; a
// reload does not move it.
func (p *Poller) Run(ctx context.Context, check func(forced bool)) {
	t := p.clock.NewTimer(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			check(false)
			t.Reset(p.interval)
		case <-p.reload:
			check(true)
		}
	}
}
