// Package h1 is the proxy's HTTP/1.1 client to the Copilot API: a keep-alive
// pool whose requests are written and answered on the calling goroutine.
//
// net/http's Transport gives every connection a read loop and a write loop
// goroutine and hands each request and response across them: two goroutine
// wake-ups per request at least, which on a small machine cost about a
// quarter of a forwarded request's CPU and latency (docs/benchmarks.md,
// bench/findings.md). Here the caller writes the request (headers and body in
// one write when the body is in memory), reads the response head with
// net/http's own parser ([http.ReadResponse]), and reads the body itself;
// the connection returns to the pool when the body has been read to its end.
//
// What it does not do goes to a fallback [http.RoundTripper] (net/http's):
// requests through an HTTP proxy, with a body of unknown length or larger
// than [Config.MaxBody] (an upstream that answers before reading a large body
// is only heard by a transport that writes and reads at once), and schemes
// other than http and https. It never speaks HTTP/2.
//
// An idle connection is checked before reuse (a non-blocking peek: an
// upstream that closed it, or sent anything while it was idle, gets it
// closed), so a stale keep-alive connection is not handed a request; a
// request whose write fails on a reused connection, where nothing can have
// been processed, is sent once more on a new one. As with net/http, a
// request the upstream may have received is never sent twice.
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a [Transport]. Dial and Fallback are required.
type Config struct {
	// Dial opens a TCP connection to addr (host:port).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS is the client configuration for https upstreams; ServerName
	// defaults to the request's host and NextProtos is set to http/1.1.
	// Nil: a default configuration (the system's roots).
	TLS *tls.Config
	// TLSHandshakeTimeout bounds a TLS handshake. Default 10 s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written; zero means none.
	ResponseHeaderTimeout time.Duration
	// MaxIdlePerHost bounds the idle connections kept per upstream.
	// Default 512.
	MaxIdlePerHost int
	// IdleTimeout closes connections idle this long. Default 90 s.
	IdleTimeout time.Duration
	// MaxBody is the largest request body sent here; larger ones, and
	// bodies of unknown length, go to Fallback. Default 256 KiB.
	MaxBody int64
	// Proxy, when set, is asked per request (as http.Transport.Proxy);
	// requests it sends through a proxy go to Fallback.
	Proxy func(*http.Request) (*url.URL, error)
	// Fallback carries what this transport does not (see the package doc).
	Fallback http.RoundTripper
}

// Transport is an HTTP/1.1 keep-alive client. It is safe for concurrent use.
type Transport struct {
	cfg     Config
	mu      sync.Mutex
	idle    map[string][]*conn  // by scheme://host:port, oldest first
	sweep   *time.Timer         // closes expired idle connections; nil when none is idle
	writers sync.Pool           // *bufio.Writer, held only while a request is written
	alive   func(net.Conn) bool // the liveness check (tests replace it)
}

// New returns a Transport configured by cfg.
func New(cfg Config) (*Transport, error) {
	if cfg.Dial == nil || cfg.Fallback == nil {
		return nil, errors.New("h1: Dial and Fallback are required")
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxIdlePerHost <= 0 {
		cfg.MaxIdlePerHost = 512
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 256 << 10
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.TLS = cfg.TLS.Clone()
	cfg.TLS.NextProtos = []string{"http/1.1"}
	if cfg.TLS.ClientSessionCache == nil {
		cfg.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	return &Transport{cfg: cfg, idle: map[string][]*conn{}, alive: alive,
		writers: sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}}, nil
}

// Buffer sizes: the writer is held only while a request is written (a body
// sent here fits a few of them); the reader stays with its connection for
// its life, so a long stream holds one: 4 KiB holds a response head (a
// longer header line is read in parts) and SSE events, and a large answer
// is read straight into the caller's buffer.
const (
	writeBufferSize = 16 << 10
	readBufferSize  = 4 << 10
)

// RoundTrip implements [http.RoundTripper].
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.cfg.Fallback.RoundTrip(req)
	}
	key := req.URL.Scheme + "://" + hostPort(req.URL)
	for attempt := 0; ; attempt++ {
		c, err := t.get(req.Context(), key, req.URL)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(t, req)
		if err == nil {
			return resp, nil
		}
		var we writeError
		if attempt == 0 && c.reused && errors.As(err, &we) && req.GetBody != nil && req.Context().Err() == nil {
			// The upstream closed a pooled connection as the request was
			// written: nothing it could act on arrived. Once more, anew.
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
			continue
		}
		return nil, err
	}
}

// handles says whether req is sent here rather than through Fallback.
func (t *Transport) handles(req *http.Request) bool {
	if req.URL == nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && (req.ContentLength <= 0 || req.ContentLength > t.cfg.MaxBody) {
		return false // unknown length, or large
	}
	if len(req.TransferEncoding) > 0 {
		return false
	}
	if t.cfg.Proxy != nil {
		if u, err := t.cfg.Proxy(req); err != nil || u != nil {
			return false
		}
	}
	return true
}

// CloseIdleConnections closes the pooled connections and those of Fallback.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*conn{}
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			_ = c.nc.Close()
		}
	}
	if ci, ok := t.cfg.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// get returns a live pooled connection to key, or dials one.
func (t *Transport) get(ctx context.Context, key string, u *url.URL) (*conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		cs := t.idle[key]
		if len(cs) == 0 {
			t.mu.Unlock()
			break
		}
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		t.idle[key] = cs[:len(cs)-1]
		t.mu.Unlock()
		// Bytes already buffered, or waiting on the socket, are not an
		// answer to anything: the connection is closing or confused.
		if now.Sub(c.idleSince) < t.cfg.IdleTimeout && c.br.Buffered() == 0 && t.alive(c.raw) {
			c.reused = true
			return c, nil
		}
		_ = c.nc.Close()
	}
	return t.dial(ctx, key, u)
}

// put returns a connection whose last answer was read to its end.
func (t *Transport) put(c *conn) {
	c.idleSince = time.Now()
	c.reused = false
	t.mu.Lock()
	cs := t.idle[c.key]
	if len(cs) >= t.cfg.MaxIdlePerHost {
		t.mu.Unlock()
		_ = c.nc.Close()
		return
	}
	t.idle[c.key] = append(cs, c)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.cfg.IdleTimeout, t.sweepIdle)
	}
	t.mu.Unlock()
}

// sweepIdle closes the connections idle longer than the timeout, and comes
// back while any stay idle: without a read loop per connection, nothing else
// would notice them age.
func (t *Transport) sweepIdle() {
	now := time.Now()
	var expired []*conn
	t.mu.Lock()
	next := time.Duration(-1)
	for key, cs := range t.idle {
		keep := cs[:0]
		for _, c := range cs {
			if age := now.Sub(c.idleSince); age >= t.cfg.IdleTimeout {
				expired = append(expired, c)
			} else {
				keep = append(keep, c)
				if left := t.cfg.IdleTimeout - age; next < 0 || left < next {
					next = left
				}
			}
		}
		clear(cs[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = keep
		}
	}
	if next >= 0 {
		t.sweep = time.AfterFunc(next, t.sweepIdle)
	} else {
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, c := range expired {
		_ = c.nc.Close()
	}
}

// dial connects to u's host, with TLS for https.
func (t *Transport) dial(ctx context.Context, key string, u *url.URL) (*conn, error) {
	addr := hostPort(u)
	raw, err := t.cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc := raw
	if u.Scheme == "https" {
		cfg := t.cfg.TLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, t.cfg.TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = raw.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			_ = raw.Close()
			return nil, fmt.Errorf("h1: %s negotiated %q, not http/1.1", addr, p)
		}
		nc = tc
	}
	return &conn{key: key, nc: nc, raw: raw, br: bufio.NewReaderSize(nc, readBufferSize)}, nil
}

// hostPort is u's host with the scheme's default port when it names none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// conn is one upstream connection.
type conn struct {
	key       string
	nc        net.Conn // what requests are written to (TLS over raw for https)
	raw       net.Conn // the TCP connection, for the liveness check
	br        *bufio.Reader
	idleSince time.Time
	reused    bool // taken from the pool for the current request
}

// writeError marks a failure to write a request: the upstream cannot have
// acted on it.
type writeError struct{ err error }

func (e writeError) Error() string { return "h1: writing the request: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// aLongTimeAgo is a deadline in the past, which unblocks any read or write.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes req and reads the response head on c. On success the
// response body owns c; on failure c is closed.
func (c *conn) roundTrip(t *Transport, req *http.Request) (*http.Response, error) {
	// A caller that gives up ends the exchange at once, wherever it is.
	var cancelled atomic.Bool
	stop := context.AfterFunc(req.Context(), func() {
		cancelled.Store(true)
		_ = c.nc.SetDeadline(aLongTimeAgo)
	})
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.nc.Close()
		if cancelled.Load() {
			return nil, req.Context().Err()
		}
		return nil, err
	}
	bw := t.writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	t.writers.Put(bw)
	if err != nil {
		return fail(writeError{err})
	}
	if d := t.cfg.ResponseHeaderTimeout; d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(fmt.Errorf("h1: reading the response: %w", err))
		}
		// 1xx answers other than 101 precede the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if t.cfg.ResponseHeaderTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
		// A cancel that set its deadline just before this clear would be
		// undone by it: set it again.
		if cancelled.Load() {
			_ = c.nc.SetDeadline(aLongTimeAgo)
		}
	}
	b := &body{rc: resp.Body, c: c, t: t, stop: stop, keep: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// body is a response body reading from its connection; it hands the
// connection back to the pool at the end, or closes it.
type body struct {
	rc   io.ReadCloser
	c    *conn
	t    *Transport
	stop func() bool // ends the context watch; false when it already fired
	keep bool
	done atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

// Close ends the body; a body not read to its end takes its connection
// with it.
func (b *body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: to the pool after a whole answer on
// a connection both sides keep, closed otherwise.
func (b *body) finish(atEOF bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	if b.stop() && atEOF && b.keep {
		b.t.put(b.c)
		return
	}
	_ = b.c.nc.Close()
}

// closeBody closes a request body the transport will not send, as
// RoundTrip must.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
