// Package clientkeys is the proxy's client key set when keys are managed at
// the broker: the set the broker streams (WatchKeys, followed by
// brokerclient.KeyWatcher) beside the keys file, if any. It implements
// forward.KeySet.
//
// Authentication costs the same for one key or 10,000: the presented
// secret's SHA-256 is looked up in a map. (A map lookup by digest leaks, by
// timing, at most something about the digest of a wrong guess, which says
// nothing about any real secret.) File keys keep their constant-time scan,
// and win over a managed key of the same name, which [Set.Update] refuses
// with a log line; at start the proxy refuses such a clash outright.
package clientkeys

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// DefaultMaxStale is how long managed keys keep working while the broker is
// away.
const DefaultMaxStale = 10 * time.Minute

// Managed is one key as the broker sends it: its digest and policy, never
// its secret.
type Managed struct {
	Name   string
	Digest [sha256.Size]byte
	// Target is the key's account or pool; nil means the proxy's default
	// account.
	Target    *forward.Target
	Models    keys.Models
	ExpiresAt time.Time // zero: never
	Disabled  bool
}

// Config configures a [Set].
type Config struct {
	// File holds the keys file's keys (nil: none).
	File *keys.Set
	// MaxStale bounds how long managed keys are accepted after the broker
	// went away (default [DefaultMaxStale]).
	MaxStale time.Duration
	// Clock decides expiry and staleness (nil: real).
	Clock clock.Clock
	// Logger receives refused updates (nil: discard).
	Logger *slog.Logger
}

// Set is a forward.KeySet over a keys file and the broker's managed keys.
// Authenticate is lock-free (one atomic load, one hash, one map lookup);
// Update and Disconnected may run concurrently with it.
type Set struct {
	file     *keys.Set
	fileName map[string]bool
	maxStale time.Duration
	clock    clock.Clock
	log      *slog.Logger

	snap     atomic.Pointer[snapshot]
	received chan struct{} // closed by the first Update
	once     sync.Once
	// downSince is when the broker watch broke (unix nanoseconds); 0 while
	// it delivers.
	downSince atomic.Int64
}

type snapshot struct {
	byDigest map[[sha256.Size]byte]*entry
	names    []string
	clashes  []string // managed names left out: a file key has them
}

type entry struct {
	key       forward.ClientKey
	expiresAt time.Time
	disabled  bool
}

// New returns a Set holding cfg.File's keys and no managed key yet.
func New(cfg Config) *Set {
	s := &Set{file: cfg.File, fileName: map[string]bool{}, maxStale: cfg.MaxStale, clock: clock.OrReal(cfg.Clock), log: cfg.Logger,
		received: make(chan struct{})}
	if s.maxStale <= 0 {
		s.maxStale = DefaultMaxStale
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, k := range cfg.File.Keys() {
		s.fileName[k.Name] = true
	}
	return s
}

// Update replaces the managed keys with the broker's whole set and marks the
// broker reachable. A managed key named like a file key is left out.
func (s *Set) Update(managed []Managed) {
	snap := &snapshot{byDigest: make(map[[sha256.Size]byte]*entry, len(managed)), names: make([]string, 0, len(managed))}
	for i := range managed {
		m := &managed[i]
		if s.fileName[m.Name] {
			s.log.Error("a key managed at the broker has the name of a keys-file key; the file's key wins and the managed one is refused", "key", m.Name)
			snap.clashes = append(snap.clashes, m.Name)
			continue
		}
		snap.byDigest[m.Digest] = &entry{
			key:       forward.ClientKey{Name: m.Name, Target: m.Target, Models: m.Models},
			expiresAt: m.ExpiresAt, disabled: m.Disabled,
		}
		snap.names = append(snap.names, m.Name)
	}
	s.snap.Store(snap)
	s.downSince.Store(0)
	s.once.Do(func() { close(s.received) })
}

// Wait returns once a managed key set arrived, or ctx's error.
func (s *Set) Wait(ctx context.Context) error {
	select {
	case <-s.received:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Clashes returns the names of the last managed set that a keys-file key
// also has (those managed keys are refused).
func (s *Set) Clashes() []string {
	if snap := s.snap.Load(); snap != nil {
		return append([]string(nil), snap.clashes...)
	}
	return nil
}

// Disconnected notes that the broker watch broke: managed keys are refused
// once it has been away longer than MaxStale. Only the first call of an
// outage counts.
func (s *Set) Disconnected() {
	s.downSince.CompareAndSwap(0, s.clock.Now().UnixNano())
}

// Received reports whether a managed key set arrived yet.
func (s *Set) Received() bool { return s.snap.Load() != nil }

// Names returns the managed keys' names (for the start-up clash check).
func (s *Set) Names() []string {
	if snap := s.snap.Load(); snap != nil {
		return append([]string(nil), snap.names...)
	}
	return nil
}

// Len returns the number of managed keys held.
func (s *Set) Len() int {
	if snap := s.snap.Load(); snap != nil {
		return len(snap.names)
	}
	return 0
}

// Authenticate finds the presented key among the file keys, then the
// managed ones.
func (s *Set) Authenticate(presented secret.Secret) (forward.ClientKey, error) {
	if presented.IsZero() {
		return forward.ClientKey{}, forward.ErrUnknownKey
	}
	if s.file != nil {
		if name, ok := s.file.Lookup(presented); ok {
			return forward.ClientKey{Name: name}, nil
		}
	}
	snap := s.snap.Load()
	if snap == nil {
		return forward.ClientKey{}, &forward.KeyError{Status: http.StatusServiceUnavailable,
			Message: "this proxy has not yet received its key set from the broker (--keys-from-broker); retry shortly"}
	}
	e := snap.byDigest[sha256.Sum256([]byte(presented.Reveal()))]
	if e == nil {
		return forward.ClientKey{}, forward.ErrUnknownKey
	}
	now := s.clock.Now()
	if down := s.downSince.Load(); down != 0 {
		if since := time.Unix(0, down); now.Sub(since) > s.maxStale {
			return forward.ClientKey{}, &forward.KeyError{Status: http.StatusServiceUnavailable,
				Message: fmt.Sprintf("API keys managed at the broker cannot be checked: the broker has been unreachable since %s, longer than this proxy's --keys-max-stale (%s)", since.UTC().Format(time.RFC3339), s.maxStale)}
		}
	}
	switch {
	case e.disabled:
		return forward.ClientKey{}, &forward.KeyError{Status: http.StatusUnauthorized, Message: "API key " + e.key.Name + " is disabled; ask your team's admin"}
	case !e.expiresAt.IsZero() && !now.Before(e.expiresAt):
		return forward.ClientKey{}, &forward.KeyError{Status: http.StatusUnauthorized, Message: "API key " + e.key.Name + " expired at " + e.expiresAt.UTC().Format(time.RFC3339) + "; ask your team's admin"}
	}
	return e.key, nil
}
