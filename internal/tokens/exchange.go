// Package tokens obtains Copilot tokens from GitHub and keeps one fresh per
// account.
//
// [Exchanger] performs the stateless exchange of a GitHub token for a Copilot
// token (docs/protocol.md section 2) and classifies failures into typed
// errors. [Manager] owns one account's token lifecycle (docs/architecture.md,
// section 4 "Token lifecycle"): skew-safe expiry, early jittered refresh,
// backoff, STALE and REJECTED states, single-flight forced refresh and
// subscriptions.
package tokens

import (
	"context"

	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Defaults of [ExchangeConfig], from docs/protocol.md section 2. The
// editor identity's defaults are in internal/identity.
const (
	DefaultAPIURL = "https://api.github.com"
	// DefaultCopilotAPIURL is the Copilot API base URL used when an answer
	// has no endpoints.api.
	DefaultCopilotAPIURL = "https://api.githubcopilot.com"
	// DefaultMaxResponseBytes bounds the answer read; real answers are ~2 KiB.
	DefaultMaxResponseBytes = 64 << 10
)

// tokenPath is the exchange endpoint below the GitHub API base URL.
const tokenPath = "/copilot_internal/v2/token"

// CopilotToken is one successful exchange answer.
type CopilotToken struct {
	// Token is the Copilot token, opaque.
	Token secret.Secret
	// ExpiresAt is expires_at, on GitHub's clock.
	ExpiresAt time.Time
	// RefreshIn is refresh_in: when GitHub suggests refreshing, relative to
	// the answer.
	RefreshIn time.Duration
	// APIBaseURL is endpoints.api, the Copilot API base URL for the account.
	APIBaseURL string
	// SKU is the account's Copilot plan.
	SKU string
	// APIBaseURLDefaulted says the answer had no endpoints.api, so
	// APIBaseURL is [DefaultCopilotAPIURL].
	APIBaseURLDefaulted bool
	// ServerDate is the answer's Date header (GitHub's clock); zero when
	// absent. With it ExpiresAt can be read as a duration, immune to skew.
	ServerDate time.Time
}

// ExchangeConfig configures an [Exchanger]. Zero fields take the defaults.
type ExchangeConfig struct {
	// APIURL is the GitHub API base URL (default [DefaultAPIURL]; GitHub
	// Enterprise Cloud with data residency: https://api.TENANT.ghe.com).
	APIURL string
	// HTTPClient sends the request. Nil means a client with dial, TLS,
	// response-header and total timeouts ([NewHTTPClient]). Redirects are
	// never followed, whatever its CheckRedirect says.
	HTTPClient *http.Client
	// Editor is the identity presented (Editor-Version,
	// Editor-Plugin-Version, User-Agent, X-GitHub-Api-Version from its
	// ExchangeAPIVersion); zero fields take identity.Default's.
	Editor identity.Editor
	// Profile, when set, is read at every exchange: its identity and extra
	// headers replace Editor's, so a profile changed at run time is used
	// by the next exchange.
	Profile *identity.Holder
	// MaxResponseBytes bounds the body read (default [DefaultMaxResponseBytes]).
	MaxResponseBytes int64
	// Clock is the fallback reference for absolute rate-limit times when the
	// answer has no Date header (nil means the real clock).
	Clock clock.Clock
}

// Exchanger exchanges GitHub tokens for Copilot tokens. It holds no state
// between calls and is safe for concurrent use.
type Exchanger struct {
	url      string
	client   *http.Client
	headers  http.Header
	profile  *identity.Holder
	maxBytes int64
	clock    clock.Clock
}

// NewExchanger returns an Exchanger for cfg.
func NewExchanger(cfg ExchangeConfig) *Exchanger {
	base := strings.TrimRight(orDefault(cfg.APIURL, DefaultAPIURL), "/")
	client := cfg.HTTPClient
	if client == nil {
		client = NewHTTPClient()
	}
	// The request carries the GitHub token: follow no redirect, whatever
	// the given client's policy (Go's default sends Authorization on to the
	// same host on another port or scheme). A 3xx is a transient failure.
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client = &noRedirect
	maxBytes := cfg.MaxResponseBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxResponseBytes
	}
	h := http.Header{}
	h.Set("Accept", "application/json")
	cfg.Editor.SetExchangeHeaders(h)
	return &Exchanger{url: base + tokenPath, client: client, headers: h, profile: cfg.Profile, maxBytes: maxBytes, clock: clock.OrReal(cfg.Clock)}
}

// NewHTTPClient returns the default client of [NewExchanger]: bounded dial,
// TLS handshake, response-header and total times, so a hung GitHub cannot
// stall the refresh loop.
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ResponseHeaderTimeout = 20 * time.Second
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Exchange makes one GET {APIURL}/copilot_internal/v2/token with githubToken.
// Errors: [ErrCredentialRejected] (401), [ErrNotExchangeable] (404, which
// wraps ErrCredentialRejected), [*NoAccessError] (403 no access),
// [*RateLimitedError] (429, or 403 rate limit), [ErrMalformedResponse] (200
// without a usable token), [*TransientError] (anything else, including
// network errors and ctx ending). No error holds the credential.
func (e *Exchanger) Exchange(ctx context.Context, githubToken secret.Secret) (*CopilotToken, error) {
	if githubToken.IsZero() {
		return nil, fmt.Errorf("exchange: empty GitHub token: %w", ErrCredentialRejected)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url, nil)
	if err != nil {
		// Only a malformed APIURL gets here; retrying will not help but the
		// operator must see it, so it is transient rather than terminal.
		return nil, &TransientError{Err: fmt.Errorf("exchange: bad API URL: %w", err)}
	}
	req.Header = e.headers.Clone()
	if e.profile != nil {
		p := e.profile.Get().Profile
		p.SetExchangeHeaders(req.Header)
		p.SetExtraHeaders(req.Header)
	}
	req.Header.Set("Authorization", "token "+githubToken.Reveal())

	resp, err := e.client.Do(req)
	if err != nil {
		return nil, &TransientError{Err: fmt.Errorf("exchange: %w", err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, e.maxBytes+1))
	if err != nil {
		return nil, &TransientError{Status: resp.StatusCode, Err: fmt.Errorf("exchange: reading answer: %w", err)}
	}
	tooLarge := int64(len(body)) > e.maxBytes
	if tooLarge {
		body = body[:e.maxBytes]
	}

	if code := resp.StatusCode; code != http.StatusOK && identity.IsRejection(code, body) {
		eb := parseErrorBody(body)
		return nil, &IdentityRejectedError{Status: code, Message: safeMessage(string(eb.Message), githubToken)}
	}
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if tooLarge {
			return nil, fmt.Errorf("exchange: %w: answer larger than %d bytes", ErrMalformedResponse, e.maxBytes)
		}
		date, _ := http.ParseTime(resp.Header.Get("Date"))
		tok, err := parseTokenResponse(body, date)
		if err != nil {
			return nil, fmt.Errorf("exchange: %w", err)
		}
		return tok, nil
	case code == http.StatusUnauthorized:
		return nil, fmt.Errorf("exchange: HTTP 401: %w", ErrCredentialRejected)
	case code == http.StatusNotFound:
		return nil, fmt.Errorf("exchange: HTTP 404: %w", ErrNotExchangeable)
	case code == http.StatusTooManyRequests:
		return nil, &RateLimitedError{Status: code, RetryAfter: rateLimitDelay(resp.Header, e.clock.Now())}
	case code == http.StatusForbidden:
		eb := parseErrorBody(body)
		if isRateLimited(resp.Header, eb) {
			return nil, &RateLimitedError{Status: code, RetryAfter: rateLimitDelay(resp.Header, e.clock.Now())}
		}
		msg := string(eb.ErrorDetails.Message)
		if msg == "" {
			msg = string(eb.Message)
		}
		return nil, &NoAccessError{
			Status:         code,
			NotificationID: safeMessage(string(eb.ErrorDetails.NotificationID), githubToken),
			Message:        safeMessage(msg, githubToken),
		}
	default:
		// 5xx and anything unexpected (3xx, 404 from a wrong base URL, ...)
		// are retried: docs/architecture.md section 4 rule 5 makes only 401
		// and 403 terminal (404: see docs/protocol.md section 2).
		return nil, &TransientError{Status: code}
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
