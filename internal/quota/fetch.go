// Package quota reads an account's Copilot usage allowance from GitHub
// (GET {github_api}/copilot_internal/user, docs/protocol.md section 5) and
// keeps it current: [Fetcher] makes one reading, [Poller] repeats it every
// few minutes (jittered, with backoff on failure, at once when poked after a
// 402) and hands readings to subscribers.
package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Path is the quota endpoint below the GitHub API base URL.
const Path = "/copilot_internal/user"

// DefaultMaxResponseBytes bounds the answer read; real answers are ~2 KiB.
const DefaultMaxResponseBytes = 64 << 10

// Snapshot is one kind of quota ("chat", "completions",
// "premium_interactions").
type Snapshot struct {
	Kind             string
	Entitlement      float64
	Remaining        float64
	PercentRemaining float64
	Unlimited        bool
	OverageCount     float64
	OveragePermitted bool
}

// Exhausted reports whether requests drawing on this quota are refused:
// limited, nothing left, and no overage allowed.
func (s Snapshot) Exhausted() bool {
	return !s.Unlimited && s.Remaining <= 0 && !s.OveragePermitted
}

// Reading is one reading of an account's quotas, or the last good one with
// the error of the latest attempt. The zero Reading means none yet.
type Reading struct {
	// Snapshots in kind order.
	Snapshots []Snapshot
	// ResetAt is when the quotas reset; zero when GitHub gave no date.
	ResetAt time.Time
	// Plan is GitHub's copilot_plan.
	Plan string
	// FetchedAt is when the figures were read; zero before the first
	// success.
	FetchedAt time.Time
	// LastError describes the latest failed attempt; empty after a success.
	// It never holds a secret.
	LastError string
}

// SameFigures reports whether r and o hold the same figures and error,
// whenever they were read. The first reading (FetchedAt set) differs from
// none.
func (r Reading) SameFigures(o Reading) bool {
	return slices.Equal(r.Snapshots, o.Snapshots) && r.ResetAt.Equal(o.ResetAt) && r.Plan == o.Plan &&
		r.FetchedAt.IsZero() == o.FetchedAt.IsZero() && r.LastError == o.LastError
}

// Exhausted reports whether any of the reading's quotas is exhausted.
func (r Reading) Exhausted() bool {
	for _, s := range r.Snapshots {
		if s.Exhausted() {
			return true
		}
	}
	return false
}

// StatusError is a non-200 answer.
type StatusError struct{ Status int }

func (e *StatusError) Error() string { return fmt.Sprintf("quota: HTTP %d", e.Status) }

// ErrMalformed is a 200 answer that is not a quota document.
var ErrMalformed = errors.New("quota: malformed answer")

// FetchConfig configures a [Fetcher].
type FetchConfig struct {
	// APIURL is the GitHub API base URL (https://api.github.com).
	APIURL string
	// HTTPClient sends the request. It must not follow redirects: the
	// request carries the GitHub token. [Fetcher] refuses redirects on a
	// copy of it whatever its CheckRedirect says.
	HTTPClient *http.Client
	// Headers are sent with every request (the editor identity of the token
	// exchange); Authorization is set by the Fetcher.
	Headers http.Header
	// Profile, when set, is read at every fetch, as the token exchange
	// reads it: its identity (Editor-Version, Editor-Plugin-Version,
	// User-Agent, X-GitHub-Api-Version) and extra headers replace those of
	// Headers, so a profile changed at run time is used by the next fetch.
	Profile *identity.Holder
	// MaxResponseBytes bounds the body read (default
	// [DefaultMaxResponseBytes]).
	MaxResponseBytes int64
}

// Fetcher reads quotas. It holds no state between calls and is safe for
// concurrent use.
type Fetcher struct {
	url      string
	client   *http.Client
	headers  http.Header
	profile  *identity.Holder
	maxBytes int64
}

// NewFetcher returns a Fetcher for cfg.
func NewFetcher(cfg FetchConfig) *Fetcher {
	client := http.DefaultClient
	if cfg.HTTPClient != nil {
		client = cfg.HTTPClient
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h := cfg.Headers.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Accept", "application/json")
	maxBytes := cfg.MaxResponseBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxResponseBytes
	}
	return &Fetcher{url: strings.TrimRight(cfg.APIURL, "/") + Path, client: &c, headers: h, profile: cfg.Profile, maxBytes: maxBytes}
}

// Fetch makes one reading with githubToken. Errors never hold the token.
func (f *Fetcher) Fetch(ctx context.Context, githubToken secret.Secret) (Reading, error) {
	if githubToken.IsZero() {
		return Reading{}, errors.New("quota: no GitHub token")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return Reading{}, fmt.Errorf("quota: bad API URL: %w", err)
	}
	req.Header = f.headers.Clone()
	if f.profile != nil {
		p := f.profile.Get().Profile
		p.SetExchangeHeaders(req.Header)
		p.SetExtraHeaders(req.Header)
	}
	req.Header.Set("Authorization", "token "+githubToken.Reveal())
	resp, err := f.client.Do(req)
	if err != nil {
		return Reading{}, fmt.Errorf("quota: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, f.maxBytes))
		return Reading{}, &StatusError{Status: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return Reading{}, fmt.Errorf("quota: reading answer: %w", err)
	}
	if int64(len(body)) > f.maxBytes {
		return Reading{}, fmt.Errorf("%w: answer larger than %d bytes", ErrMalformed, f.maxBytes)
	}
	return Parse(body)
}

// userAnswer is the part of copilot_internal/user that is read.
type userAnswer struct {
	CopilotPlan      string                     `json:"copilot_plan"`
	QuotaResetDate   string                     `json:"quota_reset_date"`
	QuotaResetDateTS string                     `json:"quota_reset_date_utc"`
	QuotaSnapshots   map[string]*snapshotAnswer `json:"quota_snapshots"`
}

type snapshotAnswer struct {
	Entitlement      *float64 `json:"entitlement"`
	Remaining        *float64 `json:"remaining"`
	PercentRemaining *float64 `json:"percent_remaining"`
	Unlimited        bool     `json:"unlimited"`
	OverageCount     float64  `json:"overage_count"`
	OveragePermitted bool     `json:"overage_permitted"`
}

// MaxKinds bounds the quota kinds kept from one answer (GitHub sends 3).
const MaxKinds = 8

// Parse reads a copilot_internal/user answer. Kinds are sorted; at most
// [MaxKinds] are kept; a kind name is kept only if it is short and made of
// letters, digits and '_' (it becomes a metric label).
func Parse(body []byte) (Reading, error) {
	var a userAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return Reading{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if a.QuotaSnapshots == nil {
		return Reading{}, fmt.Errorf("%w: no quota_snapshots", ErrMalformed)
	}
	r := Reading{Plan: strings.ToValidUTF8(clip(a.CopilotPlan, 64), "")}
	for kind, s := range a.QuotaSnapshots {
		if s == nil || !validKind(kind) {
			continue
		}
		snap := Snapshot{Kind: kind, Unlimited: s.Unlimited, OverageCount: s.OverageCount, OveragePermitted: s.OveragePermitted}
		if s.Entitlement != nil {
			snap.Entitlement = *s.Entitlement
		}
		if s.Remaining != nil {
			snap.Remaining = *s.Remaining
		}
		switch {
		case s.PercentRemaining != nil:
			snap.PercentRemaining = *s.PercentRemaining
		case snap.Unlimited:
			snap.PercentRemaining = 100
		case snap.Entitlement > 0:
			snap.PercentRemaining = 100 * snap.Remaining / snap.Entitlement
		}
		r.Snapshots = append(r.Snapshots, snap)
	}
	slices.SortFunc(r.Snapshots, func(x, y Snapshot) int { return strings.Compare(x.Kind, y.Kind) })
	if len(r.Snapshots) > MaxKinds {
		r.Snapshots = r.Snapshots[:MaxKinds]
	}
	r.ResetAt = parseResetDate(a.QuotaResetDateTS)
	if r.ResetAt.IsZero() {
		r.ResetAt = parseResetDate(a.QuotaResetDate)
	}
	return r, nil
}

func parseResetDate(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

func validKind(k string) bool {
	if k == "" || len(k) > 40 {
		return false
	}
	for _, r := range k {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
