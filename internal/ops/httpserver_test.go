package ops

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// guardHandler has the shapes of handler that meet unsent bodies: one that
// answers without reading (a rejection), one that reads, one that bounds its
// own read and lifts that bound before answering (the proxy's
// --body-read-timeout), and one that reads and then streams for a while.
func guardHandler(stream time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/reject", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no key", http.StatusUnauthorized)
	})
	mux.HandleFunc("/too-large", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.CopyN(io.Discard, r.Body, 1<<10); err != nil {
			http.Error(w, "reading the body failed", http.StatusBadRequest)
			return
		}
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	mux.HandleFunc("/answer-then-read", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "refused", http.StatusForbidden)
		_, _ = io.Copy(io.Discard, r.Body) // the body's end comes after the answer began
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading the body failed", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "read %d bytes", len(b))
	})
	mux.HandleFunc("/own-deadline", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := io.ReadAll(r.Body)
		_ = rc.SetReadDeadline(time.Time{})
		if err != nil {
			http.Error(w, "reading the body failed", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "reading the body failed", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(stream)
		}
	})
	return mux
}

func startGuarded(t *testing.T, c HTTPServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, srv, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHTTP() = %v", err)
		}
	})
	return ln.Addr().String()
}

func head(path string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
}

// answer sends a request head announcing 100 body bytes and none, and
// returns the response and whether the server then closed the connection.
// The wait is only the bound of a hang: the test's server timeouts are
// far longer (or the case needs none).
func answer(t *testing.T, addr, path string) (*http.Response, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, head(path)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("POST %s with an unsent body: no answer (%v)", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	return resp, err == io.EOF
}

func TestGuardBodyFreesConnectionsWithUnsentBodies(t *testing.T) {
	tests := []struct {
		name, path  string
		bodyTimeout time.Duration
		wantStatus  int
	}{
		// The body timeout is an hour: only answering at once frees these.
		{"rejection without reading", "/reject", time.Hour, http.StatusUnauthorized},
		// The handler's own 50 ms bound, lifted before it answers, is not
		// undone by net/http's drain of the rest of the body.
		{"handler's own body deadline", "/own-deadline", time.Hour, http.StatusBadRequest},
		// A handler with no bound of its own gets the server's.
		{"server body deadline", "/read", 100 * time.Millisecond, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(0), BodyReadTimeout: tt.bodyTimeout, IdleTimeout: time.Hour})
			resp, closed := answer(t, addr, tt.path)
			if resp.StatusCode != tt.wantStatus || !closed {
				t.Errorf("POST %s with an unsent body = %d, connection closed %v; want %d and closed", tt.path, resp.StatusCode, closed, tt.wantStatus)
			}
		})
	}
}

// TestGuardBodyEarlyAnswerArrives sends bodies larger than the socket
// buffers to a handler that answers after 1 KiB: the client, still writing,
// must get the answer, not a reset (an unread body closed at once resets
// the connection). Each body holds its last byte until the answer came, as
// a slow client's would; in the other case the client sends it all at once.
func TestGuardBodyEarlyAnswerArrives(t *testing.T) {
	addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(0), BodyReadTimeout: time.Hour, IdleTimeout: time.Hour})
	const size = 600 << 10
	for _, hold := range []bool{true, false} {
		for i := range 20 {
			answered := make(chan struct{})
			var body io.Reader = strings.NewReader(strings.Repeat("x", size))
			if hold {
				body = io.MultiReader(io.LimitReader(body, size-1), waitByte(answered))
			}
			req, _ := http.NewRequest("POST", "http://"+addr+"/too-large", body)
			req.ContentLength = size
			tr := &http.Transport{}
			resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			close(answered)
			tr.CloseIdleConnections()
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
				t.Fatalf("run %d (last byte held %v): %v; want a 413 that closes the connection", i, hold, describe(resp, err))
			}
		}
	}
}

// waitByte is a body's last byte, sent once ch is closed.
type waitByte <-chan struct{}

func (w waitByte) Read(p []byte) (int, error) {
	<-w
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = 'x'
	return 1, io.EOF
}

func describe(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d, close %v", resp.StatusCode, resp.Close)
}

// TestGuardBodyEarlyAnswerWhole: an early answer held by the guard reaches
// the client whole when the handler then reads the body to its end, and
// when the writer has no deadlines (a recorder).
func TestGuardBodyEarlyAnswerWhole(t *testing.T) {
	addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(0), BodyReadTimeout: time.Hour, IdleTimeout: time.Hour})
	resp, err := http.Post("http://"+addr+"/answer-then-read", "text/plain", strings.NewReader(strings.Repeat("x", 100)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusForbidden || string(b) != "refused\n" {
		t.Errorf("answer then read = %d %q (%v); want 403 \"refused\"", resp.StatusCode, b, err)
	}

	rec := httptest.NewRecorder()
	GuardBody(guardHandler(0), time.Hour).ServeHTTP(rec, httptest.NewRequest("POST", "/reject", strings.NewReader("{}")))
	if rec.Code != http.StatusUnauthorized || rec.Body.String() != "no key\n" || rec.Header().Get("Connection") != "close" {
		t.Errorf("early answer to a recorder = %d %q, Connection %q; want 401 \"no key\", close", rec.Code, rec.Body.String(), rec.Header().Get("Connection"))
	}
}

func TestGuardBodyThousandSockets(t *testing.T) {
	addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(0), BodyReadTimeout: time.Hour, IdleTimeout: time.Hour})
	const n = 1000
	got := testutil.HoldBodies(t, addr, head("/reject"), n, 30*time.Second)
	if got.Freed != n {
		t.Errorf("%d of %d connections with unsent bodies answered or closed; want all", got.Freed, n)
	}
	t.Logf("%d connections with unsent bodies freed, the last after %s", got.Freed, got.Slowest.Round(time.Millisecond))
}

func TestGuardBodyKeepsWhatWorks(t *testing.T) {
	addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(150 * time.Millisecond), BodyReadTimeout: 100 * time.Millisecond})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var conns []string
	trace := func(req *http.Request) *http.Request {
		return req.WithContext(httptraceCtx(req.Context(), &conns))
	}
	for _, path := range []string{"/read", "/read", "/stream"} {
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(strings.Repeat("x", 100)))
		resp, err := client.Do(trace(req))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("POST %s with its body = %d %q (%v), close %v; want 200, kept alive", path, resp.StatusCode, b, err, resp.Close)
		}
		if path == "/stream" && strings.Count(string(b), "data:") != 3 {
			t.Errorf("stream longer than the body timeout = %q; want all 3 events (the deadline ends with the body)", b)
		}
	}
	if conns[0] != conns[1] || conns[1] != conns[2] {
		t.Errorf("connections used %v; want one kept alive for all", conns)
	}
}

func TestIdleTimeoutClosesKeepAlive(t *testing.T) {
	addr := startGuarded(t, HTTPServerConfig{Handler: guardHandler(0), IdleTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /reject HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection: read = %v; want EOF (closed by the idle timeout)", err)
	}
}

func TestNewHTTPServerDefaults(t *testing.T) {
	s := NewHTTPServer(HTTPServerConfig{Handler: http.NotFoundHandler()})
	if s.ReadHeaderTimeout != DefaultReadHeaderTimeout || s.IdleTimeout != DefaultIdleTimeout || s.MaxHeaderBytes != DefaultMaxHeaderBytes {
		t.Errorf("NewHTTPServer defaults = header %s idle %s max header %d; want %s %s %d",
			s.ReadHeaderTimeout, s.IdleTimeout, s.MaxHeaderBytes, DefaultReadHeaderTimeout, DefaultIdleTimeout, DefaultMaxHeaderBytes)
	}
}

// httptraceCtx records the local address of each connection a request used.
func httptraceCtx(ctx context.Context, conns *[]string) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { *conns = append(*conns, i.Conn.LocalAddr().String()) },
	})
}
