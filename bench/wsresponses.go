package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
)

// wsSummary is what the goals table takes from section 8.
type wsSummary struct {
	addedP50 time.Duration // WebSocket turn p50 minus HTTP turn p50
	idleConn int
	perIdle  float64 // proxy RSS bytes per idle connection
}

const (
	wsTurns         = 10
	wsConversations = 30
	wsIdleConns     = 5000
)

// wsTurnBody is one turn of a conversation: a short input, no tools.
func wsTurnBody(i int) string {
	return fmt.Sprintf(`"model":"gpt-5-mini","input":"turn %d of a conversation","store":false`, i)
}

// httpConversation runs wsTurns streamed Responses calls over keep-alive
// HTTP and returns each turn's time from request to the final event.
func httpConversation(ctx context.Context, base, key string, client *http.Client) ([]time.Duration, error) {
	out := make([]time.Duration, 0, wsTurns)
	for i := range wsTurns {
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/responses",
			strings.NewReader(`{"stream":true,`+wsTurnBody(i)+`}`))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		done := false
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadSlice('\n')
			if bytes.Contains(line, []byte(`"type":"response.completed"`)) {
				done = true
			}
			if err != nil {
				break
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !done || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("HTTP turn %d: status %d, completed %v", i, resp.StatusCode, done)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// wsConversation runs wsTurns turns on one WebSocket (its opening not
// counted) and returns each turn's time from message to the final event.
func wsConversation(ctx context.Context, addr, key string) ([]time.Duration, error) {
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/responses", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
	if err != nil {
		return nil, err
	}
	defer c.CloseNow()
	out := make([]time.Duration, 0, wsTurns)
	for i := range wsTurns {
		start := time.Now()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create",`+wsTurnBody(i)+`}`)); err != nil {
			return nil, err
		}
		for {
			_, m, err := c.Read(ctx)
			if err != nil {
				return nil, fmt.Errorf("WebSocket turn %d: %w", i, err)
			}
			if bytes.Contains(m, []byte(`"type":"response.completed"`)) {
				break
			}
			if bytes.HasPrefix(m, []byte(`{"type":"error"`)) {
				return nil, fmt.Errorf("WebSocket turn %d: %s", i, m)
			}
		}
		out = append(out, time.Since(start))
	}
	c.Close(websocket.StatusNormalClosure, "")
	return out, nil
}

// websockets is section 8: a 10-turn Responses conversation over the
// proxy's WebSocket against the same over HTTP, and the proxy's memory per
// open idle WebSocket.
func (b *bench) websockets() {
	s := &section{Title: "8. Responses over WebSocket"}
	b.rep.Sections = append(b.rep.Sections, s)
	st, err := b.steadyStack()
	if err != nil {
		s.Err = err
		return
	}
	if st.broker == nil {
		s.Err = fmt.Errorf("no broker: %v", st.errs["broker"])
		return
	}
	if err := b.need("proxy"); err != nil {
		s.Err = err
		return
	}
	px, err := b.startProxyArgs(b.bins["proxy"], st.broker, "proxy-ws", "--copilot-api-url", st.up.URL,
		"--ws-max-connections-per-key", "-1", "--ws-max-connections", "-1")
	if err != nil {
		s.Err = err
		return
	}
	s.Intro = fmt.Sprintf("A dedicated proxy (caps off). *Turn*: %d conversations of %d turns each, one after the other, "+
		"each turn a short streamed Responses call to gpt-5-mini (the sandbox streams a few events at once), timed from "+
		"sending it to reading `response.completed`: over keep-alive HTTP (`POST /v1/responses`), and over one "+
		"WebSocket per conversation (`response.create`; the upgrade not counted). Each WebSocket turn runs in the proxy "+
		"as an in-process HTTP request through the same handler, so *added* is what the WebSocket front costs over HTTP "+
		"per turn. *Idle*: %d WebSockets opened and left idle; the proxy's VmRSS after minus before, per connection.",
		wsConversations, wsTurns, wsIdleConns)
	s.Header = []string{"measure", "HTTP", "WebSocket", "added (WS - HTTP)"}
	client := newClient(4)
	defer client.CloseIdleConnections()
	// Each run: the HTTP conversations, then the WebSocket ones, the
	// proxy's CPU time read around each batch.
	var httpT, wsT []time.Duration
	var httpCPU, wsCPU []float64
	batch := func(one func() ([]time.Duration, error), into *[]time.Duration, cpu *[]float64) error {
		c0, err := px.CPU(false)
		if err != nil {
			return err
		}
		for range wsConversations {
			ts, err := one()
			if err != nil {
				return err
			}
			*into = append(*into, ts...)
		}
		c1, err := px.CPU(false)
		if err != nil {
			return err
		}
		*cpu = append(*cpu, float64(c1-c0)/float64(wsConversations*wsTurns))
		return nil
	}
	for range b.opts.runs {
		if err := batch(func() ([]time.Duration, error) { return httpConversation(b.ctx, "http://"+px.Addr, px.Key, client) }, &httpT, &httpCPU); err != nil {
			s.Err = err
			return
		}
		if err := batch(func() ([]time.Duration, error) { return wsConversation(b.ctx, px.Addr, px.Key) }, &wsT, &wsCPU); err != nil {
			s.Err = err
			return
		}
	}
	slices.Sort(httpT)
	slices.Sort(wsT)
	p := func(xs []time.Duration, q float64) time.Duration { return load.Percentile(xs, q) }
	sum := &wsSummary{addedP50: p(wsT, 50) - p(httpT, 50)}
	b.ws = sum
	s.row("turn p50", ms(p(httpT, 50)), ms(p(wsT, 50)), ms(sum.addedP50))
	s.row("turn p99", ms(p(httpT, 99)), ms(p(wsT, 99)), ms(p(wsT, 99)-p(httpT, 99)))
	hc, wc := time.Duration(load.Median(httpCPU)), time.Duration(load.Median(wsCPU))
	s.row("proxy CPU per turn", us(hc), us(wc), us(wc-hc))

	n, per, err := b.idleWebSockets(px)
	if err != nil {
		s.note("idle connections: %v", err)
		return
	}
	sum.idleConn, sum.perIdle = n, per
	s.row(fmt.Sprintf("proxy RSS per idle connection (%d open)", n), "", fmt.Sprintf("%.1f KiB", per/1024), "")
}

// idleWebSockets opens wsIdleConns connections to px, leaves them idle and
// returns how many opened and the proxy's RSS growth per connection.
func (b *bench) idleWebSockets(px *proxyProc) (int, float64, error) {
	runtime.GC()
	before, err := px.RSS()
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	conns := make([]*websocket.Conn, 0, wsIdleConns)
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	h := http.Header{"Authorization": {"Bearer " + px.Key}}
	for range wsIdleConns {
		c, _, err := websocket.Dial(ctx, "ws://"+px.Addr+"/v1/responses", &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			return len(conns), 0, fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Let the proxy settle (its accept goroutines park) before sampling.
	time.Sleep(time.Second)
	after, err := px.RSS()
	if err != nil {
		return 0, 0, err
	}
	return len(conns), float64(after-before) / float64(len(conns)), nil
}
