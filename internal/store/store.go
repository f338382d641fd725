// Package store is the broker's state: managed client keys today, usage and
// budgets later. One small interface, [Store], has two engines behind it:
// SQLite (embedded, pure Go, one file in the broker's state directory) and
// PostgreSQL (shared by several broker replicas). Both run the same SQL, and
// the same versioned migrations at [Open]; a database whose schema is newer
// than this binary knows is refused ([ErrSchemaTooNew]).
package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound: no key has that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a key with that name, or that secret, exists already.
	ErrExists = errors.New("already exists")
	// ErrSchemaTooNew: the database was migrated by a newer binary.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this binary knows")
)

// Digest is the SHA-256 of a key's secret; the store never holds the secret.
// Secrets are at least 128 random bits (or, imported from a keys file, at
// least 16 bytes), so a plain hash is enough: there is nothing to guess.
type Digest [sha256.Size]byte

// DigestOf returns the digest of a secret.
func DigestOf(secret string) Digest { return sha256.Sum256([]byte(secret)) }

// State is a key's lifecycle state.
type State string

// States of a key. Disabled keys can be enabled again; revoked is final.
const (
	StateActive   State = "active"
	StateDisabled State = "disabled"
	StateRevoked  State = "revoked"
)

// Key is one managed client key: who it is, what it may do, never its
// secret. Policy fields added later (budgets, rate limits) go beside Models
// and get columns by a migration.
type Key struct {
	Name   string
	Digest Digest
	// Accounts is the keys file's third field: "" (the proxy's default
	// account), "*" (every account) or "a,b,c" (one account or a pool).
	Accounts string
	// Models are globs over resolved model ids; none means every model.
	Models []string
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time
	State     State
	CreatedAt time.Time
	UpdatedAt time.Time
	// LastUsedAt is the last use reported by a proxy; zero means never.
	LastUsedAt time.Time
	// CreatedBy names the admin key that created it.
	CreatedBy string
}

// Store is the broker's state. Implementations are safe for concurrent use
// by several goroutines and, with PostgreSQL, several broker processes.
type Store interface {
	// CreateKey adds k; ErrExists when its name or digest is taken.
	CreateKey(ctx context.Context, k Key) error
	// Key returns the key named name, or ErrNotFound.
	Key(ctx context.Context, name string) (Key, error)
	// Keys returns every key, revoked ones included, ordered by name.
	Keys(ctx context.Context) ([]Key, error)
	// UpdateKey changes the key named name in one transaction: update gets
	// the stored key and changes it in place; its error aborts. Name and
	// digest cannot change.
	UpdateKey(ctx context.Context, name string, update func(*Key) error) (Key, error)
	// TouchKeys records when keys were last used (only ever moving forward).
	TouchKeys(ctx context.Context, used map[string]time.Time) error
	// KeysVersion grows with every change to the keys (not with TouchKeys),
	// on any broker sharing the database: watchers poll it.
	KeysVersion(ctx context.Context) (int64, error)
	// Ledger is the usage ledger (usage.go).
	Ledger
	// Budgets are the keys' and accounts' budgets (budget.go).
	Budgets
	// Close releases the database.
	Close() error
}

// Config chooses and configures the engine.
type Config struct {
	// DatabaseURL, when set (postgres://...), selects PostgreSQL.
	DatabaseURL string
	// StateDir holds the SQLite file (state.db) when DatabaseURL is empty;
	// created with mode 0700 if missing (required then; see
	// [DefaultStateDir]).
	StateDir string
	// Now is the clock for created/updated times (nil: time.Now).
	Now func() time.Time
}

// SQLiteFile is the database file's name inside the state directory.
const SQLiteFile = "state.db"

// DefaultStateDir is $XDG_STATE_HOME/copilot-broker, else
// $HOME/.local/state/copilot-broker; false when neither is set.
func DefaultStateDir(getenv func(string) string) (string, bool) {
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "copilot-broker"), true
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".local", "state", "copilot-broker"), true
	}
	return "", false
}

// Open opens (creating if needed) and migrates the configured database.
func Open(ctx context.Context, cfg Config) (Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DatabaseURL != "" {
		if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
			return nil, errors.New("store: --database-url must start with postgres:// or postgresql://")
		}
		return openPostgres(ctx, cfg)
	}
	dir := cfg.StateDir
	if dir == "" {
		return nil, errors.New("store: no state directory and no database URL")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: state directory: %w", err)
	}
	return openSQLite(ctx, filepath.Join(dir, SQLiteFile), cfg)
}
