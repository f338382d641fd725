package forward

import (
	"net/http"

	"github.com/copilot-broker/copilot-broker/internal/forward/h1"
)

// NewUpstream returns the transport the proxy forwards with: with
// cfg.HTTP1Only, the h1 keep-alive pool (requests written and answered on
// the handler's goroutine), with NewTransport's net/http transport, same
// settings, for what h1 does not carry (large or unsized bodies, HTTP
// proxies); otherwise NewTransport's, which speaks HTTP/2 when the upstream
// offers it.
func NewUpstream(cfg TransportConfig) http.RoundTripper {
	t := NewTransport(cfg)
	if !cfg.HTTP1Only {
		return t
	}
	u, err := h1.New(h1.Config{
		Dial: t.DialContext, TLS: t.TLSClientConfig, TLSHandshakeTimeout: t.TLSHandshakeTimeout,
		ResponseHeaderTimeout: t.ResponseHeaderTimeout, MaxIdlePerHost: t.MaxIdleConnsPerHost,
		IdleTimeout: t.IdleConnTimeout, Proxy: t.Proxy, Fallback: t,
	})
	if err != nil { // only for a missing Dial or Fallback, which t has
		return t
	}
	return u
}
