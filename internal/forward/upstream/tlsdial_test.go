package upstream

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// heldServer is a TLS test server whose handler holds every request until
// release is closed, counting the connections it accepted.
type heldServer struct {
	*httptest.Server
	conns   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func startHeld(t *testing.T, http2 bool, streamsPerConn uint32) *heldServer {
	t.Helper()
	s := &heldServer{entered: make(chan struct{}, 1024), release: make(chan struct{})}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.entered <- struct{}{}
		<-s.release
		_, _ = io.WriteString(w, r.Proto)
	}))
	s.EnableHTTP2 = http2
	if http2 {
		s.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(streamsPerConn)}
	}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// TestBurstSetsUpFewConnections sends n requests at once that the server
// holds, more than one connection carries: every one is served, and over
// HTTP/2 the transport sets up about as many connections as the streams
// need instead of one per request that found the others full.
func TestBurstSetsUpFewConnections(t *testing.T) {
	const n, perConn = 60, 5
	for _, tc := range []struct {
		name      string
		http2     bool
		tracked   bool  // requests sent with TrackConn
		maxConns  int64 // connections the server may see
		wantProto string
	}{
		// 12 connections are needed; a round of setups may leave some
		// unused (without the limit: 150-230, more than one a request).
		{"HTTP/2", true, true, 3 * n / perConn, "HTTP/2.0"},
		// Untracked requests: no setup is given up, but they still run
		// two at a time.
		{"HTTP/2, untracked", true, false, 1000, "HTTP/2.0"},
		// A connection per request, none held back once the first
		// handshake said HTTP/1.1.
		{"HTTP/1.1", false, true, n, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startHeld(t, tc.http2, perConn)
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			tr := NewTransport(Config{RootCAs: roots})
			tr.Proxy = nil
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
					end := func() {}
					if tc.tracked {
						req, end = TrackConn(req) // as the proxy sends
					}
					resp, err := client.Do(req)
					end()
					if err != nil {
						errs <- err
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(b) != tc.wantProto {
						errs <- errors.Join(errors.New("answer "+string(b)+", want "+tc.wantProto), err)
					}
				})
			}
			for i := range n {
				select {
				case <-srv.entered:
				case err := <-errs:
					t.Fatalf("request failed with %d of %d served: %v", i, n, err)
				case <-ctx.Done():
					t.Fatalf("%d of %d requests reached the server", i, n)
				}
			}
			close(srv.release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := srv.conns.Load(); got > tc.maxConns {
				t.Errorf("%d connections set up for %d requests, want at most %d", got, n, tc.maxConns)
			}
			t.Logf("%d connections for %d requests", srv.conns.Load(), n)
		})
	}
}

func TestAcquire(t *testing.T) {
	full := func(h *hostSetups) { h.running = maxSetupsPerHost }
	for _, tc := range []struct {
		name      string
		setup     func(*hostSetups)
		meanwhile func(d *tlsDialer, h *hostSetups) // while acquire waits
		cancel    bool
		tracked   bool // the request carries TrackConn's watch
		served    bool // and has its connection
		wantGated bool
		wantErr   error
	}{
		{name: "free slot", setup: func(*hostSetups) {}, wantGated: true},
		{name: "HTTP/1.1 host: never waits", setup: func(h *hostSetups) { full(h); h.http1 = true }},
		{name: "slot freed", setup: full, meanwhile: func(d *tlsDialer, h *hostSetups) { d.end(h, true, setupFailed) }, wantGated: true},
		{name: "HTTP/2 connection came up, request served", setup: full, tracked: true, served: true,
			meanwhile: func(d *tlsDialer, h *hostSetups) { d.end(h, true, setupHTTP2) }, wantErr: errNotNeeded},
		{name: "HTTP/2 connection came up, untracked request", setup: full,
			meanwhile: func(d *tlsDialer, h *hostSetups) { d.end(h, true, setupHTTP2) }, wantGated: true},
		{name: "cancelled", setup: full, cancel: true, wantErr: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTLSDialer(nil, nil, time.Second)
			waiting := make(chan struct{}, 1)
			d.onWait = func() { waiting <- struct{}{} }
			const addr = "up.example:443"
			h := &hostSetups{changed: make(chan struct{})}
			d.hosts[addr] = h
			tc.setup(h)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.tracked {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://up.example/", nil)
				req, end := TrackConn(req)
				defer end()
				ctx = req.Context()
				trace := httptrace.ContextClientTrace(ctx)
				trace.GetConn("up.example:443") // as net/http does before the dial
				if tc.served {
					trace.GotConn(httptrace.GotConnInfo{})
				}
			}
			type result struct {
				gated bool
				err   error
			}
			res := make(chan result, 1)
			go func() {
				_, gated, err := d.acquire(ctx, addr)
				res <- result{gated, err}
			}()
			if tc.meanwhile != nil || tc.cancel {
				<-waiting // what happens now wakes it
				if tc.cancel {
					cancel()
				} else {
					tc.meanwhile(d, h)
				}
			}
			r := <-res
			if r.gated != tc.wantGated || !errors.Is(r.err, tc.wantErr) {
				t.Errorf("acquire = gated %t, %v; want gated %t, %v", r.gated, r.err, tc.wantGated, tc.wantErr)
			}
		})
	}
}

func TestConnectErrors(t *testing.T) {
	srv := startHeld(t, true, 10)
	close(srv.release)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name      string
		url       string
		roots     *x509.CertPool
		retryable bool
	}{
		{"nothing listening", closed, roots, true},
		{"certificate refused", srv.URL, x509.NewCertPool(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTransport(Config{RootCAs: tc.roots})
			tr.Proxy = nil
			defer tr.CloseIdleConnections()
			_, err := (&http.Client{Transport: tr}).Get(tc.url)
			var ce *ConnectError
			if !errors.As(err, &ce) {
				t.Fatalf("GET = %v; want a *ConnectError", err)
			}
			if ce.Retryable() != tc.retryable {
				t.Errorf("%v: Retryable() = %t, want %t", ce, ce.Retryable(), tc.retryable)
			}
		})
	}
}
