package forward

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
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
