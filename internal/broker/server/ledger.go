package server

import (
	"context"
	"errors"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/store"
)

// pruneEvery is how often usage past its retention is deleted.
const pruneEvery = time.Hour

// openLedger registers the usage service over the state store, when there
// is one, on the gRPC server (which must not serve yet).
func (s *Server) openLedger(metrics *broker.Metrics) error {
	st := s.store
	if st == nil {
		return nil
	}
	book, err := broker.NewBudgetBook(broker.BudgetConfig{
		Store: st, MonthStartDay: s.cfg.BudgetMonthStartDay, Registerer: metrics.Registry(),
		Clock: s.cfg.Clock, Logger: s.cfg.Logger.With("component", "budgets"),
	})
	if err != nil {
		return err
	}
	u, err := broker.NewUsageService(broker.UsageConfig{
		Ledger: st, Budgets: book, KnownKey: knownKey(st), TouchKeys: st.TouchKeys, Registerer: metrics.Registry(),
		MaxStreamAge: s.cfg.MaxStreamAge,
		Clock:        s.cfg.Clock, Logger: s.cfg.Logger.With("component", "usage"),
	})
	if err != nil {
		return err
	}
	s.usage, s.budgets = u, book
	brokerv1.RegisterUsageServiceServer(s.grpc, u)
	return nil
}

// knownKey: a usage event's key must be a managed key (any state: a
// request answered before a revocation is still counted).
func knownKey(st store.Store) func(context.Context, string) (bool, error) {
	return func(ctx context.Context, name string) (bool, error) {
		_, err := st.Key(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
}

// pruneUsage deletes usage past its retention now and every pruneEvery
// until ctx ends.
func (s *Server) pruneUsage(ctx context.Context) {
	t := s.cfg.Clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		now := s.cfg.Clock.Now()
		ev, ro, err := s.store.PruneUsage(ctx, now.Add(-s.cfg.UsageRetention), now.Add(-s.cfg.UsageRollupRetention))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("pruning the usage ledger failed; retrying later", "error", err)
		case ev > 0 || ro > 0:
			s.log.Info("usage ledger pruned", "events", ev, "daily_rollups", ro,
				"retention", s.cfg.UsageRetention, "rollup_retention", s.cfg.UsageRollupRetention)
		}
		t.Reset(pruneEvery)
	}
}
