package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Budget kinds.
const (
	BudgetKey     = "key"
	BudgetAccount = "account"
)

// Budget is what a managed key (or an account) may use per month: premium
// units, tokens (input + output) and requests per minute; 0 is no limit.
// Accounts take only MonthlyPremium.
type Budget struct {
	Kind, Name     string
	MonthlyPremium float64
	MonthlyTokens  int64
	RPM            int64
	UpdatedAt      time.Time
}

// Spend is what a key or an account used since a time.
type Spend struct {
	PremiumUnits float64
	Tokens       int64
}

// Budgets holds the budgets and reads what was spent against them.
type Budgets interface {
	// SetBudget creates or replaces a budget; all zero deletes it.
	SetBudget(ctx context.Context, b Budget) error
	// AllBudgets returns every budget, by kind and name.
	AllBudgets(ctx context.Context) ([]Budget, error)
	// BudgetsVersion grows with every SetBudget on any broker sharing the
	// database.
	BudgetsVersion(ctx context.Context) (int64, error)
	// SpentSince sums the ledger from since (a UTC day) per key and per
	// account.
	SpentSince(ctx context.Context, since time.Time) (byKey, byAccount map[string]Spend, err error)
}

var budgetSchema = []string{
	`CREATE TABLE budgets (
		kind            TEXT NOT NULL,
		name            TEXT NOT NULL,
		monthly_premium DOUBLE PRECISION NOT NULL DEFAULT 0,
		monthly_tokens  BIGINT NOT NULL DEFAULT 0,
		rpm             BIGINT NOT NULL DEFAULT 0,
		updated_at      BIGINT NOT NULL,
		PRIMARY KEY (kind, name)
	)`,
	`INSERT INTO versions (topic, version) VALUES ('budgets', 0)`,
}

func (s *sqlStore) SetBudget(ctx context.Context, b Budget) error {
	return s.inTx(ctx, "set budget", func(tx *sql.Tx) error {
		var err error
		if b.MonthlyPremium == 0 && b.MonthlyTokens == 0 && b.RPM == 0 {
			_, err = tx.ExecContext(ctx, `DELETE FROM budgets WHERE kind = $1 AND name = $2`, b.Kind, b.Name)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO budgets (kind, name, monthly_premium, monthly_tokens, rpm, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (kind, name) DO UPDATE SET monthly_premium = excluded.monthly_premium, monthly_tokens = excluded.monthly_tokens,
					rpm = excluded.rpm, updated_at = excluded.updated_at`,
				b.Kind, b.Name, b.MonthlyPremium, b.MonthlyTokens, b.RPM, s.now().UnixMicro())
		}
		if err != nil {
			return err
		}
		return bumpVersion(ctx, tx, "budgets")
	})
}

func (s *sqlStore) AllBudgets(ctx context.Context) ([]Budget, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, name, monthly_premium, monthly_tokens, rpm, updated_at FROM budgets ORDER BY kind, name`)
	if err != nil {
		return nil, fmt.Errorf("store: budgets: %w", err)
	}
	defer rows.Close()
	var out []Budget
	for rows.Next() {
		var b Budget
		var at int64
		if err := rows.Scan(&b.Kind, &b.Name, &b.MonthlyPremium, &b.MonthlyTokens, &b.RPM, &at); err != nil {
			return nil, fmt.Errorf("store: budgets: %w", err)
		}
		b.UpdatedAt = fromMicros(at)
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *sqlStore) BudgetsVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM versions WHERE topic = 'budgets'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: budgets version: %w", err)
	}
	return v, nil
}

func (s *sqlStore) SpentSince(ctx context.Context, since time.Time) (map[string]Spend, map[string]Spend, error) {
	sum := func(col string) (map[string]Spend, error) {
		rows, err := s.db.QueryContext(ctx, `SELECT `+col+`, COALESCE(SUM(premium_units), 0), COALESCE(SUM(input_tokens + output_tokens), 0)
			FROM usage_daily WHERE day >= $1 GROUP BY `+col, floorDay(since.UnixMicro()))
		if err != nil {
			return nil, fmt.Errorf("store: spent: %w", err)
		}
		defer rows.Close()
		out := map[string]Spend{}
		for rows.Next() {
			var name string
			var sp Spend
			if err := rows.Scan(&name, &sp.PremiumUnits, &sp.Tokens); err != nil {
				return nil, fmt.Errorf("store: spent: %w", err)
			}
			out[name] = sp
		}
		return out, rows.Err()
	}
	byKey, err := sum("key_name")
	if err != nil {
		return nil, nil, err
	}
	byAccount, err := sum("account")
	return byKey, byAccount, err
}
