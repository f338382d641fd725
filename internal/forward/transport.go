package forward

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/body"
)

// DefaultResponseHeaderTimeout is [TransportConfig.ResponseHeaderTimeout]'s
// default: non-streamed completions of large models can take minutes before
// the first byte.
const DefaultResponseHeaderTimeout = 5 * time.Minute

// TransportConfig tunes the shared upstream transport. Zero fields get the
// defaults shown.
type TransportConfig struct {
	// DialTimeout bounds connecting to the upstream. Default 10 s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake. Default 10 s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers once the request is sent; a stream's body has no total
	// timeout. Default [DefaultResponseHeaderTimeout].
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool per upstream host.
	// Default 512.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes pooled connections idle this long. Default 90 s.
	IdleConnTimeout time.Duration
	// RootCAs verifies the upstream's certificate. Default: the system's.
	RootCAs *x509.CertPool
	// HTTP1Only keeps the upstream on HTTP/1.1 even when it offers HTTP/2.
	// Default false: HTTP/2 when offered (the proxy's flag defaults to
	// HTTP/1.1, see docs/architecture.md section 5).
	HTTP1Only bool
	// ConnectTo dials another address for some upstream host:port (see
	// [ParseConnectTo]); TLS still verifies the request's host. Default none.
	ConnectTo ConnectTo
}

// MaxResponseHeaderBytes bounds an upstream answer's header block
// (net/http's default is 10 MiB); the Copilot API's headers are a few KiB.
const MaxResponseHeaderBytes = 1 << 20

// tlsSessionCacheSize is how many upstream TLS sessions are kept for
// resumption: one or a few per upstream host.
const tlsSessionCacheSize = 64

// NewTransport returns the one transport all forwarded requests share:
// net/http's, with a keep-alive pool sized for high concurrency, TLS session
// resumption, HTTP/2 to the upstream when it offers it unless HTTP1Only, a
// bound on response headers, and no transparent gzip (the client's
// Accept-Encoding and the upstream's bytes pass through untouched, and
// streams are never held back by a decompressor). docs/architecture.md
// section 5 says why the defaults are what they are.
func NewTransport(cfg TransportConfig) *http.Transport {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, 10*time.Second)
	def(&cfg.TLSHandshakeTimeout, 10*time.Second)
	def(&cfg.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	def(&cfg.IdleConnTimeout, 90*time.Second)
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 512
	}
	t := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            cfg.ConnectTo.dialer((&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext),
		TLSClientConfig:        &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(tlsSessionCacheSize)},
		TLSHandshakeTimeout:    cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  cfg.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        cfg.IdleConnTimeout,
		MaxIdleConns:           cfg.MaxIdleConnsPerHost * 2,
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		ForceAttemptHTTP2:      true,
		DisableCompression:     true,
		// An HTTP/1.1 upstream connection carries one stream for its whole
		// life, so its buffers are per stream (32 KiB each cost 48 KiB more
		// per open stream than these in make bench's section 6). The write
		// buffer holds the headers and a small body (body.Small) so that they
		// leave in one write; reads larger than the read buffer (net/http's
		// default, 4 KiB) bypass it. HTTP/2 connections ignore both.
		WriteBufferSize: body.Small + 4<<10,
		ReadBufferSize:  4 << 10,
		HTTP2: &http.HTTP2Config{
			// Detect dead HTTP/2 connections instead of hanging streams on them.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	if cfg.HTTP1Only {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP1(true)
		t.ForceAttemptHTTP2 = false
		t.HTTP2 = nil
	}
	return t
}

// roundTrip sends the request (see send) and, for a pool key, sends it
// again to the next usable member after a 429, a 402 or a 401 that survived
// the refresh, each member at most once: nothing has reached the client
// yet, and the body is held in memory (see [Config.MaxBodyBytes]), so it can
// be replayed. With no member left it answers the pool's outage itself.
func (h *Handler) roundTrip(req *http.Request) (*http.Response, error) {
	c := callFrom(req.Context())
	for {
		resp, err := h.send(req, c)
		if err != nil || !h.judge(req.Context(), c, resp) {
			return resp, err
		}
		failed := c.acct.account
		ok, out := h.pickMember(c)
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		if !ok {
			h.metrics.failovers.WithLabelValues(c.key, "exhausted").Inc()
			h.log.Warn("no pool member left to retry on", "key", c.key, "account", failed, "request_id", c.requestID,
				"retry_after", out.RetryAfter, "reasons", out.Reasons)
			return outageResponse(req, c, out), nil
		}
		h.metrics.failovers.WithLabelValues(c.key, "retried").Inc()
		h.log.Info("retrying on another pool member", "key", c.key, "from", failed, "to", c.acct.account,
			"status", resp.StatusCode, "request_id", c.requestID)
		req = req.Clone(req.Context())
		setTarget(req, c)
		if c.body != nil {
			req.Body = c.body.Out()
		}
		c.retried = false // the new member gets its own refresh on a 401
	}
}

// send sends the request and, on a 401, asks the token source for a new
// token and retries once with it.
func (h *Handler) send(req *http.Request, c *call) (*http.Response, error) {
	if c.body != nil && c.body.InMemory() && req.Body != nil && req.Body != http.NoBody {
		req.Body = c.body.Out()
	}
	start := h.clock.Now()
	resp, err := h.transport.RoundTrip(req)
	h.metrics.upstream.WithLabelValues(c.route.name).Observe(h.clock.Now().Sub(start).Seconds())
	if err != nil || c.retried || !(resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden && refreshable403(resp)) {
		return resp, err
	}
	c.retried = true
	next, rerr := c.source(h).Refresh(req.Context(), c.tok)
	if rerr != nil {
		h.metrics.retries.WithLabelValues("refresh_failed").Inc()
		h.log.Warn("upstream refused the token; refresh failed, passing the 401 through",
			"request_id", c.requestID, "generation", c.tok.Generation, "error", rerr)
		return resp, nil
	}
	if next == nil || next == c.tok || (next.Generation == c.tok.Generation && next.Epoch == c.tok.Epoch) || h.usable(next) != nil {
		h.metrics.retries.WithLabelValues("no_new_token").Inc()
		h.log.Warn("upstream refused the token; no newer usable token, passing the 401 through",
			"request_id", c.requestID, "generation", c.tok.Generation)
		return resp, nil
	}
	base, berr := h.baseURL(next)
	if berr != nil {
		h.metrics.retries.WithLabelValues("refresh_failed").Inc()
		return resp, nil
	}
	// The 401 body is small; drain a little so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()

	h.metrics.retries.WithLabelValues("retried").Inc()
	h.log.Info("upstream refused the token; retrying with a newer one",
		"request_id", c.requestID, "old_generation", c.tok.Generation, "generation", next.Generation)
	c.tok, c.base = next, base
	r2 := req.Clone(req.Context())
	setTarget(r2, c)
	if c.body != nil {
		r2.Body = c.body.Out()
	}
	start = h.clock.Now()
	resp, err = h.transport.RoundTrip(r2)
	h.metrics.upstream.WithLabelValues(c.route.name).Observe(h.clock.Now().Sub(start).Seconds())
	return resp, err
}

// roundTripFunc adapts a function to [http.RoundTripper].
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
