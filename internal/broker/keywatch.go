package broker

import (
	"context"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// How a key change reaches every watcher, on every broker: each change bumps
// a version counter in the store, in the change's own transaction. Every
// broker reads that counter every PollInterval (250 ms: one indexed
// single-row read) and, before answering, after a change it made itself; when the
// counter moved it reads the whole key set, builds the WatchKeysResponse
// once, and wakes its watchers, who all send that one message. A poll of a
// version counter was chosen over PostgreSQL's LISTEN/NOTIFY: it works the
// same on SQLite, survives dropped connections without a resubscription
// protocol, and costs four tiny queries a second per broker.

// keySnapshot is one key set as sent to watchers; changed is closed when a
// newer one replaces it.
type keySnapshot struct {
	version int64
	resp    *brokerv1.WatchKeysResponse
	changed chan struct{}
}

type snapshotHolder struct{ p atomic.Pointer[keySnapshot] }

func (h *snapshotHolder) load() *keySnapshot { return h.p.Load() }

// changed publishes a change this broker made before its RPC answers: once
// CreateKey, UpdateKey or RevokeKey has answered, every watcher (and any
// WatchKeys that starts later) has the new set. If reading the store fails
// (the change is committed all the same), the follower is asked to read it
// now instead.
func (s *KeyService) changed(ctx context.Context) {
	if err := s.reload(context.WithoutCancel(ctx)); err == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// follow polls the store's keys version until ctx ends.
func (s *KeyService) follow(ctx context.Context) {
	defer close(s.done)
	failing := false
	for {
		timer := s.clock.NewTimer(s.poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.kick:
		case <-timer.C():
		}
		timer.Stop()
		err := s.reload(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Warn("key store unreachable: watchers keep the last key set", "error", err)
			failing = true
		case err == nil && failing:
			s.log.Info("key store reachable again")
			failing = false
		}
	}
}

// reload reads the key set when the store's version differs from the
// snapshot's. Reloads run one at a time (the follower's and those after a
// change made here), so a snapshot never replaces a newer one.
func (s *KeyService) reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	have := int64(-1)
	if snap := s.snap.load(); snap != nil {
		have = snap.version
	}
	v, err := s.store.KeysVersion(ctx)
	if err != nil {
		return err
	}
	if v == have {
		return nil
	}
	all, err := s.store.Keys(ctx)
	if err != nil {
		return err
	}
	resp := &brokerv1.WatchKeysResponse{Version: v, Keys: make([]*brokerv1.Key, 0, len(all))}
	for _, k := range all {
		if k.State != store.StateRevoked {
			resp.Keys = append(resp.Keys, keyProto(k))
		}
	}
	next := &keySnapshot{version: v, resp: resp, changed: make(chan struct{})}
	if old := s.snap.p.Swap(next); old != nil {
		close(old.changed)
	}
	return nil
}

// WatchKeys sends the key set at once and after every change, until the
// client goes away, the stream reaches its jittered maximum age or the
// service drains (these end with OK). A slow stream skips to the newest set.
func (s *KeyService) WatchKeys(_ *brokerv1.WatchKeysRequest, stream brokerv1.KeyService_WatchKeysServer) error {
	select {
	case <-s.draining:
		return nil
	default:
	}
	ctx := stream.Context()
	s.metrics.keyWatcherAdded()
	defer s.metrics.keyWatcherRemoved()
	timer := s.clock.NewTimer(jitteredAge(s.maxAge, s.jitter, s.rand))
	defer timer.Stop()
	s.log.Debug("key watch started", "key", KeyName(ctx))
	for {
		snap := s.snap.load()
		if err := stream.Send(snap.resp); err != nil {
			return err
		}
		select {
		case <-snap.changed:
		case <-timer.C():
			return nil
		case <-s.draining:
			return nil
		case <-s.done:
			return status.Error(codes.Unavailable, "broker stopping")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
