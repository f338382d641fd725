package brokerclient

import (
	"context"
	"log/slog"
	"time"
)

// watchLoop is one of the broker's watch streams (WatchToken,
// WatchAccounts, WatchKeys) and what [Client.follow] does between two of
// its streams.
type watchLoop struct {
	// what names the call in the retry log line.
	what string
	// watch runs one stream; got reports whether any message came.
	watch func(context.Context) (got bool, err error)
	// ended is called after each stream with its error (unless ctx has
	// ended); true stops following.
	ended func(err error) bool
	// retry, when set, is called before the wait for the next stream.
	retry func(got bool)
}

// follow runs l.watch (one stream) again and again until ctx ends or
// l.ended returns true: at once (with a little jitter, so replicas do not
// all reconnect in the same instant) after a stream that delivered
// messages (the broker ends streams on age), else after the client's
// jittered exponential backoff.
func (c *Client) follow(ctx context.Context, log *slog.Logger, l watchLoop) {
	attempt := 0
	for {
		got, err := l.watch(ctx)
		if ctx.Err() != nil || l.ended(err) {
			return
		}
		var delay time.Duration
		if got {
			attempt, delay = 0, jitter(c.minBack)
		} else {
			delay = c.backoff(attempt)
			attempt++
		}
		if l.retry != nil {
			l.retry(got)
		}
		if !got {
			log.Warn("broker "+l.what+" failed; retrying", "error", err, "retry_in", delay)
		}
		t := c.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}
