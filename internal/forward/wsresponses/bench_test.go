package wsresponses

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// BenchmarkTurn compares one turn over the front's WebSocket with the same
// streamed call over keep-alive HTTP, both against the fake handler: what
// the front adds per turn.
func BenchmarkTurn(b *testing.B) {
	inner := newFakeInner()
	inner.started = make(chan struct{}, 1<<20)
	front := New(Config{Inner: inner, Authenticate: inner.auth})
	srv := httptest.NewServer(front)
	defer srv.Close()
	ctx := context.Background()
	b.Run("http", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(`{"model":"m","input":"hi","stream":true}`))
			req.Header.Set("Authorization", "Bearer good")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			for {
				line, err := br.ReadSlice('\n')
				if bytes.Contains(line, []byte("response.completed")) || err != nil {
					break
				}
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			<-inner.started
		}
	})
	b.Run("websocket", func(b *testing.B) {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/responses",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer good"}}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		msg := []byte(`{"type":"response.create","model":"m","input":"hi"}`)
		for b.Loop() {
			if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
				b.Fatal(err)
			}
			for {
				_, m, err := c.Read(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if bytes.Contains(m, []byte("response.completed")) {
					break
				}
			}
			<-inner.started
		}
	})
	ctxD, cancel := context.WithCancel(ctx)
	cancel()
	front.Drain(ctxD)
}
