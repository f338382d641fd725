package pool

import (
	"cmp"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Snapshot is one kind of an account's quota.
type Snapshot struct {
	// Kind is the quota's name: "chat", "completions",
	// "premium_interactions", "premium_models".
	Kind string
	// Entitlement is the allowance per period; Remaining what is left of it.
	Entitlement, Remaining float64
	// Unlimited means the plan sets no limit on this kind.
	Unlimited bool
	// OverageCount is the use beyond the entitlement; OveragePermitted says
	// such use is allowed (and billed).
	OverageCount     float64
	OveragePermitted bool
	// Reset is when the quota resets; zero when unknown.
	Reset time.Time
}

// Exhausted reports whether requests drawing on this kind are refused: it
// is limited, nothing remains and overage is not permitted.
func (s Snapshot) Exhausted() bool {
	return !s.Unlimited && !s.OveragePermitted && s.Entitlement > 0 && s.Remaining <= 0
}

// HeaderPrefix starts the response headers that carry quota snapshots, e.g.
// "x-quota-snapshot-premium_interactions: ent=300&rem=12.5&rst=2026-12-01T00%3A00%3A00Z&ov=0&ovPerm=false".
const HeaderPrefix = "X-Quota-Snapshot-"

// maxHeaderValue bounds the header value parsed.
const maxHeaderValue = 1024

// FromHeaders returns the quota snapshots in an upstream response's
// headers (at most maxKinds; malformed values are skipped).
func FromHeaders(h http.Header) []Snapshot {
	return fromHeaders(h, func(name, value string) (Snapshot, error) { return ParseSnapshot(lowerASCII(name), value) })
}

// fromHeaders calls parse with each snapshot header's name after the
// prefix, as it is in h (the kind is its lower case), and its value.
func fromHeaders(h http.Header, parse func(name, value string) (Snapshot, error)) []Snapshot {
	var out []Snapshot
	for k, vs := range h {
		if len(vs) == 0 || len(k) <= len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		s, err := parse(k[len(HeaderPrefix):], vs[0])
		if err != nil {
			continue
		}
		if out == nil {
			out = make([]Snapshot, 0, 4) // an answer carries three
		}
		out = append(out, s)
		if len(out) == maxKinds {
			break
		}
	}
	return out
}

// lowerASCII is strings.ToLower for the header names here, allocating
// only when there is an upper-case letter (canonical header keys have one).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// QuotaReader is FromHeaders with a memory of what it parsed: every answer
// carries the snapshot headers, an account's value of a kind often repeats
// (an unlimited kind, a quota no request drew on), and the reset time of
// those that change (premium requests remaining) stays the same for a
// month. Safe for concurrent use; it remembers at most maxRemembered values
// of each sort.
type QuotaReader struct {
	mu      sync.Mutex
	last    map[snapshotKey]lastSnapshot // by account and header name
	byValue map[string]Snapshot          // the last values parsed, any kind (two kinds often share one)
	resets  map[string]time.Time         // rst values, unescaped
}

// snapshotKey names a header of an account's answers: name is the header's
// name after the prefix, as the answer spelled it (its kind lower-cased
// only when its value is new).
type snapshotKey struct{ account, name string }

type lastSnapshot struct {
	value string
	s     Snapshot
}

// maxRemembered bounds each of a QuotaReader's memories (a few kinds for
// each of a team's accounts; an upstream sending ever new kinds or reset
// times only makes it start over).
const maxRemembered = 256

// Read returns the quota snapshots in the headers of an answer for
// account, as FromHeaders does.
func (q *QuotaReader) Read(account string, h http.Header) []Snapshot {
	return fromHeaders(h, func(name, value string) (Snapshot, error) { return q.parse(account, name, value) })
}

// parse is parseSnapshot of the header name (after the prefix) and value
// of an account's answer, remembered by both and by value.
func (q *QuotaReader) parse(account, name, value string) (Snapshot, error) {
	k := snapshotKey{account, name}
	q.mu.Lock()
	l, ok := q.last[k]
	byValue, seen := q.byValue[value]
	q.mu.Unlock()
	if ok && l.value == value {
		return l.s, nil
	}
	kind := lowerASCII(name)
	var s Snapshot
	var err error
	if seen && validSnapshotKind(kind) {
		s = byValue
		s.Kind = kind
	} else if s, err = parseSnapshot(kind, value, q.reset); err != nil {
		return s, err // malformed values are not kept: they cost a quick refusal
	}
	q.mu.Lock()
	if q.last == nil || len(q.last) >= maxRemembered {
		q.last = make(map[snapshotKey]lastSnapshot)
	}
	q.last[k] = lastSnapshot{value, s}
	if q.byValue == nil || len(q.byValue) >= maxRemembered {
		q.byValue = make(map[string]Snapshot)
	}
	q.byValue[value] = s
	q.mu.Unlock()
	return s, nil
}

// reset is parseReset, remembered.
func (q *QuotaReader) reset(v string) time.Time {
	q.mu.Lock()
	t, ok := q.resets[v]
	q.mu.Unlock()
	if ok {
		return t
	}
	t = parseReset(v)
	q.mu.Lock()
	if q.resets == nil || len(q.resets) >= maxRemembered {
		q.resets = make(map[string]time.Time)
	}
	q.resets[v] = t
	q.mu.Unlock()
	return t
}

// errSnapshot is returned for an unusable snapshot value.
var errSnapshot = errors.New("malformed quota snapshot")

// ParseSnapshot parses one x-quota-snapshot-KIND header value: URL-encoded
// ent (entitlement; -1 means unlimited), rem (remaining; a percentage when
// entitlement is 0), rst (reset: RFC 3339, a date, or Unix seconds), ov
// (overage used) and ovPerm (overage permitted). Unknown fields are
// ignored; a value without ent or rem is refused.
func ParseSnapshot(kind, value string) (Snapshot, error) {
	return parseSnapshot(kind, value, parseReset)
}

func parseSnapshot(kind, value string, parseReset func(string) time.Time) (Snapshot, error) {
	if len(value) > maxHeaderValue || !validSnapshotKind(kind) {
		return Snapshot{}, errSnapshot
	}
	q, err := parseQuota(value)
	if err != nil {
		return Snapshot{}, errSnapshot
	}
	s := Snapshot{Kind: kind}
	ent, err1 := parseNum(q.ent)
	rem, err2 := parseNum(q.rem)
	if err1 != nil || err2 != nil {
		return Snapshot{}, errSnapshot
	}
	s.Entitlement, s.Remaining = ent, rem
	if ent < 0 {
		s.Unlimited, s.Entitlement = true, 0
	}
	if q.ov != "" {
		if s.OverageCount, err = parseNum(q.ov); err != nil {
			return Snapshot{}, errSnapshot
		}
	}
	s.OveragePermitted = q.ovPerm == "true"
	if q.rst != "" {
		s.Reset = parseReset(q.rst)
	}
	return s, nil
}

// quotaFields are the fields of a snapshot value this package reads.
type quotaFields struct{ ent, rem, ov, ovPerm, rst string }

// parseQuota reads a snapshot value as url.ParseQuery does (pairs split on
// '&', a ';' refused, keys and values query-unescaped, the first value of a
// key kept, any malformed pair an error) without building a map: every
// upstream answer carries these headers.
func parseQuota(v string) (quotaFields, error) {
	var q quotaFields
	var seen [5]bool
	var firstErr error
	for v != "" {
		var pair string
		pair, v, _ = strings.Cut(v, "&")
		if strings.Contains(pair, ";") {
			firstErr = cmp.Or(firstErr, errSnapshot)
			continue
		}
		if pair == "" {
			continue
		}
		key, val, _ := strings.Cut(pair, "=")
		var err error
		if key, err = unescapeQuery(key); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if val, err = unescapeQuery(val); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		var i int
		var dst *string
		switch key {
		case "ent":
			i, dst = 0, &q.ent
		case "rem":
			i, dst = 1, &q.rem
		case "ov":
			i, dst = 2, &q.ov
		case "ovPerm":
			i, dst = 3, &q.ovPerm
		case "rst":
			i, dst = 4, &q.rst
		default:
			continue
		}
		if !seen[i] {
			seen[i], *dst = true, val
		}
	}
	return q, firstErr
}

// unescapeQuery is url.QueryUnescape, skipped when there is nothing to
// unescape.
func unescapeQuery(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// validSnapshotKind reports whether k may name a quota kind.
func validSnapshotKind(k string) bool { return k != "" && len(k) <= 64 && validKind(k) }

func validKind(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func parseNum(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errSnapshot
	}
	return f, nil
}

func parseReset(v string) time.Time {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && n < 1<<40 {
		return time.Unix(n, 0)
	}
	return time.Time{}
}

// ParseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// It returns 0 for a missing or malformed value.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(MaxCool/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxCool)
	}
	return 0
}
