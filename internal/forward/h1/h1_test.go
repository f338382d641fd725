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
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counted is an upstream that counts the connections it accepted and closed.
type counted struct {
	*httptest.Server
	opened, closed atomic.Int32
}

func newCounted(t *testing.T, h http.HandlerFunc, tlsH2 bool) *counted {
	t.Helper()
	c := &counted{}
	c.Server = httptest.NewUnstartedServer(h)
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			c.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			c.closed.Add(1)
		}
	}
	if tlsH2 {
		c.EnableHTTP2 = true
		c.StartTLS()
	} else {
		c.Start()
	}
	t.Cleanup(c.Close)
	return c
}

// recorder is a Fallback that records what it was given.
type recorder struct{ n atomic.Int32 }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.n.Add(1)
	return &http.Response{StatusCode: 299, Body: http.NoBody, Request: req, Header: http.Header{}}, nil
}

func newTransport(t *testing.T, mod func(*Config)) (*Transport, *recorder) {
	t.Helper()
	fb := &recorder{}
	cfg := Config{Dial: (&net.Dialer{}).DialContext, Fallback: fb}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, fb
}

func do(t *testing.T, tr http.RoundTripper, method, u, body string) (*http.Response, string) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rb)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp, string(b)
}

// echo answers with the request's method, path and body, in the framing the
// "frame" query asks for.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	out := r.Method + " " + r.URL.Path + " " + string(b)
	switch r.URL.Query().Get("frame") {
	case "chunked":
		_, _ = io.WriteString(w, out[:len(out)/2])
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, out[len(out)/2:])
	case "empty":
		w.WriteHeader(http.StatusNoContent)
	case "big-head": // a header line longer than the connection's read buffer
		w.Header().Set("X-Big", strings.Repeat("h", 3*readBufferSize/2))
		_, _ = io.WriteString(w, out)
	case "early-hints":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = io.WriteString(w, out)
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(out)))
		_, _ = io.WriteString(w, out)
	}
}

func TestRoundTripsShareOneConnection(t *testing.T) {
	up := newCounted(t, echo, false)
	tr, fb := newTransport(t, nil)
	for i, tt := range []struct{ method, query, body, want string }{
		{"POST", "", `{"n":1}`, `POST /x {"n":1}`},
		{"POST", "?frame=chunked", `{"n":2}`, `POST /x {"n":2}`},
		{"GET", "", "", `GET /x `},
		{"POST", "?frame=empty", `{}`, ``},
		{"POST", "?frame=big-head", `{"n":4}`, `POST /x {"n":4}`},
		{"POST", "?frame=early-hints", `{"n":3}`, `POST /x {"n":3}`},
		{"POST", "", strings.Repeat("y", 100<<10), "POST /x " + strings.Repeat("y", 100<<10)},
	} {
		for range 3 {
			resp, got := do(t, tr, tt.method, up.URL+"/x"+tt.query, tt.body)
			if resp.StatusCode >= 300 || got != tt.want {
				t.Fatalf("case %d: %d %.60q; want %.60q", i, resp.StatusCode, got, tt.want)
			}
		}
	}
	if n := up.opened.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests; want 1", n)
	}
	if n := fb.n.Load(); n != 0 {
		t.Errorf("%d requests went to the fallback; want 0", n)
	}
}

func TestFallback(t *testing.T) {
	up := newCounted(t, echo, false)
	proxyURL, _ := url.Parse("http://proxy.test:3128")
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		req  func() *http.Request
	}{
		{"body of unknown length", nil, func() *http.Request {
			r, _ := http.NewRequest("POST", up.URL, io.NopCloser(strings.NewReader("x")))
			return r
		}},
		{"body over MaxBody", func(c *Config) { c.MaxBody = 4 }, func() *http.Request {
			r, _ := http.NewRequest("POST", up.URL, strings.NewReader("12345"))
			return r
		}},
		{"through an HTTP proxy", func(c *Config) { c.Proxy = http.ProxyURL(proxyURL) }, func() *http.Request {
			r, _ := http.NewRequest("GET", up.URL, nil)
			return r
		}},
		{"another scheme", nil, func() *http.Request {
			r, _ := http.NewRequest("GET", "ftp://example.test/", nil)
			return r
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, fb := newTransport(t, tt.mod)
			resp, err := tr.RoundTrip(tt.req())
			if err != nil || resp.StatusCode != 299 || fb.n.Load() != 1 {
				t.Errorf("RoundTrip = %v, %v; fallback calls %d; want the fallback's 299", resp, err, fb.n.Load())
			}
		})
	}
}

// TestStaleConnections: an idle connection the upstream closed is not
// handed a request (the liveness peek), and one that is answered with
// Connection: close, or whose body is closed unread, is not pooled.
func TestStaleConnections(t *testing.T) {
	for _, peek := range []bool{true, false} {
		t.Run(fmt.Sprintf("closed by the upstream while idle, peek %v", peek), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{}, 8)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer ln.Close() // before the wait: it ends the accept loop
			wg.Add(1)
			go func() { // answers one request per connection, then closes it without saying so
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					r, err := http.ReadRequest(bufio.NewReader(c))
					if err == nil {
						_, _ = io.Copy(io.Discard, r.Body)
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
					_ = c.Close()
					closed <- struct{}{}
				}
			}()
			tr, _ := newTransport(t, nil)
			if !peek {
				tr.alive = func(net.Conn) bool { return true }
			}
			var failed int
			for i := range 3 {
				req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/", strings.NewReader("{}"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					failed++ // on the stale connection: no new one was served
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
				<-closed // the next request finds its pooled connection closed
			}
			// Without the peek the stale connection takes the request, and the
			// upstream may have seen it: it fails rather than being sent twice
			// (request 2 fails on the stale one, request 3 gets a new one).
			if want := map[bool]int{true: 0, false: 1}[peek]; failed != want {
				t.Errorf("%d of 3 requests failed; want %d", failed, want)
			}
		})
	}
	t.Run("bytes after an answer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer ln.Close()
		wg.Add(1)
		go func() { // answers, then sends bytes no request asked for, and keeps the connection
			defer wg.Done()
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c)
				if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					_, _ = io.Copy(io.Discard, r.Body)
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
				}
			}
		}()
		tr, _ := newTransport(t, nil)
		for i := range 3 {
			if resp, body := do(t, tr, "POST", "http://"+ln.Addr().String()+"/", "{}"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
	})
	t.Run("Connection: close and bodies closed unread", func(t *testing.T) {
		up := newCounted(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("close") {
				w.Header().Set("Connection", "close")
			}
			_, _ = io.WriteString(w, strings.Repeat("z", 64<<10))
		}, false)
		tr, _ := newTransport(t, nil)
		do(t, tr, "GET", up.URL+"/?close", "")
		req, _ := http.NewRequest("GET", up.URL+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = resp.Body.Read(make([]byte, 10))
		resp.Body.Close() // unread: the connection goes with it
		do(t, tr, "GET", up.URL+"/", "")
		do(t, tr, "GET", up.URL+"/", "") // reuses the previous one
		if n := up.opened.Load(); n != 3 {
			t.Errorf("%d connections; want 3 (one per closed connection, then one reused)", n)
		}
	})
}

func TestCancelAndTimeouts(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := newCounted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("silent") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		for { // a stream without end
			if _, err := io.WriteString(w, "data: {}\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-release:
				return
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}, false)
	t.Run("caller leaves mid-stream", func(t *testing.T) {
		tr, _ := newTransport(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Body.Read(make([]byte, 64)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.Copy(io.Discard, resp.Body); err == nil {
			t.Error("the stream's body ended cleanly after its context was cancelled; want an error")
		}
		resp.Body.Close()
	})
	t.Run("caller leaves before the head", func(t *testing.T) {
		tr, _ := newTransport(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", up.URL+"/?silent", nil)
		go func() {
			for up.opened.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
			t.Errorf("RoundTrip = %v; want context.Canceled", err)
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		tr, _ := newTransport(t, func(c *Config) { c.ResponseHeaderTimeout = 20 * time.Millisecond })
		req, _ := http.NewRequest("GET", up.URL+"/?silent", nil)
		_, err := tr.RoundTrip(req)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("RoundTrip = %v; want a timeout", err)
		}
	})
}

func TestTLS(t *testing.T) {
	up := newCounted(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%s", r.Proto)
	}, true) // offers HTTP/2
	roots := up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tr, _ := newTransport(t, func(c *Config) { c.TLS = &tls.Config{RootCAs: roots} })
	for range 3 {
		if resp, body := do(t, tr, "POST", up.URL+"/", "{}"); resp.StatusCode != 200 || body != "HTTP/1.1" {
			t.Fatalf("%d %q; want 200 over HTTP/1.1", resp.StatusCode, body)
		}
	}
	if n := up.opened.Load(); n != 1 {
		t.Errorf("%d TLS connections; want 1", n)
	}
	untrusting, _ := newTransport(t, nil)
	req, _ := http.NewRequest("GET", up.URL+"/", nil)
	var uerr *tls.CertificateVerificationError
	if _, err := untrusting.RoundTrip(req); !errors.As(err, &uerr) {
		t.Errorf("RoundTrip without the CA = %v; want a certificate verification error", err)
	}
}

func TestIdleConnectionsExpire(t *testing.T) {
	up := newCounted(t, echo, false)
	tr, _ := newTransport(t, func(c *Config) { c.IdleTimeout = 20 * time.Millisecond })
	do(t, tr, "GET", up.URL+"/", "")
	for up.closed.Load() == 0 { // closed by the sweep, with no request to notice
		time.Sleep(5 * time.Millisecond)
	}
	do(t, tr, "GET", up.URL+"/", "")
	if n := up.opened.Load(); n != 2 {
		t.Errorf("%d connections; want 2", n)
	}
}

func TestConcurrentRequests(t *testing.T) {
	up := newCounted(t, echo, false)
	tr, _ := newTransport(t, func(c *Config) { c.MaxIdlePerHost = 4 })
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				body := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				req, _ := http.NewRequest("POST", up.URL+"/c", strings.NewReader(body))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != "POST /c "+body {
					t.Errorf("got %q, %v; want the echo of %s", got, err, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	tr.mu.Lock()
	idle := len(tr.idle[("http://" + up.Listener.Addr().String())])
	tr.mu.Unlock()
	if idle > 4 {
		t.Errorf("%d idle connections; want at most MaxIdlePerHost 4", idle)
	}
}
