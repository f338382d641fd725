package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Bounds on the lifetime fields: anything outside them is not a plausible
// answer and would overflow time.Duration arithmetic further on.
const (
	maxRefreshIn   = 7 * 24 * time.Hour
	minUnixSeconds = 1               // expires_at of 0 counts as missing
	maxUnixSeconds = 32503680000 - 1 // before the year 3000
)

// tokenResponse is the subset of the exchange answer the broker uses. Unknown
// fields are ignored by encoding/json.
type tokenResponse struct {
	Token     *string      `json:"token"`
	ExpiresAt *flexSeconds `json:"expires_at"`
	RefreshIn *flexSeconds `json:"refresh_in"`
	SKU       flexString   `json:"sku"`
	Endpoints struct {
		API flexString `json:"api"`
	} `json:"endpoints"`
}

// flexSeconds accepts a JSON number or a string holding one, since GitHub does
// not document the endpoint and encoders differ.
type flexSeconds float64

func (f *flexSeconds) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		s = strings.TrimSpace(str)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("not a number of seconds")
	}
	*f = flexSeconds(v)
	return nil
}

// flexString is an informational string field that must not fail the whole
// answer when GitHub sends another type (null, a number, an object).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*f = flexString(s)
	}
	return nil
}

// parseTokenResponse parses a 200 answer of the exchange. serverDate is the
// answer's Date header (GitHub's clock), zero when absent. Every error wraps
// [ErrMalformedResponse] and never quotes the body.
func parseTokenResponse(body []byte, serverDate time.Time) (*CopilotToken, error) {
	var r tokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformedResponse, jsonProblem(err))
	}
	if r.Token == nil || *r.Token == "" {
		return nil, fmt.Errorf("%w: no token", ErrMalformedResponse)
	}
	if !validHeaderToken(*r.Token) {
		return nil, fmt.Errorf("%w: token has characters not allowed in a header", ErrMalformedResponse)
	}
	if r.RefreshIn == nil {
		return nil, fmt.Errorf("%w: no refresh_in", ErrMalformedResponse)
	}
	refreshIn := float64(*r.RefreshIn)
	if refreshIn < 0 || refreshIn > maxRefreshIn.Seconds() {
		return nil, fmt.Errorf("%w: refresh_in out of range", ErrMalformedResponse)
	}
	if r.ExpiresAt == nil {
		return nil, fmt.Errorf("%w: no expires_at", ErrMalformedResponse)
	}
	exp := float64(*r.ExpiresAt)
	if exp < minUnixSeconds || exp > maxUnixSeconds {
		return nil, fmt.Errorf("%w: expires_at out of range", ErrMalformedResponse)
	}
	tok := &CopilotToken{
		Token:      secret.New(*r.Token),
		ExpiresAt:  time.Unix(int64(exp), 0).UTC(),
		RefreshIn:  time.Duration(refreshIn * float64(time.Second)),
		APIBaseURL: strings.TrimSpace(string(r.Endpoints.API)),
		SKU:        string(r.SKU),
		ServerDate: serverDate,
	}
	if tok.APIBaseURL == "" {
		// The reference client falls back to the public API
		// (docs/protocol.md section 4); the refresh logs a warning.
		tok.APIBaseURL, tok.APIBaseURLDefaulted = DefaultCopilotAPIURL, true
	}
	return tok, nil
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold the token.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	}
	return "invalid JSON"
}

// validHeaderToken reports whether s can travel in an Authorization header:
// printable ASCII without spaces, so nothing downstream can be confused.
func validHeaderToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// errorResponse is the body of a 403 (and of some 429s).
type errorResponse struct {
	Message      flexString `json:"message"`
	ErrorDetails struct {
		Message        flexString `json:"message"`
		NotificationID flexString `json:"notification_id"`
	} `json:"error_details"`
}

// parseErrorBody extracts what a 403 or 429 body says; a body that is not JSON
// yields zero values.
func parseErrorBody(body []byte) errorResponse {
	var r errorResponse
	_ = json.Unmarshal(body, &r)
	return r
}

// isRateLimited reports whether a 403 answer is GitHub's rate limiting rather
// than a refusal of access.
func isRateLimited(h http.Header, e errorResponse) bool {
	if h.Get("Retry-After") != "" || h.Get("X-RateLimit-Remaining") == "0" {
		return true
	}
	return strings.Contains(strings.ToLower(string(e.Message)), "rate limit")
}

// rateLimitDelay reads Retry-After (seconds or an HTTP date) or else
// X-RateLimit-Reset (unix seconds). Absolute times are measured against the
// answer's own Date header when present, so clock skew does not matter; now is
// the fallback reference. It returns 0 when neither header is usable.
func rateLimitDelay(h http.Header, now time.Time) time.Duration {
	ref := now
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		ref = d
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			return clampSeconds(secs)
		}
		if t, err := http.ParseTime(v); err == nil {
			return positive(t.Sub(ref))
		}
	}
	if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs > 0 && secs < maxUnixSeconds {
			return positive(time.Unix(secs, 0).Sub(ref))
		}
	}
	return 0
}

func clampSeconds(secs int64) time.Duration {
	if secs <= 0 {
		return 0
	}
	if secs > int64(maxRefreshIn/time.Second) {
		return maxRefreshIn
	}
	return time.Duration(secs) * time.Second
}

func positive(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// safeMessage shortens a message taken from GitHub's answer, removes control
// characters and any occurrence of the credential, so it can be logged and
// returned to clients.
func safeMessage(msg string, cred secret.Secret) string {
	const maxLen = 200
	if v := cred.Reveal(); v != "" {
		msg = strings.ReplaceAll(msg, v, secret.Redacted)
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	msg = strings.TrimSpace(msg)
	if r := []rune(msg); len(r) > maxLen {
		msg = string(r[:maxLen]) + "..."
	}
	return msg
}
