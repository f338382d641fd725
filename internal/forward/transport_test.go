package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/forward/body"
)

// TestTransportHTTP2 checks that the shared transport speaks HTTP/2 to a TLS
// upstream that offers it, and that requests, one after another and at the
// same time, share one pooled connection.
func TestTransportHTTP2(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	tr := NewTransport(TransportConfig{})
	defer tr.CloseIdleConnections()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	client := &http.Client{Transport: tr}

	get := func() (proto string, major int, reused bool, err error) {
		var mu sync.Mutex
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			reused = info.Reused
			mu.Unlock()
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", srv.URL+"/models", nil)
		if err != nil {
			return "", 0, false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", 0, false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		mu.Lock()
		defer mu.Unlock()
		return string(b), resp.ProtoMajor, reused, err
	}

	for i := range 3 {
		proto, major, reused, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if major != 2 || proto != "HTTP/2.0" {
			t.Errorf("request %d: client saw HTTP/%d, server %q; want HTTP/2 on both sides", i, major, proto)
		}
		if want := i > 0; reused != want {
			t.Errorf("request %d: GotConn Reused = %v; want %v", i, reused, want)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, major, reused, err := get(); err != nil || major != 2 || !reused {
				t.Errorf("concurrent request: HTTP/%d, reused %v, err %v; want HTTP/2 on the pooled connection", major, reused, err)
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Errorf("the upstream accepted %d connections; want 1 (multiplexed)", n)
	}
}

// TestTransportOptions checks RootCAs (the upstream's certificate is trusted
// only through it) and HTTP1Only (HTTP/1.1 although HTTP/2 is offered).
func TestTransportOptions(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tests := []struct {
		name      string
		cfg       TransportConfig
		wantProto string // "" when the certificate must be refused
	}{
		{"system roots refuse the test CA", TransportConfig{}, ""},
		{"RootCAs, HTTP/2 offered and taken", TransportConfig{RootCAs: roots}, "HTTP/2.0"},
		{"RootCAs, HTTP1Only", TransportConfig{RootCAs: roots, HTTP1Only: true}, "HTTP/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTransport(tt.cfg)
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if tt.wantProto == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatal("GET succeeded; want a certificate error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != tt.wantProto {
				t.Errorf("server saw %q; want %q", b, tt.wantProto)
			}
		})
	}
}

// writeCounter counts the writes on the connections a transport dials.
type writeCounter struct {
	net.Conn
	writes *atomic.Int32
}

func (w writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

// TestSmallBodyOneWrite checks that a small request goes upstream in one
// write, headers and body together (net/http flushes the headers alone
// first for a body it does not know to be in memory), and that a large one
// still arrives whole.
func TestSmallBodyOneWrite(t *testing.T) {
	var writes atomic.Int32
	tr := NewTransport(TransportConfig{})
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{Conn: c, writes: &writes}, nil
	}
	e := newEnv(t, nil, func(c *Config) { c.Transport = tr })
	for _, tt := range []struct {
		name     string
		size     int
		chunked  bool // sent without a length: the body is read into a pooled buffer and copied
		oneWrite bool
	}{
		{"small", 200, false, true},
		{"at the bound", body.Small, false, true},
		{"small, no length", 200, true, true},
		{"at the bound, no length", body.Small, true, true},
		{"large", 64 << 10, false, false},
	} {
		const frame = len(`{"model":"gpt-4.1","messages":[{"role":"user","content":""}]}`)
		body := `{"model":"gpt-4.1","messages":[{"role":"user","content":"` + strings.Repeat("x", tt.size-frame) + `"}]}`
		if len(body) != tt.size {
			t.Fatalf("%s: body of %d bytes; want %d", tt.name, len(body), tt.size)
		}
		for i := range 3 {
			before := writes.Load()
			var resp *http.Response
			var out string
			if tt.chunked {
				resp, out = e.send(t, "POST", "/v1/chat/completions", io.NopCloser(strings.NewReader(body)), nil)
			} else {
				resp, out = e.do(t, "POST", "/v1/chat/completions", body, nil)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d %s", tt.name, resp.StatusCode, out)
			}
			if reqs := e.up.requests(); reqs[len(reqs)-1].body != body {
				t.Fatalf("%s: upstream got %d bytes; want the %d sent", tt.name, len(reqs[len(reqs)-1].body), len(body))
			}
			if n := writes.Load() - before; tt.oneWrite && n != 1 && i > 0 {
				t.Errorf("%s (%d bytes), request %d: %d writes upstream; want 1", tt.name, len(body), i, n)
			}
		}
	}
}
