// Package upstream is the proxy's one upstream transport: net/http's
// [http.Transport], tuned (docs/architecture.md section 5 says why each
// default is what it is), with a --connect-to style dial map.
package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/body"
)

// DefaultResponseHeaderTimeout is [Config.ResponseHeaderTimeout]'s
// default: non-streamed completions of large models can take minutes before
// the first byte.
const DefaultResponseHeaderTimeout = 5 * time.Minute

// Config tunes the shared upstream transport. Zero fields get the
// defaults shown.
type Config struct {
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
	// Default false: HTTP/2 when offered, as the proxy's flag does
	// (docs/architecture.md section 5 says why).
	HTTP1Only bool
	// ConnectTo dials another address for some upstream host:port (see
	// [ParseConnectTo]); TLS still verifies the request's host. Default none.
	ConnectTo ConnectTo
}

// MaxResponseHeaderBytes bounds an upstream answer's header block
// (net/http's default is 10 MiB); the Copilot API's headers are a few KiB.
const MaxResponseHeaderBytes = 1 << 20

// MaxReceiveBufferPerStream is the HTTP/2 receive window of a stream.
const MaxReceiveBufferPerStream = 256 << 10

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
func NewTransport(cfg Config) *http.Transport {
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
			// What an HTTP/2 stream may receive ahead of its client's reads:
			// the bound on what a slow client makes the proxy hold per stream
			// (net/http's default is 4 MiB, so 10,000 streams could hold
			// 40 GiB). Streams run at the model's pace, far below what this
			// window allows even at 100 ms of round trip (2.5 MiB/s). The
			// connection's window stays net/http's 1 GiB: it must exceed the
			// streams per connection (the server's MaxConcurrentStreams)
			// times this, or a few slow clients would stall the rest.
			MaxReceiveBufferPerStream: MaxReceiveBufferPerStream,
			// No HPACK dynamic table for request headers: every request
			// carries two values never seen before (X-Request-Id and
			// X-Agent-Task-Id), and a shared connection carries every
			// account's token, so the table would mostly churn: each new
			// value indexed and an older one evicted, at a cost per request
			// that make bench section 1b measured (docs/architecture.md
			// section 5). Literal fields cost a few hundred bytes more per
			// request on the wire, none of the upstream's table.
			MaxEncoderHeaderTableSize: 1,
		},
	}
	// TLS connections are set up by tlsDialer (tlsdial.go): at most a few
	// handshakes at once to an HTTP/2 upstream, and failures it can tell
	// apart (*ConnectError) so that the request is sent again.
	t.DialTLSContext = newTLSDialer(t, t.DialContext, cfg.TLSHandshakeTimeout).DialTLSContext
	if cfg.HTTP1Only {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP1(true)
		t.ForceAttemptHTTP2 = false
		t.HTTP2 = nil
	}
	return t
}
