package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one schema step. Statements in common run on both engines;
// sqlite and postgres hold the ones that differ. Versions start at 1 and
// grow by one; a migration, once released, never changes: a later change is
// a new migration appended to [migrations].
type migration struct {
	version          int
	name             string
	common           []string
	sqlite, postgres []string
}

// migrations is the schema's history. Times are BIGINT unix microseconds
// (0 = unset), so both engines read and write them alike.
var migrations = []migration{
	{
		version: 1,
		name:    "managed keys",
		common: []string{
			`CREATE TABLE keys (
				name         TEXT PRIMARY KEY,
				digest       TEXT NOT NULL UNIQUE,
				accounts     TEXT NOT NULL DEFAULT '',
				models       TEXT NOT NULL DEFAULT '',
				expires_at   BIGINT NOT NULL DEFAULT 0,
				state        TEXT NOT NULL DEFAULT 'active',
				created_at   BIGINT NOT NULL,
				updated_at   BIGINT NOT NULL,
				last_used_at BIGINT NOT NULL DEFAULT 0,
				created_by   TEXT NOT NULL DEFAULT ''
			)`,
			// versions holds one change counter per topic; watchers on every
			// broker poll it (see Store.KeysVersion).
			`CREATE TABLE versions (
				topic   TEXT PRIMARY KEY,
				version BIGINT NOT NULL
			)`,
			`INSERT INTO versions (topic, version) VALUES ('keys', 0)`,
		},
	},
	{
		version: 2,
		name:    "usage ledger",
		common:  usageSchema,
	},
	{
		version: 3,
		name:    "budgets",
		common:  budgetSchema,
	},
}

// SchemaVersion is the newest schema this binary knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate brings the database to [SchemaVersion] in one transaction, or
// refuses a newer one. Concurrent brokers starting on one PostgreSQL
// database serialise on an advisory lock; SQLite's write lock (transactions
// begin IMMEDIATE) does the same.
func (s *sqlStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer tx.Rollback()
	if s.engine == enginePostgres {
		// The key is arbitrary but fixed: "copilot-broker migrate".
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7461083265)`); err != nil {
			return fmt.Errorf("store: migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("store: migrate: read version: %w", err)
	}
	if current > SchemaVersion() {
		return fmt.Errorf("%w: database at version %d, this binary knows up to %d; run a newer broker", ErrSchemaTooNew, current, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		stmts := append([]string(nil), m.common...)
		if s.engine == enginePostgres {
			stmts = append(stmts, m.postgres...)
		} else {
			stmts = append(stmts, m.sqlite...)
		}
		for _, q := range stmts {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("store: migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.version, m.name, s.now().UnixMicro()); err != nil {
			return fmt.Errorf("store: migration %d: record: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migrate: commit: %w", err)
	}
	return nil
}

// schemaVersion reads the applied version (tests).
func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}
