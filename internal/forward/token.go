package forward

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Token is one Copilot token as the forwarding code needs it. A Token is
// immutable once handed out: sources replace it, never change it, so it can be
// shared between requests without locks.
type Token struct {
	// Value is the Copilot token sent upstream as a Bearer credential.
	Value secret.Secret
	// Generation and Epoch identify the token for RefreshToken and logs.
	Generation uint64
	Epoch      string
	// ExpiresAt is the last instant the token may be used.
	ExpiresAt time.Time
	// APIBaseURL is the Copilot API base URL that came with the token.
	APIBaseURL string
}

// TokenSource hands out the newest Copilot token. Implementations must be safe
// for concurrent use; Token is called on every request and must neither block
// nor allocate much (an atomic load), while Refresh may make a network call.
type TokenSource interface {
	// Token returns the newest usable token, or an error wrapping
	// [ErrNoToken] that says why there is none (for example the cached token
	// expired while the broker was unreachable).
	Token() (*Token, error)
	// Refresh reports that the upstream refused rejected and returns the
	// token to retry with. It returns rejected itself (or an error) when no
	// newer token can be had.
	Refresh(ctx context.Context, rejected *Token) (*Token, error)
}

// ErrNoToken is wrapped by token sources when no usable token is held; the
// proxy answers 503 with the error's text.
var ErrNoToken = errors.New("no usable Copilot token")

// ErrBadBaseURL is returned by [ValidateBaseURL] for an api_base_url that the
// proxy must not send the token to.
var ErrBadBaseURL = errors.New("refusing Copilot API base URL")

// AllowedHostSuffix is the default host suffix a token's api_base_url must
// have (see [DefaultAllowedAPIHosts]).
const AllowedHostSuffix = ".githubcopilot.com"

// DefaultAllowedAPIHosts returns the default [Config.AllowedAPIHosts]:
// hosts under [AllowedHostSuffix].
func DefaultAllowedAPIHosts() []string { return []string{AllowedHostSuffix} }

// hostAllowed reports whether host (lower case) matches an entry of allowed:
// an entry starting with "." matches hosts under it (not the bare suffix
// itself), any other entry matches that exact host.
func hostAllowed(host string, allowed []string) bool {
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSpace(a))
		switch {
		case a == "" || a == ".":
		case strings.HasPrefix(a, "."):
			if strings.HasSuffix(host, a) && len(host) > len(a) {
				return true
			}
		case host == a:
			return true
		}
	}
	return false
}

// ValidateBaseURL parses a token's api_base_url and accepts it only if it is
// https, its host matches allowed (".suffix" entries match hosts under the
// suffix, others an exact host; nil means [DefaultAllowedAPIHosts]), it has
// no user info, no explicit port other than 443, and a plain path (no dot
// segments, empty segments or escapes). Anything else could hand the token to
// a host, or a path on it, that is not Copilot's API.
func ValidateBaseURL(raw string, allowed []string) (*url.URL, error) {
	if allowed == nil {
		allowed = DefaultAllowedAPIHosts()
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the raw URL, which could carry user info.
		return nil, fmt.Errorf("%w: unparsable URL", ErrBadBaseURL)
	}
	host := strings.ToLower(u.Hostname())
	p := strings.TrimRight(u.Path, "/")
	switch {
	case u.User != nil: // first: the other messages quote raw, which must not then carry credentials
		return nil, fmt.Errorf("%w: user info not allowed", ErrBadBaseURL)
	case u.Scheme != "https":
		return nil, fmt.Errorf("%w %q: scheme must be https", ErrBadBaseURL, raw)
	case !hostAllowed(host, allowed):
		return nil, fmt.Errorf("%w %q: host must match %s (--allowed-api-hosts)", ErrBadBaseURL, raw, strings.Join(allowed, ","))
	case u.Host != u.Hostname() && u.Host != u.Hostname()+":443":
		return nil, fmt.Errorf("%w %q: only the default port is allowed", ErrBadBaseURL, raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%w %q: query and fragment not allowed", ErrBadBaseURL, raw)
	case u.RawPath != "" || (p != "" && path.Clean(p) != p):
		return nil, fmt.Errorf("%w %q: the path must be plain (no dot or empty segments, no escapes)", ErrBadBaseURL, raw)
	}
	return trimBase(u), nil
}

// ParseOverrideURL parses an operator-given base URL (--copilot-api-url):
// http or https, no user info. It is trusted, so no host check applies.
func ParseOverrideURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("copilot API URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("copilot API URL %q: want http(s)://host[:port][/path] without user info", raw)
	}
	return trimBase(u), nil
}

func trimBase(u *url.URL) *url.URL {
	c := *u
	c.Path = strings.TrimRight(c.Path, "/")
	c.RawPath = ""
	c.RawQuery, c.Fragment = "", ""
	return &c
}
