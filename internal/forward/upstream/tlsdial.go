package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// ConnectError is a failure to set up an upstream connection (dial or TLS
// handshake) before any byte of a request was written on it: sending the
// request again is safe.
type ConnectError struct {
	Addr string
	Err  error
}

func (e *ConnectError) Error() string { return fmt.Sprintf("connecting to %s: %v", e.Addr, e.Err) }
func (e *ConnectError) Unwrap() error { return e.Err }

// Retryable says whether another attempt may succeed: not when the
// upstream's certificate was refused (the same certificate comes back).
func (e *ConnectError) Retryable() bool {
	var cv *tls.CertificateVerificationError
	return !errors.As(e.Err, &cv)
}

// errNotNeeded ends a connection setup that waited for its turn while
// another HTTP/2 connection to the same host was set up: net/http has
// already handed that one to the request that asked (see tlsDialer).
var errNotNeeded = errors.New("an HTTP/2 connection was set up meanwhile; this one is not needed")

// maxSetupsPerHost is how many TLS connection setups to one upstream run at
// once while the upstream speaks HTTP/2 (or has not been reached yet).
const maxSetupsPerHost = 2

// tlsDialer sets up the transport's TLS connections (http.Transport's
// DialTLSContext), so that a burst of requests cannot start a handshake
// each. net/http's transport, when every HTTP/2 connection to a host is
// full, dials a new connection for every request that finds them full, and
// every one of those dials runs to its end even once another connection has
// served its request (issue 28: 10,000 streams opened at once started
// thousands of handshakes, most thrown away, and on a busy machine some
// timed out and failed their request). Here at most maxSetupsPerHost
// setups to a host run at once while the host speaks HTTP/2; a setup that
// waited while another HTTP/2 connection to the host came up gives up
// (errNotNeeded) once its request has a connection (TrackConn): net/http
// handed that connection to every request waiting then, its own too, and
// a request that did not fit asks again with a new dial. A host that answers HTTP/1.1 needs a connection per stream, so its
// setups are not held back. Every failure is a *ConnectError.
type tlsDialer struct {
	t       *http.Transport // its TLSClientConfig, read at each dial: net/http adds the ALPN protocols on first use
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout time.Duration // the TLS handshake's

	mu    sync.Mutex
	hosts map[string]*hostSetups
	// onWait, when set (tests), is called as acquire starts to wait.
	onWait func()
}

// hostSetups is what tlsDialer knows of one host:port.
type hostSetups struct {
	running int           // gated setups under way
	h2      uint64        // HTTP/2 connections set up so far
	http1   bool          // the last handshake chose HTTP/1.1
	changed chan struct{} // closed (and replaced) when a gated setup ends
}

func newTLSDialer(t *http.Transport, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) *tlsDialer {
	return &tlsDialer{t: t, dial: dial, timeout: timeout, hosts: map[string]*hostSetups{}}
}

// DialTLSContext connects to addr and completes the TLS handshake.
func (d *tlsDialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	h, gated, err := d.acquire(ctx, addr)
	if err != nil {
		return nil, &ConnectError{addr, err}
	}
	raw, err := d.dial(ctx, network, addr)
	if err != nil {
		d.end(h, gated, setupFailed)
		return nil, &ConnectError{addr, err}
	}
	conn, err := d.handshake(ctx, raw, addr)
	switch {
	case err != nil:
		d.end(h, gated, setupFailed)
		return nil, &ConnectError{addr, err}
	case conn.ConnectionState().NegotiatedProtocol == "h2":
		// Counted before net/http puts it in its pool and hands it to the
		// requests waiting: a request that starts waiting after this does
		// not count on it (see acquire).
		d.end(h, gated, setupHTTP2)
	default:
		d.end(h, gated, setupHTTP1)
	}
	return conn, nil
}

// gotConnKey is the context key of a tracked request's connWatch.
type gotConnKey struct{}

// connWatch follows a request's attempts at getting a connection from
// net/http's transport (its ClientTrace GetConn and GotConn hooks): the
// channel of an attempt closes when the attempt got its connection (an
// HTTP/2 stream or an HTTP/1.1 connection), when a later attempt begins (so
// the earlier one was answered) or when the round trip ended. Each means
// net/http no longer waits for a setup started for that attempt.
type connWatch struct {
	mu  sync.Mutex
	cur chan struct{}
}

func (w *connWatch) closeCur() {
	select {
	case <-w.cur:
	default:
		close(w.cur)
	}
}

func (w *connWatch) getConn(string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeCur()
	w.cur = make(chan struct{})
}

func (w *connWatch) gotConn(httptrace.GotConnInfo) { w.end() }

func (w *connWatch) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeCur()
}

func (w *connWatch) current() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// TrackConn returns req carrying what lets the transport's connection
// setups know when it no longer waits for them, so that one no longer
// needed ends without failing it, and the function to call once its
// RoundTrip returned. The proxy tracks every request it sends upstream.
func TrackConn(req *http.Request) (*http.Request, func()) {
	w := &connWatch{cur: make(chan struct{})}
	ctx := context.WithValue(req.Context(), gotConnKey{}, w)
	return req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GetConn: w.getConn, GotConn: w.gotConn})), w.end
}

// gotConnOf is the channel of the current attempt of ctx's request (see
// connWatch); nil for an untracked request. Connection setups get the
// request's context values (net/http detaches only its cancellation).
func gotConnOf(ctx context.Context) <-chan struct{} {
	if w, ok := ctx.Value(gotConnKey{}).(*connWatch); ok {
		return w.current()
	}
	return nil
}

// setupResult is how a connection setup ended.
type setupResult int

const (
	setupFailed setupResult = iota
	setupHTTP1
	setupHTTP2
)

// end records a setup's end and, for a gated one, gives its turn back and
// wakes those waiting.
func (d *tlsDialer) end(h *hostSetups, gated bool, r setupResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r != setupFailed {
		h.http1 = r == setupHTTP1
	}
	if r == setupHTTP2 {
		h.h2++
	}
	if gated {
		h.running--
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// acquire waits for addr's turn to set up a connection: at once for a
// host known to speak HTTP/1.1 (gated false), else when fewer than
// maxSetupsPerHost run. When an HTTP/2 connection came up while it waited
// and the request is tracked (TrackConn), it gives up with errNotNeeded
// once the request has its connection.
func (d *tlsDialer) acquire(ctx context.Context, addr string) (h *hostSetups, gated bool, err error) {
	d.mu.Lock()
	h = d.hosts[addr]
	if h == nil {
		h = &hostSetups{changed: make(chan struct{})}
		d.hosts[addr] = h
	}
	h2Before := h.h2
	got := gotConnOf(ctx) // this attempt's: it has begun (GetConn) before its dial
	for {
		switch {
		case h.http1:
			d.mu.Unlock()
			return h, false, nil
		case h.h2 != h2Before:
			if got == nil {
				// A request that does not say when it got a
				// connection: set this one up, as net/http would.
				h2Before = h.h2
				continue
			}
			d.mu.Unlock()
			// net/http handed the new connection to the request that
			// asked for this one, but may not yet have done so: give up
			// only once the request has its connection, so that the
			// error goes nowhere.
			select {
			case <-got:
				return h, false, errNotNeeded
			case <-ctx.Done():
				return h, false, ctx.Err()
			}
		case h.running < maxSetupsPerHost:
			h.running++
			d.mu.Unlock()
			return h, true, nil
		}
		changed := h.changed
		d.mu.Unlock()
		if d.onWait != nil {
			d.onWait()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return h, false, ctx.Err()
		}
		d.mu.Lock()
	}
}

func (d *tlsDialer) handshake(ctx context.Context, raw net.Conn, addr string) (*tls.Conn, error) {
	cfg := d.t.TLSClientConfig.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			raw.Close()
			return nil, err
		}
		cfg.ServerName = host
	}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("TLS handshake timeout after %v: %w", d.timeout, err)
		}
		return nil, err
	}
	return conn, nil
}
