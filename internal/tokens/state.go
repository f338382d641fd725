package tokens

import (
	"fmt"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Status is where an account's Copilot token stands in its lifecycle.
type Status int

// The statuses of docs/architecture.md section 3. The zero value is not a valid status, so a State
// that was never filled in is recognisable.
const (
	// StatusPending means no token has been obtained yet.
	StatusPending Status = iota + 1
	// StatusValid means the token is usable and refresh is on schedule.
	StatusValid
	// StatusStale means the token is still usable but refreshing it fails.
	StatusStale
	// StatusExpired means the last token passed its local expiry and no new one
	// could be obtained yet.
	StatusExpired
	// StatusRejected means GitHub refused the credential (401) or the account
	// has no Copilot access (403). No further calls are made until the
	// credential is replaced.
	StatusRejected
)

// String returns the upper-case name used in the API ("VALID", ...).
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "PENDING"
	case StatusValid:
		return "VALID"
	case StatusStale:
		return "STALE"
	case StatusExpired:
		return "EXPIRED"
	case StatusRejected:
		return "REJECTED"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// HasToken reports whether a State with this status carries a usable token.
func (s Status) HasToken() bool { return s == StatusValid || s == StatusStale }

// State is the full, self-contained state of one account's token, as handed to
// readers and subscribers. It is a value: readers may keep it.
type State struct {
	// Account names the account; empty is the default account.
	Account string
	// Token is the Copilot token. It is zero unless Status is StatusValid or
	// StatusStale, and never holds a token past its local expiry.
	Token secret.Secret
	// Generation is 0 until the first token and grows by one for each new
	// token.
	Generation uint64
	// Epoch identifies the manager's process lifetime (ManagerConfig.Epoch).
	Epoch string
	// ExpiresAt is the skew-safe local expiry (wall clock, for reporting);
	// zero when there is no token.
	ExpiresAt time.Time
	// RefreshAt is when the next exchange attempt is planned; zero when none
	// is (StatusRejected).
	RefreshAt time.Time
	// APIBaseURL is endpoints.api of the exchange answer.
	APIBaseURL string
	// SKU is the account's Copilot plan as GitHub names it.
	SKU string
	// Status is where the token stands.
	Status Status
	// LastError describes the last failed exchange; it never holds a secret.
	// It is cleared by a successful exchange.
	LastError string
	// IdentityRejected says the last exchange failed with an
	// [*IdentityRejectedError]: the upstream profile has drifted. Cleared
	// by a successful exchange.
	IdentityRejected bool
}

// snapshot is what the manager publishes atomically: the State plus the local
// expiry as read from the injected clock (with its monotonic reading on a real
// clock), which readers compare against to never hand out an expired token.
type snapshot struct {
	state  State
	expiry time.Time // zero when state carries no token
}

// view returns the State as a reader at now must see it: a token at or past
// its local expiry is reported as StatusExpired without the token, even before
// the refresh loop has noticed.
func (s *snapshot) view(now time.Time) State {
	st := s.state
	if st.Status.HasToken() && !now.Before(s.expiry) {
		st.Status = StatusExpired
		st.Token = secret.Secret{}
		st.ExpiresAt = time.Time{}
	}
	return st
}
