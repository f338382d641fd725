package tokens

import (
	"errors"
	"fmt"
	"time"
)

// ErrCredentialRejected means GitHub answered 401: the GitHub token is invalid
// or revoked. It is terminal until the credential changes.
var ErrCredentialRejected = errors.New("github credential rejected")

// ErrNotExchangeable means GitHub answered 404: this token can never be
// exchanged for a Copilot token. It wraps [ErrCredentialRejected], so it is
// terminal (REJECTED) until the credential changes.
var ErrNotExchangeable = fmt.Errorf("this GitHub token cannot be exchanged for a Copilot token "+
	"(a classic or fine-grained personal access token, or an OAuth token of another app than the Copilot editor integrations, "+
	"such as a gho_ token of another client; or a wrong --github-api-url): create one with `broker login`: %w", ErrCredentialRejected)

// ErrMalformedResponse means GitHub answered 200 with a body that does not hold
// a usable token (not JSON, too large, token or lifetime missing or invalid).
// It is transient: a later attempt may succeed.
var ErrMalformedResponse = errors.New("malformed token exchange response")

// ErrClosed is returned by [Manager] methods called after [Manager.Close].
var ErrClosed = errors.New("token manager closed")

// NoAccessError means GitHub answered 403 because the account has no Copilot
// access (no_copilot_access, subscription_ended, billing_locked, ...). It is
// terminal until the account or the credential changes.
type NoAccessError struct {
	// Status is the HTTP status (403).
	Status int
	// NotificationID is error_details.notification_id, for example
	// "no_copilot_access"; empty when GitHub sent none.
	NotificationID string
	// Message is GitHub's human-readable explanation, shortened and with any
	// occurrence of the credential removed.
	Message string
}

func (e *NoAccessError) Error() string {
	s := fmt.Sprintf("no copilot access (HTTP %d", e.Status)
	if e.NotificationID != "" {
		s += ", " + e.NotificationID
	}
	s += ")"
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// RateLimitedError means GitHub rate limited the exchange (429, or 403 with a
// rate-limit answer). It is transient.
type RateLimitedError struct {
	// Status is the HTTP status (429 or 403).
	Status int
	// RetryAfter is how long GitHub asked to wait (Retry-After or
	// X-RateLimit-Reset); zero when it did not say.
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("token exchange rate limited (HTTP %d, retry after %s)", e.Status, e.RetryAfter)
	}
	return fmt.Sprintf("token exchange rate limited (HTTP %d)", e.Status)
}

// IdentityRejectedError means GitHub refused the editor identity or the API
// version the exchange presented (466, "client not supported", "API
// version no longer supported", or a 400/404 naming a version): the
// upstream profile has drifted. It is transient: the next attempt uses the
// profile current then, so editing the profile file heals it.
type IdentityRejectedError struct {
	// Status is the HTTP status.
	Status int
	// Message is GitHub's message, shortened and without the credential.
	Message string
}

func (e *IdentityRejectedError) Error() string {
	s := fmt.Sprintf("GitHub refused the editor identity (HTTP %d, identity_rejected)", e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// TransientError is a failure that a later attempt may not see: a 5xx or
// unexpected status, a network error or a timeout.
type TransientError struct {
	// Status is the HTTP status, or 0 when no response arrived.
	Status int
	// Err is the underlying error, if any.
	Err error
}

func (e *TransientError) Error() string {
	switch {
	case e.Status != 0 && e.Err != nil:
		return fmt.Sprintf("transient token exchange failure (HTTP %d): %v", e.Status, e.Err)
	case e.Status != 0:
		return fmt.Sprintf("transient token exchange failure (HTTP %d)", e.Status)
	case e.Err != nil:
		return fmt.Sprintf("transient token exchange failure: %v", e.Err)
	}
	return "transient token exchange failure"
}

// Unwrap returns the underlying error.
func (e *TransientError) Unwrap() error { return e.Err }

// IsTerminal reports whether err means that retrying with the same credential
// is pointless: [ErrCredentialRejected] or a [*NoAccessError].
func IsTerminal(err error) bool {
	var na *NoAccessError
	return errors.Is(err, ErrCredentialRejected) || errors.As(err, &na)
}

// retryAfter returns the delay a [*RateLimitedError] in err's chain asks for,
// and whether there is one.
func retryAfter(err error) (time.Duration, bool) {
	var rl *RateLimitedError
	if errors.As(err, &rl) {
		return rl.RetryAfter, true
	}
	return 0, false
}
