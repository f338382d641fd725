// Package login obtains a long-lived GitHub token through the OAuth device
// flow that Copilot editor integrations use (docs/protocol.md,
// section 1), and stores it in a file only its owner can read.
//
// [Run] asks for a device code, hands the user code and the verification URL
// to a prompt, then polls no faster than the server allows: it keeps polling
// on authorization_pending, slows down by 5 s (or to the interval the server
// names) on slow_down, starts again with a new code on expired_token (a
// bounded number of times) and stops on access_denied. The token never
// leaves the returned [secret.Secret].
package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Defaults of [Config], from docs/protocol.md section 1.
const (
	DefaultGitHubURL = "https://github.com"
	DefaultClientID  = "Iv1.b507a08c87ecfe98"
	DefaultScope     = "read:user"
	// DefaultRestarts is how many times an expired code is replaced by a new
	// one before giving up.
	DefaultRestarts = 2

	grantType = "urn:ietf:params:oauth:grant-type:device_code"
	// slowDownStep is what slow_down adds to the interval (RFC 8628 §3.5).
	slowDownStep = 5 * time.Second
	// defaultInterval is the polling interval when the server names none.
	defaultInterval = 5 * time.Second
	// maxPollFailures is how many polls in a row may fail at the transport
	// level (network, 5xx) before the login gives up.
	maxPollFailures = 3
	maxBody         = 64 << 10
)

// Errors that callers branch on.
var (
	// ErrAccessDenied means the user refused the authorization.
	ErrAccessDenied = errors.New("login: the authorization request was denied")
	// ErrExpired means every device code expired before it was entered.
	ErrExpired = errors.New("login: the device code expired before it was entered")
)

// OAuthError is an error answer of the device flow other than the pending
// states, for example incorrect_client_credentials or device_flow_disabled.
type OAuthError struct {
	Code, Description string
	interval          int // seconds, with slow_down
}

func (e *OAuthError) Error() string {
	if e.Description == "" {
		return "login: github: " + e.Code
	}
	return fmt.Sprintf("login: github: %s: %s", e.Code, e.Description)
}

// Code is what the user needs to authorize this device.
type Code struct {
	// UserCode is the code to enter, e.g. "ABCD-1234".
	UserCode string
	// VerificationURI is where to enter it.
	VerificationURI string
	// ExpiresIn is how long the code stays valid.
	ExpiresIn time.Duration
}

// Config configures [Run].
type Config struct {
	// GitHubURL is the GitHub host, e.g. https://github.com or
	// https://HOST for GitHub Enterprise (default [DefaultGitHubURL]). Plain
	// http is accepted for loopback hosts only (the sandbox).
	GitHubURL string
	// ClientID and Scope default to [DefaultClientID] and [DefaultScope].
	ClientID, Scope string
	// HTTPClient makes the requests (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// Clock times the polling (nil means the real clock).
	Clock clock.Clock
	// Prompt is told each device code, including the new one after an
	// expiry. Required.
	Prompt func(Code)
	// Restarts is how many times an expired code is replaced (default
	// [DefaultRestarts]; negative means never).
	Restarts int
}

// Run performs the device flow and returns the GitHub token.
func Run(ctx context.Context, cfg Config) (secret.Secret, error) {
	c, err := newClient(cfg)
	if err != nil {
		return secret.Secret{}, err
	}
	restarts := cfg.Restarts
	if restarts == 0 {
		restarts = DefaultRestarts
	}
	for attempt := 0; ; attempt++ {
		dc, err := c.deviceCode(ctx)
		if err != nil {
			return secret.Secret{}, err
		}
		cfg.Prompt(Code{UserCode: dc.UserCode, VerificationURI: dc.VerificationURI, ExpiresIn: time.Duration(dc.ExpiresIn) * time.Second})
		tok, err := c.poll(ctx, dc)
		if errors.Is(err, ErrExpired) && attempt < restarts {
			continue
		}
		return tok, err
	}
}

type client struct {
	base            *url.URL
	clientID, scope string
	http            *http.Client
	clock           clock.Clock
}

func newClient(cfg Config) (*client, error) {
	raw := cfg.GitHubURL
	if raw == "" {
		raw = DefaultGitHubURL
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil, fmt.Errorf("login: --github-url %q: want https://HOST", raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("login: --github-url %q: want https (plain http only on loopback)", raw)
	}
	if cfg.Prompt == nil {
		return nil, errors.New("login: Config.Prompt is nil")
	}
	c := &client{base: u, clientID: cfg.ClientID, scope: cfg.Scope, http: cfg.HTTPClient, clock: clock.OrReal(cfg.Clock)}
	if c.clientID == "" {
		c.clientID = DefaultClientID
	}
	if c.scope == "" {
		c.scope = DefaultScope
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	// Device codes and the token travel in these calls: follow no redirect
	// (a 3xx fails the login), whatever the given client's policy.
	noRedirect := *c.http
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &noRedirect
	return c, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// answer is the union of the device flow's JSON answers.
type answer struct {
	DeviceCode       string `json:"device_code"`
	UserCode         string `json:"user_code"`
	VerificationURI  string `json:"verification_uri"`
	ExpiresIn        int    `json:"expires_in"`
	Interval         int    `json:"interval"`
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// post sends a form and decodes the JSON answer. A transport failure or a
// 5xx is reported as transient.
func (c *client) post(ctx context.Context, path string, form url.Values) (*answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &transientError{fmt.Errorf("login: POST %s: %w", path, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &transientError{fmt.Errorf("login: POST %s: reading answer: %w", path, err)}
	}
	var a answer
	jerr := json.Unmarshal(body, &a)
	switch {
	case resp.StatusCode >= 500:
		return nil, &transientError{fmt.Errorf("login: POST %s: HTTP %d", path, resp.StatusCode)}
	case jerr == nil && a.Error != "":
		return nil, &OAuthError{Code: a.Error, Description: a.ErrorDescription, interval: a.Interval}
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("login: POST %s: HTTP %d", path, resp.StatusCode)
	case jerr != nil:
		return nil, fmt.Errorf("login: POST %s: answer is not JSON: %w", path, jerr)
	}
	return &a, nil
}

type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func (c *client) deviceCode(ctx context.Context) (*answer, error) {
	a, err := c.post(ctx, "/login/device/code", url.Values{"client_id": {c.clientID}, "scope": {c.scope}})
	if err != nil {
		return nil, err
	}
	if a.DeviceCode == "" || a.UserCode == "" || a.VerificationURI == "" {
		return nil, errors.New("login: device code answer lacks device_code, user_code or verification_uri")
	}
	return a, nil
}

// poll waits for the user's decision on one device code.
func (c *client) poll(ctx context.Context, dc *answer) (secret.Secret, error) {
	// Without an interval RFC 8628 §3.2 says 5 s: polling faster would
	// earn slow_down answers.
	interval := defaultInterval
	if dc.Interval > 0 {
		interval = time.Duration(dc.Interval) * time.Second
	}
	deadline := time.Time{}
	if dc.ExpiresIn > 0 {
		deadline = c.clock.Now().Add(time.Duration(dc.ExpiresIn) * time.Second)
	}
	form := url.Values{"client_id": {c.clientID}, "device_code": {dc.DeviceCode}, "grant_type": {grantType}}
	timer := c.clock.NewTimer(interval)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return secret.Secret{}, fmt.Errorf("login: %w", ctx.Err())
		case <-timer.C():
		}
		if !deadline.IsZero() && !c.clock.Now().Before(deadline) {
			return secret.Secret{}, ErrExpired
		}
		a, err := c.post(ctx, "/login/oauth/access_token", form)
		var oe *OAuthError
		var te *transientError
		switch {
		case err == nil && a.AccessToken != "":
			return secret.New(a.AccessToken), nil
		case err == nil:
			return secret.Secret{}, errors.New("login: access token answer has neither access_token nor error")
		case errors.As(err, &te):
			if ctx.Err() != nil {
				return secret.Secret{}, fmt.Errorf("login: %w", ctx.Err())
			}
			if failures++; failures >= maxPollFailures {
				return secret.Secret{}, err
			}
		case !errors.As(err, &oe):
			return secret.Secret{}, err
		case oe.Code == "authorization_pending":
			failures = 0
		case oe.Code == "slow_down":
			failures = 0
			interval = max(interval+slowDownStep, time.Duration(oe.interval)*time.Second)
		case oe.Code == "expired_token":
			return secret.Secret{}, ErrExpired
		case oe.Code == "access_denied":
			return secret.Secret{}, ErrAccessDenied
		default:
			return secret.Secret{}, err
		}
		timer.Reset(interval)
	}
}
