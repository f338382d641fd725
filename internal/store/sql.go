package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

type engine int

const (
	engineSQLite engine = iota
	enginePostgres
)

// sqlStore is [Store] over database/sql. Both engines take the same SQL
// ($N placeholders, TEXT and BIGINT columns); only row locking differs.
type sqlStore struct {
	db     *sql.DB
	engine engine
	now    func() time.Time
}

func openSQLite(ctx context.Context, path string, cfg Config) (Store, error) {
	// WAL lets readers run beside the writer; the busy timeout makes a
	// writer wait for another instead of failing; IMMEDIATE transactions take
	// the write lock at BEGIN, so two read-then-write transactions never
	// deadlock on the upgrade. synchronous(FULL): a key change survives a
	// power cut, not only a crash.
	dsn := "file:" + path + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	// A connection's first statements switch the file to WAL; several
	// brokers (or a broker and `broker keys` at once) opening one file can
	// get SQLITE_BUSY there without SQLite's busy handler being asked, so the
	// first connection is retried for as long as the busy timeout.
	if err := pingWhileBusy(ctx, db, 10*time.Second); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect sqlite %s: %w", path, err)
	}
	return start(ctx, &sqlStore{db: db, engine: engineSQLite, now: cfg.Now}, "sqlite "+path)
}

// pingWhileBusy pings db until it answers, retrying SQLITE_BUSY with a
// short growing pause for at most wait.
func pingWhileBusy(ctx context.Context, db *sql.DB, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	pause := 5 * time.Millisecond
	for {
		err := db.PingContext(ctx)
		if !isBusy(err) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// isBusy: SQLite refused for a lock another connection holds.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

func openPostgres(ctx context.Context, cfg Config) (Store, error) {
	db, err := sql.Open("pgx", cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return start(ctx, &sqlStore{db: db, engine: enginePostgres, now: cfg.Now}, "postgres")
}

func start(ctx context.Context, s *sqlStore, what string) (Store, error) {
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connect %s: %w", what, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

func (s *sqlStore) Close() error { return s.db.Close() }

const keyColumns = `name, digest, accounts, models, expires_at, state, created_at, updated_at, last_used_at, created_by`

type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner) (Key, error) {
	var (
		k                                   Key
		digest, models, state               string
		expires, created, updated, lastUsed int64
	)
	if err := row.Scan(&k.Name, &digest, &k.Accounts, &models, &expires, &state, &created, &updated, &lastUsed, &k.CreatedBy); err != nil {
		return Key{}, err
	}
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != len(k.Digest) {
		return Key{}, fmt.Errorf("store: key %q: bad digest in database", k.Name)
	}
	copy(k.Digest[:], b)
	if models != "" {
		k.Models = strings.Split(models, ",")
	}
	k.State = State(state)
	k.ExpiresAt, k.CreatedAt, k.UpdatedAt, k.LastUsedAt = fromMicros(expires), fromMicros(created), fromMicros(updated), fromMicros(lastUsed)
	return k, nil
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func toMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func (s *sqlStore) CreateKey(ctx context.Context, k Key) error {
	if k.State == "" {
		k.State = StateActive
	}
	now := s.now()
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now
	}
	k.UpdatedAt = now
	return s.inTx(ctx, "create key", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO keys (`+keyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			k.Name, hex.EncodeToString(k.Digest[:]), k.Accounts, strings.Join(k.Models, ","), toMicros(k.ExpiresAt),
			string(k.State), toMicros(k.CreatedAt), toMicros(k.UpdatedAt), toMicros(k.LastUsedAt), k.CreatedBy)
		if isUniqueViolation(err) {
			return fmt.Errorf("key %q: %w (the name or the secret is taken)", k.Name, ErrExists)
		}
		if err != nil {
			return err
		}
		return bumpVersion(ctx, tx, "keys")
	})
}

func (s *sqlStore) Key(ctx context.Context, name string) (Key, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("key %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("store: read key: %w", err)
	}
	return k, nil
}

func (s *sqlStore) Keys(ctx context.Context) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list keys: %w", err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list keys: %w", err)
	}
	return out, nil
}

func (s *sqlStore) UpdateKey(ctx context.Context, name string, update func(*Key) error) (Key, error) {
	lock := ""
	if s.engine == enginePostgres {
		lock = " FOR UPDATE"
	}
	var out Key
	err := s.inTx(ctx, "update key", func(tx *sql.Tx) error {
		k, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE name = $1`+lock, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("key %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		orig := k
		if err := update(&k); err != nil {
			return err
		}
		k.Name, k.Digest, k.CreatedAt, k.CreatedBy = orig.Name, orig.Digest, orig.CreatedAt, orig.CreatedBy
		k.UpdatedAt = s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE keys SET accounts = $2, models = $3, expires_at = $4, state = $5, updated_at = $6, last_used_at = $7 WHERE name = $1`,
			name, k.Accounts, strings.Join(k.Models, ","), toMicros(k.ExpiresAt), string(k.State), toMicros(k.UpdatedAt), toMicros(k.LastUsedAt)); err != nil {
			return err
		}
		out = k
		return bumpVersion(ctx, tx, "keys")
	})
	return out, err
}

func (s *sqlStore) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	return s.inTx(ctx, "touch keys", func(tx *sql.Tx) error {
		for name, t := range used {
			if _, err := tx.ExecContext(ctx, `UPDATE keys SET last_used_at = $2 WHERE name = $1 AND last_used_at < $2`, name, toMicros(t)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *sqlStore) KeysVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM versions WHERE topic = 'keys'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: keys version: %w", err)
	}
	return v, nil
}

func bumpVersion(ctx context.Context, tx *sql.Tx, topic string) error {
	_, err := tx.ExecContext(ctx, `UPDATE versions SET version = version + 1 WHERE topic = $1`, topic)
	return err
}

// inTx runs f in a transaction, committed when f returns nil; errors are
// wrapped with what (errors.Is still finds ErrNotFound, ErrExists and the
// caller's own).
func (s *sqlStore) inTx(ctx context.Context, what string, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("store: %s: %w", what, ErrExists)
		}
		return fmt.Errorf("store: %s: commit: %w", what, err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
