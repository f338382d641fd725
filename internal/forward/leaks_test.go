package forward

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// A 502 says the Copilot API could not be reached, without the addresses
// (upstream or local IP:port) of the transport's error: those go to the log.
func TestBadGatewayNamesNoAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	e := newEnv(t, func(http.ResponseWriter, *http.Request) {}, func(c *Config) { c.APIURL = &url.URL{Scheme: "http", Host: addr} })
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		resp, body := e.do(t, "POST", path, `{"messages":[{"role":"user","content":"hi"}]}`, nil)
		_, port, _ := net.SplitHostPort(addr)
		if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "127.0.0.1") || strings.Contains(body, port) {
			t.Errorf("POST %s with the upstream down = %d %s; want 502 naming no address", path, resp.StatusCode, body)
		}
	}
}

// An upstream that answers a large body early (413, before reading it) and
// closes the connection reaches the client with its own status, not as a
// 502 "connection reset".
func TestEarlyUpstreamAnswerToLargeBody(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, _ *http.Request) {
		// Answer and close at once, with most of the body unread: the
		// kernel resets the connection while the proxy still writes.
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		const msg = `{"error":{"message":"request too large","type":"invalid_request_error"}}`
		brw.WriteString("HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(msg)) + "\r\n\r\n" + msg)
		brw.Flush()
		conn.Close()
	}, nil)
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 8<<20) + `"}]}`
	for i := range 5 {
		resp, body := e.do(t, "POST", "/v1/chat/completions", big, nil)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("attempt %d: upstream 413 before reading 8 MB = %d %.200s; want the upstream's 413", i, resp.StatusCode, body)
		}
	}
}
