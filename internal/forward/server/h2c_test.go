package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// h2cClient speaks HTTP/2 without TLS, by prior knowledge, to the proxy.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// openStream starts a slow streamed chat completion on c and returns it
// once its first event has arrived (the request is being served).
func (st *stack) openStream(ctx context.Context, c *http.Client, chunks int) (*http.Response, error) {
	body := `{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hold this stream"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	req.Header.Set("X-Sandbox-Chunks", fmt.Sprint(chunks))
	req.Header.Set("X-Sandbox-Chunk-Delay-Ms", "50")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		resp.Body.Close()
		return nil, errors.Join(fmt.Errorf("first line %q, want an event", line), err)
	}
	return resp, nil
}

func TestClientH2C(t *testing.T) {
	for _, tc := range []struct {
		name  string
		noH2C bool
	}{{"h2c on (default)", false}, {"h2c off", true}} {
		t.Run(tc.name, func(t *testing.T) {
			st := startStack(t, stackOpts{proxy: func(c *Config) { c.NoClientH2C = tc.noH2C }})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := h2cClient(t)
			resp, err := st.openStream(ctx, c, 3)
			if tc.noH2C {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("HTTP/2 by prior knowledge was answered (%s %d) with client h2c off", resp.Proto, resp.StatusCode)
				}
				// HTTP/1.1 clients are served as before.
				if resp, _ := st.do(http.MethodGet, "/v1/models", "", nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("HTTP/1.1 GET /v1/models: status %d", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || !strings.Contains(string(rest), "data: [DONE]") {
				t.Fatalf("stream ended with %v; rest %q, want it to end with [DONE]", err, rest)
			}
			// The same listener still serves HTTP/1.1.
			if resp, _ := st.do(http.MethodGet, "/v1/models", "", nil); resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
				t.Fatalf("HTTP/1.1 GET /v1/models: %s %d", resp.Proto, resp.StatusCode)
			}
		})
	}
}

// TestMaxStreamsBoundsOneConnection: one HTTP/2 connection may carry many
// streams, so --max-streams, not the connection cap, bounds what a client
// holds; a stream past it is refused at once and the slot comes back when
// a stream ends.
func TestMaxStreamsBoundsOneConnection(t *testing.T) {
	const max = 3
	st := startStack(t, stackOpts{proxy: func(c *Config) { c.MaxStreams = max }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := h2cClient(t)
	var held []*http.Response
	defer func() {
		for _, r := range held {
			r.Body.Close()
		}
	}()
	for i := range max {
		resp, err := st.openStream(ctx, c, 400) // 20 s: held until closed
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("stream %d: %s %d, want HTTP/2 200", i, resp.Proto, resp.StatusCode)
		}
		held = append(held, resp)
	}
	resp, err := st.openStream(ctx, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "--max-streams") {
		t.Fatalf("stream past the cap: %d (Retry-After %q) %s; want 503 naming --max-streams with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	waitMetrics(t, st.proxy, map[string]float64{"copilot_proxy_streams": max, "copilot_proxy_streams_refused_total": 1,
		`copilot_proxy_connections{listener="proxy"}`: 1}) // all on one connection
	held[0].Body.Close()
	held = held[1:]
	// The slot comes back once the proxy has seen the stream end.
	waitMetrics(t, st.proxy, map[string]float64{"copilot_proxy_streams": max - 1})
	resp, err = st.openStream(ctx, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a stream after one of the held ended: status %d, want 200", resp.StatusCode)
	}
}
