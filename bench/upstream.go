package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/sandbox"
)

// streamHeader names the request header by which the upstream tap knows a
// benchmark stream; proxies pass it through like any other header.
const streamHeader = "X-Bench-Stream"

// upstream is the sandbox, in this process, behind a tap that notes when each
// SSE event leaves it and when each token exchange is answered. Stamps and
// client-side arrival times are taken from one monotonic clock, so the delay
// a forwarder adds to each event is measured exactly instead of inferred.
type upstream struct {
	*sandbox.Server
	URL string
	srv *http.Server
	ln  net.Listener

	mu        sync.Mutex
	streams   map[string][]time.Time // stream id -> stamp of each flush (the first is the headers)
	exchanges []time.Time            // end of each successful exchange answer
}

func startUpstream(cfg sandbox.Config) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{Server: sandbox.New(cfg), URL: "http://" + ln.Addr().String(), ln: ln, streams: map[string][]time.Time{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

// ServeHTTP serves the sandbox, stamping what the benchmarks time.
func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id := r.Header.Get(streamHeader); id != "" {
		sw := &stampWriter{ResponseWriter: w}
		u.Server.ServeHTTP(sw, r)
		u.mu.Lock()
		u.streams[id] = sw.stamps
		u.mu.Unlock()
		return
	}
	if strings.HasSuffix(r.URL.Path, "/copilot_internal/v2/token") {
		rec := &statusWriter{ResponseWriter: w}
		u.Server.ServeHTTP(rec, r)
		if rec.status == 0 || rec.status == http.StatusOK {
			now := time.Now()
			u.mu.Lock()
			u.exchanges = append(u.exchanges, now)
			u.mu.Unlock()
		}
		return
	}
	u.Server.ServeHTTP(w, r)
}

// takeStream returns and forgets the flush stamps of stream id.
func (u *upstream) takeStream(id string) []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.streams[id]
	delete(u.streams, id)
	return s
}

// exchangesSince returns the stamps of exchanges answered after t.
func (u *upstream) exchangesSince(t time.Time) []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []time.Time
	for _, e := range u.exchanges {
		if e.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// copilotToken exchanges the sandbox's GitHub token for a Copilot token, as
// the direct and nginx baselines need one.
func (u *upstream) copilotToken(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.URL+"/copilot_internal/v2/token", nil)
	req.Header.Set("Authorization", "token "+u.GitHubToken().Reveal())
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("exchange: %w", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("exchange: status %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.Token == "" {
		return "", errors.Join(errors.New("exchange: no token in answer"), err)
	}
	return ans.Token, nil
}

// stampWriter notes the time of every flush, taken before the bytes are
// written to the connection, so a measured transit is never negative.
type stampWriter struct {
	http.ResponseWriter
	stamps []time.Time
}

func (s *stampWriter) Flush() {
	s.stamps = append(s.stamps, time.Now())
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *stampWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
