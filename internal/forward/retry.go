package forward

// The forward stage's sending: retries on a refused token and failover to
// another pool member, over the shared transport (package upstream).

import (
	"errors"
	"io"
	"net/http"

	transport "github.com/copilot-broker/copilot-broker/internal/forward/upstream"
)

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
	resp, err := h.sendConnecting(req, c)
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
	resp, err = h.sendConnecting(r2, c)
	h.metrics.upstream.WithLabelValues(c.route.name).Observe(h.clock.Now().Sub(start).Seconds())
	return resp, err
}

// connectRetries is how many more times a request is sent whose upstream
// connection could not be set up (upstream.ConnectError: a dial or TLS
// handshake failure, or a setup given up because another connection came up
// meanwhile): none of its bytes was written, so sending it again is safe.
const connectRetries = 2

// sendConnecting is the transport's RoundTrip of req, tracked (so that a
// connection setup started for it and no longer needed ends without failing
// it), sent again at once after a failed connection setup while the body
// can be replayed.
func (h *Handler) sendConnecting(req *http.Request, c *call) (*http.Response, error) {
	req, tracked := transport.TrackConn(req)
	defer tracked()
	for i := 0; ; i++ {
		resp, err := h.transport.RoundTrip(req)
		var ce *transport.ConnectError
		if err == nil || i == connectRetries || !errors.As(err, &ce) || !ce.Retryable() || req.Context().Err() != nil ||
			(c.body == nil && req.Body != nil && req.Body != http.NoBody) {
			return resp, err
		}
		h.metrics.retries.WithLabelValues("connect").Inc()
		h.log.Info("upstream connection setup failed before the request was sent; sending it again",
			"request_id", c.requestID, "attempt", i+2, "error", err)
		req = req.Clone(req.Context())
		if c.body != nil {
			req.Body = c.body.Out()
		}
	}
}

// roundTripFunc adapts a function to [http.RoundTripper].
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
