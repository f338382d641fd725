// Package brokerclient is the proxy's side of the broker's gRPC API: it
// watches an account's token with WatchToken, falls back to GetToken, reports
// upstream rejections with RefreshToken, and implements
// [forward.TokenSource] on top of what it learns.
package brokerclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/backoff"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config configures a [Client].
type Config struct {
	// Broker is the broker's API. Required.
	Broker brokerv1.TokenBrokerServiceClient
	// Account names the watched account; empty means the default account.
	Account string
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// reconnection attempts. Defaults 250 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds GetToken and RefreshToken calls. Default 10 s.
	CallTimeout time.Duration
	// ServeCachedWhenRejected keeps serving the cached token until it
	// expires after the broker reports REJECTED (GitHub refused the
	// credential: revoked, or no Copilot access). By default the cached
	// token is dropped at once, so revoking the credential cuts access
	// within one watch message instead of up to the token's lifetime.
	ServeCachedWhenRejected bool
	// ValidateBaseURL makes Ready also require that the token's
	// api_base_url passes [forward.ValidateBaseURL]: the proxy would refuse
	// to forward with it otherwise. Leave it false when an override URL
	// replaces the token's.
	ValidateBaseURL bool
	// AllowedAPIHosts is the host list for ValidateBaseURL (nil: the
	// default, see [forward.Config.AllowedAPIHosts]).
	AllowedAPIHosts []string
	// Profile, when set, receives the upstream profile the broker sends
	// with every token message (shared by every client of a set).
	Profile *identity.Holder
	// Registerer receives the client's metrics. Default: none.
	Registerer prometheus.Registerer
	// Clock decides token expiry and reconnect delays. Default real.
	Clock clock.Clock
	// Logger receives connection and rotation events. Default: discard.
	Logger *slog.Logger
}

// Client holds the newest token the broker has sent. Token and Refresh are
// safe for concurrent use; Token is one atomic load and a clock reading.
// [Client.Run] must be running for the token to stay fresh.
type Client struct {
	broker   brokerv1.TokenBrokerServiceClient
	account  string
	minBack  time.Duration
	maxBack  time.Duration
	timeout  time.Duration
	keepRej  bool
	checkURL bool
	allowed  []string
	clock    clock.Clock
	log      *slog.Logger
	m        *metrics
	profile  *identity.Holder

	state atomic.Pointer[state]
	mu    sync.Mutex    // serialises apply: the watch, GetToken and RefreshToken all deliver states
	woken chan struct{} // closed and replaced on every state change (under mu)
	sf    singleflight.Group
}

// state is an immutable snapshot of what the client knows.
type state struct {
	// tok is the newest usable token received; it is kept, possibly past
	// the broker's own status, until it expires, except that a REJECTED
	// status drops it (unless ServeCachedWhenRejected).
	tok *forward.Token
	// epoch and gen order messages: an older generation of the same epoch is
	// ignored; a new epoch (a restarted or different broker) resets the order.
	epoch string
	gen   uint64
	seen  bool
	// status and lastErr are the broker's view, for error messages.
	status  brokerv1.TokenStatus
	lastErr string
	// connErr says why the watch is down; nil while it delivers messages.
	connErr error
	// notFound says the broker's last answer was NOT_FOUND for the account
	// (removed, or not readable with the broker key); a token message
	// clears it.
	notFound bool
}

// New returns a Client configured by cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Broker == nil {
		return nil, errors.New("brokerclient: a broker client is required")
	}
	c := &Client{
		broker:   cfg.Broker,
		account:  cfg.Account,
		minBack:  cfg.MinBackoff,
		maxBack:  cfg.MaxBackoff,
		timeout:  cfg.CallTimeout,
		keepRej:  cfg.ServeCachedWhenRejected,
		checkURL: cfg.ValidateBaseURL,
		allowed:  cfg.AllowedAPIHosts,
		clock:    clock.OrReal(cfg.Clock),
		log:      cfg.Logger,
		profile:  cfg.Profile,
		woken:    make(chan struct{}),
	}
	if c.minBack <= 0 {
		c.minBack = 250 * time.Millisecond
	}
	if c.maxBack < c.minBack {
		c.maxBack = max(30*time.Second, c.minBack)
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.state.Store(&state{connErr: errors.New("not connected to the broker yet")})
	c.m = newMetrics(cfg.Registerer, c)
	return c, nil
}

// Token returns the newest token unless it has expired. It never returns a
// token past its expiry: then the error wraps [forward.ErrNoToken] and says
// why no newer one came (the broker unreachable, or its status).
func (c *Client) Token() (*forward.Token, error) {
	s := c.state.Load()
	if s.tok == nil {
		return nil, fmt.Errorf("%w: %s", forward.ErrNoToken, s.reason())
	}
	if !c.clock.Now().Before(s.tok.ExpiresAt) {
		return nil, fmt.Errorf("%w: the cached token (generation %d) expired at %s and %s",
			forward.ErrNoToken, s.tok.Generation, s.tok.ExpiresAt.UTC().Format(time.RFC3339), s.reason())
	}
	return s.tok, nil
}

// reason explains why no fresh token is at hand, in words a client can act
// on: clients see it in 503s. It names neither the broker's address nor the
// broker's last_error (GitHub's text, which may name the account's owner):
// those go to the proxy's log.
func (s *state) reason() string {
	switch {
	case s.connErr != nil:
		switch code := status.Code(s.connErr); code {
		case codes.NotFound:
			return "the broker does not serve this account; ask the operator to check the key's accounts"
		case codes.Unauthenticated, codes.PermissionDenied:
			return "the broker refused the proxy's broker key (gRPC " + code.String() + "); ask the operator to check it"
		case codes.Unavailable, codes.DeadlineExceeded:
			return "the broker is unreachable (gRPC " + code.String() + "; details in the proxy's log); retry shortly"
		default:
			return "the broker gave no token (gRPC " + code.String() + "; details in the proxy's log); retry shortly"
		}
	case s.status == brokerv1.TokenStatus_TOKEN_STATUS_REJECTED:
		return "the broker has no valid token (status REJECTED): GitHub refused the account's credential; ask the operator to replace it"
	default:
		return fmt.Sprintf("the broker has no valid token (status %s); retry shortly", statusName(s.status))
	}
}

func statusName(st brokerv1.TokenStatus) string {
	const prefix = "TOKEN_STATUS_"
	n := st.String()
	if len(n) > len(prefix) && n[:len(prefix)] == prefix {
		return n[len(prefix):]
	}
	return n
}

// Ready returns nil while a valid token is held (with an accepted
// api_base_url when Config.ValidateBaseURL), for /readyz.
func (c *Client) Ready() error {
	tok, err := c.Token()
	if err == nil && c.checkURL {
		if _, err := forward.ValidateBaseURL(tok.APIBaseURL, c.allowed); err != nil {
			return fmt.Errorf("%w: %w", forward.ErrNoToken, err)
		}
	}
	return err
}

// WaitReady blocks until a valid token is held or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch := c.woken
		c.mu.Unlock()
		if c.Ready() == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a token: %w (%v)", ctx.Err(), c.Ready())
		}
	}
}

// Refresh reports that the upstream refused rejected. When a newer token is
// already held it is returned without asking the broker; otherwise one
// RefreshToken call naming rejected's generation is made on behalf of all
// concurrent callers, and the token after it returned.
func (c *Client) Refresh(ctx context.Context, rejected *forward.Token) (*forward.Token, error) {
	if tok, err := c.Token(); err == nil && newer(tok, rejected) {
		return tok, nil
	}
	key := rejected.Epoch + "/" + strconv.FormatUint(rejected.Generation, 10)
	ch := c.sf.DoChan(key, func() (any, error) {
		// A flight that just ended may have brought the newer token.
		if tok, err := c.Token(); err == nil && newer(tok, rejected) {
			return nil, nil
		}
		// Shared by every caller, so no single caller's cancellation ends it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		resp, err := c.broker.RefreshToken(cctx, &brokerv1.RefreshTokenRequest{Account: c.account, RejectedGeneration: rejected.Generation})
		if err != nil {
			c.m.refreshes.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("broker RefreshToken: %w", err)
		}
		c.m.refreshes.WithLabelValues("ok").Inc()
		c.apply(resp.GetToken(), "refresh")
		return nil, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c.Token()
}

func newer(a, b *forward.Token) bool {
	return a != b && (a.Epoch != b.Epoch || a.Generation > b.Generation)
}

// apply takes in one state message from the broker. It reports whether the
// message was accepted (not older than what is held).
func (c *Client) apply(t *brokerv1.Token, via string) bool {
	if t == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.state.Load()
	if cur.seen && t.GetEpoch() == cur.epoch && t.GetGeneration() < cur.gen {
		c.log.Debug("ignoring an older token generation", "via", via, "generation", t.GetGeneration(), "held", cur.gen)
		return false
	}
	c.takeProfile(t.GetProfile(), via)
	next := *cur
	next.seen, next.epoch, next.gen = true, t.GetEpoch(), t.GetGeneration()
	next.status, next.lastErr, next.notFound = t.GetStatus(), t.GetLastError(), false
	usable := (t.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_VALID || t.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_STALE) &&
		t.GetValue() != "" && t.GetExpiresAt().IsValid()
	if usable {
		exp := t.GetExpiresAt().AsTime()
		old := cur.tok
		// Keep the same pointer for an unchanged token: the forwarding caches
		// its validated base URL per token pointer.
		if old == nil || old.Generation != t.GetGeneration() || old.Epoch != t.GetEpoch() ||
			!old.ExpiresAt.Equal(exp) || old.APIBaseURL != t.GetApiBaseUrl() || old.Value.Reveal() != t.GetValue() {
			next.tok = &forward.Token{
				Value:      secret.New(t.GetValue()),
				Generation: t.GetGeneration(),
				Epoch:      t.GetEpoch(),
				ExpiresAt:  exp,
				APIBaseURL: t.GetApiBaseUrl(),
			}
			c.log.Info("token updated", "via", via, "generation", t.GetGeneration(), "epoch", t.GetEpoch(),
				"fingerprint", next.tok.Value.Fingerprint(), "expires_at", exp, "status", statusName(t.GetStatus()))
		}
	} else if t.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_REJECTED && !c.keepRej {
		if cur.tok != nil {
			c.log.Warn("broker reports the credential REJECTED; dropping the cached token", "via", via,
				"generation", cur.tok.Generation, "last_error", t.GetLastError())
		}
		next.tok = nil
	} else if cur.status != t.GetStatus() {
		c.log.Warn("broker has no valid token; keeping the cached one until it expires", "via", via,
			"status", statusName(t.GetStatus()), "last_error", t.GetLastError())
	}
	c.state.Store(&next)
	close(c.woken)
	c.woken = make(chan struct{})
	return true
}

// setConn records whether the watch is delivering messages (err nil) or why
// not.
func (c *Client) setConn(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := *c.state.Load()
	next.connErr = err
	c.state.Store(&next)
	if err == nil {
		c.m.connected.Set(1)
	} else {
		c.m.connected.Set(0)
	}
	close(c.woken)
	c.woken = make(chan struct{})
}

// Run watches the token until ctx ends, reconnecting with jittered
// exponential backoff (reset after a stream that delivered a message) and
// trying GetToken when a watch delivered nothing. It returns nil when ctx
// ends.
func (c *Client) Run(ctx context.Context) error {
	watch := func(ctx context.Context) (bool, error) {
		got, err := c.watch(ctx)
		if err == nil {
			// The broker ends a stream on age or when it shuts down: until
			// the next one delivers, it is unavailable (a client's 503
			// says so, not "gRPC Unknown").
			err = status.Error(codes.Unavailable, "the broker ended the watch stream")
		}
		return got, err
	}
	c.follow(ctx, c.log, watchLoop{what: "watch", watch: watch,
		ended: func(err error) bool {
			c.setConn(err)
			c.forgetIfNotFound(err)
			return false
		},
		retry: func(got bool) {
			if !got {
				c.fallback(ctx)
			}
			c.m.reconnects.Inc()
		},
	})
	c.setConn(fmt.Errorf("stopped: %w", ctx.Err()))
	return nil
}

// watch runs one WatchToken stream. got reports whether any message came.
func (c *Client) watch(ctx context.Context) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.broker.WatchToken(sctx, &brokerv1.WatchTokenRequest{Account: c.account})
	if err != nil {
		return false, fmt.Errorf("broker WatchToken: %w", err)
	}
	got, err = receive(stream, func(resp *brokerv1.WatchTokenResponse, first bool) {
		if first {
			c.setConn(nil)
			c.log.Info("watching the broker's token")
		}
		c.apply(resp.GetToken(), "watch")
	})
	if err != nil {
		return got, fmt.Errorf("broker WatchToken: %w", err)
	}
	return got, nil
}

// fallback asks GetToken once, for brokers (or load balancers in front of
// them) where the stream fails but unary calls work.
func (c *Client) fallback(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.broker.GetToken(cctx, &brokerv1.GetTokenRequest{Account: c.account})
	if err != nil {
		c.log.Debug("broker GetToken failed", "error", err)
		return
	}
	c.apply(resp.GetToken(), "get")
}

// backoff is min(MaxBackoff, MinBackoff·2^attempt), jittered to between half
// and all of it.
func (c *Client) backoff(attempt int) time.Duration {
	return backoff.Delay(c.minBack, c.maxBack, attempt)
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
