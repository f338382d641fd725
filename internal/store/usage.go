package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// UsageEvent is one answered request as a proxy reported it: who, what and
// how much, never any content.
type UsageEvent struct {
	// ID is unique per event; storing an ID again stores nothing.
	ID        string
	Time      time.Time
	RequestID string
	Key       string
	Account   string
	Model     string
	Dialect   string
	Endpoint  string
	Status    int
	// Input counts every prompt token (cached included), Output the
	// answer's, Cached the prompt tokens read from cache.
	Input, Output, Cached int64
	Premium               bool
	PremiumUnits          float64
	Latency, TTFB         time.Duration
	ProxyID               string
}

// Groups a usage query may group by.
const (
	GroupKey     = "key"
	GroupAccount = "account"
	GroupModel   = "model"
	GroupDay     = "day"
)

// UsageQuery selects ledger events: From inclusive, To exclusive, grouped by
// any of the Group* names (none: one row of totals), filtered by the
// non-empty ones of Key, Account and Model.
type UsageQuery struct {
	From, To            time.Time
	GroupBy             []string
	Key, Account, Model string
}

// UsageRow is one group's fields (those grouped by) and its sums.
type UsageRow struct {
	Key, Account, Model string
	Day                 time.Time // zero unless grouped by day
	Requests            int64
	PremiumRequests     int64
	PremiumUnits        float64
	Input, Output       int64
	Cached              int64
}

// Ledger is the usage ledger: events kept for the event retention, their
// daily sums (rollups, by key, account and model) for longer.
type Ledger interface {
	// AddUsage stores the events whose IDs are new, with their rollups, in
	// one transaction, and returns how many it stored; the rest were
	// stored before.
	AddUsage(ctx context.Context, events []UsageEvent) (stored int, err error)
	// QueryUsage sums events. A range on whole UTC days is answered from
	// the rollups (so it reaches back past the event retention); any other
	// from the events.
	QueryUsage(ctx context.Context, q UsageQuery) ([]UsageRow, error)
	// PruneUsage deletes the events before eventsBefore and the rollups of
	// days before rollupsBefore.
	PruneUsage(ctx context.Context, eventsBefore, rollupsBefore time.Time) (events, rollups int64, err error)
}

// ErrBadQuery: a query's group is not one of the Group* names.
var ErrBadQuery = errors.New("bad usage query")

var usageSchema = []string{
	// Times are unix microseconds; premium is 0 or 1.
	`CREATE TABLE usage_events (
		id            TEXT PRIMARY KEY,
		at            BIGINT NOT NULL,
		request_id    TEXT NOT NULL DEFAULT '',
		key_name      TEXT NOT NULL,
		account       TEXT NOT NULL DEFAULT '',
		model         TEXT NOT NULL DEFAULT '',
		dialect       TEXT NOT NULL DEFAULT '',
		endpoint      TEXT NOT NULL DEFAULT '',
		status        INTEGER NOT NULL,
		input_tokens  BIGINT NOT NULL DEFAULT 0,
		output_tokens BIGINT NOT NULL DEFAULT 0,
		cached_tokens BIGINT NOT NULL DEFAULT 0,
		premium       INTEGER NOT NULL DEFAULT 0,
		premium_units DOUBLE PRECISION NOT NULL DEFAULT 0,
		latency_us    BIGINT NOT NULL DEFAULT 0,
		ttfb_us       BIGINT NOT NULL DEFAULT 0,
		proxy_id      TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX usage_events_at ON usage_events (at)`,
	// day is the unix microseconds of the day's 00:00 UTC.
	`CREATE TABLE usage_daily (
		day              BIGINT NOT NULL,
		key_name         TEXT NOT NULL,
		account          TEXT NOT NULL,
		model            TEXT NOT NULL,
		requests         BIGINT NOT NULL,
		premium_requests BIGINT NOT NULL,
		premium_units    DOUBLE PRECISION NOT NULL,
		input_tokens     BIGINT NOT NULL,
		output_tokens    BIGINT NOT NULL,
		cached_tokens    BIGINT NOT NULL,
		PRIMARY KEY (day, key_name, account, model)
	)`,
}

const (
	usageColumns = `id, at, request_id, key_name, account, model, dialect, endpoint, status, input_tokens, output_tokens, cached_tokens, premium, premium_units, latency_us, ttfb_us, proxy_id`
	usageNCols   = 17
	// usageChunk bounds the rows of one INSERT (SQLite takes 32,766
	// parameters at most).
	usageChunk = 500
	dayMicros  = int64(24 * time.Hour / time.Microsecond)
)

func (s *sqlStore) AddUsage(ctx context.Context, events []UsageEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	byID := make(map[string]*UsageEvent, len(events))
	for i := range events {
		byID[events[i].ID] = &events[i]
	}
	stored := 0
	err := s.inTx(ctx, "add usage", func(tx *sql.Tx) error {
		type dayKey struct {
			day                 int64
			key, account, model string
		}
		sums := map[dayKey]*UsageRow{}
		var order []dayKey
		for start := 0; start < len(events); start += usageChunk {
			chunk := events[start:min(start+usageChunk, len(events))]
			ids, err := insertUsage(ctx, tx, chunk, s.engine == enginePostgres)
			if err != nil {
				return err
			}
			for _, id := range ids {
				e := byID[id]
				if e == nil {
					continue
				}
				delete(byID, id) // an ID twice in one call counts once
				stored++
				dk := dayKey{floorDay(e.Time.UnixMicro()), e.Key, e.Account, e.Model}
				r := sums[dk]
				if r == nil {
					r = &UsageRow{}
					sums[dk] = r
					order = append(order, dk)
				}
				r.add(e)
			}
		}
		for _, dk := range order {
			r := sums[dk]
			if _, err := tx.ExecContext(ctx, `INSERT INTO usage_daily (day, key_name, account, model, requests, premium_requests, premium_units, input_tokens, output_tokens, cached_tokens)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
				ON CONFLICT (day, key_name, account, model) DO UPDATE SET
					requests = usage_daily.requests + excluded.requests,
					premium_requests = usage_daily.premium_requests + excluded.premium_requests,
					premium_units = usage_daily.premium_units + excluded.premium_units,
					input_tokens = usage_daily.input_tokens + excluded.input_tokens,
					output_tokens = usage_daily.output_tokens + excluded.output_tokens,
					cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens`,
				dk.day, dk.key, dk.account, dk.model, r.Requests, r.PremiumRequests, r.PremiumUnits, r.Input, r.Output, r.Cached); err != nil {
				return fmt.Errorf("rollup: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return stored, nil
}

// insertUsage inserts events, skipping known IDs, and returns the IDs it
// inserted.
// SQLite gets ? placeholders: binding hundreds of $N ones by name costs
// time quadratic in their number.
func insertUsage(ctx context.Context, tx *sql.Tx, events []UsageEvent, numbered bool) ([]string, error) {
	var q strings.Builder
	q.WriteString(`INSERT INTO usage_events (` + usageColumns + `) VALUES `)
	args := make([]any, 0, len(events)*usageNCols)
	for i, e := range events {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('(')
		for c := range usageNCols {
			if c > 0 {
				q.WriteByte(',')
			}
			if !numbered {
				q.WriteByte('?')
				continue
			}
			q.WriteByte('$')
			q.WriteString(strconv.Itoa(i*usageNCols + c + 1))
		}
		q.WriteByte(')')
		premium := 0
		if e.Premium {
			premium = 1
		}
		args = append(args, e.ID, e.Time.UnixMicro(), e.RequestID, e.Key, e.Account, e.Model, e.Dialect, e.Endpoint, e.Status,
			e.Input, e.Output, e.Cached, premium, e.PremiumUnits, e.Latency.Microseconds(), e.TTFB.Microseconds(), e.ProxyID)
	}
	q.WriteString(` ON CONFLICT (id) DO NOTHING RETURNING id`)
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	defer rows.Close()
	ids := make([]string, 0, len(events))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("insert: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	return ids, nil
}

func (r *UsageRow) add(e *UsageEvent) {
	r.Requests++
	if e.Premium {
		r.PremiumRequests++
	}
	r.PremiumUnits += e.PremiumUnits
	r.Input += e.Input
	r.Output += e.Output
	r.Cached += e.Cached
}

func floorDay(us int64) int64 {
	d := us / dayMicros
	if us < 0 && us%dayMicros != 0 {
		d--
	}
	return d * dayMicros
}

// onDay reports whether t is 00:00 UTC.
func onDay(t time.Time) bool { return t.UnixMicro()%dayMicros == 0 }

func (s *sqlStore) QueryUsage(ctx context.Context, q UsageQuery) ([]UsageRow, error) {
	daily := onDay(q.From) && onDay(q.To)
	table, timeCol := "usage_events", "at"
	sums := `COUNT(*), COALESCE(SUM(premium), 0), COALESCE(SUM(premium_units), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cached_tokens), 0)`
	dayExpr := fmt.Sprintf("((at / %d) * %d)", dayMicros, dayMicros)
	if daily {
		table, timeCol, dayExpr = "usage_daily", "day", "day"
		sums = `COALESCE(SUM(requests), 0), COALESCE(SUM(premium_requests), 0), COALESCE(SUM(premium_units), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cached_tokens), 0)`
	}
	var groups []string
	var cols []string
	seen := map[string]bool{}
	for _, g := range q.GroupBy {
		if seen[g] {
			continue
		}
		seen[g] = true
		switch g {
		case GroupKey:
			cols = append(cols, "key_name")
		case GroupAccount:
			cols = append(cols, "account")
		case GroupModel:
			cols = append(cols, "model")
		case GroupDay:
			cols = append(cols, dayExpr)
		default:
			return nil, fmt.Errorf("%w: cannot group by %q (key, account, model, day)", ErrBadQuery, g)
		}
		groups = append(groups, g)
	}
	where := []string{timeCol + " >= $1", timeCol + " < $2"}
	args := []any{q.From.UnixMicro(), q.To.UnixMicro()}
	for _, f := range []struct{ col, v string }{{"key_name", q.Key}, {"account", q.Account}, {"model", q.Model}} {
		if f.v != "" {
			args = append(args, f.v)
			where = append(where, fmt.Sprintf("%s = $%d", f.col, len(args)))
		}
	}
	sel := sums
	if len(cols) > 0 {
		sel = strings.Join(cols, ", ") + ", " + sums
	}
	query := `SELECT ` + sel + ` FROM ` + table + ` WHERE ` + strings.Join(where, " AND ")
	if len(cols) > 0 {
		query += ` GROUP BY ` + strings.Join(cols, ", ") + ` ORDER BY ` + strings.Join(cols, ", ")
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query usage: %w", err)
	}
	defer rows.Close()
	out := []UsageRow{}
	for rows.Next() {
		var r UsageRow
		var day int64
		dest := make([]any, 0, len(groups)+6)
		for _, g := range groups {
			switch g {
			case GroupKey:
				dest = append(dest, &r.Key)
			case GroupAccount:
				dest = append(dest, &r.Account)
			case GroupModel:
				dest = append(dest, &r.Model)
			case GroupDay:
				dest = append(dest, &day)
			}
		}
		dest = append(dest, &r.Requests, &r.PremiumRequests, &r.PremiumUnits, &r.Input, &r.Output, &r.Cached)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("store: query usage: %w", err)
		}
		if seen[GroupDay] {
			r.Day = time.UnixMicro(day).UTC()
		}
		if r.Requests == 0 {
			continue // no events: no row, with or without groups
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: query usage: %w", err)
	}
	return out, nil
}

func (s *sqlStore) PruneUsage(ctx context.Context, eventsBefore, rollupsBefore time.Time) (int64, int64, error) {
	var ne, nr int64
	err := s.inTx(ctx, "prune usage", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM usage_events WHERE at < $1`, eventsBefore.UnixMicro())
		if err != nil {
			return err
		}
		ne, _ = res.RowsAffected()
		res, err = tx.ExecContext(ctx, `DELETE FROM usage_daily WHERE day < $1`, floorDay(rollupsBefore.UnixMicro()))
		if err != nil {
			return err
		}
		nr, _ = res.RowsAffected()
		return nil
	})
	return ne, nr, err
}
